"""Crossover: the two parents' versions of one segment merged by the LLM (``prompts/crossover.txt``)
into the files of the plan's parent. The plan's first step of a child with two parents.

The direction is the plan's (GE's were fixed): a crossed pair is planned as two children, (A with
B) and (B with A), and each keeps its own primary parent's files; nothing here re-draws it."""

from __future__ import annotations

import random
from collections.abc import Sequence

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.operators.common import (
    fence,
    label,
    objectives_of,
    segment_values,
    temperature,
)
from guided_evolution.evolution.operators.spec import (
    PAIR,
    OperatorRequest,
    OperatorSpec,
    StepContext,
)
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome, differing_segments


def crossover_request(
    lib: PromptLibrary,
    a: Genome,
    a_id: str,
    b: Genome,
    b_id: str,
    rng: random.Random,
    *,
    temperature_range: Sequence[float],
    objectives: str | None = None,
) -> OperatorRequest | None:
    """Merge the two parents' versions of one segment where they differ; None if they don't.

    ``a`` is the primary parent (the plan's): the child keeps A's files (``base``) with that
    segment replaced by the merge, and ``parents`` is (a_id, b_id), the base first (``Ge-Parents``).
    One draw from ``rng`` for the segment, then the temperature's. `objectives`: the
    ``{{objectives}}`` text with both parents' values (None: the library's)."""
    keys = [k for k in differing_segments(a, b) if k in a.keys and k in b.keys]
    if not keys:
        return None
    key = rng.choice(list(keys))
    base, base_id, other, other_id = a, a_id, b, b_id
    seg = base.segment(key)
    values = segment_values(base, seg)
    values["primary_code"] = values["code"]
    values["secondary_code"] = fence(other.segment(key).code)
    if objectives is not None:
        values["objectives"] = objectives
    detail = f"base {base_id}, ideas from {other_id}"
    return OperatorRequest(
        operator=SPEC.name,
        segment=key,
        prompt_name="crossover",
        persona=None,
        messages=lib.render("crossover", **values),
        temperature=temperature(rng, temperature_range),
        parents=(a_id, b_id),
        detail=detail,
        base=base,
        description=f"crossover of {label(seg)} ({detail})",
    )


def build(ctx: StepContext) -> OperatorRequest | None:
    """A step's crossover of the genome with the step's partner (None: identical parents), with
    the objectives and both parents' values."""
    if ctx.other is None:
        raise ValueError("a crossover step needs a partner")
    other = ctx.source.genome(ctx.other)
    versions = [("the first version", ctx.parent_id), ("the second version", ctx.other)]
    objectives = objectives_of(ctx.directions, ctx.source.objective_metrics, versions, ctx.seed_id)
    return crossover_request(
        ctx.lib, ctx.genome, ctx.parent_id, other, ctx.other, ctx.rng,
        temperature_range=ctx.temperature_range, objectives=objectives,
    )  # fmt: skip


def probability(evo: EvolutionConfig) -> float:
    """How often a pair of parents crosses over."""
    return evo.crossover_probability


SPEC = OperatorSpec(
    name="crossover",
    role=PAIR,
    prompts=("crossover",),
    temperature="crossover",
    counterpart="offline-crossover",
    probability=probability,
    build=build,
)
