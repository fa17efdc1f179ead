"""Diff edits: SEARCH/REPLACE blocks from an LLM reply, applied to one segment's code.

For a large segment, asking for edits instead of the whole segment saves most of the reply's
tokens (``benchmarks/diff_tokens.py``). The block syntax (``prompts/diff_rules.txt`` teaches it)::

    <<<<<<< SEARCH
    lines copied from the segment, exactly
    =======
    the lines that take their place
    >>>>>>> REPLACE

Each marker is a line of its own: 5 to 9 ``<``/``=``/``>`` signs (7 is canonical), the words
SEARCH/REPLACE in any case, optional indentation. Everything outside blocks (prose, fence lines,
a ``<think>`` block) is ignored; a section that is itself fenced (``````python`` first line,
`````` last line) loses its fence. CRLF and CR become LF.

Matching is by whole lines, in block order, each block against the code as the blocks before it
left it: an exact match first (several exact matches: ambiguous); else the tolerant fallback,
which ignores a uniform shift of indentation and trailing spaces (and blank lines at the search's
edges) and moves the replacement by the same shift. The fallback keeps the code's structure: a
place matches only where every line of the search sits at the same depth relative to the search's
shallowest line as the code's line does to the place's shallowest (widths, a tab counting to the
next multiple of 8); text that matches only with other relative depths is rejected
(``REASON_INDENT``: applying it would move statements between blocks), and so is a replacement
line that the shift would put left of column 0.
A rejection raises :class:`DiffError`, whose ``reason`` is one of the stable ``REASON_*`` strings
(what ``ge log --failures`` groups by) and whose ``block`` is the 1-based block number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guided_evolution.evolution.codeblock import ExtractionError, strip_reasoning
from guided_evolution.evolution.segments import DEFAULT_MARKER, NOTE_MARKER

REASON_NO_BLOCKS = "diff: no SEARCH/REPLACE block"
REASON_MALFORMED = "diff: malformed SEARCH/REPLACE block"
REASON_TRUNCATED = "diff: truncated SEARCH/REPLACE block"
REASON_EMPTY_SEARCH = "diff: empty SEARCH text"
REASON_NOT_FOUND = "diff: SEARCH text not found in the segment"
REASON_AMBIGUOUS = "diff: SEARCH text found several times"
REASON_OUTSIDE = "diff: SEARCH text reaches outside the segment"
REASON_UNFINISHED = "diff: the reply ended inside its reasoning"
REASON_INDENT = "diff: SEARCH text matches only with another relative indentation"

EDIT_MODES: tuple[str, ...] = ("never", "always", "auto")
SEARCH_LINE, DIVIDER_LINE, REPLACE_LINE = "<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE"

_SEARCH_RE = re.compile(r"[ \t]*<{5,9}[ \t]*search[ \t]*", re.I)
_DIVIDER_RE = re.compile(r"[ \t]*={5,9}[ \t]*")
_REPLACE_RE = re.compile(r"[ \t]*>{5,9}[ \t]*replace[ \t]*", re.I)
_FENCE_OPEN_RE = re.compile(r"[ \t]*(`{3,}|~{3,})[\w+.-]*[ \t]*")
_SNIPPET_CHARS = 80


class DiffError(Exception):
    """A diff reply that cannot be applied: ``reason`` (a ``REASON_*``), ``block`` and ``detail``.

    ``str()`` is one line: the reason and the block number (numbers are blanked when failures
    are grouped, so each reason stays one group); ``detail`` adds what was searched for.
    """

    def __init__(self, reason: str, block: int | None = None, detail: str = "") -> None:
        self.reason = reason
        self.block = block
        self.detail = " ".join(detail.split())
        super().__init__(reason if block is None else f"{reason} (block {block})")


@dataclass(frozen=True)
class DiffBlock:
    """One edit: the lines to find and the lines that take their place.

    Both are LF text whose every line ends with a newline ("" is no lines; "\\n" one blank line).
    """

    search: str
    replace: str

    def render(self) -> str:
        """The block in the syntax the prompts ask for, ending with a newline."""
        search, replace = _text(_lines(self.search)), _text(_lines(self.replace))
        return f"{SEARCH_LINE}\n{search}{DIVIDER_LINE}\n{replace}{REPLACE_LINE}\n"


@dataclass(frozen=True)
class DiffResult:
    """The segment's code after every block, how many blocks, and which needed the fallback."""

    code: str
    blocks: int
    tolerant: tuple[int, ...]  # 1-based numbers of the blocks matched ignoring whitespace


def wants_diff(segment_text: str, mode: str, min_chars: int) -> bool:
    """Whether to ask for SEARCH/REPLACE blocks: ``mode`` is "never", "always" or "auto"
    (auto: segments of at least ``min_chars`` characters)."""
    if mode not in EDIT_MODES:
        raise ValueError(f"edit mode {mode!r} is not one of {', '.join(EDIT_MODES)}")
    return mode == "always" or (mode == "auto" and len(segment_text) >= min_chars)


def _lines(text: str) -> list[str]:
    """LF lines without their newlines; a final newline ends the last line, it adds none."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.removesuffix("\n").split("\n") if text else []


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _snippet(lines: list[str]) -> str:
    text = " | ".join(line.strip() for line in lines if line.strip())
    return text if len(text) <= _SNIPPET_CHARS else text[: _SNIPPET_CHARS - 3] + "..."


def _unfence(lines: list[str]) -> list[str]:
    """A section that is itself a fenced block, without its two fence lines."""
    opening = _FENCE_OPEN_RE.fullmatch(lines[0]) if len(lines) >= 2 else None
    if opening is not None and lines[-1].strip() == opening.group(1):
        return lines[1:-1]
    return lines


def _block(search: list[str], replace: list[str]) -> DiffBlock:
    return DiffBlock(_text(_unfence(search)), _text(_unfence(replace)))


def parse_blocks(reply: str) -> list[DiffBlock]:
    """Every SEARCH/REPLACE block of a reply, in order; DiffError when there is none or one
    is malformed or cut off."""
    try:
        text = strip_reasoning(reply.replace("\r\n", "\n").replace("\r", "\n"))
    except ExtractionError as err:
        raise DiffError(REASON_UNFINISHED, None, err.reason) from None
    blocks: list[DiffBlock] = []
    state, search, replace = "out", [], []  # state: out | search | replace
    for line in text.split("\n"):
        if _SEARCH_RE.fullmatch(line):
            if state != "out":
                raise DiffError(REASON_MALFORMED, len(blocks) + 1, "SEARCH line inside a block")
            state, search, replace = "search", [], []
        elif _REPLACE_RE.fullmatch(line):
            if state != "replace":
                detail = "REPLACE line without its SEARCH and ======= lines"
                raise DiffError(REASON_MALFORMED, len(blocks) + 1, detail)
            blocks.append(_block(search, replace))
            state = "out"
        elif state == "search" and _DIVIDER_RE.fullmatch(line):
            state = "replace"
        elif state == "replace" and _DIVIDER_RE.fullmatch(line):
            raise DiffError(REASON_MALFORMED, len(blocks) + 1, "a second ======= line")
        elif state != "out":
            (search if state == "search" else replace).append(line)
    if state != "out":
        raise DiffError(REASON_TRUNCATED, len(blocks) + 1, f"no {REPLACE_LINE} line")
    if not blocks:
        raise DiffError(REASON_NO_BLOCKS)
    return blocks


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _width(indent: str) -> int:
    """The column an indentation reaches (a tab goes to the next multiple of 8, as Python's)."""
    return len(indent.expandtabs(8))


def _depths(lines: list[str]) -> list[int | None]:
    """Each line's indentation width relative to the block's shallowest line (None: blank)."""
    widths = [_width(_indent(line)) if line.strip() else None for line in lines]
    base = min((w for w in widths if w is not None), default=0)
    return [None if w is None else w - base for w in widths]


def _base_indent(lines: list[str]) -> str:
    """The indentation of the block's shallowest non-blank line (the first such, of several)."""
    found = [_indent(line) for line in lines if line.strip()]
    return min(found, key=_width, default="")


def _strip_blank_edges(search: list[str], replace: list[str]) -> tuple[list[str], list[str]]:
    """Blank lines at the search's edges dropped, and as many at the replacement's edges."""
    while search and not search[0].strip():
        search = search[1:]
        replace = replace[1:] if replace and not replace[0].strip() else replace
    while search and not search[-1].strip():
        search = search[:-1]
        replace = replace[:-1] if replace and not replace[-1].strip() else replace
    return search, replace


def _find(code: list[str], search: list[str], tolerant: bool) -> list[int]:
    """Start lines where `search` matches a run of `code` (exactly, or ignoring whitespace)."""
    n = len(search)
    if tolerant:
        want = [line.strip() for line in search]
        have = [line.strip() for line in code]
        return [i for i in range(len(code) - n + 1) if have[i : i + n] == want]
    return [i for i in range(len(code) - n + 1) if code[i : i + n] == search]


def _reindent(replace: list[str], searched: int, found: list[str], number: int) -> list[str]:
    """The replacement moved by the shift from the search's base width ``searched`` to the found
    place's, each line keeping its depth relative to the base, indented in the place's style (tabs
    when its lines use them); DiffError when a line would start left of column 0."""
    shift = _width(_base_indent(found)) - searched
    tabs = any("\t" in _indent(line) for line in found)
    out = []
    for line in replace:
        if not line.strip():
            out.append("")
            continue
        column = _width(_indent(line)) + shift
        if column < 0:
            detail = f"the replacement line {line.strip()[:_SNIPPET_CHARS]!r} would start left of column 0"
            raise DiffError(REASON_INDENT, number, detail)
        indent = "\t" * (column // 8) + " " * (column % 8) if tabs else " " * column
        out.append(indent + line.lstrip(" \t"))
    return out


def _same_structure(search: list[str], found: list[str]) -> bool:
    """Whether each line of ``found`` is at the depth the search puts it (relative depths)."""
    return all(
        a is None or b is None or a == b
        for a, b in zip(_depths(search), _depths(found), strict=True)
    )


def _check_inside(search: list[str], marker: str, number: int) -> None:
    for line in search:
        if line.strip() in (marker, NOTE_MARKER):
            raise DiffError(REASON_OUTSIDE, number, f"contains the line {line.strip()!r}")


def _apply_one(
    code: list[str], block: DiffBlock, number: int, marker: str, outside: list[str]
) -> tuple[list[str], bool]:
    """`code` with one block applied, and whether the tolerant fallback found it."""
    search, replace = _lines(block.search), _lines(block.replace)
    if not "".join(search).strip():
        raise DiffError(REASON_EMPTY_SEARCH, number)
    _check_inside(search, marker, number)
    starts = _find(code, search, tolerant=False)
    if len(starts) > 1:
        raise DiffError(REASON_AMBIGUOUS, number, f"{len(starts)} places: {_snippet(search)}")
    if len(starts) == 1:
        return code[: starts[0]] + replace + code[starts[0] + len(search) :], False
    search, replace = _strip_blank_edges(search, replace)
    texts = _find(code, search, tolerant=True)
    starts = [i for i in texts if _same_structure(search, code[i : i + len(search)])]
    if len(starts) > 1:
        raise DiffError(REASON_AMBIGUOUS, number, f"{len(starts)} places: {_snippet(search)}")
    if texts and not starts:
        detail = f"the code's lines sit at other depths than the search's: {_snippet(search)}"
        raise DiffError(REASON_INDENT, number, detail)
    if not starts:
        reason = REASON_OUTSIDE if _find(outside, search, tolerant=True) else REASON_NOT_FOUND
        raise DiffError(reason, number, _snippet(search))
    at = starts[0]
    found = code[at : at + len(search)]
    moved = _reindent(replace, _width(_base_indent(search)), found, number)
    return code[:at] + moved + code[at + len(search) :], True


def apply_blocks(
    code: str, blocks: list[DiffBlock], *, marker: str = DEFAULT_MARKER, outside: str = ""
) -> DiffResult:
    """Apply `blocks` to a segment's `code`, in order; DiffError names the block that failed.

    ``outside`` is text the model saw but may not edit (the rest of the file, the notes): a
    search found only there is rejected as reaching outside the segment. The result keeps the
    code's final newline (or its absence).
    """
    lines = _lines(code)
    outside_lines = _lines(outside)
    tolerant: list[int] = []
    for number, block in enumerate(blocks, 1):
        lines, fuzzy = _apply_one(lines, block, number, marker, outside_lines)
        if fuzzy:
            tolerant.append(number)
    text = _text(lines)
    if not code.endswith(("\n", "\r")):
        text = text.removesuffix("\n")
    return DiffResult(text, len(blocks), tuple(tolerant))


def apply_diff(
    reply: str, code: str, *, marker: str = DEFAULT_MARKER, outside: str = ""
) -> DiffResult:
    """The segment's new code from an LLM reply of SEARCH/REPLACE blocks (see the module doc)."""
    return apply_blocks(code, parse_blocks(reply), marker=marker, outside=outside)


def edit_block(old: str, new: str, context: int = 0) -> DiffBlock:
    """The smallest single block that turns `old` into `new`: the changed lines with `context`
    lines around them, grown until the search text occurs once in `old`."""
    a, b = _lines(old), _lines(new)
    if a == b:
        raise ValueError("old and new have the same lines")
    head = 0
    while head < min(len(a), len(b)) and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < min(len(a), len(b)) - head and a[-1 - tail] == b[-1 - tail]:
        tail += 1
    lo, hi = max(head - context, 0), min(len(a) - tail + context, len(a))  # a[lo:hi] is searched
    while (lo > 0 or hi < len(a)) and (
        not "".join(a[lo:hi]).strip() or len(_find(a, a[lo:hi], tolerant=False)) != 1
    ):
        lo, hi = max(lo - 1, 0), min(hi + 1, len(a))
    return DiffBlock(_text(a[lo:hi]), _text(b[lo : len(b) - (len(a) - hi)]))
