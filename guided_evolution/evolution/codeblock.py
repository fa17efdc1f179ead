"""Extracting the Python code block from an LLM reply, with a named reason when there is none."""

from __future__ import annotations

import ast
import re
import textwrap
import warnings
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
        out.append(_Block("\n".join(body), closed, _tag_word(info) in _PYTHON_TAGS))
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


def extract_code(reply: str) -> str:
    """The Python code of an LLM reply (the largest fenced python block); ExtractionError if none."""
    if not reply or not reply.strip():
        raise ExtractionError("empty reply")
    text = strip_reasoning(reply.replace("\r\n", "\n").replace("\r", "\n"))
    blocks = _blocks(text.split("\n"))
    if not blocks:
        whole = _tidy(text)
        if _looks_like_code(whole):
            return whole
        raise ExtractionError("no code block")
    candidates = [b for b in blocks if b.python] or [
        b for b in blocks if _looks_like_code(_tidy(b.code))
    ]
    ordered = sorted(
        (b for b in candidates if _tidy(b.code)), key=lambda b: len(b.code), reverse=True
    )
    first_error: SyntaxError | None = None
    truncated = False
    for block in ordered:
        code = _tidy(block.code)
        error = _syntax_error(code)
        if error is None:
            return code
        if block.closed:
            first_error = first_error or error
        else:
            truncated = True
    if first_error is not None:
        raise ExtractionError(_reason(first_error))
    if truncated:
        raise ExtractionError("truncated reply: no closing fence")
    if any(b.python and not _tidy(b.code) for b in blocks):
        raise ExtractionError("empty code block")
    raise ExtractionError("no code block")
