"""A segment's code as the offline edits see it: parsed with ``ast``, edited by source position."""

from __future__ import annotations

import ast
import functools
import math
import textwrap
from collections.abc import Sequence


class Source:
    """A segment's code, dedented, and wrapped in brackets when it is a fragment of a literal.

    Read-only once made: the edits return new text, never change the tree, so one parse (and
    its node list and parent map, made on first use) serves every child of the same parent."""

    def __init__(self, text: str, wrap: tuple[str, str] = ("", "")) -> None:
        self.text = text
        self.wrap = wrap
        self.tree = ast.parse(text)
        self.line_starts = [0]
        for line in text.split("\n"):
            self.line_starts.append(self.line_starts[-1] + len(line) + 1)
        self._lines = text.split("\n")

    @property
    def wrapped(self) -> bool:
        return self.wrap != ("", "")

    @functools.cached_property
    def nodes(self) -> tuple[ast.AST, ...]:
        """Every node of the tree, in ``ast.walk``'s order."""
        return tuple(ast.walk(self.tree))

    @functools.cached_property
    def parents(self) -> dict[int, ast.AST]:
        """``id(node)`` -> its parent node."""
        out: dict[int, ast.AST] = {}
        for node in self.nodes:
            for child in ast.iter_child_nodes(node):
                out[id(child)] = node
        return out

    @staticmethod
    def parse(code: str) -> Source | None:
        """The code as a Source (None where no wrapping parses), remembered for the last few
        hundred texts: the parents of a generation are parsed once, not once per child."""
        return _parse(code)


    def offset(self, row: int, col: int) -> int:
        """Char offset of an ast (1-based row, utf-8 byte col) position."""
        line = self._lines[row - 1]
        return self.line_starts[row - 1] + len(
            line.encode("utf-8")[:col].decode("utf-8", "replace")
        )

    def span(self, node: ast.AST) -> tuple[int, int]:
        start = self.offset(node.lineno, node.col_offset)  # type: ignore[attr-defined]
        end = self.offset(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]
        return start, end

    def src(self, node: ast.AST) -> str:
        start, end = self.span(node)
        return self.text[start:end]

    def edit(self, edits: Sequence[tuple[int, int, str]]) -> str:
        """The text with the (non-overlapping) spans replaced."""
        out = self.text
        for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
            out = out[:start] + new + out[end:]
        return out

    def unwrap(self, text: str) -> str:
        prefix, suffix = self.wrap
        return text[len(prefix) : len(text) - len(suffix)]


@functools.lru_cache(maxsize=256)
def _parse(code: str) -> Source | None:
    """``Source.parse``: the code as it stands, else wrapped as a fragment of a literal."""
    dedented = textwrap.dedent(code)
    for prefix in ("", "(\n", "[\n", "{\n"):
        for suffix in ("", "\n)", "\n]", "\n}"):
            try:
                return Source(prefix + dedented + suffix, (prefix, suffix))
            except (SyntaxError, ValueError):
                continue
    return None




def dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted_name(node.value)
        return f"{head}.{node.attr}" if head else None
    return None


def position(node: ast.AST) -> tuple[int, int]:
    return node.lineno, node.col_offset  # type: ignore[attr-defined]


def shorten(text: str, limit: int = 60) -> str:
    line = text.strip().split("\n")[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def is_number(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, (int, float))
        and not isinstance(node.value, bool)
        and node.value != 0
        and math.isfinite(node.value)
    )


def format_float(value: float) -> str:
    text = f"{value:.3g}"
    if not any(c in text for c in ".en"):
        text += ".0"
    return text
