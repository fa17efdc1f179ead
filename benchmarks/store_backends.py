"""What a git library already does for the run store: GitStore vs pygit2 vs GitPython.

Per child the engine writes a commit of a tree with one changed file (about 10 KB over 4 files,
one in a subdirectory) whose parent is the seed, a branch ``v/<gen>/<id>`` for it, and, once per
generation of 100, one notes commit (two-hex fanout tree) holding a note per child. Each backend
does exactly that; backends take turns every 10 commits so a noisy machine hurts them alike.
Prints the median ms per commit over the last 100 commits and per note over the last 10 batches
at 100 / 1,000 / 10,000 variants, then reading a variant's files and exporting its tree (median of
200 / 100 random variants), loose and after ``git repack``; every ratio is to the first backend,
``GitStore hand-written``.

Backends: ``GitStore hand-written`` is runstore/git_store.py at HAND_WRITTEN (zlib + sha1 loose
objects and ref files, each through a temporary file and a rename; ``git cat-file --batch`` for
packed objects); ``GitStore`` is that module now (pygit2). The others do the job on each library's
own primitives, skipping blobs and subtrees they already wrote as GitStore does: pygit2
(create_blob, TreeBuilder, create_commit, references.create), GitPython (odb.store(IStream),
Commit, Head/Reference) on its default object database and on GitDB, and ``pygit2 create_note``:
pygit2 with libgit2's own notes instead of the fanout.

``--crash-trials N`` instead SIGKILLs a writer (commits, refs, notes in a loop) N times per
backend at random moments; after each kill it runs ``git fsck --full --strict``, checks every ref
points at a commit, counts leftover lock and temporary files, and whether the next writer could
carry on; then whether a stale ``refs/notes/ge.lock`` stops the next writer.

Needs GitPython besides ge's own dependencies (``pip install GitPython``).

    python benchmarks/store_backends.py [--variants 10000 | --quick] [--dir DIR]
    python benchmarks/store_backends.py --crash-trials 100 [--backends ...]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import git
import pygit2
from git.objects.fun import tree_to_stream
from gitdb import IStream

from guided_evolution.runstore.git_store import NOTES_REF, GitStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_scaling import seed_files  # the same seed as the scaling benchmark

ROOT = Path(__file__).resolve().parent.parent
HAND_WRITTEN = "fcd1edd~1"  # the last commit whose GitStore wrote git objects by hand
WINDOW = 100  # commits per median
NOTE_BATCHES = 10  # note batches per median
GENERATION = 100  # variants per notes batch
TURN = 10  # commits a backend makes before the next one's turn
NAME, EMAIL = "ge", "ge@localhost"
FILE, EXEC, TREE = 0o100644, 0o100755, 0o040000


def child_files(seed: Mapping[str, bytes], n: int) -> dict[str, bytes]:
    files = dict(seed)
    files["model.py"] = seed["model.py"] + f"\n# mutation {n}\nSCALE = {n * 0.5}\n".encode()
    return files


def message(n: int) -> str:
    return (
        f"mutation of SE0 by expert (bench, T=0.7) #{n}\n\nGe-Variant: {n:016x}\n"
        f"Ge-Generation: {1 + n // GENERATION}\nGe-Operator: mutation\nGe-Parents: seed\n"
    )


def note(n: int) -> str:
    return f'{{"status": "ok", "metrics": {{"loss": {1.0 / (n + 1)!r}}}, "duration_s": 0.1}}'


def nest(files: Mapping[str, bytes]) -> dict[str, Any]:
    """path -> content as nested dicts (directories) of contents."""
    root: dict[str, Any] = {}
    for path, content in files.items():
        *dirs, name = path.split("/")
        node = root
        for part in dirs:
            node = node.setdefault(part, {})
        node[name] = content
    return root


def write_out(dest: Path, walk: Iterator[tuple[str, int, bytes]]) -> None:
    """Export: the files of a tree walk into ``dest``."""
    for path, mode, data in walk:
        target = dest.joinpath(*path.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if mode == EXEC:
            target.chmod(0o755)


def hand_written_store() -> Any:
    """GitStore as it was at HAND_WRITTEN (zlib + sha1 loose objects, ref files, cat-file)."""
    name = "ge_bench_hand_written_git_store"
    if name not in sys.modules:
        source = subprocess.run(
            ["git", "show", f"{HAND_WRITTEN}:guided_evolution/runstore/git_store.py"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        module = types.ModuleType(name)
        sys.modules[name] = module  # dataclasses look their module up
        exec(compile(source, f"git_store.py@{HAND_WRITTEN}", "exec"), module.__dict__)
    return sys.modules[name].GitStore


class StoreBackend:
    """Today's GitStore, used as the engine uses it."""

    label = "GitStore"

    def __init__(self, path: Path) -> None:
        self.store = self.store_class().init(path)
        self.path = path

    def store_class(self) -> Any:
        return GitStore

    def commit(self, files: Mapping[str, bytes], parent: str, msg: str, branch: str) -> str:
        return self.store.commit(files, [parent], msg, branch, timestamp=1_700_000_000)

    def set_notes(self, notes: Mapping[str, str]) -> None:
        self.store.set_notes(notes, timestamp=1_700_000_000)

    def read_files(self, sha: str) -> dict[str, bytes]:
        return self.store.read_files(sha)

    def export(self, sha: str, dest: Path) -> None:
        self.store.export(sha, dest)

    def compact(self) -> None:
        self.store.compact()

    def close(self) -> None:
        self.store.close()


class HandWrittenBackend(StoreBackend):
    """The hand-written GitStore of HAND_WRITTEN, the baseline of the ratios."""

    label = "GitStore hand-written"

    def store_class(self) -> Any:
        return hand_written_store()


class LibraryBackend:
    """The engine's per-child writes on a library's primitives (ids stay the library's own)."""

    label = "?"

    def __init__(self, path: Path) -> None:
        GitStore.init(path).close()  # the same repository config for every backend
        self.path = path
        self.known: set[Any] = set()  # blob ids already written (GitStore keeps the same)
        self.trees: dict[tuple[Any, ...], Any] = {}
        self.buckets: dict[str, dict[str, Any]] = {}
        self.bucket_trees: dict[str, Any] = {}

    # primitives each library supplies
    def blob(self, data: bytes) -> Any: ...
    def tree(self, entries: list[tuple[str, int, Any]]) -> Any: ...
    def make_commit(self, tree: Any, parents: list[Any], msg: str) -> Any: ...
    def ref(self, name: str, target: Any, force: bool) -> None: ...
    def walk(self, sha: str) -> Iterator[tuple[str, int, bytes]]: ...
    def hexsha(self, oid: Any) -> str: ...
    def parse(self, sha: str) -> Any: ...

    def write_tree(self, node: Mapping[str, Any]) -> Any:
        entries = []
        for name, value in node.items():
            if isinstance(value, dict):
                entries.append((name, TREE, self.write_tree(value)))
            else:
                entries.append((name, FILE, self.blob(value)))
        key = tuple(entries)  # an unchanged subtree is not written again (nor by GitStore)
        if key not in self.trees:
            self.trees[key] = self.tree(entries)
        return self.trees[key]

    def commit(self, files: Mapping[str, bytes], parent: str, msg: str, branch: str) -> str:
        tree = self.write_tree(nest(files))
        sha = self.make_commit(tree, [self.parse(parent)], msg)
        self.ref(f"refs/heads/{branch}", sha, force=False)
        return self.hexsha(sha)

    def set_notes(self, notes: Mapping[str, str]) -> None:
        changed = set()
        for commit, text in notes.items():
            self.buckets.setdefault(commit[:2], {})[commit[2:]] = self.blob(text.encode() + b"\n")
            changed.add(commit[:2])
        for name in changed:
            entries = [(rest, FILE, blob) for rest, blob in self.buckets[name].items()]
            self.bucket_trees[name] = self.tree(entries)
        root = self.tree([(name, TREE, tree) for name, tree in self.bucket_trees.items()])
        self.ref(NOTES_REF, self.make_commit(root, [], "Notes added by ge\n"), force=True)

    def read_files(self, sha: str) -> dict[str, bytes]:
        return {path: data for path, _mode, data in self.walk(sha)}

    def export(self, sha: str, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        write_out(dest, self.walk(sha))

    def compact(self) -> None:
        store = GitStore.open(self.path)
        store.compact()
        store.close()

    def close(self) -> None: ...


class Pygit2Backend(LibraryBackend):
    """pygit2 (libgit2): create_blob, TreeBuilder, create_commit, references.create."""

    label = "pygit2"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.repo = pygit2.Repository(str(path))
        self.sig = pygit2.Signature(NAME, EMAIL, 1_700_000_000, 0)

    def blob(self, data: bytes) -> Any:
        oid = pygit2.hash(data)  # create_blob of an existing blob costs as much as a new one
        if oid not in self.known:
            self.repo.create_blob(data)
            self.known.add(oid)
        return oid

    def tree(self, entries: list[tuple[str, int, Any]]) -> Any:
        builder = self.repo.TreeBuilder()
        for name, mode, oid in entries:
            builder.insert(name, oid, mode)
        return builder.write()

    def make_commit(self, tree: Any, parents: list[Any], msg: str) -> Any:
        return self.repo.create_commit(None, self.sig, self.sig, msg, tree, parents)

    def ref(self, name: str, target: Any, force: bool) -> None:
        self.repo.references.create(name, target, force=force)

    def hexsha(self, oid: Any) -> str:
        return str(oid)

    def parse(self, sha: str) -> Any:
        return pygit2.Oid(hex=sha)

    def walk(
        self, sha: str, prefix: str = "", tree: Any = None
    ) -> Iterator[tuple[str, int, bytes]]:
        tree = self.repo[sha].tree if tree is None else tree
        for entry in tree:
            if entry.filemode == TREE:
                yield from self.walk(sha, f"{prefix}{entry.name}/", self.repo[entry.id])
            else:
                yield f"{prefix}{entry.name}", entry.filemode, self.repo[entry.id].data

    def compact(self) -> None:
        super().compact()
        self.repo = pygit2.Repository(str(self.path))


class Pygit2NotesBackend(Pygit2Backend):
    """pygit2's own notes: Repository.create_note, one notes commit per note, libgit2's layout."""

    label = "pygit2 create_note"

    def set_notes(self, notes: Mapping[str, str]) -> None:
        for commit, text in notes.items():
            self.repo.create_note(text + "\n", self.sig, self.sig, commit, NOTES_REF, True)


class GitPythonBackend(LibraryBackend):
    """GitPython: gitdb object writes (odb.store(IStream)), Commit objects, Head/Reference."""

    label = "GitPython"

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.repo = self.open_repo()
        self.actor = git.Actor(NAME, EMAIL)

    def open_repo(self) -> git.Repo:
        return git.Repo(str(self.path))

    def _store(self, kind: bytes, data: bytes) -> bytes:
        return self.repo.odb.store(IStream(kind, len(data), io.BytesIO(data))).binsha

    def blob(self, data: bytes) -> Any:
        sha = hashlib.sha1(b"blob %d\0" % len(data) + data).digest()
        if sha not in self.known:  # gitdb rewrites (then discards) an existing object
            self._store(b"blob", data)
            self.known.add(sha)
        return sha

    def tree(self, entries: list[tuple[str, int, Any]]) -> Any:
        entries = sorted(entries, key=lambda e: e[0] + "/" if e[1] == TREE else e[0])
        buf = io.BytesIO()
        tree_to_stream([(sha, mode, name) for name, mode, sha in entries], buf.write)
        return self._store(b"tree", buf.getvalue())

    def make_commit(self, tree: Any, parents: list[Any], msg: str) -> Any:
        # Commit.create_from_tree re-reads the git config on every call (+0.6 ms measured);
        # this is the same object it builds, serialized the same way.
        for parent in parents:
            if not self.repo.odb.has_object(parent):
                raise ValueError(f"no parent {parent.hex()}")
        new = git.Commit(
            self.repo, git.Commit.NULL_BIN_SHA, git.Tree(self.repo, tree), self.actor,
            1_700_000_000, 0, self.actor, 1_700_000_000, 0, msg,
            [git.Commit(self.repo, p) for p in parents], encoding="UTF-8",
        )  # fmt: skip
        buf = io.BytesIO()
        new._serialize(buf)
        return self._store(b"commit", buf.getvalue())

    def ref(self, name: str, target: Any, force: bool) -> None:
        commit = git.Commit(self.repo, target)
        if name.startswith("refs/heads/"):
            git.Head.create(self.repo, name[len("refs/heads/") :], commit, force=force)
        else:
            git.Reference(self.repo, name, check_path=False).set_object(commit)

    def hexsha(self, oid: Any) -> str:
        return oid.hex()

    def parse(self, sha: str) -> Any:
        return bytes.fromhex(sha)

    def walk(self, sha: str) -> Iterator[tuple[str, int, bytes]]:
        for item in self.repo.commit(sha).tree.traverse():
            if item.type == "blob":
                yield item.path, item.mode, item.data_stream.read()

    def compact(self) -> None:
        super().compact()
        self.repo.close()
        self.repo = self.open_repo()  # the object database caches the list of packs

    def close(self) -> None:
        self.repo.close()


class GitPythonGitDBBackend(GitPythonBackend):
    """GitPython on its pure-Python object database (deprecated by GitPython; its default spawns
    ``git hash-object -w --stdin`` per object written and ``git cat-file`` to read)."""

    label = "GitPython (GitDB)"

    def open_repo(self) -> git.Repo:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return git.Repo(str(self.path), odbt=git.GitDB)


BACKENDS: dict[str, type[StoreBackend] | type[LibraryBackend]] = {
    "hand-written": HandWrittenBackend,
    "gitstore": StoreBackend,
    "pygit2": Pygit2Backend,
    "gitpython": GitPythonBackend,
    "gitpython-gitdb": GitPythonGitDBBackend,
    "pygit2-notes": Pygit2NotesBackend,
}


# --------------------------------------------------------------------------- timing


class Timings:
    """Per-operation samples of one backend, and medians at checkpoints."""

    def __init__(self) -> None:
        self.commit: list[tuple[float, float]] = []  # (wall, cpu) seconds
        self.notes: list[tuple[float, float]] = []  # per note
        self.at: dict[int, dict[str, float]] = {}

    def checkpoint(self, n: int) -> None:
        commits, notes = self.commit[-WINDOW:], self.notes[-NOTE_BATCHES:]
        self.at[n] = {
            "commit": statistics.median(w for w, _ in commits) * 1e3,
            "commit_cpu": statistics.median(c for _, c in commits) * 1e3,
            "note": statistics.median(w for w, _ in notes) * 1e3,
            "note_cpu": statistics.median(c for _, c in notes) * 1e3,
        }


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - start, time.process_time() - start_cpu


def one_generation(
    backends: Mapping[str, Any], seeds: Mapping[str, str], first: int, times: Mapping[str, Timings]
) -> dict[str, list[str]]:
    """GENERATION children of the seed per backend, then each backend's notes in one batch.

    Backends take turns every TURN commits, whoever went first going last next time, so a change
    in the machine's load falls on all of them alike. Returns each backend's commit shas.
    """
    files = seed_files()
    order = list(backends)
    shas: dict[str, list[str]] = {name: [] for name in order}
    for start in range(first, first + GENERATION, TURN):
        for name in order:
            for n in range(start, start + TURN):
                child = (
                    child_files(files, n),
                    seeds[name],
                    message(n),
                    f"v/{1 + n // 100}/{n:016x}",
                )
                sha, wall, cpu = timed(lambda b=backends[name], c=child: b.commit(*c))
                times[name].commit.append((wall, cpu))
                shas[name].append(sha)
        order = order[1:] + order[:1]
    for name in order:
        notes = {sha: note(first + i) for i, sha in enumerate(shas[name])}
        _, wall, cpu = timed(lambda b=backends[name], ns=notes: b.set_notes(ns))
        times[name].notes.append((wall / len(notes), cpu / len(notes)))
    return shas


def build(names: list[str], root: Path, n_variants: int) -> tuple[dict, dict, dict]:
    """Every backend's repository, built a generation at a time, after one generation each in a
    throwaway repository (the first to run in a process pays for warming it up)."""
    warm = {name: BACKENDS[name](root / f"warm-up-{name}.git") for name in names}
    one_generation(warm, {n: seed_commit(b) for n, b in warm.items()}, 1, defaultdict(Timings))
    for backend in warm.values():
        backend.close()
    backends = {name: BACKENDS[name](root / f"{name}.git") for name in names}
    seeds = {name: seed_commit(backend) for name, backend in backends.items()}
    times = {name: Timings() for name in names}
    shas: dict[str, list[str]] = {name: [] for name in names}
    checkpoints = {c for c in (100, 1000, 10_000, n_variants) if c <= n_variants}
    for first in range(1, n_variants + 1, GENERATION):
        for name, new in one_generation(backends, seeds, first, times).items():
            shas[name] += new
        done = first + GENERATION - 1
        for name in names:
            if done in checkpoints:
                times[name].checkpoint(done)
    return backends, times, shas


def seed_commit(backend: Any) -> str:
    if isinstance(backend, StoreBackend):
        return backend.store.commit(seed_files(), [], "seed\n", "seed", timestamp=1_700_000_000)
    tree = backend.write_tree(nest(seed_files()))
    sha = backend.make_commit(tree, [], "seed\n")
    backend.ref("refs/heads/seed", sha, force=False)
    return backend.hexsha(sha)


def reads(backend: Any, shas: list[str], root: Path, rng: random.Random) -> dict[str, float]:
    """Median ms to read a variant's files and to export its tree."""
    read = [
        timed(lambda s=s: backend.read_files(s))[1] for s in rng.sample(shas, min(200, len(shas)))
    ]
    exports = []
    for i, sha in enumerate(rng.sample(shas, min(100, len(shas)))):
        dest = root / f"export-{i}"
        exports.append(timed(lambda s=sha, d=dest: backend.export(s, d))[1])
    for i in range(100):
        subprocess.run(["rm", "-rf", str(root / f"export-{i}")], check=True)
    return {"read": statistics.median(read) * 1e3, "export": statistics.median(exports) * 1e3}


def print_table(
    title: str, names: list[str], rows: dict[str, dict[Any, float]], cols: list[Any]
) -> None:
    """One row per backend: each column's value and its ratio to the first backend's."""
    print(f"\n{title}")
    print(f"{'':<20}" + "".join(f"{c!s:>22}" for c in cols))
    base = rows[names[0]]
    for name in names:
        cells = []
        for c in cols:
            value = rows[name][c]
            ratio = f"({value / base[c]:.2f}x)" if base and base[c] else ""
            cells.append(f"{value:>13.3f} {ratio:>8}")
        print(f"{BACKENDS[name].label:<20}" + "".join(cells))


def bench(args: argparse.Namespace, root: Path) -> None:
    names = args.backends
    start = time.perf_counter()
    backends, times, shas = build(names, root, args.variants)
    built = time.perf_counter() - start
    points = sorted(times[names[0]].at)
    for key, what in (("commit", "commit+branch"), ("note", "note (batched per 100)")):
        for unit in ("", "_cpu"):
            rows = {n: {p: times[n].at[p][key + unit] for p in points} for n in names}
            clock = "CPU" if unit else "wall"
            print_table(f"ms per {what}, {clock}, median, at N variants", names, rows, points)
    rng = random.Random(args.seed)
    read_rows: dict[str, dict[Any, float]] = {n: {} for n in names}
    for packed in (False, True):
        for name in names:
            if packed:
                backends[name].compact()
            state = "packed" if packed else "loose"
            for key, ms in reads(
                backends[name], shas[name], root, random.Random(rng.random())
            ).items():
                read_rows[name][f"{key} {state}"] = ms
    cols = ["read loose", "export loose", "read packed", "export packed"]
    print_table(
        "ms per variant read (all files) / export (tree into a new dir), median",
        names,
        read_rows,
        cols,
    )
    for backend in backends.values():
        backend.close()
    print(f"\nbuilt {args.variants} variants x {len(names)} backends in {built:.1f} s")


# --------------------------------------------------------------------------- crash safety


def crash_child(name: str, repo: Path, once: bool = False) -> None:
    """Commit variants (a branch each) and notes until killed; 'ready' once both worked.

    The variant number continues from the branches on disk, so a variant whose ref a kill
    prevented is committed again under the same branch name, as `ge resume` does. Notes of earlier
    processes are not reloaded (not what is tested here).
    """
    backend = BACKENDS[name](repo)
    n = sum(
        1
        for _d, _s, files in os.walk(repo / "refs" / "heads" / "v")
        for f in files
        if not f.startswith(".") and not f.endswith(".lock")
    )
    seed_ref = repo / "refs" / "heads" / "seed"
    seed = seed_ref.read_text().strip() if seed_ref.exists() else seed_commit(backend)
    batch: dict[str, str] = {}
    first = True
    while True:
        n += 1
        sha = backend.commit(
            child_files(seed_files(), n), seed, message(n), f"v/{n // 10}/{n:016x}"
        )
        batch[sha] = note(n)
        if first or len(batch) == 10:
            backend.set_notes(batch)
            batch = {}
        if first:
            if once:
                backend.close()
                return
            print("ready", flush=True)
            first = False


LEFTOVERS = {
    "ref locks": ("refs", "**/*.lock"),
    "ref temp files": ("refs", "**/.ge-tmp-*"),
    "object temp files": ("objects", "**/tmp_*"),
    "gitdb temp files": ("objects", "obj*"),
}


def check_repo(repo: Path) -> tuple[bool, str]:
    """(fsck clean and every ref is a commit, problems) after a kill."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    fsck = subprocess.run(
        ["git", "--git-dir", str(repo), "fsck", "--full", "--strict", "--no-dangling"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    refs = subprocess.run(
        ["git", "--git-dir", str(repo), "for-each-ref", "--format=%(objecttype) %(refname)"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout.split("\n")  # fmt: skip
    bad = [line for line in refs if line and not line.startswith("commit ")]
    ok = fsck.returncode == 0 and not bad
    return ok, (fsck.stdout + fsck.stderr).strip()[-500:] + " ".join(bad)


def crash_trials(name: str, repo: Path, trials: int, rng: random.Random) -> dict[str, Any]:
    """Kill a writer ``trials`` times: kills that broke the repository, that stopped the next
    writer, and that left each kind of leftover file (removed after counting)."""
    found: dict[str, Any] = {"kills": 0, "broken": 0, "blocked": 0, "errors": set()}
    found.update(dict.fromkeys(LEFTOVERS, 0))
    for _ in range(trials):
        proc = subprocess.Popen(
            [sys.executable, __file__, "--crash-child", name, str(repo)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        ready = proc.stdout.readline()
        if ready:
            time.sleep(rng.uniform(0.0, 0.2))
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        if proc.returncode == -signal.SIGKILL:
            found["kills"] += 1
        else:  # the writer could not carry on after the previous kill
            found["blocked"] += 1
            found["errors"].add(proc.stderr.read().strip().splitlines()[-1][:160])
        ok, detail = check_repo(repo)
        if not ok:
            found["broken"] += 1
            found["errors"].add(detail[:160])
        for label, (sub, pattern) in LEFTOVERS.items():
            leftovers = list((repo / sub).glob(pattern))
            found[label] += bool(leftovers)
            for path in leftovers:  # what `ge doctor --repair` (or git prune) would remove
                path.unlink()
    return found


def stale_lock_probe(name: str, repo: Path) -> str:
    """A kill inside a ref update leaves ``<ref>.lock`` (git's and libgit2's protocol): can the
    next writer update that ref? Made deterministic by leaving the lock file by hand."""
    lock = repo / (NOTES_REF + ".lock")
    lock.write_text("")
    proc = subprocess.run(
        [sys.executable, __file__, "--crash-child", name, str(repo), "--once"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lock.unlink(missing_ok=True)
    if proc.returncode == 0:
        return "next writer carried on"
    return "next writer failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1][:160]


def crash(args: argparse.Namespace, root: Path) -> None:
    rng = random.Random(args.seed)
    for name in args.backends:
        repo = root / f"crash-{name}.git"
        found = crash_trials(name, repo, args.crash_trials, rng)
        errors = found.pop("errors")
        print(f"\n{BACKENDS[name].label}: " + ", ".join(f"{k} {v}" for k, v in found.items()))
        for error in sorted(errors):
            print(f"    {error}")
        print(f"    stale {NOTES_REF}.lock: {stale_lock_probe(name, repo)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 variants (a check)")
    parser.add_argument("--backends", nargs="+", choices=list(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--dir", type=Path, help="parent of the temp dir (e.g. /dev/shm)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--crash-trials", type=int, default=0, help="kill -9 experiment instead")
    parser.add_argument(
        "--crash-child", nargs=2, metavar=("BACKEND", "REPO"), help=argparse.SUPPRESS
    )
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.crash_child:
        crash_child(args.crash_child[0], Path(args.crash_child[1]), once=args.once)
        return
    if args.quick:
        args.variants = 1000
    with tempfile.TemporaryDirectory(prefix="ge-backends-", dir=args.dir) as tmp:
        if args.crash_trials:
            crash(args, Path(tmp))
        else:
            bench(args, Path(tmp))


if __name__ == "__main__":
    main()
