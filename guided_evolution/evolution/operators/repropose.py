"""Novelty re-proposal (``[evolution.novelty] distance``): a request asked again, in the same
conversation, after its reply nearly repeated an evaluated variant (``prompts/novelty.txt``). A
follow-up: the child keeps the operator, temperature and form of the request it continues."""

from __future__ import annotations

import dataclasses

from guided_evolution.evolution.operators.common import fence, label
from guided_evolution.evolution.operators.spec import FOLLOW_UP, OperatorRequest, OperatorSpec
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome


def novelty_request(
    lib: PromptLibrary,
    request: OperatorRequest,
    reply_text: str,
    genome: Genome,
    duplicate_id: str,
    duplicate_code: str,
    distance: float,
) -> OperatorRequest:
    """The same request again after a reply that nearly repeated an evaluated variant
    (``[evolution.novelty] distance``): the conversation continues with that reply and
    ``novelty``, which shows the evaluated variant's segment fenced and asks for another idea in
    the same form (whole segment or edit blocks) against the same parent segment."""
    base = request.base if request.base is not None else genome
    key = request.segment
    name = label(base.segment(key)) if key in base.keys else key
    code = fence(duplicate_code)
    rendered = lib.render("novelty", segment=name, variant=duplicate_id, duplicate_code=code,
                          distance=f"{distance:.3g}")  # fmt: skip
    follow_up = [m for m in rendered if m["role"] != "system"]
    said = {"role": "assistant", "content": reply_text}
    return dataclasses.replace(request, messages=[*request.messages, said, *follow_up])


SPEC = OperatorSpec(name="novelty", role=FOLLOW_UP, prompts=("novelty",), temperature=None)
