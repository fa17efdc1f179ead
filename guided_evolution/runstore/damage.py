"""Damage to a run's record: finding it cheaply, saying it in one line, and remembering it.

Code evaluated without a sandbox (``[evaluator] sandbox = "none"``) can write the run directory:
overwrite ``index.sqlite``, delete ``repo.git`` or its refs. ``RunWatch`` notices that between
the engine's writes (a few file-system calls and one ref read: tens of microseconds), and
``verify_run`` checks the whole record once at the end of a run (``PRAGMA quick_check`` and every
variant's branch and commit). A run that finds damage stops with one line naming it and the
``ge doctor`` flag that repairs it, and writes the damage record (``damage.json``) that every
later command reports until ``ge doctor`` has checked the run and cleared it: closing the index
can put back a header that was overwritten, so what the run saw must not depend on what is left.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import stat
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from guided_evolution.errors import GeError, RunDamagedError
from guided_evolution.fsutil import atomic_write
from guided_evolution.runstore.git_store import NOTES_REF, GitStore
from guided_evolution.runstore.index_schema import connect
from guided_evolution.runstore.records import SEED_BRANCH
from guided_evolution.runstore.run_index import RunIndex, VariantRef

SQLITE_MAGIC = b"SQLite format 3\x00"
REPAIR = "--repair"
REBUILD = "--rebuild-index"
_BAD_INDEX_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


@dataclass(frozen=True)
class Damage:
    """One kind of damage: what (one line) and the `ge doctor` flag that repairs it (None:
    doctor can only say what is left)."""

    what: str
    flag: str | None = None


def error(run_dir: Path, damages: Iterable[Damage]) -> RunDamagedError:
    """One error for all the damage found, with the one `ge doctor` flag that repairs it all."""
    found = list(dict.fromkeys(damages))
    flags = {d.flag for d in found}
    flag = None if None in flags else REBUILD if flags == {REBUILD} else REPAIR
    return RunDamagedError(run_dir, "; ".join(d.what for d in found), flag)


def index_error(err: sqlite3.Error) -> bool:
    """Whether an SQLite error says the index file itself is damaged (not locked, not full)."""
    return (
        getattr(err, "sqlite_errorname", "") in _BAD_INDEX_ERRORS
        or type(err) is sqlite3.DatabaseError
    )


# --------------------------------------------------------------------------- checks


def index_damage(path: Path) -> Damage | None:
    """The index file is missing, empty or not an SQLite database (its header): a few bytes read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except FileNotFoundError:
        return Damage(f"{path.name} is gone", REBUILD)
    except OSError as err:
        return Damage(f"{path.name} cannot be read ({err.strerror})", REBUILD)
    if not head:
        return Damage(f"{path.name} is empty", REBUILD)
    if head != SQLITE_MAGIC:
        return Damage(
            f"{path.name} is not an SQLite database any more (its header was overwritten)", REBUILD
        )
    return None


def index_integrity(path: Path) -> Damage | None:
    """``index_damage``, then SQLite's ``PRAGMA quick_check`` on a fresh read-only connection."""
    found = index_damage(path)
    if found is not None:
        return found
    try:
        conn, _version = connect(path, readonly=True, busy_timeout_s=10.0)
    except GeError as err:
        return Damage(f"{path.name} cannot be opened ({err.message})", REBUILD)
    try:
        result = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as err:
        return Damage(f"{path.name} is damaged ({err})", REBUILD)
    finally:
        conn.close()
    if result != ["ok"]:
        return Damage(
            f"{path.name} fails its integrity check ({'; '.join(map(str, result))})", REBUILD
        )
    return None


def layout_damage(repo_path: Path) -> Damage | None:
    """What the repository's layout lacks; repairable when only its refs/ or HEAD are gone."""
    what = GitStore.layout_damage(repo_path)
    if what is None:
        return None
    return Damage(what, REPAIR if GitStore.layout_restorable(repo_path) else None)


def repo_damage(store: GitStore, seed_commit: str | None) -> Damage | None:
    """The repository's layout, and its seed branch (where ``seed_commit`` says, when known)."""
    layout = layout_damage(store.path)
    if layout is not None:
        return layout
    sha = store.branch_sha(SEED_BRANCH)
    if sha is None or (seed_commit is not None and sha != seed_commit):
        return Damage(f"{store.path.name} lost its branches (refs deleted or moved)", REPAIR)
    return None


def branch_damage(store: GitStore, variants: Iterable[VariantRef]) -> list[Damage]:
    """Every committed variant of the index has its commit in git and its branch on it."""
    committed = [v for v in variants if v.commit_sha and v.branch]
    gone = set(store.missing_objects([v.commit_sha or "" for v in committed]))
    branches = store.branches()
    moved = [
        v
        for v in committed
        if v.commit_sha not in gone and branches.get(v.branch or "") != v.commit_sha
    ]
    found = []
    name, total = store.path.name, len(committed)
    if gone:
        found.append(
            Damage(
                f"the commits of {len(gone)} of {total} variants are gone from {name} (objects deleted)"
            )
        )
    if moved:
        found.append(
            Damage(
                f"{len(moved)} of {total} variant branches are gone from {name} (refs deleted)",
                REPAIR,
            )
        )
    return found


def notes_damage(store: GitStore, variants: Iterable[VariantRef]) -> Damage | None:
    """At the end of a run every evaluation has its note: the notes ref must be there."""
    if not store.has_notes() and any(v.status in ("evaluated", "failed") for v in variants):
        return Damage(f"{store.path.name} lost {NOTES_REF} (the evaluations' notes)", REPAIR)
    return None


def current(index_path: Path, repo_path: Path) -> list[Damage]:
    """The cheap signs of damage of a run at rest: the index's header, the repository's layout
    and its seed branch (what every reading command checks first); never raises."""
    found = [d for d in [index_damage(index_path)] if d is not None]
    layout = layout_damage(repo_path)
    if layout is not None:
        return [*found, layout]
    try:
        with GitStore.open(repo_path) as store:
            found.extend(d for d in [repo_damage(store, None)] if d is not None)
    except RunDamagedError as err:
        found.append(Damage(err.what, err.flag))
    except GeError as err:
        found.append(Damage(err.message))
    return found


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class RunWatch:
    """Cheap checks, between the engine's writes, that nothing else changed the run's record.

    It remembers which files the engine opened (device and inode) and the seed's commit, and
    finds: the index deleted, replaced or overwritten at its header; ``repo.git`` deleted,
    replaced or missing its objects, config, HEAD or refs; the seed branch gone or moved.
    """

    def __init__(self, index_path: Path, store: GitStore, seed_commit: str | None) -> None:
        self.index_path = Path(index_path)
        self.store = store
        self.seed_commit = seed_commit
        self._index_id = _file_id(self.index_path)
        self._repo_id = _file_id(store.path)
        self._config_seen: tuple[int, ...] | None = None  # the ge config's stat, last verified

    def damage(self) -> list[Damage]:
        """What is damaged now (empty when nothing is); never raises."""
        if self._whole():
            return []
        found: list[Damage] = []
        name = self.index_path.name
        if _file_id(self.index_path) not in (self._index_id, None):
            found.append(Damage(f"{name} was replaced while the run wrote it", REBUILD))
        else:
            found.extend(d for d in [index_damage(self.index_path)] if d is not None)
        if _file_id(self.store.path) not in (self._repo_id, None):
            found.append(Damage(f"{self.store.path.name} was replaced while the run wrote it"))
        else:
            try:
                found.extend(
                    d for d in [repo_damage(self.store, self.seed_commit)] if d is not None
                )
            except Exception as err:  # whatever libgit2 makes of it, it is damage
                found.append(Damage(getattr(err, "message", None) or str(err)))
        return found

    def _whole(self) -> bool:
        """The usual answer in a few system calls: the same index file, with SQLite's header;
        the same repository, with its objects, refs, HEAD and a config that said ``ge.version``
        (read again only when its stat changed); the seed branch where it was. False when
        anything differs: :meth:`damage` then looks as it always did and says what is wrong."""
        repo = self.store.path
        try:
            fd = os.open(self.index_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                index = os.fstat(fd)
                head = os.pread(fd, len(SQLITE_MAGIC), 0)
            finally:
                os.close(fd)
            found = os.stat(repo)
            objects = os.stat(repo / "objects")
            config = os.stat(repo / "config")
            os.stat(repo / "refs")
            os.stat(repo / "HEAD")
        except OSError:
            return False
        if (index.st_dev, index.st_ino) != self._index_id or head != SQLITE_MAGIC:
            return False
        if (found.st_dev, found.st_ino) != self._repo_id or not stat.S_ISDIR(found.st_mode):
            return False
        if not stat.S_ISDIR(objects.st_mode) or not stat.S_ISREG(config.st_mode):
            return False
        seen = (config.st_ino, config.st_size, config.st_mtime_ns, config.st_ctime_ns)
        if seen != self._config_seen:
            if not GitStore.layout_restorable(repo):
                return False
            # Kept only once the file has settled: two writes within one tick of the file
            # system's clock can leave the same stat behind.
            settled = time.time_ns() - config.st_ctime_ns > 2_000_000_000
            self._config_seen = seen if settled else None
        try:
            sha = self.store.branch_sha(SEED_BRANCH)
        except Exception:  # whatever libgit2 makes of it: look closer
            return False
        return sha is not None and (self.seed_commit is None or sha == self.seed_commit)


def verify_run(index_path: Path, watch: RunWatch) -> list[Damage]:
    """The end-of-run check: the watch's, ``PRAGMA quick_check``, then every variant's branch
    and commit (one ref listing and one existence test per commit) and the notes ref."""
    found = watch.damage()
    if found:
        return found
    bad_index = index_integrity(index_path)
    if bad_index is not None:
        return [bad_index]
    try:
        with (
            GitStore.open(watch.store.path) as store,
            RunIndex.open(index_path, readonly=True) as index,
        ):
            refs = index.variant_refs()
            return [*branch_damage(store, refs), *filter(None, [notes_damage(store, refs)])]
    except RunDamagedError as err:
        return [Damage(err.what, err.flag)]
    except (GeError, sqlite3.DatabaseError) as err:
        return [Damage(f"the run's record cannot be read ({err})")]


# --------------------------------------------------------------------------- the damage record


def record(path: Path, damages: Iterable[Damage], by: str) -> None:
    """Write the damage record (``damage.json``) that later commands report; best effort."""
    data = {"found_at": time.time(), "by": by, "damage": [asdict(d) for d in damages]}
    with contextlib.suppress(OSError):  # the run directory may be what is gone; the line says it
        atomic_write(path, json.dumps(data, indent=1) + "\n")


def recorded(path: Path) -> list[Damage]:
    """The damage a run recorded when it stopped (empty when there is no record)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [Damage(str(d["what"]), d.get("flag")) for d in data["damage"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, KeyError, TypeError):
        return [Damage(f"its damage record {path.name} is unreadable", REPAIR)]


def clear(path: Path) -> None:
    """Remove the damage record (doctor found the run whole)."""
    path.unlink(missing_ok=True)
