"""The run's bare git repository: the only module that talks to git.

Objects (blobs, trees, commits) are written as loose objects from Python (zlib + sha1), and refs
are written as files, each through a temporary file and ``os.replace``. A commit's objects land
first and its branch ref last, so a process killed at any instant leaves either a complete variant
or none (plus harmless dangling objects). Notes live in ``refs/notes/ge`` with a two-hex-character
fanout, maintained here, so adding a note costs the same at 10 or 10,000 notes.

Reads use loose objects directly and fall back to a long-lived ``git cat-file --batch`` for packed
objects; diff and fsck shell out to git.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError, RunStateError
from guided_evolution.fsutil import atomic_write
from guided_evolution.runstore.records import SEED_BRANCH

NOTES_REF = "refs/notes/ge"
STORE_VERSION = 1
AUTHOR = "ge <ge@localhost>"

MODE_FILE = b"100644"
MODE_EXEC = b"100755"
MODE_TREE = b"40000"
MODE_LINK = b"120000"
MODE_GITLINK = b"160000"

OBJ_TMP_PREFIX = "tmp_obj_"  # git's own prefix: fsck and prune know to ignore/expire it
REF_TMP_PREFIX = ".ge-tmp-"  # git skips dot-files when it scans loose refs

_HEX40 = re.compile(r"[0-9a-f]{40}\Z")
_HEX2 = re.compile(r"[0-9a-f]{2}\Z")
_REF_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]*\Z")
_MAX_KNOWN = 500_000

# --------------------------------------------------------------------------- helpers


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
    buckets: dict[str, dict[str, str]] = field(default_factory=dict)  # "ab" -> {"cdef..": blob}
    bucket_trees: dict[str, str] = field(default_factory=dict)  # "ab" -> subtree sha


class _CatFile:
    """A long-lived ``git cat-file --batch`` process for objects that are not loose."""

    def __init__(self, git: str, repo: Path) -> None:
        self._args = [git, "--git-dir", str(repo), "cat-file", "--batch"]
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def read(self, sha: str) -> tuple[str, bytes] | None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._read(sha)
                except (BrokenPipeError, OSError, ValueError):
                    self.close()
                    if attempt == 2:
                        raise
        return None  # pragma: no cover - unreachable

    def _read(self, sha: str) -> tuple[str, bytes] | None:
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                self._args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=_git_env(),
            )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(sha.encode() + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline()
        if not header:
            raise ValueError("git cat-file exited")
        fields = header.split()
        if len(fields) < 3:
            return None  # "<sha> missing"
        size = int(fields[2])
        data = self._proc.stdout.read(size)
        self._proc.stdout.read(1)
        if len(data) != size:
            raise ValueError("short read from git cat-file")
        return fields[1].decode(), data

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
        finally:
            if proc.stdout:
                proc.stdout.close()


# --------------------------------------------------------------------------- the store


class GitStore:
    """A bare repository holding a run's variants (``seed`` root, ``v/<gen>/<id>`` branches)."""

    def __init__(self, path: Path, fsync: bool = False) -> None:
        """Use :meth:`init` or :meth:`open`."""
        self.path = Path(path)
        self._git = _git_executable()
        self._objects = self.path / "objects"
        self._fsync = fsync
        self._known: set[str] = set()
        self._object_dirs: set[str] = set()  # objects/xx directories known to exist
        self._cat = _CatFile(self._git, self.path)
        self._notes: _NotesState | None = None
        self._packed: tuple[tuple[int, int, int], dict[str, str]] | None = None

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
        git = _git_executable()
        env = _git_env()

        def run(*args: str) -> None:
            subprocess.run([git, *args], check=True, env=env, capture_output=True)

        try:
            run("init", "--bare", "--quiet", str(path))
            for key, value in (
                ("gc.auto", "0"),
                ("maintenance.auto", "false"),
                ("core.logAllRefUpdates", "false"),
                ("ge.version", str(STORE_VERSION)),
            ):
                run("--git-dir", str(path), "config", key, value)
        except subprocess.CalledProcessError as err:
            detail = err.stderr.decode(errors="replace").strip()
            raise RunStateError(f"cannot create git repository {path}: {detail}") from err
        (path / "HEAD").write_text(f"ref: refs/heads/{SEED_BRANCH}\n")
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
        config = path / "config"
        if not (path / "objects").is_dir() or not config.is_file():
            return False
        section = ""
        for raw in config.read_text(errors="replace").splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line.strip("[]").strip().lower()
            elif section == "ge" and line.replace(" ", "").lower().startswith("version="):
                return True
        return False

    def close(self) -> None:
        """Stop the helper git process."""
        self._cat.close()

    def __enter__(self) -> GitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- objects

    def _object_path(self, sha: str) -> Path:
        return self._objects / sha[:2] / sha[2:]

    def _write_object(self, kind: bytes, body: bytes) -> str:
        header = b"%s %d\0" % (kind, len(body))
        digest = hashlib.sha1(header)
        digest.update(body)
        sha = digest.hexdigest()
        if sha in self._known:
            return sha
        final = self._object_path(sha)
        if not final.exists():
            if sha[:2] not in self._object_dirs:  # a mkdir() per object costs ~0.2 ms here
                final.parent.mkdir(exist_ok=True)
                self._object_dirs.add(sha[:2])
            data = zlib.compress(header + body, 1)
            atomic_write(final, data, prefix=OBJ_TMP_PREFIX, mode=0o444, fsync=self._fsync)
        if len(self._known) > _MAX_KNOWN:
            self._known.clear()
        self._known.add(sha)
        return sha

    def _read_object(self, sha: str) -> tuple[str, bytes] | None:
        """(type, body) of an object, or None when it does not exist."""
        if not _HEX40.match(sha):
            return None
        try:
            raw = zlib.decompress(self._object_path(sha).read_bytes())
        except FileNotFoundError:
            return self._cat.read(sha)
        except zlib.error as err:
            raise RunStateError(f"corrupt git object {sha}", "run `ge doctor`") from err
        header, _, body = raw.partition(b"\0")
        kind, _, _size = header.partition(b" ")
        return kind.decode(), body

    def _object(self, sha: str, kind: str) -> bytes:
        found = self._read_object(sha)
        if found is None:
            raise RunStateError(f"git object {sha} not found in {self.path}", "run `ge doctor`")
        if found[0] != kind:
            raise RunStateError(f"git object {sha} is a {found[0]}, not a {kind}")
        return found[1]

    def has_commit(self, commit: str) -> bool:
        """True when ``commit`` is a full sha of a commit in the repository."""
        found = self._read_object(commit)
        return found is not None and found[0] == "commit"

    def _write_tree(self, node: dict[str, Any]) -> str:
        items: list[tuple[bytes, bytes, bytes, bytes]] = []
        for name, value in node.items():
            raw = name.encode("utf-8", "surrogateescape")
            if isinstance(value, dict):
                sha = bytes.fromhex(self._write_tree(value))
                items.append((raw + b"/", MODE_TREE, raw, sha))
            else:
                items.append((raw, value[0], raw, value[1]))
        items.sort(key=lambda item: item[0])
        body = b"".join(mode + b" " + raw + b"\0" + sha for _, mode, raw, sha in items)
        return self._write_object(b"tree", body)

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
            blob = bytes.fromhex(self._write_object(b"blob", bytes(content)))
            node[parts[-1]] = (MODE_EXEC if path in executable else MODE_FILE, blob)
        return self._write_tree(root)

    def _write_commit(
        self, tree: str, parents: list[str], message: str, timestamp: float | None
    ) -> str:
        when = int(time.time() if timestamp is None else timestamp)
        lines = [f"tree {tree}"]
        lines += [f"parent {p}" for p in parents]
        lines.append(f"author {AUTHOR} {when} +0000")
        lines.append(f"committer {AUTHOR} {when} +0000")
        if not message.endswith("\n"):
            message += "\n"
        body = ("\n".join(lines) + "\n\n" + message).encode()
        return self._write_object(b"commit", body)

    # ----------------------------------------------------------------- refs

    def _write_ref(self, refname: str, sha: str) -> None:
        path = self.path / refname
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, f"{sha}\n".encode(), prefix=REF_TMP_PREFIX, fsync=self._fsync)

    def _packed_refs(self) -> dict[str, str]:
        packed = self.path / "packed-refs"
        try:
            st = packed.stat()
        except FileNotFoundError:
            return {}
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._packed is not None and self._packed[0] == key:
            return self._packed[1]
        refs: dict[str, str] = {}
        for line in packed.read_text(errors="replace").splitlines():
            if not line or line[0] in "#^":
                continue
            sha, _, name = line.partition(" ")
            if _HEX40.match(sha):
                refs[name.strip()] = sha
        self._packed = (key, refs)
        return refs

    def _read_ref(self, refname: str, depth: int = 0) -> str | None:
        try:
            text = (self.path / refname).read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return self._packed_refs().get(refname)
        if text.startswith("ref:") and depth < 5:
            return self._read_ref(text[4:].strip(), depth + 1)
        return text if _HEX40.match(text) else None

    def branch_sha(self, branch: str) -> str | None:
        """The commit a branch points at, or None."""
        return self._read_ref(f"refs/heads/{branch}")

    def branches(self, prefix: str = "") -> dict[str, str]:
        """Branch name -> commit sha, for branches whose name starts with ``prefix``."""
        result = {
            name[len("refs/heads/") :]: sha
            for name, sha in self._packed_refs().items()
            if name.startswith("refs/heads/" + prefix)
        }
        heads = self.path / "refs" / "heads"
        start = heads / prefix.rpartition("/")[0] if "/" in prefix else heads
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for filename in filenames:
                if filename.startswith(".") or filename.endswith(".lock"):
                    continue
                name = Path(dirpath, filename).relative_to(heads).as_posix()
                if not name.startswith(prefix):
                    continue
                sha = self._read_ref(f"refs/heads/{name}")
                if sha is not None:
                    result[name] = sha
        return result

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
        self._cat.close()
        self._known.clear()
        self._object_dirs.clear()  # prune-packed removes emptied objects/xx directories

    # ----------------------------------------------------------------- commits

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
        return sha

    def commit_info(self, commit: str) -> CommitInfo:
        """Tree, parents, timestamp and message of a commit (sha or branch name)."""
        sha = self.resolve(commit)
        body = self._object(sha, "commit").decode("utf-8", "replace")
        head, _, message = body.partition("\n\n")
        tree = ""
        parents: list[str] = []
        when = 0
        for line in head.split("\n"):
            key, _, value = line.partition(" ")
            if key == "tree":
                tree = value
            elif key == "parent":
                parents.append(value)
            elif key == "committer":
                try:
                    when = int(value.rsplit(" ", 2)[-2])
                except (IndexError, ValueError):
                    when = 0
        return CommitInfo(sha, tree, tuple(parents), when, message)

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

    def _walk(self, tree: str, prefix: str = "") -> Iterator[tuple[str, bytes, str]]:
        body = self._object(tree, "tree")
        pos = 0
        while pos < len(body):
            space = body.index(b" ", pos)
            nul = body.index(b"\0", space)
            mode = body[pos:space]
            name = body[space + 1 : nul].decode("utf-8", "surrogateescape")
            sha = body[nul + 1 : nul + 21].hex()
            pos = nul + 21
            if mode == MODE_TREE:
                yield from self._walk(sha, f"{prefix}{name}/")
            else:
                yield f"{prefix}{name}", mode, sha

    def read_files(self, commit: str) -> dict[str, bytes]:
        """Every file of a commit: path -> content."""
        tree = self.commit_info(commit).tree
        return {
            path: self._object(sha, "blob")
            for path, mode, sha in self._walk(tree)
            if mode != MODE_GITLINK
        }

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
        for path, mode, sha in self._walk(self.commit_info(commit).tree):
            if mode == MODE_GITLINK:
                continue
            target = dest.joinpath(*path.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            data = self._object(sha, "blob")
            if mode == MODE_LINK:
                os.symlink(data.decode("utf-8", "surrogateescape"), target)
                continue
            target.write_bytes(data)
            if mode == MODE_EXEC:
                target.chmod(0o755)

    # ----------------------------------------------------------------- notes

    def _load_notes(self) -> _NotesState:
        ref = self._read_ref(NOTES_REF)
        if self._notes is not None and self._notes.ref == ref:
            return self._notes
        state = _NotesState(ref)
        if ref is not None:
            tree = self.commit_info(ref).tree
            for path, _mode, blob in self._walk(tree):
                name = path.replace("/", "")
                if _HEX40.match(name):
                    state.buckets.setdefault(name[:2], {})[name[2:]] = blob
        self._notes = state
        return state

    def _flat_tree(self, entries: Mapping[str, str], mode: bytes) -> str:
        body = b"".join(
            mode + b" " + name.encode() + b"\0" + bytes.fromhex(sha)
            for name, sha in sorted(entries.items())
        )
        return self._write_object(b"tree", body)

    def set_note(self, commit: str, text: str, timestamp: float | None = None) -> None:
        """Attach (or replace) the note of ``commit`` in refs/notes/ge."""
        self.set_notes({commit: text}, timestamp)

    def set_notes(self, notes: Mapping[str, str], timestamp: float | None = None) -> None:
        """Attach (or replace) several notes with one notes commit (one ref update)."""
        if not notes:
            return
        state = self._load_notes()
        changed: set[str] = set()
        try:
            for commit, text in notes.items():
                sha = self.resolve(commit)
                if not self.has_commit(sha):
                    raise RunStateError(f"cannot add a note to {sha}: no such commit", "run `ge doctor`")
                if not text.endswith("\n"):
                    text += "\n"
                blob = self._write_object(b"blob", text.encode())
                state.buckets.setdefault(sha[:2], {})[sha[2:]] = blob
                changed.add(sha[:2])
            for name, names in state.buckets.items():
                if name in changed or name not in state.bucket_trees:
                    state.bucket_trees[name] = self._flat_tree(names, MODE_FILE)
            root = self._flat_tree(state.bucket_trees, MODE_TREE)
            # No parent: `git log --all` then shows one notes commit, not one per note.
            note_commit = self._write_commit(root, [], "Notes added by ge\n", timestamp)
            self._write_ref(NOTES_REF, note_commit)
            state.ref = note_commit
        except BaseException:
            self._notes = None
            raise

    def get_note(self, commit: str) -> str | None:
        """The note text of ``commit`` (one trailing newline removed), or None."""
        sha = self.resolve(commit)
        blob = self._load_notes().buckets.get(sha[:2], {}).get(sha[2:])
        if blob is None:
            return None
        return self._object(blob, "blob").decode("utf-8", "replace").removesuffix("\n")

    def notes(self) -> dict[str, str]:
        """Commit sha -> note text, for every note."""
        state = self._load_notes()
        return {
            bucket + rest: self._object(blob, "blob").decode("utf-8", "replace").removesuffix("\n")
            for bucket, entries in state.buckets.items()
            for rest, blob in entries.items()
        }

    # ----------------------------------------------------------------- git reads

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
        """Leftover temporary files (from a killed writer) older than ``min_age_s``."""
        now = time.time()
        found: list[Path] = []
        candidates = list(self._objects.glob(f"??/{OBJ_TMP_PREFIX}*"))
        candidates += list((self.path / "refs").rglob(f"{REF_TMP_PREFIX}*"))
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
