"""Fix: a failed child's segment repaired from the evaluator's failure reason and output tail
(``prompts/fix.txt``; ``fix_diff.txt`` for edit blocks). Not planned: the driver asks for it after
a failed evaluation (``[evolution] fix_attempts``)."""

from __future__ import annotations

import random
from collections.abc import Sequence

from guided_evolution.evolution.diff_ops import EDIT_DIFF, edit_for
from guided_evolution.evolution.operators.common import (
    DIFF_MIN_CHARS,
    OUTPUT_TAIL_CHARS,
    REASON_CHARS,
    fence,
    one_line,
    segment_or_pick,
    segment_values,
    temperature,
)
from guided_evolution.evolution.operators.spec import REPAIR, OperatorRequest, OperatorSpec
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome


def fix_request(
    lib: PromptLibrary,
    genome: Genome,
    parent_id: str,
    segment_key: str,
    failure_reason: str,
    output_tail: str,
    rng: random.Random,
    *,
    temperature_range: Sequence[float],
    edit_mode: str = "never",
    diff_min_chars: int = DIFF_MIN_CHARS,
    feedback: str = "",
    objectives: str | None = None,
) -> OperatorRequest:
    """Repair a failed variant's segment from the evaluator's failure reason, output tail and
    `feedback` (its stored feedback: the evaluator's words, or the failure's reason and last line).
    An unknown `segment_key` (e.g. '*' from an offline crossover) picks a random segment. When
    `edit_mode` asks for a diff, the ``fix_diff`` prompt asks for SEARCH/REPLACE blocks.
    `objectives`: the ``{{objectives}}`` text with the values of the version the failed one was
    changed from (None: the library's, names and directions only)."""
    keys = {s.key for s in genome.segments}
    seg = segment_or_pick(genome, segment_key if segment_key in keys else None, rng)
    tail = output_tail[-OUTPUT_TAIL_CHARS:] if output_tail.strip() else "(no output)"
    values = segment_values(genome, seg, feedback)
    values.update(
        # The reason can carry text the variant wrote: it is data, so it goes in a fence too.
        failure_reason=fence(one_line(failure_reason, REASON_CHARS) or "unknown", "text"),
        output_tail=fence(tail, "text"),
    )
    if objectives is not None:
        values["objectives"] = objectives
    edit = edit_for(seg.code, edit_mode, diff_min_chars)
    diff = edit == EDIT_DIFF
    return OperatorRequest(
        operator=SPEC.name,
        segment=seg.key,
        prompt_name="fix_diff" if diff else "fix",
        persona=None,
        messages=lib.render("fix_diff", **values) if diff else lib.render("fix", **values),
        temperature=temperature(rng, temperature_range),
        parents=(parent_id,),
        edit=edit,
    )


SPEC = OperatorSpec(
    name="fix",
    role=REPAIR,
    prompts=("fix", "fix_diff"),
    temperature="fix",
    diff=True,
)
