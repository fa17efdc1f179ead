"""A toy operator added through the recipe alone, for ``tests/evolution/test_operator_recipe.py``: this one
module (its spec and its request builder), its prompt (``PROMPT``, written as ``toy.txt`` into a
seed's ``prompts/``), and one registry line (``register``). It rewrites one segment, drawn in
place of a mutation from generation 1 on, with the mutation temperatures."""

from __future__ import annotations

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.operators import registry
from guided_evolution.evolution.operators.common import (
    label,
    segment_or_pick,
    segment_values,
    temperature,
)
from guided_evolution.evolution.operators.spec import (
    ALTERNATIVE,
    OperatorRequest,
    OperatorSpec,
    StepContext,
)

NAME = "toy"
PROMPT = """---system---
{{>system}}
---user---
Make the segment `{{segment}}` of `{{file}}` simpler without changing what it computes.

{{code}}

The rest of `{{file}}`, for reference only:

{{context}}

{{>rules}}
"""


def build(ctx: StepContext) -> OperatorRequest:
    """One segment of the step's genome, drawn, with the ``toy`` prompt."""
    seg = segment_or_pick(ctx.genome, None, ctx.rng)
    return OperatorRequest(
        operator=NAME,
        segment=seg.key,
        prompt_name="toy",
        persona=None,
        messages=ctx.lib.render("toy", **segment_values(ctx.genome, seg)),
        temperature=temperature(ctx.rng, ctx.temperature_range),
        parents=(ctx.parent_id,),
        description=f"toy simplification of {label(seg)}",
    )


def every_time(_evo: EvolutionConfig) -> float:
    """Drawn for every mutation step where it may be (EoT's coin, if any, comes first)."""
    return 1.0


SPEC = OperatorSpec(
    name=NAME,
    role=ALTERNATIVE,
    label="toy simplification",
    prompts=("toy",),
    temperature="mutation",
    probability=every_time,
    build=build,
)


def register() -> None:
    """The recipe's one registry line."""
    registry.register(SPEC)
