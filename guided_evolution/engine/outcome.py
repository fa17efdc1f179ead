"""What became of a plan, and the stop of a generation in which nothing worked for one reason.

A generation whose every proposal is rejected, or whose every child fails its evaluation, for
one common reason (the model echoes the whole file, the evaluator misses its data) would
otherwise "complete" with nothing evolved: the run stops unfinished instead, with that reason and
what to change, so that `ge resume` carries on once it is fixed (a fixed evaluator: `ge resume
--reload-evaluator`, ``engine.reload``). A generation that failed for
many different reasons (bad luck, not a cause) goes on; so does one where any child succeeded.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.errors import GeError
from guided_evolution.evolution.plan import Plan

NEAR_DUPLICATE = "near-duplicate of "  # how novelty rejection's reasons begin
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class Outcome:
    """What became of one plan: its variant (None: rejected), whether it evaluated ok, and
    the reason it did not (a rejection's or the evaluation's)."""

    plan: Plan
    variant: str | None = None
    ok: bool = False
    reason: str | None = None


@dataclass(frozen=True)
class FailedGeneration:
    """Why a whole generation failed: the common reason, how often, and what to retry."""

    generation: int
    reason: str  # one example of the most common reason, as it was recorded
    count: int
    total: int
    rejected: bool  # proposals rejected (True) or children that failed their evaluation
    retry: dict[str, int]  # failed variants to evaluate again on resume -> their last attempt

    def error(self, run_dir: Path, seed_dir: str) -> GeError:
        """The one line that stops the run, with what to change."""
        share = f"({self.count} of {self.total})"
        if self.rejected and self.reason.startswith(NEAR_DUPLICATE):
            return GeError(
                f"every proposal of generation {self.generation} repeated an evaluated variant "
                f"{share}, e.g. {self.reason}",
                f"lower `[evolution.novelty] distance` (or raise its `retries`) in "
                f"{Path(seed_dir) / 'ge.toml'} and start a new `ge run`: a one-token edit of a "
                "30-token segment is at distance 0.03",
            )
        if self.rejected:
            return GeError(
                f"every proposal of generation {self.generation} was rejected: {self.reason} "
                f"{share}; the model's replies give no usable code",
                f"see `ge log {run_dir} --failures`; try a stronger model (a new `ge run --model "
                f"...`), or override the prompts in {Path(seed_dir) / 'prompts'} and "
                f"`ge resume {run_dir}`",
            )
        config = Path(seed_dir) / "ge.toml"
        if self.reason.startswith("timed out"):
            fix = f"raise timeout_s in [evaluator] of {config}"
        else:
            fix = f"fix the evaluator (its files in {seed_dir}, or [evaluator] in {config})"
        return GeError(
            f"every child of generation {self.generation} failed its evaluation: {self.reason} "
            f"{share}",
            f"see {run_dir / 'logs'} (or `ge show {run_dir} ID`); {fix}, then "
            f"`ge resume {run_dir} --reload-evaluator` (these children are evaluated again)",
        )


def _key(reason: str) -> str:
    if reason.startswith(NEAR_DUPLICATE):  # names a different variant each time: one reason
        return NEAR_DUPLICATE
    return _NUMBER.sub("N", reason.strip().lower())


def failed_generation(
    generation: int, outcomes: Sequence[Outcome], attempts: dict[str, int]
) -> FailedGeneration | None:
    """The failure of a generation in which no plan made a child that evaluated ok and most
    plans failed for one reason (numbers aside); None otherwise, or when the LLM budget cut the
    generation short. ``attempts`` maps failed variants to their latest evaluation attempt."""
    if not outcomes or any(o.ok for o in outcomes):
        return None
    if any(o.reason == "budget" for o in outcomes):
        return None
    keys = Counter(_key(o.reason or "unknown") for o in outcomes)
    key, count = keys.most_common(1)[0]
    if 2 * count <= len(outcomes):
        return None
    first = next(o for o in outcomes if _key(o.reason or "unknown") == key)
    retry = {o.variant: attempts.get(o.variant, 0) for o in outcomes if o.variant is not None}
    return FailedGeneration(
        generation, first.reason or "unknown", count, len(outcomes), first.variant is None, retry
    )
