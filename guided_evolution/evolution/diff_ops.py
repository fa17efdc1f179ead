"""Diff edits in the LLM operators: when a request asks for SEARCH/REPLACE blocks, how its prompt
is rendered, and the segment's new code from such a reply (``diffedit`` applies the blocks).

``[evolution.diff] mode`` picks per request: "never" (the GE paper: the whole segment back),
"always", or "auto" (segments of at least ``[evolution.diff] min_chars`` characters). A diff-mode prompt is the
usual one with ``diff_rules`` standing in for ``rules`` (the task and persona words stay; only the
answer format changes).
"""

from __future__ import annotations

from collections.abc import Mapping

from guided_evolution.evolution.codeblock import ExtractionError
from guided_evolution.evolution.diffedit import (
    REASON_NO_BLOCKS,
    DiffError,
    DiffResult,
    apply_diff,
    wants_diff,
)
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.reply_match import segment_code
from guided_evolution.evolution.segments import Genome, context_view

EDIT_WHOLE, EDIT_DIFF = "whole", "diff"


def edit_for(code: str, mode: str, min_chars: int) -> str:
    """The edit form a request for a segment of `code` asks for: EDIT_DIFF or EDIT_WHOLE."""
    return EDIT_DIFF if wants_diff(code, mode, min_chars) else EDIT_WHOLE


def with_diff_rules(
    lib: PromptLibrary, name: str, values: Mapping[str, str]
) -> list[dict[str, str]] | None:
    """Prompt `name` rendered with ``diff_rules`` in place of its ``{{>rules}}``; None when that
    changes nothing (a seed's override of the prompt that does not include the rules)."""
    diffed = lib.with_part("rules", "diff_rules").render(name, **values)
    return None if diffed == lib.render(name, **values) else diffed


def reply_code(reply: str, genome: Genome, key: str, edit: str) -> tuple[str, DiffResult | None]:
    """The new code a reply proposes for segment `key`, and the applied diff (None: a whole segment).

    EDIT_DIFF: the reply's SEARCH/REPLACE blocks applied to the segment's code (a search that
    reaches the rest of the file or the notes is rejected as outside); a reply without any block
    is read as a whole segment, and when it is not one either, DiffError names the missing blocks.
    Raises DiffError or ``codeblock.ExtractionError``.
    """
    if edit != EDIT_DIFF:
        return segment_code(reply, genome, key), None
    seg = genome.segment(key)
    outside = f"{context_view(genome, key)}\n{seg.notes}"
    try:
        result = apply_diff(reply, seg.code, marker=genome.marker, outside=outside)
    except DiffError as err:
        if err.reason != REASON_NO_BLOCKS:
            raise
        try:
            return segment_code(reply, genome, key), None
        except ExtractionError:  # neither blocks nor a whole segment: the blocks are missing
            raise err from None
    return result.code, result


def diff_note(result: DiffResult | None) -> str:
    """Words for a child's description: how many blocks, how many matched ignoring whitespace."""
    if result is None:
        return ""
    blocks = f"{result.blocks} edit block{'s' if result.blocks != 1 else ''}"
    fuzzy = f", {len(result.tolerant)} matched ignoring whitespace" if result.tolerant else ""
    return f" [{blocks}{fuzzy}]"
