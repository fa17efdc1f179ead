"""Extracting the Python code block from an LLM reply, with a named reason when there is none."""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

_FENCE_RE = re.compile(r"( *)(`{3,}|~{3,})(.*)")
_PYTHON_TAGS = frozenset({"", "python", "py", "python3", "py3", "ipython", "pycon3"})
_CODE_NODES = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Import,
    ast.ImportFrom,
    ast.Assign,
    ast.AugAssign,
    ast.AnnAssign,
)


class ExtractionError(Exception):
    """No usable code in a reply; ``reason`` is one line (e.g. "no code block")."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(reason.split())
        super().__init__(reason)
        self.reason = reason


_REASONING_TAGS = "think|thinking|reasoning"
_REASONING_BLOCK_RE = re.compile(rf"\A\s*<({_REASONING_TAGS})>(.*?)</\1\s*>", re.I | re.S)
_REASONING_OPEN_RE = re.compile(rf"\A\s*<({_REASONING_TAGS})>", re.I)
_REASONING_CLOSE_RE = re.compile(rf"</({_REASONING_TAGS})\s*>", re.I)


def strip_reasoning(reply: str) -> str:
    """The reply without the reasoning a model wrote before its answer.

    Reasoning models served without a reasoning parser (vLLM, Ollama) start their content with
    ``<think>...</think>`` (or only the closing tag, when the chat template opened it); drafts
    in there must never be taken for the answer. Tags inside a code block are code and stay.
    Raises ExtractionError when the reply ends inside its reasoning.
    """
    match = _REASONING_BLOCK_RE.match(reply)
    if match is not None:
        return reply[match.end():]
    opening = _REASONING_OPEN_RE.match(reply)
    if opening is not None:
        raise ExtractionError(
            f"the reply ended inside its <{opening.group(1).lower()}> block "
            "(raise [llm] max_tokens or use a model that thinks less)"
        )
    closing = _REASONING_CLOSE_RE.search(reply)
    if closing is not None:
        before = reply[: closing.start()].replace("\r\n", "\n").split("\n")
        fences = sum(1 for line in before if _fence(line) is not None)
        if fences % 2 == 0:  # outside any fenced block: an orphan closing tag
            return reply[closing.end():]
    return reply


@dataclass(frozen=True)
class _Block:
    code: str
    closed: bool
    python: bool  # tagged python, or untagged
    tag: str


def _fence(line: str) -> tuple[int, str, str] | None:
    """(indentation, fence, info string) when the line is a code fence."""
    match = _FENCE_RE.fullmatch(line)
    if match is None:
        return None
    fence, info = match.group(2), match.group(3).strip()
    if fence[0] == "`" and "`" in info:
        return None
    return len(match.group(1)), fence, info


def _tag_word(info: str) -> str:
    match = re.match(r"[A-Za-z0-9_+-]*", info.strip())
    return (match.group(0) if match else "").lower()


def _blocks(lines: list[str]) -> list[_Block]:
    """Every fenced block, in order; an unclosed last fence yields a block with closed=False."""
    out: list[_Block] = []
    i, n = 0, len(lines)
    while i < n:
        opening = _fence(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence, info = opening
        body: list[str] = []
        j = i + 1
        closed = False
        while j < n:
            closing = _fence(lines[j])
            if (
                closing is not None
                and closing[1][0] == fence[0]
                and len(closing[1]) >= len(fence)
                and not closing[2]
            ):
                closed = True
                break
            body.append(_unindent(lines[j], indent))
            j += 1
        tag = _tag_word(info)
        out.append(_Block("\n".join(body), closed, tag in _PYTHON_TAGS, tag))
        i = j + 1
    return out


def _unindent(line: str, indent: int) -> str:
    """Remove up to `indent` leading spaces (the fence's own indentation)."""
    k = 0
    while k < indent and k < len(line) and line[k] == " ":
        k += 1
    return line[k:]


def _tidy(code: str) -> str:
    lines = code.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines) + "\n" if lines else ""


def _syntax_error(code: str) -> SyntaxError | None:
    """None when the code parses, possibly after removing a common indentation (a method body)."""
    first_error: SyntaxError | None = None
    for candidate in (code, textwrap.dedent(code), _first_line_aligned(code)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ast.parse(candidate)
            return None
        except SyntaxError as exc:
            first_error = first_error or exc
        except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, deep nesting
            first_error = first_error or SyntaxError(f"cannot parse: {type(exc).__name__}")
    return first_error


def _first_line_aligned(code: str) -> str:
    """A block whose first line lost its indentation: indent it like the block's body, dedented."""
    lines = code.split("\n")
    rest = [line for line in lines[1:] if line.strip()]
    if not lines or not rest or not lines[0].rstrip().endswith(":"):
        return code
    body_indent = min(len(line) - len(line.lstrip(" ")) for line in rest)
    step = 4 if body_indent >= 4 else body_indent
    return textwrap.dedent(" " * (body_indent - step) + "\n".join(lines))


def _reason(exc: SyntaxError) -> str:
    return f"syntax error at line {exc.lineno or 1}: {exc.msg}"


def _looks_like_code(code: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return any(isinstance(node, _CODE_NODES) for node in tree.body)


@dataclass(frozen=True)
class CodeBlock:
    """A candidate code block of a reply: its code (tidied, LF) and why it is unusable."""

    code: str
    error: SyntaxError | None  # None: the block parses
    closed: bool  # False: the reply ended inside the block


_DIFF_REASON = "the reply is a diff, not the complete new code of the segment"


def _looks_like_diff(code: str) -> bool:
    """A unified diff (or +/- lines) rather than code."""
    lines = [line for line in code.split("\n") if line.strip()]
    if any(line.startswith(("--- ", "+++ ", "@@ ")) for line in lines[:3]):
        return True
    plus = sum(1 for line in lines if line.startswith("+"))
    minus = sum(1 for line in lines if line.startswith("-"))
    return plus > 0 and minus > 0 and plus + minus >= len(lines) / 2


def code_blocks(reply: str) -> list[CodeBlock]:
    """The candidate Python blocks of a reply, in reply order (the reply itself when it has no
    fence and looks like code). ExtractionError with a named reason when there is none."""
    if not reply or not reply.strip():
        raise ExtractionError("empty reply")
    text = strip_reasoning(reply.replace("\r\n", "\n").replace("\r", "\n"))
    blocks = _blocks(text.split("\n"))
    if not blocks:
        whole = _tidy(text)
        if _looks_like_code(whole):
            return [CodeBlock(whole, None, True)]
        raise ExtractionError(_DIFF_REASON if _looks_like_diff(whole) else "no code block")
    diffs = [b for b in blocks if _tag_is_diff(b) or _looks_like_diff(b.code)]
    candidates = [b for b in blocks if b.python and b not in diffs] or [
        b for b in blocks if _looks_like_code(_tidy(b.code))
    ]
    out = [
        CodeBlock(code, _syntax_error(code), b.closed)
        for b in candidates
        if (code := _tidy(b.code))
    ]
    if out:
        return out
    if any(b.python and not _tidy(b.code) for b in blocks):
        raise ExtractionError("empty code block")
    raise ExtractionError(_DIFF_REASON if diffs else "no code block")


def _tag_is_diff(block: _Block) -> bool:
    return block.tag in ("diff", "patch", "udiff")


def best_blocks(blocks: Sequence[CodeBlock], rank: Callable[[str], int] | None = None) -> list[str]:
    """The usable code of the highest-ranked blocks (all blocks rank 0 without `rank`), largest
    first. A lower-ranked block is never used, even when every higher-ranked one is broken:
    ExtractionError then names why (the first syntax error, or a truncated reply)."""
    ranks = [rank(b.code) if rank is not None else 0 for b in blocks]
    top = max(ranks, default=0)
    group = sorted(
        (b for b, r in zip(blocks, ranks, strict=True) if r == top),
        key=lambda b: len(b.code),
        reverse=True,
    )
    usable = [b.code for b in group if b.error is None]
    if usable:
        return usable
    error = next((b.error for b in group if b.closed and b.error is not None), None)
    if error is not None:
        raise ExtractionError(_reason(error))
    raise ExtractionError("truncated reply: no closing fence")


def extract_code(reply: str) -> str:
    """The code of an LLM reply (its largest usable python block); ExtractionError if none."""
    return best_blocks(code_blocks(reply))[0]
