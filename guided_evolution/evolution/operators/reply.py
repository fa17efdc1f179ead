"""From an LLM reply to a child, for every operator: the requested segment's new code spliced into
the parent, or ``Rejected`` with a one-line reason. Pure."""

from __future__ import annotations

from guided_evolution.evolution.codeblock import ExtractionError
from guided_evolution.evolution.diff_ops import diff_note, reply_code
from guided_evolution.evolution.diffedit import DiffError
from guided_evolution.evolution.operators.common import (
    REASON_CHARS,
    label,
    one_line,
    reflection_text,
)
from guided_evolution.evolution.operators.spec import Child, OperatorRequest, Rejected
from guided_evolution.evolution.segments import Genome
from guided_evolution.evolution.splice import SpliceError, splice


def child_from_reply(
    request: OperatorRequest,
    parent_genome: Genome,
    reply_text: str,
    *,
    reflection: str | None = None,
) -> Child:
    """The child a reply makes: the new code of the requested segment (``reply_match``: the block
    that defines the segment's names; the segment's part of a whole-file echo; a diff request:
    its SEARCH/REPLACE blocks applied, ``diff_ops``) spliced into the parent (crossover: into
    the primary parent). Raises Rejected with a one-line reason. For a later turn of a chain
    (EoT's apply) the reflection defaults to the reasoning carried in the request's conversation."""
    if request.stage == "reason":
        raise ValueError(
            "the 'reason' stage of EoT gives reasoning, not a child: use eot_apply_request"
        )
    base = request.base if request.base is not None else parent_genome
    try:
        seg = base.segment(request.segment)
    except (KeyError, ValueError, LookupError):
        raise Rejected(f"the parent has no segment {request.segment}") from None
    try:
        code, diff = reply_code(reply_text, base, request.segment, request.edit)
    except DiffError as err:
        raise Rejected(str(err)) from None
    except ExtractionError as err:
        raise Rejected(one_line(getattr(err, "reason", "") or str(err), REASON_CHARS)) from None
    try:
        files = splice(base, request.segment, code)
    except SpliceError as err:
        raise Rejected(one_line(getattr(err, "reason", "") or str(err), REASON_CHARS)) from None
    if all(files.get(p) == t for p, t in base.files.items()) and set(files) <= set(base.files):
        raise Rejected("the reply leaves the segment unchanged")
    if request.stage != "final":
        if reflection is None:
            said = [m["content"] for m in request.messages if m["role"] == "assistant"]
            reflection = said[-1] if said else None
        reflection = reflection_text(reflection) if reflection else None
    description = request.description or f"{request.operator} of {label(seg)}"
    return Child(
        files=files,
        operator=request.operator,
        segment=request.segment,
        prompt_name=request.prompt_name,
        persona=request.persona,
        parents=request.parents,
        temperature=request.temperature,
        reflection=reflection,
        description=description + diff_note(diff),
    )
