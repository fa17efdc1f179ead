"""Evaluate the fast_exp seed in the current directory; write JSON metrics.

`approx.fast_exp` runs once on a traced float32 array (opcount.py): the validation grid and the
held-out grid together. Its output, cast to float32, is compared with float64 numpy exp.

    python evaluate.py [--metrics FILE]   # metrics go to $GE_METRICS (or FILE)
    python evaluate.py --check            # rules, import, a small grid: shape, dtype, finite

Metrics: accuracy (selects, max): -log10 of the maximum relative error on the validation grid
(131,073 evenly spaced points of [-87, 88]); ops (selects, min): the weighted operation count per
element; heldout_accuracy (reported only): the same as accuracy on 131,072 random points of the
range; max_rel_error, heldout_max_rel_error, op_counts (reported only). A candidate that breaks
the contract (calls exp, leaves float32, loops over elements, ...) fails with one line saying so.
Feedback ($GE_FEEDBACK, when set): where the validation error is largest and the operations by
kind, or the line saying why the candidate was rejected.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

LOW, HIGH = -87.0, 88.0  # exp stays a finite, normal float32 on this range
VAL_POINTS = 2**17 + 1
HELDOUT_POINTS = 2**17
HELDOUT_SEED = 20240714
CHECK_POINTS = 1001
REL_ERROR_FLOOR = 1e-12  # caps accuracy at 12 digits (float32 output: about 7.2 at best)
MODULE = "approx"


def validation_grid() -> np.ndarray:
    """The fixed, evenly spaced float32 validation points (selection)."""
    return np.linspace(LOW, HIGH, VAL_POINTS).astype(np.float32)


def heldout_grid() -> np.ndarray:
    """The fixed random float32 held-out points (reported only)."""
    return np.random.default_rng(HELDOUT_SEED).uniform(LOW, HIGH, HELDOUT_POINTS).astype(np.float32)


def max_relative_error(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """The maximum relative error of float32 `y` against float64 exp(x), and where it is."""
    reference = np.exp(x.astype(np.float64))
    error = np.abs(y.astype(np.float64) - reference) / reference
    worst = int(np.argmax(error))
    return float(error[worst]), float(x[worst])


def digits(rel_error: float) -> float:
    """The accuracy objective: -log10 of the maximum relative error (floored at 1e-12)."""
    return round(-math.log10(max(rel_error, REL_ERROR_FLOOR)), 4)


def load(directory: Path, opcount):
    """The candidate module after its source passed the static rules; Escape otherwise."""
    path = directory / f"{MODULE}.py"
    problems = opcount.source_violations(path.read_text(encoding="utf-8"))
    if problems:
        raise opcount.Escape(f"{path.name} {problems[0]}")
    sys.path.insert(0, str(directory))
    try:
        module = importlib.import_module(MODULE)
    except Exception as exc:  # a broken candidate: one line, not a traceback
        raise opcount.Escape(f"importing {path.name} failed: {type(exc).__name__}: {exc}") from exc
    if not callable(getattr(module, "fast_exp", None)):
        raise opcount.Escape(f"{path.name} defines no function fast_exp(x)")
    return module


def run(module, x: np.ndarray, opcount) -> tuple[np.ndarray, object]:
    """fast_exp on `x`, traced: float32 output and the tape; Escape for any contract breach."""
    try:
        y, tape = opcount.trace(module.fast_exp, x)
    except opcount.Escape:
        raise
    except Exception as exc:
        raise opcount.Escape(f"fast_exp raised {type(exc).__name__}: {exc}") from exc
    bad = ~np.isfinite(y)
    if bad.any():
        where = float(x[np.argmax(bad)])
        raise opcount.Escape(f"fast_exp({where!r}) is {y[np.argmax(bad)]}: every output on "
                             f"[{LOW:g}, {HIGH:g}] must be finite")  # fmt: skip
    return y, tape


def score(module, opcount, feedback: list[str] | None = None) -> dict[str, float | str]:
    """The metrics of the candidate: one traced run over both grids; ``feedback`` gets where on
    the validation grid the error is largest and the operations by kind (nothing held out)."""
    val, held = validation_grid(), heldout_grid()
    y, tape = run(module, np.concatenate([val, held]), opcount)
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


def check(module, opcount) -> str:
    """The fast path: a small grid through the same contract; a one-line summary."""
    x = np.linspace(LOW, HIGH, CHECK_POINTS).astype(np.float32)
    y, tape = run(module, x, opcount)
    if y.shape != x.shape or y.dtype != np.float32:
        raise opcount.Escape(f"fast_exp gave {y.dtype} {y.shape}, expected float32 {x.shape}")
    error, where = max_relative_error(x, y)
    return f"check ok: {tape.cost} ops, max relative error {error:.3g} (at x = {where:g})"


def write_feedback(lines: list[str]) -> None:
    """The lines for the next prompt in $GE_FEEDBACK (ge shows them; nothing without it)."""
    if os.environ.get("GE_FEEDBACK"):
        Path(os.environ["GE_FEEDBACK"]).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="rules, import and a small grid")
    parser.add_argument("--metrics", default=os.environ.get("GE_METRICS", "metrics.json"))
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here))
    import opcount

    feedback: list[str] = []
    try:
        module = load(here, opcount)
        if args.check:
            print(check(module, opcount))
            return 0
        metrics = score(module, opcount, feedback)
    except opcount.Escape as exc:
        print(f"fast_exp rejected: {exc}", file=sys.stderr)
        write_feedback([f"fast_exp rejected: {exc}"])
        return 1
    Path(args.metrics).write_text(json.dumps(metrics), encoding="utf-8")
    write_feedback(feedback)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
