"""Mutation: one segment rewritten by a (task kind, persona) prompt, the GE paper's six tasks
times four personas (``prompts/mutate_<kind>_<persona>.txt``). The base step of every plan."""

from __future__ import annotations

import random
from collections.abc import Sequence

from guided_evolution.config import EvolutionConfig, GeConfig
from guided_evolution.errors import GeError
from guided_evolution.evolution.diff_ops import EDIT_DIFF, EDIT_WHOLE, edit_for, with_diff_rules
from guided_evolution.evolution.operators.common import (
    DIFF_MIN_CHARS,
    label,
    objectives_of,
    segment_or_pick,
    segment_values,
    temperature,
)
from guided_evolution.evolution.operators.spec import (
    SINGLE,
    OperatorRequest,
    OperatorSpec,
    StepContext,
)
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome

MUTATION_KINDS: tuple[str, ...] = (
    "tune",
    "unusual",
    "complex",
    "reduce",
    "unorthodox",
    "significant",
)
"""The GE paper's six mutation tasks, in its order: tune parameters, unusual parameter changes, a
complex modification, fewer parameters, an unorthodox change, a significant change."""
PERSONAS: tuple[str, ...] = ("concise", "expert", "inventive", "bumbler")
ARM_PREFIX = "mutation/"  # its bandit arms: mutation/<persona>


def mutation_prompt_name(kind: str, persona: str) -> str:
    """File name (without .txt) of the mutation prompt for a task kind and persona."""
    return f"mutate_{kind}_{persona}"


def mutation_request(
    lib: PromptLibrary,
    genome: Genome,
    parent_id: str,
    rng: random.Random,
    *,
    temperature_range: Sequence[float],
    personas: Sequence[str],
    kinds: Sequence[str] | None = None,
    segment_key: str | None = None,
    edit_mode: str = "never",
    diff_min_chars: int = DIFF_MIN_CHARS,
    feedback: str = "",
    chosen_persona: str | None = None,
    objectives: str | None = None,
) -> OperatorRequest:
    """Mutate one segment (random unless `segment_key`) with a random (task kind, persona) prompt;
    `feedback`: the evaluator's words about the parent (``{{feedback}}``, fenced); `chosen_persona`:
    the bandit's choice; `objectives`: ``{{objectives}}`` with values (None: the library's).

    A persona outside PERSONAS works when the library has `mutate_<kind>_<persona>` files for it
    (a seed can add its own personas in its `prompts/` directory). When `edit_mode` asks for a
    diff (``diff_ops``), the same prompt asks for SEARCH/REPLACE blocks instead (``diff_rules``
    for ``rules``; the generic ``mutation_diff`` when a seed's prompt does not include the rules)."""
    kinds = tuple(kinds) if kinds else MUTATION_KINDS
    if not personas:
        raise GeError(
            "no personas configured for mutation", 'set [evolution] personas, e.g. ["expert"]'
        )
    for persona in personas:
        if not any(mutation_prompt_name(k, persona) in lib for k in kinds):
            raise GeError(
                f"persona {persona!r} has no mutation prompts",
                f"add prompts/{mutation_prompt_name(kinds[0], persona)}.txt (one per task kind) to "
                f"the seed, or use one of {', '.join(PERSONAS)}",
            )
    choices = [(k, p) for k in kinds for p in personas if mutation_prompt_name(k, p) in lib]
    if chosen_persona:
        choices = [c for c in choices if c[1] == chosen_persona] or choices
    seg = segment_or_pick(genome, segment_key, rng)
    kind, persona = rng.choice(choices)
    name = mutation_prompt_name(kind, persona)
    extra = {} if objectives is None else {"objectives": objectives}
    values = segment_values(genome, seg, feedback) | extra
    diff = edit_for(seg.code, edit_mode, diff_min_chars) == EDIT_DIFF
    messages = with_diff_rules(lib, name, values) if diff else lib.render(name, **values)
    if messages is None:  # a seed's prompt without the rules: the generic diff prompt
        name, messages = "mutation_diff", lib.render("mutation_diff", **values)
    return OperatorRequest(
        operator=SPEC.name,
        segment=seg.key,
        prompt_name=name,
        persona=persona,
        messages=messages,
        temperature=temperature(rng, temperature_range),
        parents=(parent_id,),
        detail=kind,
        edit=EDIT_DIFF if diff else EDIT_WHOLE,
        description=f"mutation of {label(seg)} by {persona} ({kind})",
    )


def build(ctx: StepContext) -> OperatorRequest:
    """A step's mutation: the persona first (the bandit's draw), then the request's draws; the
    evaluator's feedback on the parent when the step works on the parent itself; the objectives
    with the parent's and the seed's values."""
    persona = ctx.persona()
    who = "this version" if ctx.of_parent else "the parent of this version"
    objectives = objectives_of(
        ctx.directions, ctx.source.objective_metrics, [(who, ctx.parent_id)], ctx.seed_id
    )
    return mutation_request(
        ctx.lib, ctx.genome, ctx.parent_id, ctx.rng,
        temperature_range=ctx.temperature_range, personas=ctx.personas,
        edit_mode=ctx.edit_mode, diff_min_chars=ctx.diff_min_chars,
        feedback=ctx.source.feedback(ctx.parent_id) if ctx.of_parent else "",
        chosen_persona=persona, objectives=objectives,
    )  # fmt: skip


def arms(cfg: GeConfig) -> tuple[str, ...]:
    """``mutation/<persona>`` for each configured persona."""
    return tuple(f"{ARM_PREFIX}{p}" for p in cfg.evolution.personas)


def probability(evo: EvolutionConfig) -> float:
    """How often a planned child is mutated."""
    return evo.mutation_probability


SPEC = OperatorSpec(
    name="mutation",
    role=SINGLE,
    prompts=(
        *(mutation_prompt_name(k, p) for k in MUTATION_KINDS for p in PERSONAS),
        "mutation_diff",
    ),
    temperature="mutation",
    first_temperature="initial",
    diff=True,
    counterpart="offline-mutation",
    arms=arms,
    probability=probability,
    build=build,
)
