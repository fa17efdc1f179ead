"""Evolution of Thought: a two-turn chain. First the LLM is asked why an elite's change of one
segment (against the seed) helped (``prompts/eot_reason.txt``); then, in the same conversation, to
apply that insight to a segment of the child's parent (``prompts/eot_apply.txt``). The plan draws
it in place of a mutation, with a teacher (the elite)."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from guided_evolution.config import EvolutionConfig, GeConfig
from guided_evolution.evolution.diff_ops import EDIT_DIFF, EDIT_WHOLE, edit_for, with_diff_rules
from guided_evolution.evolution.operators.common import (
    DIFF_MIN_CHARS,
    fence,
    format_metrics,
    label,
    objectives_of,
    objectives_text,
    reflection_text,
    segment_or_pick,
    segment_values,
    temperature,
)
from guided_evolution.evolution.operators.spec import (
    ALTERNATIVE,
    OperatorRequest,
    OperatorSpec,
    Rejected,
    StepContext,
)
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome, differing_segments

ARM = "eot/-"  # its bandit arm: its turns use no persona


def eot_reason_request(
    lib: PromptLibrary,
    elite: Genome,
    elite_id: str,
    elite_metrics: Mapping[str, object],
    seed: Genome,
    seed_metrics: Mapping[str, object] | None,
    rng: random.Random,
    *,
    temperature_range: Sequence[float],
    directions: Mapping[str, str] | None = None,
) -> OperatorRequest | None:
    """Evolution of Thought, step 1: ask why the elite's change of one segment (vs the seed)
    helped. None when the elite does not differ from the seed. `directions` (metric name ->
    'max' | 'min') tells the model which way each metric is better."""
    keys = [k for k in differing_segments(seed, elite) if k in seed.keys and k in elite.keys]
    if not keys:
        return None
    key = rng.choice(list(keys))
    seg = elite.segment(key)
    values = segment_values(elite, seg)
    values.update(
        seed_code=fence(seed.segment(key).code),
        elite_code=values["code"],
        metrics=format_metrics(elite_metrics, seed_metrics, directions),
        objectives=objectives_text(directions or {}),  # the values: in {{metrics}}
    )
    return OperatorRequest(
        operator=SPEC.name,
        segment=key,
        prompt_name="eot_reason",
        persona=None,
        messages=lib.render("eot_reason", **values),
        temperature=temperature(rng, temperature_range),
        parents=(elite_id,),
        stage="reason",
        detail=f"lesson from {elite_id} ({key})",
    )


def eot_apply_request(
    lib: PromptLibrary,
    reason_request: OperatorRequest,
    reasoning: str,
    target: Genome,
    target_id: str,
    rng: random.Random,
    *,
    temperature_range: Sequence[float],
    edit_mode: str = "never",
    diff_min_chars: int = DIFF_MIN_CHARS,
    objectives: str | None = None,
) -> OperatorRequest:
    """Evolution of Thought, step 2: the same conversation continues with the model's reasoning
    and asks to apply it to a segment of `target` (not the examined segment of the elite itself,
    unless it has no other); as SEARCH/REPLACE blocks when `edit_mode` asks for a diff and the
    ``eot_apply`` prompt includes the rules. `objectives`: the ``{{objectives}}`` text with the
    target's values (None: the library's)."""
    if reason_request.stage != "reason":
        raise ValueError("eot_apply_request needs the request of the 'reason' stage")
    thought = reflection_text(reasoning)
    if not thought:
        raise Rejected("the EoT reasoning reply has no text")
    segments = list(target.segments)
    if target_id == reason_request.parents[0]:
        segments = [s for s in segments if s.key != reason_request.segment] or segments
    seg = rng.choice(segments) if segments else segment_or_pick(target, None, rng)
    values = segment_values(target, seg)
    if objectives is not None:
        values["objectives"] = objectives
    diffed = None
    if edit_for(seg.code, edit_mode, diff_min_chars) == EDIT_DIFF:
        diffed = with_diff_rules(lib, "eot_apply", values)
    rendered = diffed or lib.render("eot_apply", **values)
    follow_up = [m for m in rendered if m["role"] != "system"]
    return OperatorRequest(
        operator=SPEC.name,
        segment=seg.key,
        prompt_name="eot_apply",
        persona=None,
        messages=[*reason_request.messages, {"role": "assistant", "content": thought}, *follow_up],
        temperature=temperature(rng, temperature_range),
        parents=(target_id,),
        stage="apply",
        detail=reason_request.detail,
        edit=EDIT_DIFF if diffed else EDIT_WHOLE,
        description=f"eot on {label(seg)}, {reason_request.detail}",
    )


def build(ctx: StepContext) -> OperatorRequest | None:
    """The reason turn about the step's teacher (None: it does not differ from the seed)."""
    if ctx.other is None:
        raise ValueError("an EoT step needs a teacher")
    elite, source = ctx.other, ctx.source
    return eot_reason_request(
        ctx.lib, source.genome(elite), elite, source.objective_metrics(elite) or {},
        source.genome(ctx.seed_id), source.objective_metrics(ctx.seed_id), ctx.rng,
        temperature_range=ctx.temperature_range, directions=ctx.directions,
    )  # fmt: skip


def follow(ctx: StepContext, reason: OperatorRequest, reply_text: str) -> OperatorRequest:
    """The apply turn: the reasoning applied to a segment of the step's genome, with the
    objectives and its parent's and the seed's values."""
    who = "this version" if ctx.of_parent else "the parent of this version"
    objectives = objectives_of(
        ctx.directions, ctx.source.objective_metrics, [(who, ctx.parent_id)], ctx.seed_id
    )
    return eot_apply_request(
        ctx.lib, reason, reply_text, ctx.genome, ctx.parent_id, ctx.rng,
        temperature_range=ctx.temperature_range,
        edit_mode=ctx.edit_mode, diff_min_chars=ctx.diff_min_chars, objectives=objectives,
    )  # fmt: skip


def arms(cfg: GeConfig) -> tuple[str, ...]:
    """``eot/-``, unless ``eot_probability = 0``."""
    return (ARM,) if cfg.evolution.eot_probability > 0 else ()


def probability(evo: EvolutionConfig) -> float:
    """How often a mutation step is EoT instead (where there are teachers)."""
    return evo.eot_probability


def start_generation(evo: EvolutionConfig) -> int:
    """The first generation that may use EoT."""
    return evo.eot_start_generation


SPEC = OperatorSpec(
    name="eot",
    role=ALTERNATIVE,
    prompts=("eot_reason", "eot_apply"),
    temperature="eot",
    calls=("reason", "apply"),
    teacher=True,
    diff=True,
    arms=arms,
    probability=probability,
    start_generation=start_generation,
    build=build,
    follow=follow,
)
