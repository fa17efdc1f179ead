"""Evaluate the fast_exp seed in the current directory; write JSON metrics.

`approx.fast_exp` runs in a child process (tracer.py) that imports only the candidate, `math` and
a numpy facade, on a placeholder that holds neither the evaluator's points nor their number. The
child writes the graph of the operations applied to the input; this process replays the graph on
its own points (the validation grid and the held-out grid together) and counts its weighted
operations (opcount.py, whose weights never reach the child). The output, cast to float32, is
compared with float64 numpy exp.

    python evaluate.py [--metrics FILE]   # metrics go to $GE_METRICS (or FILE)
    python evaluate.py --check            # rules, the trace, a small grid: finite outputs

Metrics: accuracy (selects, max): -log10 of the maximum relative error on the validation grid
(131,073 evenly spaced points of [-87, 88]); ops (selects, min): the weighted count of the
operations the output depends on, per element; heldout_accuracy (reported only): the same as
accuracy on 131,072 random points of the range; max_rel_error, heldout_max_rel_error, op_counts
(reported only). A candidate that breaks the contract (calls exp, leaves float32, loops over
elements, ...) fails with one line saying so. Feedback ($GE_FEEDBACK, when set): where the
validation error is largest and the operations by kind, or the line saying why the candidate was
rejected.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

LOW, HIGH = -87.0, 88.0  # exp stays a finite, normal float32 on this range
VAL_POINTS = 2**17 + 1
HELDOUT_POINTS = 2**17
HELDOUT_SEED = 20240714
CHECK_POINTS = 1001
REL_ERROR_FLOOR = 1e-12  # caps accuracy at 12 digits (float32 output: about 7.2 at best)
MODULE = "approx"
TRACE_TIMEOUT_S = 20  # ge's timeout for the whole evaluation is 30 s (ge.toml)
# numpy is imported in the functions that need it: the tracer's process starts first and
# imports its numpy while this one does.


def validation_grid() -> np.ndarray:
    """The fixed, evenly spaced float32 validation points (selection)."""
    import numpy as np

    return np.linspace(LOW, HIGH, VAL_POINTS).astype(np.float32)


def heldout_grid() -> np.ndarray:
    """The fixed random float32 held-out points (reported only)."""
    import numpy as np

    return np.random.default_rng(HELDOUT_SEED).uniform(LOW, HIGH, HELDOUT_POINTS).astype(np.float32)


def max_relative_error(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The maximum relative error of float32 `y` against float64 exp(x), and where it is."""
    import numpy as np

    reference = np.exp(x.astype(np.float64))
    error = np.abs(y.astype(np.float64) - reference) / reference
    worst = int(np.argmax(error))
    return float(error[worst]), float(x[worst])


def digits(rel_error: float) -> float:
    """The accuracy objective: -log10 of the maximum relative error (floored at 1e-12)."""
    return round(-math.log10(max(rel_error, REL_ERROR_FLOOR)), 4)


def start_tracer(directory: Path) -> subprocess.Popen[str]:
    """The candidate's process (tracer.py), started at once: it imports numpy while this one does.

    Its environment has no GE_* variable (no metrics or feedback path), it runs in its own
    session, and it sees none of this process's state: grids, weights and modules stay here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GE_")}
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve().parent / "tracer.py"), str(directory)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=directory, env=env, start_new_session=True,
    )  # fmt: skip


def read_graph(process: subprocess.Popen[str], opcount) -> dict:
    """The graph the tracer wrote; Escape if it hung, failed or wrote none. Its group is ended."""
    try:
        out, err = process.communicate(timeout=TRACE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise opcount.Escape(f"fast_exp ran longer than {TRACE_TIMEOUT_S} s") from None
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    try:
        graph = json.loads(out)
    except ValueError:
        tail = (err.strip().splitlines() or ["no output"])[-1][:300]
        raise opcount.Escape(f"running fast_exp failed: {tail}") from None
    if not isinstance(graph, dict):
        raise opcount.Escape("running fast_exp gave no graph of operations")
    return graph


def run(graph: dict, x: np.ndarray, opcount) -> tuple[np.ndarray, object]:
    """The candidate's graph replayed on `x`: float32 output and the tape; Escape for a breach."""
    import numpy as np

    try:
        y, tape = opcount.replay(graph, x)
    except opcount.Escape:
        raise
    except Exception as exc:
        raise opcount.Escape(f"the operations of fast_exp could not be replayed: {exc}") from exc
    bad = ~np.isfinite(y)
    if bad.any():
        where = float(x[np.argmax(bad)])
        raise opcount.Escape(f"fast_exp({where!r}) is {y[np.argmax(bad)]}: every output on "
                             f"[{LOW:g}, {HIGH:g}] must be finite")  # fmt: skip
    return y, tape


def score(graph: dict, opcount, feedback: list[str] | None = None) -> dict[str, float | str]:
    """The metrics of the candidate's graph on both grids; ``feedback`` gets where on the
    validation grid the error is largest and the operations by kind (nothing held out)."""
    import numpy as np

    val, held = validation_grid(), heldout_grid()
    y, tape = run(graph, np.concatenate([val, held]), opcount)
    val_error, where = max_relative_error(val, y[: len(val)])
    held_error, _ = max_relative_error(held, y[len(val) :])
    if feedback is not None:
        feedback += [
            f"largest relative error on the validation grid: {val_error:.3g} at x = {where:g}",
            f"operations per element by kind (weighted total {tape.cost}): {tape.summary()}",
        ]
    return {
        "accuracy": digits(val_error),
        "ops": tape.cost,
        "heldout_accuracy": digits(held_error),
        "max_rel_error": val_error,
        "heldout_max_rel_error": held_error,
        "op_counts": tape.summary(),
    }


def check(graph: dict, opcount) -> str:
    """The fast path: the same graph on a small grid; a one-line summary."""
    import numpy as np

    x = np.linspace(LOW, HIGH, CHECK_POINTS).astype(np.float32)
    y, tape = run(graph, x, opcount)
    error, where = max_relative_error(x, y)
    return f"check ok: {tape.cost} ops, max relative error {error:.3g} (at x = {where:g})"


def write_feedback(lines: list[str]) -> None:
    """The lines for the next prompt in $GE_FEEDBACK (ge shows them; nothing without it)."""
    if os.environ.get("GE_FEEDBACK"):
        Path(os.environ["GE_FEEDBACK"]).write_text("\n".join(lines) + "\n", encoding="utf-8")


def evaluate(directory: Path, check_only: bool, feedback: list[str]) -> dict | str:
    """The candidate in `directory`: its metrics (or the check's line); Escape if rejected."""
    import rules

    path = directory / f"{MODULE}.py"
    problems = rules.source_violations(path.read_text(encoding="utf-8"))
    if problems:
        raise rules.Escape(f"{path.name} {problems[0]}")
    process = start_tracer(directory)
    import opcount

    graph = read_graph(process, opcount)
    return check(graph, opcount) if check_only else score(graph, opcount, feedback)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rules, the trace and a small grid")
    parser.add_argument("--metrics", default=os.environ.get("GE_METRICS", "metrics.json"))
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    import rules

    feedback: list[str] = []
    try:
        result = evaluate(here, args.check, feedback)
    except rules.Escape as exc:
        print(f"fast_exp rejected: {exc}", file=sys.stderr)
        write_feedback([f"fast_exp rejected: {exc}"])
        return 1
    if isinstance(result, str):
        print(result)
        return 0
    Path(args.metrics).write_text(json.dumps(result), encoding="utf-8")
    write_feedback(feedback)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
