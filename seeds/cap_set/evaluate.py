"""Evaluate the cap set seed in the current directory; write JSON metrics.

`priority.priority` runs in a child process (runner.py, `python -I`, an empty temporary
directory, no GE_* variable) that gets the candidate's source and n on stdin and sends back one
priority per vector of Z_3^n: numbers only. This process builds the cap set itself (FunSearch's
setting: every vector in order of decreasing priority, ties in lexicographic order, added when it
makes no line with two members), then checks it independently (no pair's third point
-(a + b) mod 3 is a member).
Before the child starts, this process imports everything it uses and makes itself
non-dumpable (a process without CAP_SYS_PTRACE cannot write its memory) and a subreaper (every
process the candidate leaves behind, even one that left its session, is killed before the
metrics are written); it writes the metrics file last, and removes it when the candidate fails.

    python evaluate.py [--metrics FILE] [--n N]   # metrics go to $GE_METRICS (or FILE); n = 8

Metrics: cap_set_size (selects, max); distinct_priorities (reported only: 1 means the
lexicographic order). A candidate that fails (raises, returns a non-finite value, hangs) exits 1
with the reason (stderr and $GE_FEEDBACK). Feedback on success: the size and the records.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

N = 8
CHILD_TIMEOUT_S = 50  # ge's timeout for the whole evaluation is 60 s (ge.toml)
MAX_OUTPUT = 1 << 24  # bytes of the child's answer read (6,561 floats need about 150 KB)
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36
RECORDS = "the largest cap set known in dimension 8 has 512 vectors (FunSearch, 2023); 496 before"


class Invalid(Exception):
    """The candidate failed; the message says why."""


def guard_process() -> None:
    """No other non-root process of this user may ptrace this one or read its /proc files, and
    every process the candidate leaves behind (even one that left its session) becomes a child
    of this one, so that `end_descendants` finds it."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
        libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def end_descendants() -> None:
    """Kill and reap every remaining child of this process (orphans are reparented here). Only
    where /proc shows this process's own pid namespace: in ge's sandbox, where it may not, the
    stage's pid namespace ends with the evaluation and everything in it."""
    try:
        if Path("/proc/self").resolve().name != str(os.getpid()):
            return
    except OSError:
        return
    for _ in range(100):
        children = []
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError, IndexError):
                if entry.name.isdigit():
                    stat = (entry / "stat").read_text()
                    if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid():
                        children.append(int(entry.name))
        if not children:
            return
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def run_candidate(source: str, n: int) -> list:
    """The priorities the child computed; Invalid if it failed, hung or sent something else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GE_")}
    runner = Path(__file__).resolve().parent / "runner.py"
    with tempfile.TemporaryDirectory(prefix="cap-set-") as cwd:
        process = subprocess.Popen(
            [sys.executable, "-I", str(runner)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = process.communicate(json.dumps({"source": source, "n": n}).encode(),
                                           timeout=CHILD_TIMEOUT_S)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise Invalid(f"priority ran longer than {CHILD_TIMEOUT_S} s (3**{n} calls)") from None
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            end_descendants()
    try:
        answer = json.loads(out[:MAX_OUTPUT])
    except ValueError:
        tail = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1][:300]
        raise Invalid(f"running priority failed: {tail}") from None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        raise Invalid(answer["error"][:500])
    if not isinstance(answer, dict) or not isinstance(answer.get("priorities"), list):
        raise Invalid("priority gave no priorities")
    return answer["priorities"]


def all_vectors(n: int) -> np.ndarray:
    """Every vector of Z_3^n as a row of digits, in lexicographic order (row i has index i)."""
    return np.indices((3,) * n, dtype=np.int8).reshape(n, -1).T.copy()


def as_priorities(values: list, n: int) -> np.ndarray:
    """The priorities as a float array of 3**n values; Invalid if one is missing or not finite."""
    try:
        priorities = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise Invalid("each priority must be a number") from None
    if priorities.shape != (3**n,):
        raise Invalid(f"expected {3**n} priorities (one per vector), got shape {priorities.shape}")
    bad = ~np.isfinite(priorities)
    if bad.any():
        i = int(np.argmax(bad))
        vector = tuple(int(d) for d in all_vectors(n)[i])
        raise Invalid(f"priority({vector}, {n}) is {priorities[i]}: every priority must be finite")
    return priorities


def greedy(priorities: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """The indices of the cap set built greedily in order of decreasing priority.

    blocked[u] is set for every u that would complete a line with two members: adding v blocks
    -(v + w) mod 3 for each member w (and v itself)."""
    weights = 3 ** np.arange(vectors.shape[1] - 1, -1, -1, dtype=np.int64)
    blocked = np.zeros(len(vectors), dtype=bool)
    members = np.empty_like(vectors)
    chosen = []
    for index in np.argsort(-priorities, kind="stable"):
        if blocked[index]:
            continue
        if chosen:
            thirds = (-(members[: len(chosen)] + vectors[index])) % 3
            blocked[thirds.astype(np.int64) @ weights] = True
        blocked[index] = True
        members[len(chosen)] = vectors[index]
        chosen.append(int(index))
    return np.array(chosen, dtype=np.int64)


def is_cap_set(chosen: np.ndarray, vectors: np.ndarray) -> bool:
    """True if no three distinct members lie on a line (each pair's third point; not `greedy`)."""
    if len(np.unique(chosen)) != len(chosen):
        return False
    member = np.zeros(len(vectors), dtype=bool)
    member[chosen] = True
    weights = 3 ** np.arange(vectors.shape[1] - 1, -1, -1, dtype=np.int64)
    points = vectors[chosen].astype(np.int64)
    i, j = np.triu_indices(len(chosen), 1)
    thirds = ((-(points[i] + points[j])) % 3) @ weights
    return not member[thirds].any()


def write_feedback(lines: list[str]) -> None:
    """The lines for the next prompt in $GE_FEEDBACK (ge shows them; nothing without it)."""
    if os.environ.get("GE_FEEDBACK"):
        Path(os.environ["GE_FEEDBACK"]).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_metrics(path: Path, metrics: dict) -> None:
    """The metrics file, replaced atomically (whatever stood there before is gone)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(metrics), encoding="utf-8")
    os.replace(partial, path)


def evaluate(source: str, n: int, feedback: list[str]) -> dict:
    """The metrics of the candidate's priority function; Invalid if it failed."""
    priorities = as_priorities(run_candidate(source, n), n)
    vectors = all_vectors(n)
    chosen = greedy(priorities, vectors)
    if not is_cap_set(chosen, vectors):  # the greedy construction is wrong: never the candidate's
        raise RuntimeError("the greedy construction produced a set with a line")
    distinct = len(np.unique(priorities))
    feedback += [f"cap set of {len(chosen)} vectors in dimension {n} ({distinct} distinct "
                 f"priorities among the {3**n} vectors)", RECORDS]  # fmt: skip
    return {"cap_set_size": len(chosen), "distinct_priorities": distinct}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default=os.environ.get("GE_METRICS", "metrics.json"))
    parser.add_argument("--n", type=int, default=N, choices=range(1, 11), metavar="1..10")
    args = parser.parse_args()
    metrics_path = Path(args.metrics).resolve()
    guard_process()
    source = (Path(__file__).resolve().parent / "priority.py").read_text(encoding="utf-8")
    feedback: list[str] = []
    try:
        metrics = evaluate(source, args.n, feedback)
    except Invalid as exc:
        metrics_path.unlink(missing_ok=True)
        print(f"priority rejected: {exc}", file=sys.stderr)
        write_feedback([f"priority rejected: {exc}"])
        return 1
    write_metrics(metrics_path, metrics)
    write_feedback(feedback)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
