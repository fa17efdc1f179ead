"""Evaluate the circle packing seed in the current directory; write JSON metrics.

`packing.pack(26)` runs in a child process (runner.py, `python -I`, an empty temporary directory,
no GE_* variable) that gets the candidate's source and n on stdin and sends back numbers only.
This process checks the circles itself: exactly n finite triples (x, y, r), r >= 0, every circle
inside the unit square and no two overlapping, both to TOLERANCE (1e-9, absolute).
Before the child starts, this process imports everything it uses and makes itself
non-dumpable (a process without CAP_SYS_PTRACE cannot write its memory) and a subreaper (every
process the candidate leaves behind, even one that left its session, is killed before the
metrics are written); it writes the metrics file last, and removes it when the candidate fails.

    python evaluate.py [--metrics FILE]   # metrics go to $GE_METRICS (or FILE)

Metrics: sum_radii (selects, max): the sum of the radii of a valid packing; min_radius,
wall_contacts, pair_contacts (reported only). An invalid packing exits 1 with the reason (first
line on stderr and in $GE_FEEDBACK). Feedback on success: the sum, the radii's range and the
contacts (a circle within 1e-6 of a wall or of another circle).
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

N = 26
TOLERANCE = 1e-9  # containment and non-overlap, absolute
CONTACT = 1e-6  # a gap below this counts as a contact (feedback only)
CHILD_TIMEOUT_S = 100  # ge's timeout for the whole evaluation is 120 s (ge.toml)
MAX_OUTPUT = 1 << 20  # bytes of the child's answer read (26 circles need about 2 KB)
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36


class Invalid(Exception):
    """The candidate's packing fails the check; the message says why."""


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
    """The circles `pack(n)` returned in the child process; Invalid if it failed or hung."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GE_")}
    runner = Path(__file__).resolve().parent / "runner.py"
    with tempfile.TemporaryDirectory(prefix="circle-packing-") as cwd:
        process = subprocess.Popen(
            [sys.executable, "-I", str(runner)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
        )  # fmt: skip
        try:
            out, err = process.communicate(json.dumps({"source": source, "n": n}).encode(),
                                           timeout=CHILD_TIMEOUT_S)  # fmt: skip
        except subprocess.TimeoutExpired:
            raise Invalid(f"pack({n}) ran longer than {CHILD_TIMEOUT_S} s") from None
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            end_descendants()
    try:
        answer = json.loads(out[:MAX_OUTPUT])
    except ValueError:
        tail = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1][:300]
        raise Invalid(f"running pack({n}) failed: {tail}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("circles", answer.get("error")),
                                                      (list, str)):  # fmt: skip
        raise Invalid(f"pack({n}) gave no circles")
    if "error" in answer:
        raise Invalid(str(answer["error"])[:500])
    return answer["circles"]


def as_array(circles: list, n: int) -> np.ndarray:
    """The circles as an (n, 3) float array; Invalid for a wrong count or shape, or a non-finite."""
    if len(circles) != n:
        raise Invalid(f"pack({n}) returned {len(circles)} circles: exactly {n} are needed")
    try:
        array = np.array(circles, dtype=np.float64)
    except (TypeError, ValueError):
        raise Invalid("each circle must be three numbers (x, y, r)") from None
    if array.shape != (n, 3):
        raise Invalid(f"each circle must be three numbers (x, y, r), got shape {array.shape}")
    bad = ~np.isfinite(array).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise Invalid(f"circle {i} is {array[i].tolist()}: every value must be finite")
    return array


def check(array: np.ndarray) -> None:
    """Invalid with the worst violation: a negative radius, a circle outside, an overlap."""
    x, y, r = array.T
    if (r < 0).any():
        i = int(np.argmin(r))
        raise Invalid(f"circle {i} has a negative radius {r[i]:.6g}")
    outside = np.max(np.stack([r - x, r - y, x + r - 1, y + r - 1]), axis=0)
    i = int(np.argmax(outside))
    if outside[i] > TOLERANCE:
        raise Invalid(f"circle {i} (x={x[i]:.9g}, y={y[i]:.9g}, r={r[i]:.9g}) leaves the unit "
                      f"square by {outside[i]:.3g} (tolerance {TOLERANCE:g})")  # fmt: skip
    overlap = pair_gaps(array)
    np.fill_diagonal(overlap, np.inf)
    i, j = np.unravel_index(int(np.argmin(overlap)), overlap.shape)
    if overlap[i, j] < -TOLERANCE:
        raise Invalid(f"circles {min(i, j)} and {max(i, j)} overlap by {-overlap[i, j]:.3g} "
                      f"(centre distance {overlap[i, j] + r[i] + r[j]:.9g} < r{i} + r{j} = "
                      f"{r[i] + r[j]:.9g}; tolerance {TOLERANCE:g})")  # fmt: skip


def pair_gaps(array: np.ndarray) -> np.ndarray:
    """The gap between each pair of circles: centre distance minus the two radii."""
    centres, r = array[:, :2], array[:, 2]
    distance = np.sqrt(((centres[:, None, :] - centres[None, :, :]) ** 2).sum(axis=-1))
    return distance - r[:, None] - r[None, :]


def score(array: np.ndarray, feedback: list[str]) -> dict[str, float]:
    """The metrics of a valid packing, and the feedback lines about it."""
    x, y, r = array.T
    walls = np.min(np.stack([x - r, y - r, 1 - x - r, 1 - y - r]), axis=0) < CONTACT
    gaps = pair_gaps(array)
    contacts = int((gaps[np.triu_indices(len(r), 1)] < CONTACT).sum())
    total = float(r.sum())
    feedback += [
        f"valid packing of {len(r)} circles: sum of radii {total:.6f}",
        f"radii from {r.min():.4f} to {r.max():.4f}; {int(walls.sum())} circles touch a wall, "
        f"{contacts} pairs touch (gap < {CONTACT:g})",
    ]
    return {"sum_radii": total, "min_radius": float(r.min()), "wall_contacts": int(walls.sum()),
            "pair_contacts": contacts}  # fmt: skip


def write_feedback(lines: list[str]) -> None:
    """The lines for the next prompt in $GE_FEEDBACK (ge shows them; nothing without it)."""
    if os.environ.get("GE_FEEDBACK"):
        Path(os.environ["GE_FEEDBACK"]).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_metrics(path: Path, metrics: dict) -> None:
    """The metrics file, replaced atomically (whatever stood there before is gone)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(metrics), encoding="utf-8")
    os.replace(partial, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default=os.environ.get("GE_METRICS", "metrics.json"))
    args = parser.parse_args()
    metrics_path = Path(args.metrics).resolve()
    guard_process()
    source = (Path(__file__).resolve().parent / "packing.py").read_text(encoding="utf-8")
    feedback: list[str] = []
    try:
        array = as_array(run_candidate(source, N), N)
        check(array)
        metrics = score(array, feedback)
    except Invalid as exc:
        metrics_path.unlink(missing_ok=True)
        print(f"invalid packing: {exc}", file=sys.stderr)
        write_feedback([f"invalid packing: {exc}"])
        return 1
    write_metrics(metrics_path, metrics)
    write_feedback(feedback)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
