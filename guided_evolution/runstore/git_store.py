"""The run's bare git repository: the only module that talks to git.

Objects and packs are libgit2's, through pygit2: libgit2 writes each loose object through a
temporary file and a link, and reads packed objects and packed refs itself; each ref is written
here as git writes it (``<ref>.lock``, then a rename: libgit2's own ref creation scans every
packed ref, a cost that grows with the run). A commit's objects land first and its branch ref last, so a
process killed at any instant leaves either a complete variant or none (plus harmless dangling
objects and temporary files). A kill inside a ref update can leave a stale ``<ref>.lock`` that
would refuse every later update of that ref; only the holder of ge's run lock writes, so
:meth:`GitStore._write_ref` removes such a lock and retries.

Trees are serialized here, in git's entry order, and written as raw objects: libgit2's TreeBuilder
refuses file names that are not UTF-8 (git stores any bytes) and checks every entry's object,
which made a notes batch 2x slower than this (``benchmarks/store_backends.py``). Notes live in
``refs/notes/ge`` with a two-hex-character fanout, maintained here, so adding a note costs the
same at 10 or 10,000 notes (libgit2's own notes keep one flat tree: 56 ms a note at 10,000).
Diff, fsck and compaction shell out to git.

The module is long because it is the one place that talks to git: objects, refs, notes and the
git commands behind one class, shared by the engine, doctor and the inspection commands.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import subprocess
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pygit2
from pygit2.enums import ObjectType

from guided_evolution.errors import GeError, RunDamagedError, RunStateError
from guided_evolution.runstore import packwrite
from guided_evolution.runstore.records import SEED_BRANCH, note_blob_id

_T = TypeVar("_T")

NOTES_REF = "refs/notes/ge"
NOTES_MESSAGE = "Notes added by ge\n"  # every notes commit's message (they have no parents)
STORE_VERSION = 1
AUTHOR_NAME, AUTHOR_EMAIL = "ge", "ge@localhost"

MODE_FILE = 0o100644
MODE_EXEC = 0o100755
MODE_TREE = 0o040000
MODE_LINK = 0o120000
MODE_GITLINK = 0o160000

OBJ_TMP_GLOBS = ("tmp_object_git2_*", "??/tmp_obj_*", "pack/tmp_*")  # libgit2's, ge's, git's packs
REF_TMP_GLOBS = ("**/*.lock", "**/.ge-tmp-*")  # a killed ref update's; ge's before pygit2

_HEX40 = re.compile(r"[0-9a-f]{40}\Z")
_HEX2 = re.compile(r"[0-9a-f]{2}\Z")
_REF_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*\Z")
_MAX_KNOWN = 500_000
PACK_AT = 32  # objects of a notes batch from which it is written as one pack (not loose)
_KIND = {ObjectType.COMMIT: "commit", ObjectType.TREE: "tree", ObjectType.BLOB: "blob"}
_ODB_KIND = {name: kind for kind, name in _KIND.items()}

# --------------------------------------------------------------------------- helpers


def _writing(method: Callable[..., _T]) -> Callable[..., _T]:
    """A write of the store: libgit2's failure (e.g. a full disk, which it may report as "no
    error", or a repository deleted under the run) becomes a one-line RunStateError (a
    RunDamagedError when the repository is damaged) instead of a pygit2 traceback."""

    @functools.wraps(method)
    def wrapper(self: GitStore, *args: Any, **kwargs: Any) -> _T:
        try:
            return method(self, *args, **kwargs)
        except (pygit2.GitError, OSError) as err:
            damage = GitStore.layout_damage(self.path)
            if damage is not None:
                flag = "--repair" if GitStore.layout_restorable(self.path) else None
                raise RunDamagedError(self.path.parent, damage, flag) from None
            if isinstance(err, OSError) and err.errno not in (errno.ENOSPC, errno.EDQUOT, None):
                raise
            raise RunStateError(
                f"cannot write to {self.path}: {err}", "check free disk space and permissions"
            ) from None

    return wrapper


def _git_env() -> dict[str, str]:
    """The environment for git subprocesses: no GIT_* variable of the caller leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    return env


def _git_executable() -> str:
    exe = shutil.which("git")
    if exe is None:
        raise GeError("git was not found on PATH", "install git (2.20 or newer)")
    return exe


def _check_branch(name: str) -> None:
    parts = name.split("/")
    if not all(_REF_COMPONENT.match(p) and not p.endswith((".lock", ".")) for p in parts) or (
        ".." in name
    ):
        raise ValueError(f"invalid branch name: {name!r}")


def _split_path(path: str) -> list[str]:
    parts = path.split("/")
    for part in parts:
        if part in ("", ".", "..") or part.lower() == ".git" or "\0" in part:
            raise GeError(
                f"cannot store the file path {path!r}",
                "use relative paths without '.', '..', '.git' or empty components",
            )
    return parts


def _tree_body(entries: Iterable[tuple[bytes, int, pygit2.Oid]]) -> bytes:
    """A tree object's body: entries sorted as git does (a directory sorts as ``name/``)."""
    items = sorted(entries, key=lambda e: e[0] + b"/" if e[1] == MODE_TREE else e[0])
    return b"".join(b"%o %s\0%s" % (mode, name, oid.raw) for name, mode, oid in items)


def _commit_body(tree: pygit2.Oid, message: str, timestamp: float | None) -> bytes:
    """A parentless commit object's body by ge, as libgit2's ``create_commit`` writes it."""
    when = int(time.time() if timestamp is None else timestamp)
    who = f"{AUTHOR_NAME} <{AUTHOR_EMAIL}> {when} +0000".encode()
    text = message if message.endswith("\n") else message + "\n"
    return b"tree %s\nauthor %s\ncommitter %s\n\n%s" % (str(tree).encode(), who, who, text.encode())


@dataclass(frozen=True)
class CommitInfo:
    """A parsed commit object."""

    sha: str
    tree: str
    parents: tuple[str, ...]
    timestamp: int
    message: str


@dataclass
class _NotesState:
    """In-memory copy of the notes tree, valid while refs/notes/ge still points at ``ref``."""

    ref: str | None
    # "ab" -> {"cdef..": its note's tree entry, as the bucket's tree holds it (the blob id is
    # the last 20 bytes)}, and "ab" -> the bucket's tree
    buckets: dict[str, dict[str, bytes]] = field(default_factory=dict)
    bucket_trees: dict[str, pygit2.Oid] = field(default_factory=dict)


_NOTES_ROOT = re.compile(rb"(?:40000 [0-9a-f]{2}\0.{20})*", re.S)  # ge's own layout: 29-byte
_NOTES_BUCKET = re.compile(rb"(?:100644 [0-9a-f]{38}\0.{20})*", re.S)  # and 66-byte entries


def _note_entry(rest: str, blob: pygit2.Oid) -> bytes:
    """A note's entry in its bucket's tree (``rest``: its commit's sha less the bucket)."""
    return b"100644 %s\0%s" % (rest.encode(), blob.raw)


def _fixed_entries(body: bytes, layout: re.Pattern[bytes], size: int) -> list[bytes] | None:
    """The entries of a tree body in ``layout`` (``size`` bytes each); None when it is not."""
    if layout.fullmatch(body) is None:
        return None
    return [body[i : i + size] for i in range(0, len(body), size)]


def _in_tree_order(
    files: Mapping[str, bytes], executable: frozenset[str] | set[str]
) -> tuple[tuple[str, int, bytes], ...]:
    """(path, mode, content) of ``files`` in the order a walk of their git tree gives them (a
    directory ``d`` sorts as ``d/``, so that order is the paths' byte order)."""
    return tuple(
        (path, MODE_EXEC if path in executable else MODE_FILE, bytes(files[path]))
        for path in sorted(files, key=lambda p: p.encode("utf-8", "surrogateescape"))
    )


class _ChangedWhileRead(Exception):
    """The file changed while it was parsed (so the answer is not cached)."""


@functools.lru_cache(maxsize=16)
def _says_ge_version(config: str, text: bytes | None) -> bool:
    """Whether the git config file ``config``, which holds ``text``, says ``ge.version``."""
    try:
        found = "ge.version" in pygit2.Config(config)
    except pygit2.GitError:
        return False
    if text is not None and Path(config).read_bytes() != text:
        raise _ChangedWhileRead
    return found


class _RecentFiles:
    """Commit sha -> its files, for the commits read last, up to ``max_bytes`` of content."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[tuple[str, int, bytes], ...]] = OrderedDict()
        self._bytes = 0

    @staticmethod
    def _size(files: tuple[tuple[str, int, bytes], ...]) -> int:
        return sum(len(data) for _, _, data in files)

    def get(self, sha: str) -> tuple[tuple[str, int, bytes], ...] | None:
        found = self._items.get(sha)
        if found is not None:
            self._items.move_to_end(sha)
        return found

    def put(self, sha: str, files: tuple[tuple[str, int, bytes], ...]) -> None:
        size = self._size(files)
        if sha in self._items or size > self.max_bytes // 4:
            return
        self._items[sha] = files
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._items.popitem(last=False)
            self._bytes -= self._size(dropped)


# --------------------------------------------------------------------------- the store


class GitStore:
    """A bare repository holding a run's variants (``seed`` root, ``v/<gen>/<id>`` branches)."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        """Use :meth:`init` or :meth:`open`.

        libgit2's switches are process-wide: ``fsync`` turns fsync on (objects, refs and their
        directories) for every store of the process, and the check that the repository belongs
        to this user is off, as for the ``git --git-dir`` commands this module runs (a run
        directory may be a colleague's).
        """
        self.path = Path(path)
        self._git = _git_executable()
        self._fsync = fsync
        pygit2.settings.owner_validation = False
        if fsync:
            pygit2.option(pygit2.enums.Option.ENABLE_FSYNC_GITDIR, True)
        self._repo = self._open_repo()
        self._known: set[pygit2.Oid] = set()  # objects known to be in the repository
        self._recent = _RecentFiles()
        self._notes: _NotesState | None = None
        self._batch: list[tuple[bytes, str, bytes]] | None = None  # objects for one pack
        self._packs: list[tuple[Path, list[str]]] = []  # notes packs written, their objects

    def _open_repo(self) -> pygit2.Repository:
        try:
            return pygit2.Repository(str(self.path), pygit2.enums.RepositoryOpenFlag.NO_SEARCH)
        except pygit2.GitError as err:
            raise RunStateError(f"cannot open git repository {self.path}: {err}") from err

    # ----------------------------------------------------------------- lifecycle

    @classmethod
    def init(cls, path: Path, fsync: bool = False) -> GitStore:
        """Create the bare repository (or open it when it already is a ge repository)."""
        path = Path(path)
        if path.exists():
            if cls._is_ge_repo(path):
                return cls.open(path, fsync=fsync)
            if not path.is_dir() or any(path.iterdir()):
                raise RunStateError(
                    f"{path} exists and is not a ge repository",
                    "choose another run directory or remove it",
                )
        try:
            repo = pygit2.init_repository(str(path), bare=True, initial_head=SEED_BRANCH)
            for key, value in (
                ("gc.auto", "0"),
                ("maintenance.auto", "false"),
                ("core.logAllRefUpdates", "false"),
                ("ge.version", str(STORE_VERSION)),
            ):
                repo.config[key] = value
            repo.free()
        except (pygit2.GitError, OSError) as err:
            raise RunStateError(f"cannot create git repository {path}: {err}") from err
        (path / "description").write_text("ge run: variants are branches v/<generation>/<id>\n")
        return cls(path, fsync=fsync)

    @classmethod
    def open(cls, path: Path, fsync: bool = False) -> GitStore:
        """Open an existing ge repository."""
        path = Path(path)
        if not cls._is_ge_repo(path):
            raise RunStateError(
                f"{path} is not a ge git repository",
                "pass a run directory created by `ge run`",
            )
        return cls(path, fsync=fsync)

    @staticmethod
    def _is_ge_repo(path: Path) -> bool:
        config = Path(path) / "config"
        if not (Path(path) / "objects").is_dir() or not config.is_file():
            return False
        try:
            text = config.read_bytes()
        except OSError:
            return False
        try:  # the damage check asks between writes: each config text is parsed once
            return _says_ge_version(str(config), text)
        except _ChangedWhileRead:
            return _says_ge_version.__wrapped__(str(config), None)

    @staticmethod
    def layout_damage(path: Path) -> str | None:
        """What is missing from the repository's layout (one line), or None when it is whole.

        Only looks at the file system: cheap enough to call between writes.
        """
        name = path.name
        if not path.is_dir():
            return f"{name} is gone (the git record of every variant)"
        if not (path / "objects").is_dir():
            return f"{name}/objects is gone (the code of every variant)"
        if not GitStore._is_ge_repo(path):
            return f"{name}/config is gone or damaged: it is not a ge repository any more"
        missing = [part for part in ("refs", "HEAD") if not (path / part).exists()]
        if "refs" in missing:
            return f"{name} lost its branches ({' and '.join(missing)} deleted)"
        return f"{name} lost its HEAD" if missing else None

    @staticmethod
    def layout_restorable(path: Path) -> bool:
        """Whether :meth:`restore_layout` can make the repository whole (it kept its objects)."""
        return (Path(path) / "objects").is_dir() and GitStore._is_ge_repo(Path(path))

    @staticmethod
    def restore_layout(path: Path) -> list[str]:
        """Recreate ``refs/`` and ``HEAD`` of a repository that still has its objects and config
        (what libgit2 needs to open it); one line per thing recreated."""
        path = Path(path)
        if not GitStore.layout_restorable(path):
            return []
        done = []
        if not (path / "refs" / "heads").is_dir():
            for sub in ("heads", "tags"):
                (path / "refs" / sub).mkdir(parents=True, exist_ok=True)
            done.append(f"recreated {path.name}/refs")
        if not (path / "HEAD").is_file():
            (path / "HEAD").write_text(f"ref: refs/heads/{SEED_BRANCH}\n")
            done.append(f"recreated {path.name}/HEAD")
        return done

    def close(self) -> None:
        """Release libgit2's file handles (the store stays usable: they reopen on demand)."""
        self._repo.free()

    def __enter__(self) -> GitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- objects

    def _remember(self, oid: pygit2.Oid) -> None:
        if len(self._known) > _MAX_KNOWN:
            self._known.clear()
        self._known.add(oid)

    def _put(self, oid: pygit2.Oid, kind: str, data: bytes) -> pygit2.Oid:
        """Store an object unless known: into the open notes batch, else written now (libgit2
        writes a temporary file even for a known object)."""
        if oid in self._known:
            return oid
        if self._batch is not None:
            self._batch.append((oid.raw, kind, data))
        else:
            self._repo.odb.write(_ODB_KIND[kind], data)
            self._remember(oid)
        return oid

    def _write_blob(self, data: bytes) -> pygit2.Oid:
        return self._put(pygit2.hash(data), "blob", data)

    def _write_tree_entries(self, entries: Iterable[tuple[bytes, int, pygit2.Oid]]) -> pygit2.Oid:
        return self._write_tree_body(_tree_body(entries))

    def _write_tree_body(self, body: bytes) -> pygit2.Oid:
        return self._put(pygit2.Oid(raw=packwrite.object_id("tree", body)), "tree", body)

    def _write_batch(self, objects: list[tuple[bytes, str, bytes]]) -> None:
        """Write ``objects`` (raw id, kind, data) as one pack (``packwrite``), then know them; a
        handful (a repair's notes, the seed's) loose, as each pack is one more to search until
        :meth:`pack_loose` folds it in."""
        if len(objects) < PACK_AT:
            for oid, kind, data in objects:
                self._repo.odb.write(_ODB_KIND[kind], data)
                self._remember(pygit2.Oid(raw=oid))
            return
        try:
            base = packwrite.write_pack(self.path / "objects" / "pack", objects, self._fsync)
        except OSError as err:
            raise RunStateError(
                f"cannot write a pack in {self.path}: {err.strerror}", "run `ge doctor`"
            ) from None
        if base is not None:
            self._packs.append((base, sorted({oid.hex() for oid, _kind, _data in objects})))
        for oid, _kind, _data in objects:
            self._remember(pygit2.Oid(raw=oid))

    def _get(self, sha: str | pygit2.Oid) -> pygit2.Object | None:
        """The object, or None when it does not exist."""
        if isinstance(sha, str) and not _HEX40.match(sha):
            return None
        try:
            return self._repo.get(sha)
        except (pygit2.GitError, OSError) as err:
            raise self._damaged(f"git object {str(sha)[:12]} cannot be read ({err})") from None

    def _damaged(self, what: str) -> RunDamagedError:
        """The error for a read that failed: the repository's layout damage when it has some."""
        layout = self.layout_damage(self.path)
        flag = "--repair" if layout and self.layout_restorable(self.path) else None
        return RunDamagedError(self.path.parent, layout or what, flag)

    def _object(self, sha: str | pygit2.Oid, kind: ObjectType) -> Any:
        found = self._get(sha)
        if found is None:
            raise self._damaged(f"git object {str(sha)[:12]} is missing from {self.path.name}")
        if found.type != kind:
            raise RunStateError(f"git object {sha} is a {found.type_str}, not a {_KIND[kind]}")
        return found

    def missing_objects(self, shas: Iterable[str]) -> list[str]:
        """The shas (full, hex) of ``shas`` whose object is not in the repository (cheap: no
        object is read)."""
        odb = self._repo.odb
        try:
            return [sha for sha in shas if not _HEX40.match(sha) or not odb.exists(sha)]
        except (pygit2.GitError, OSError) as err:
            raise self._damaged(f"its objects cannot be read ({err})") from None

    def commits(self) -> Iterator[CommitInfo]:
        """Every commit object of the repository, reachable or not (for recovering lost refs)."""
        odb = self._repo.odb
        for oid in odb:
            if odb.read_header(oid)[0] == ObjectType.COMMIT:
                yield self.commit_info(str(oid))

    def has_commit(self, commit: str) -> bool:
        """True when ``commit`` is a full sha of a commit in the repository."""
        found = self._get(commit)
        return found is not None and found.type == ObjectType.COMMIT

    def _write_tree(self, node: dict[str, Any]) -> pygit2.Oid:
        entries = []
        for name, value in node.items():
            raw = name.encode("utf-8", "surrogateescape")
            if isinstance(value, dict):
                entries.append((raw, MODE_TREE, self._write_tree(value)))
            else:
                entries.append((raw, value[0], value[1]))
        return self._write_tree_entries(entries)

    @_writing
    def write_tree(
        self, files: Mapping[str, bytes], executable: frozenset[str] | set[str] = frozenset()
    ) -> str:
        """Write blobs and (nested) trees for ``files``; the root tree's sha."""
        root: dict[str, Any] = {}
        for path, content in files.items():
            parts = _split_path(path)
            node = root
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise GeError(f"{path!r} needs {part!r} to be a directory, but it is a file")
                node = child
            if isinstance(node.get(parts[-1]), dict):
                raise GeError(f"{path!r} is both a file and a directory")
            blob = self._write_blob(bytes(content))
            node[parts[-1]] = (MODE_EXEC if path in executable else MODE_FILE, blob)
        return str(self._write_tree(root))

    def _write_commit(
        self, tree: str | pygit2.Oid, parents: list[str], message: str, timestamp: float | None
    ) -> str:
        when = int(time.time() if timestamp is None else timestamp)
        signature = pygit2.Signature(AUTHOR_NAME, AUTHOR_EMAIL, when, 0)
        if not message.endswith("\n"):
            message += "\n"
        oid = self._repo.create_commit(
            None, signature, signature, message, pygit2.Oid(hex=str(tree)),
            [pygit2.Oid(hex=p) for p in parents],
        )  # fmt: skip
        return str(oid)

    # ----------------------------------------------------------------- refs

    def _write_ref(self, refname: str, sha: str) -> None:
        """Point ``refname`` at ``sha``; every ref update goes through here.

        Written as git does (``<ref>.lock`` created exclusively, the id in it, renamed over the
        ref), not by libgit2: its ref creation scans every packed ref for a name conflict, 1.3 ms
        a branch at 100,000 variants (ge's branch names cannot conflict: ``v/<gen>/<id>``). What
        that cannot write (a file where a directory must be) goes to libgit2, which says why."""
        target = pygit2.Oid(hex=sha)
        try:
            self._write_loose_ref(self.path / refname, f"{target}\n".encode())
        except OSError:
            self._create_ref(refname, target)

    def _write_loose_ref(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.with_name(path.name + ".lock")
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            # A writer killed inside an update of this ref left the lock; we hold the run lock.
            lock.unlink(missing_ok=True)
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, data)
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(lock, path)
        except OSError:
            lock.unlink(missing_ok=True)
            raise
        if self._fsync:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def _create_ref(self, refname: str, target: pygit2.Oid) -> None:
        try:
            self._repo.references.create(refname, target, force=True)
        except (OSError, pygit2.GitError):
            lock = self.path / f"{refname}.lock"
            if not lock.exists():
                raise
            lock.unlink(missing_ok=True)
            self._repo.references.create(refname, target, force=True)

    def _read_ref(self, refname: str) -> str | None:
        try:
            ref = self._repo.references.get(refname)
            return None if ref is None else str(ref.resolve().target)
        except (pygit2.GitError, ValueError, KeyError):  # a bad name, a damaged or dangling ref
            return None

    def branch_sha(self, branch: str) -> str | None:
        """The commit a branch points at, or None."""
        return self._read_ref(f"refs/heads/{branch}")

    def branches(self, prefix: str = "") -> dict[str, str]:
        """Branch name -> commit sha, for branches whose name starts with ``prefix``."""
        start = f"refs/heads/{prefix}"
        result = {}
        try:
            refs = [(ref.name, ref) for ref in self._repo.references.iterator()]
        except (pygit2.GitError, OSError) as err:
            raise self._damaged(f"its refs cannot be read ({err})") from None
        for name, ref in refs:
            if name.startswith(start):
                target = getattr(ref, "target", None)  # a branch points at its commit directly
                sha = str(target) if isinstance(target, pygit2.Oid) else self._read_ref(name)
                if sha is not None:
                    result[name[len("refs/heads/") :]] = sha
        return result

    @_writing
    def set_branch(self, branch: str, commit: str) -> None:
        """Point ``branch`` at an existing commit (used by repairs)."""
        _check_branch(branch)
        if not self.has_commit(commit):
            raise RunStateError(f"cannot point {branch} at {commit}: no such commit")
        self._write_ref(f"refs/heads/{branch}", commit)

    def delete_branch(self, branch: str) -> None:
        """Remove a branch (loose or packed)."""
        self._run_git("update-ref", "-d", f"refs/heads/{branch}")

    def pack_refs(self) -> None:
        """Pack all refs into packed-refs (``git pack-refs --all``); reads keep working."""
        self._run_git("pack-refs", "--all", "--prune")

    def compact(self, prune: bool = True) -> None:
        """Pack refs and objects; with ``prune``, delete unreachable objects (old notes trees).

        Run it only while no other process writes this repository (e.g. at the end of a run or
        under the run lock). Reads keep working afterwards.
        """
        self._run_git("pack-refs", "--all", "--prune")
        self._run_git("repack", "-a", "-d", "-q")
        if prune:
            self._run_git("prune", "--expire=now")
        self._run_git("prune-packed", "-q")
        self._repo.free()
        self._repo = self._open_repo()  # the packs it had open are gone
        self._known.clear()
        self._packs = []  # repacked with everything else

    def pack_loose(self) -> int:
        """Pack the loose objects into one new pack and delete their loose files; how many.

        No reachability walk (``git repack`` walks every branch: O(variants) each time, ~1 s at
        10,000): the loose objects are listed from ``objects/`` and handed to ``git
        pack-objects``, with those of the notes packs this process wrote (:meth:`set_notes`),
        whose packs then go; so the cost is the new objects' only, flat over a long run. Unreachable
        objects (replaced notes trees) are packed too; :meth:`compact` drops them at the end.
        Like :meth:`compact`, only while no other process writes this repository.
        """
        objects = self.path / "objects"
        loose = [
            f"{sub.name}{entry.name}"
            for sub in os.scandir(objects)
            if len(sub.name) == 2 and _HEX2.match(sub.name) and sub.is_dir(follow_symlinks=False)
            for entry in os.scandir(sub.path)
            if len(entry.name) == 38 and _HEX40.match(sub.name + entry.name)
        ]
        packs, self._packs = self._packs, []  # this process's notes packs: folded in
        folded = [oid for _base, oids in packs for oid in oids]
        if not loose and len(packs) < 2:
            self._packs = packs
            return 0
        proc = subprocess.run(
            [self._git, "--git-dir", str(self.path), "pack-objects", "-q", str(objects / "pack" / "pack")],
            input="".join(f"{oid}\n" for oid in loose + folded).encode(),
            capture_output=True,
            env=_git_env(),
        )  # fmt: skip
        if proc.returncode != 0:
            self._packs = packs + self._packs
            detail = proc.stderr.decode(errors="replace").strip()
            raise RunStateError(f"git pack-objects failed in {self.path}: {detail}", "run `ge doctor`")
        made = f"pack-{proc.stdout.decode(errors='replace').strip()}"
        for base, _oids in packs:  # their objects are in the new pack: the index goes first
            for suffix in (".idx", ".pack") if base.name != made else ():
                base.with_suffix(suffix).unlink(missing_ok=True)
        self._run_git("prune-packed", "-q")
        self._repo.free()
        self._repo = self._open_repo()  # the loose files it knew are gone; the new pack is read
        return len(loose)

    # ----------------------------------------------------------------- commits

    @_writing
    def commit(
        self,
        files: Mapping[str, bytes],
        parents: list[str],
        message: str,
        branch: str,
        executable: frozenset[str] | set[str] = frozenset(),
        timestamp: float | None = None,
        force: bool = False,
    ) -> str:
        """Commit ``files`` (path -> content) with ``parents`` on a new ``branch``; the commit sha.

        The branch ref is written last. An existing branch pointing elsewhere is an error unless
        ``force``; parents must be commits already in the repository.
        """
        _check_branch(branch)
        refname = f"refs/heads/{branch}"
        existing = self._read_ref(refname)
        for parent in parents:
            if not self.has_commit(parent):
                raise RunStateError(
                    f"parent commit {parent} is not in {self.path}", "run `ge doctor`"
                )
        tree = self.write_tree(files, executable)
        sha = self._write_commit(tree, list(parents), message, timestamp)
        if existing is not None and existing != sha and not force:
            raise RunStateError(
                f"branch {branch} already exists at {existing[:12]}",
                "a variant with this id was already committed; run `ge doctor --repair`",
            )
        self._write_ref(refname, sha)
        self._recent.put(sha, _in_tree_order(files, executable))  # checked out next
        return sha

    def commit_info(self, commit: str) -> CommitInfo:
        """Tree, parents, timestamp and message of a commit (sha or branch name)."""
        sha = self.resolve(commit)
        found = self._object(sha, ObjectType.COMMIT)
        return CommitInfo(
            sha,
            str(found.tree_id),
            tuple(str(p) for p in found.parent_ids),
            found.commit_time,
            found.raw_message.decode("utf-8", "replace"),
        )

    def resolve(self, rev: str) -> str:
        """A full commit sha for a sha or a branch name."""
        if _HEX40.match(rev):
            return rev
        sha = self._read_ref(rev if rev.startswith("refs/") else f"refs/heads/{rev}")
        if sha is None:
            raise RunStateError(f"no branch or commit {rev!r} in {self.path}", "run `ge doctor`")
        return sha

    def commit_message(self, commit: str) -> str:
        """The full message of a commit."""
        return self.commit_info(commit).message

    def parents(self, commit: str) -> list[str]:
        """The parent commit shas of a commit."""
        return list(self.commit_info(commit).parents)

    def _walk(
        self, tree: str | pygit2.Oid, prefix: str = ""
    ) -> Iterator[tuple[str, int, pygit2.Oid]]:
        """(path, mode, object id) of every entry below ``tree`` that is not a directory."""
        for entry in self._object(tree, ObjectType.TREE):
            name = entry.raw_name.decode("utf-8", "surrogateescape")
            if entry.filemode == MODE_TREE:
                yield from self._walk(entry.id, f"{prefix}{name}/")
            else:
                yield f"{prefix}{name}", entry.filemode, entry.id

    def _files(self, commit: str) -> tuple[tuple[str, int, bytes], ...]:
        """(path, mode, content) of every file of a commit (submodule links left out).

        The last commits read are kept (:class:`_RecentFiles`): a child is checked out right
        after its commit, and parents are read again and again; a sha names its files for good.
        """
        sha = self.resolve(commit)
        found = self._recent.get(sha)
        if found is None:
            found = tuple(
                (path, mode, self._object(oid, ObjectType.BLOB).data)
                for path, mode, oid in self._walk(self.commit_info(sha).tree)
                if mode != MODE_GITLINK
            )
            self._recent.put(sha, found)
        return found

    def read_files(self, commit: str) -> dict[str, bytes]:
        """Every file of a commit: path -> content."""
        return {path: data for path, _mode, data in self._files(commit)}

    def executable_files(self, commit: str) -> set[str]:
        """Paths of the executable files of a commit."""
        return {
            path for path, mode, _ in self._walk(self.commit_info(commit).tree) if mode == MODE_EXEC
        }

    def export(self, commit: str, dest: Path) -> None:
        """Write the commit's files into ``dest`` (created; must be empty or absent)."""
        dest = Path(dest)
        if dest.exists() and any(dest.iterdir()):
            raise RunStateError(f"cannot export into {dest}: it is not empty", "remove it first")
        dest.mkdir(parents=True, exist_ok=True)
        for path, mode, data in self._files(commit):
            target = dest.joinpath(*path.split("/"))
            if "/" in path:
                target.parent.mkdir(parents=True, exist_ok=True)
            if mode == MODE_LINK:
                os.symlink(data.decode("utf-8", "surrogateescape"), target)
                continue
            target.write_bytes(data)
            if mode == MODE_EXEC:
                target.chmod(0o755)

    # ----------------------------------------------------------------- notes

    def has_notes(self) -> bool:
        """Whether refs/notes/ge exists (a run writes it once its first evaluations are done)."""
        return self._read_ref(NOTES_REF) is not None

    def notes_at(self, notes_commit: str) -> dict[str, str]:
        """Commit sha -> note text in one notes commit (an old one too: for recovering notes)."""
        found = {}
        for path, _mode, blob in self._walk(self.commit_info(notes_commit).tree):
            name = path.replace("/", "")
            if _HEX40.match(name):
                found[name] = self._note_text(blob)
        return found

    def _load_notes(self) -> _NotesState:
        ref = self._read_ref(NOTES_REF)
        if self._notes is not None and self._notes.ref == ref:
            return self._notes
        if self._notes is not None and self._notes.ref is not None and ref is None:
            self._notes = None
            raise RunDamagedError(
                self.path.parent,
                f"{self.path.name} lost {NOTES_REF} (the evaluations' notes)",
                "--repair",
            )
        state = _NotesState(ref)
        if ref is not None:
            tree = self.commit_info(ref).tree
            if not self._read_notes_layout(tree, state):
                state = _NotesState(ref)  # another layout: every bucket is written anew
                for path, _mode, blob in self._walk(tree):
                    name = path.replace("/", "")
                    if _HEX40.match(name):
                        bucket = state.buckets.setdefault(name[:2], {})
                        bucket[name[2:]] = _note_entry(name[2:], blob)
        self._notes = state
        return state

    def _read_notes_layout(self, tree: str, state: _NotesState) -> bool:
        """Read a notes tree in the layout :meth:`set_notes` writes (two-hex buckets of notes)
        from the raw tree bodies, its bucket trees kept; False (``state`` half-filled) for any
        other layout or a tree that cannot be read (the caller then walks it, which says why).
        At 100,000 notes: 0.12 s of CPU instead of the walk's 0.30 s, and the first batch of
        notes rewrites only its own buckets."""
        odb = self._repo.odb
        try:
            kind, body = odb.read(tree)
            roots = _fixed_entries(body, _NOTES_ROOT, 29) if kind == ObjectType.TREE else None
            for root in roots or ():  # "40000 ab\0<tree id>"
                bucket_tree = pygit2.Oid(raw=root[-20:])
                kind, body = odb.read(bucket_tree)
                entries = _fixed_entries(body, _NOTES_BUCKET, 66)
                if kind != ObjectType.TREE or not entries:
                    return False
                name = root[6:8].decode()
                state.buckets[name] = {e[7:45].decode(): e for e in entries}
                state.bucket_trees[name] = bucket_tree
        except (KeyError, ValueError, pygit2.GitError, OSError):
            return False
        return roots is not None

    def _flat_tree(self, entries: Mapping[str, pygit2.Oid], mode: int) -> pygit2.Oid:
        return self._write_tree_entries((name.encode(), mode, oid) for name, oid in entries.items())

    @_writing
    def set_note(self, commit: str, text: str, timestamp: float | None = None) -> None:
        """Attach (or replace) the note of ``commit`` in refs/notes/ge."""
        self.set_notes({commit: text}, timestamp)

    @_writing
    def set_notes(self, notes: Mapping[str, str], timestamp: float | None = None) -> None:
        """Attach (or replace) several notes with one notes commit (one ref update)."""
        if not notes:
            return
        state = self._load_notes()
        changed: set[str] = set()
        self._batch = []
        try:
            for commit, text in notes.items():
                sha = self.resolve(commit)
                if not self.has_commit(sha):
                    raise RunStateError(
                        f"cannot add a note to {sha}: no such commit", "run `ge doctor`"
                    )
                if not text.endswith("\n"):
                    text += "\n"
                blob = self._write_blob(text.encode())
                state.buckets.setdefault(sha[:2], {})[sha[2:]] = _note_entry(sha[2:], blob)
                changed.add(sha[:2])
            for name, names in state.buckets.items():
                if name in changed or name not in state.bucket_trees:
                    # One name length in a bucket: the entries sort as their names do.
                    body = b"".join(entry for _, entry in sorted(names.items()))
                    state.bucket_trees[name] = self._write_tree_body(body)
            root = self._flat_tree(state.bucket_trees, MODE_TREE)
            # No parent: `git log --all` then shows one notes commit, not one per note.
            body = _commit_body(root, NOTES_MESSAGE, timestamp)
            note_commit = packwrite.object_id("commit", body)
            self._batch.append((note_commit, "commit", body))
            batch, self._batch = self._batch, None
            self._write_batch(batch)  # one pack, not ~2 loose objects a note
            self._write_ref(NOTES_REF, note_commit.hex())
            state.ref = note_commit.hex()
        except BaseException:
            self._notes = None
            raise
        finally:
            self._batch = None

    def get_note(self, commit: str) -> str | None:
        """The note text of ``commit`` (one trailing newline removed), or None."""
        sha = self.resolve(commit)
        entry = self._load_notes().buckets.get(sha[:2], {}).get(sha[2:])
        return None if entry is None else self._note_text(pygit2.Oid(raw=entry[-20:]))

    def _note_text(self, blob: pygit2.Oid) -> str:
        data = self._object(blob, ObjectType.BLOB).data
        return data.decode("utf-8", "replace").removesuffix("\n")

    def note_blobs(self) -> dict[str, str]:
        """Commit sha -> the id of its note's blob, for every note (no note is read)."""
        state = self._load_notes()
        return {
            bucket + rest: entry[-20:].hex()
            for bucket, entries in state.buckets.items()
            for rest, entry in entries.items()
        }

    @staticmethod
    def note_blob_id(text: str) -> str:
        """The blob id :meth:`set_notes` gives the note ``text`` (nothing is written)."""
        return note_blob_id(text)

    def note_text(self, blob: str) -> str:
        """A note's text by its blob id (see :meth:`note_blobs`)."""
        return self._note_text(pygit2.Oid(hex=blob))

    def notes(self) -> dict[str, str]:
        """Commit sha -> note text, for every note."""
        state = self._load_notes()
        return {
            bucket + rest: self._note_text(pygit2.Oid(raw=entry[-20:]))
            for bucket, entries in state.buckets.items()
            for rest, entry in entries.items()
        }

    # ----------------------------------------------------------------- git commands

    def _run_git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        proc = subprocess.run(
            [self._git, "--git-dir", str(self.path), *args],
            capture_output=True,
            env=_git_env(),
        )
        if check and proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip()
            raise RunStateError(f"git {args[0]} failed in {self.path}: {detail}", "run `ge doctor`")
        return proc

    def diff(self, a: str, b: str, paths: list[str] | None = None, context: int = 3) -> str:
        """Unified diff from commit ``a`` to commit ``b`` (optionally limited to ``paths``)."""
        args = ["diff", "--no-color", "--no-ext-diff", "--no-textconv", f"-U{context}"]
        args += [self.resolve(a), self.resolve(b), "--", *(paths or [])]
        return self._run_git(*args).stdout.decode("utf-8", "replace")

    def fsck(self) -> tuple[bool, str]:
        """``git fsck --strict``: (clean, its output). Dangling objects are not a problem."""
        proc = self._run_git("fsck", "--strict", "--no-dangling", "--no-progress", check=False)
        output = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
        return proc.returncode == 0, output

    def stale_temp_files(self, min_age_s: float = 60.0) -> list[Path]:
        """Leftovers of a killed writer (temporary objects, ref locks) older than ``min_age_s``."""
        now = time.time()
        found: list[Path] = []
        candidates = [p for g in OBJ_TMP_GLOBS for p in (self.path / "objects").glob(g)]
        candidates += [p for g in REF_TMP_GLOBS for p in (self.path / "refs").glob(g)]
        for path in candidates:
            try:
                if now - path.stat().st_mtime >= min_age_s:
                    found.append(path)
            except FileNotFoundError:
                continue
        return found

    def patch(self, a: str, b: str) -> str:
        """A ``git apply``-able patch from commit ``a`` to commit ``b``: fixed ``a/`` ``b/``
        prefixes whatever the user's git config says, binary files included."""
        args = ["-c", "diff.noprefix=false", "-c", "diff.mnemonicPrefix=false", "diff"]
        args += ["--no-color", "--no-ext-diff", "--no-textconv", "--no-relative", "--binary"]
        args += ["--src-prefix=a/", "--dst-prefix=b/", self.resolve(a), self.resolve(b), "--"]
        return self._run_git(*args).stdout.decode("utf-8", "replace")
