"""The genome: evolvable files split into segments by a marker line, and the variant id.

A marker is a comment line of its own (default ``# --OPTION--``). The header before the first
marker never changes; a segment is the text after one marker line up to the next marker line
(or EOF). ``# -- NOTE --`` ... ``# -- NOTE --`` blocks inside a segment are context for the LLM:
they are kept out of :attr:`Segment.code` and re-attached unchanged by ``splice.splice``.

The module is long because the file scan (comments, markers, NOTE blocks) and the genome built on
it belong together: ``splice`` reuses the same scan so that it sees a file exactly as parsing does.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import io
import re
import textwrap
import tokenize
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from guided_evolution.errors import GeError

DEFAULT_MARKER = "# --OPTION--"
NOTE_MARKER = "# -- NOTE --"
CONTEXT_PLACEHOLDER = "# <<< the segment being changed goes here >>>"

_DEF_RE = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)[ \t]+([A-Za-z_]\w*)")
_MAX_SCANNED_BYTES = 2_000_000  # non-evolvable files larger than this are not scanned for names


@dataclass(frozen=True)
class Segment:
    """One evolvable region of one file."""

    file: str  # relative path of the evolvable file
    index: int  # 0-based index within that file
    start: int  # char offset where the body starts (just after the marker line)
    end: int  # char offset where it ends (next marker line start, or len(text))
    code: str  # the body without NOTE blocks and surrounding blank lines, LF line endings
    notes: str  # the NOTE blocks' text (context), "" if none
    name: str  # first top-level class/def name in the body, else f"{file}:{index}"

    @property
    def key(self) -> str:
        """Stable identifier ``file#index``."""
        return f"{self.file}#{self.index}"


@dataclass(frozen=True)
class Genome:
    """All files of a variant and the segments of its evolvable files."""

    files: dict[str, str]
    evolvable: tuple[str, ...]
    marker: str
    segments: tuple[Segment, ...]
    kept: Mapping[str, str] = field(default_factory=dict)  # name -> the other file that uses it

    def segment(self, key: str) -> Segment:
        """The segment with this key (``file#index``); KeyError if there is none."""
        for seg in self.segments:
            if seg.key == key:
                return seg
        raise KeyError(f"no segment {key!r}; known: {', '.join(s.key for s in self.segments)}")

    @property
    def keys(self) -> tuple[str, ...]:
        """All segment keys, in file order then segment order."""
        return tuple(s.key for s in self.segments)


# ---------------------------------------------------------------------------------------------
# text helpers


def _split_lines(text: str) -> list[str]:
    """Lines with their ``\\n`` kept; splits on ``\\n`` only (not on form feeds or U+2028)."""
    if not text:
        return []
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _lf(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _indent_of(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _first_code_line(lines: Iterable[str]) -> str | None:
    """The first line that is neither blank nor a comment."""
    for line in lines:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return line
    return None


def _strip_blank_edges(lines: list[str]) -> list[str]:
    i, j = 0, len(lines)
    while i < j and not lines[i].strip():
        i += 1
    while j > i and not lines[j - 1].strip():
        j -= 1
    return lines[i:j]


def _has_code(text: str) -> bool:
    return _first_code_line(_split_lines(text)) is not None


def _comment_only_lines(path: str, text: str) -> dict[int, str]:
    """Line number -> stripped comment, for lines whose only token is a comment.

    One regular-expression pass over the comments and string literals (the only places a ``#``
    or a quote can be in Python); the tokenizer decides when a literal does not close or the
    text holds a carriage return, form feed or NUL (where the two could read lines differently).
    """
    if "\r" in text or "\f" in text or "\0" in text:
        return _comment_only_lines_tokenized(path, text)
    out: dict[int, str] = {}
    row, seen = 1, 0
    for match in _LEXEME_RE.finditer(text):
        kind = match.lastgroup
        if kind == "open":  # a quote that no literal closes: not valid Python
            return _comment_only_lines_tokenized(path, text)
        if kind != "comment":
            continue
        start = match.start()  # the comment runs to the end of its line (there is no \r)
        row += text.count("\n", seen, start)
        seen = start
        if not text[text.rfind("\n", 0, start) + 1 : start].strip():
            out[row] = match.group().strip()
    return out


# Comments and string literals as Python 3.11's tokenizer reads them (a literal starts at its
# quote, whatever its prefix); ``open`` is a quote that no literal closes.
_LEXEME_RE = re.compile(
    r"(?P<comment>#[^\r\n]*)"
    r"|(?P<string>'''[^'\\]*(?:(?:\\.|'(?!''))[^'\\]*)*'''"
    r'|"""[^"\\]*(?:(?:\\.|"(?!""))[^"\\]*)*"""'
    r"|'[^\n'\\]*(?:\\.[^\n'\\]*)*'"
    r'|"[^\n"\\]*(?:\\.[^\n"\\]*)*")'
    r"|(?P<open>['\"])",
    re.DOTALL,
)


def _comment_only_lines_tokenized(path: str, text: str) -> dict[int, str]:
    """:func:`_comment_only_lines` by the tokenizer (the reference; GeError when it fails)."""
    out: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.COMMENT and tok.line.strip() == tok.string.strip():
                out[tok.start[0]] = tok.string.strip()
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        raise GeError(
            f"{path} cannot be tokenized as Python: {exc}",
            hint="evolvable files must be valid Python",
        ) from exc
    return out


def _name_tokens(text: str) -> list[tuple[int, str]]:
    """(char offset, name) of every NAME token; [] if the text does not tokenize."""
    starts = [0]
    for line in _split_lines(text):
        starts.append(starts[-1] + len(line))
    names: list[tuple[int, str]] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.NAME:
                row, col = tok.start
                names.append((starts[row - 1] + col, tok.string))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return []
    return names


# ---------------------------------------------------------------------------------------------
# scanning a file


@dataclass(frozen=True)
class _Note:
    text: str  # raw lines of the block, both delimiter lines included
    anchor: str | None  # stripped text of the nearest non-blank code line above it; None: top
    occurrence: int  # which occurrence of `anchor` among the code lines (0-based)


@dataclass(frozen=True)
class _Body:
    lead: str  # blank lines before anything
    code_lines: tuple[str, ...]  # raw code lines (notes removed), between lead and trail
    trail: str  # blank lines after everything
    notes: tuple[_Note, ...]
    marker_indent: str


@dataclass(frozen=True)
class _RawSegment:
    start: int
    end: int
    body: _Body


def _anchor_of(code_lines: list[str]) -> tuple[str | None, int]:
    for i in range(len(code_lines) - 1, -1, -1):
        stripped = code_lines[i].strip()
        if stripped:
            return stripped, sum(1 for line in code_lines[:i] if line.strip() == stripped)
    return None, 0


@functools.lru_cache(maxsize=256)
def _scan_file(path: str, text: str, marker: str) -> tuple[_RawSegment, ...]:
    """Split one evolvable file into raw segments; GeError on a misplaced marker or NOTE.

    Cached: one splice scans the parent's file several times (tokenizing is most of its cost).
    """
    comments = _comment_only_lines(path, text)
    lines = _split_lines(text)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    marker_rows: list[int] = []  # 0-based line indices
    for row, line in enumerate(lines):
        if line.strip() == marker:
            if comments.get(row + 1) != marker:
                raise GeError(
                    f"{path}:{row + 1}: the marker {marker!r} is inside a string literal "
                    "(e.g. a docstring), so it cannot split the file",
                    hint="reword that string or move the marker onto a comment line of its own",
                )
            marker_rows.append(row)
    out: list[_RawSegment] = []
    for n, row in enumerate(marker_rows):
        end_row = marker_rows[n + 1] if n + 1 < len(marker_rows) else len(lines)
        body = _analyse_body(path, lines[row + 1 : end_row], row + 2, comments, lines[row])
        out.append(_RawSegment(starts[row + 1], starts[end_row], body))
    return tuple(out)


def _analyse_body(
    path: str, lines: list[str], first_row: int, comments: dict[int, str], marker_line: str
) -> _Body:
    n = len(lines)
    i = 0
    while i < n and not lines[i].strip():
        i += 1
    j = n
    while j > i and not lines[j - 1].strip():
        j -= 1
    code: list[str] = []
    notes: list[_Note] = []
    k = i
    while k < j:
        if comments.get(first_row + k) == NOTE_MARKER:
            m = k + 1
            while m < j and comments.get(first_row + m) != NOTE_MARKER:
                m += 1
            if m >= j:
                raise GeError(
                    f"{path}:{first_row + k}: a {NOTE_MARKER!r} block is not closed in its segment",
                    hint=f"end the note with a second {NOTE_MARKER!r} line before the next marker",
                )
            anchor, occurrence = _anchor_of(code)
            notes.append(_Note("".join(lines[k : m + 1]), anchor, occurrence))
            k = m + 1
        else:
            code.append(lines[k])
            k += 1
    return _Body(
        lead="".join(lines[:i]),
        code_lines=tuple(code),
        trail="".join(lines[j:]),
        notes=tuple(notes),
        marker_indent=_indent_of(marker_line),
    )


def _clean_code(lines: Iterable[str]) -> str:
    """LF line endings, no blank edges, ending with one newline ("" when there is nothing)."""
    kept = _strip_blank_edges(_split_lines(_lf("".join(lines))))
    if not kept:
        return ""
    text = "".join(kept)
    return text if text.endswith("\n") else text + "\n"


def _dedented_tree(code: str) -> ast.Module | None:
    try:
        return ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError):
        return None


def _top_level_defs(code: str) -> Mapping[str, str]:
    """Names of the classes/functions defined at the segment's own top level -> kind (read-only:
    cached by the code's text, a splice and a parse ask for the same segment several times)."""
    parsed = _parsed_top_level_defs(code)
    return parsed if parsed is not None else MappingProxyType(_matched_top_level_defs(code))


@functools.lru_cache(maxsize=512)
def _parsed_top_level_defs(code: str) -> Mapping[str, str] | None:
    """:func:`_top_level_defs` read from the parsed (dedented) code; None when it does not parse."""
    tree = _dedented_tree(code)
    if tree is None:
        return None
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            out.setdefault(node.name, "class")
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.setdefault(node.name, "function")
    return MappingProxyType(out)


def _matched_top_level_defs(code: str) -> dict[str, str]:
    """:func:`_top_level_defs` by the lines' look, for code that does not parse on its own."""
    first = _first_code_line(_split_lines(code))
    if first is None:
        return {}
    base = _indent_of(first)
    out = {}
    for line in _split_lines(code):
        match = _DEF_RE.match(line)
        if match and _indent_of(line) == base:
            kind = "class" if line.lstrip().startswith("class") else "function"
            out.setdefault(match.group(1), kind)
    return out


def _segment_name(code: str, path: str, index: int) -> str:
    names = _top_level_defs(code)
    return next(iter(names)) if names else f"{path}:{index}"


@functools.lru_cache(maxsize=128)
def _syntax_error(path: str, text: str) -> tuple[int | None, str] | None:
    """(line, message) of the text's syntax error, None when it parses (cached by path and text:
    a run parses the same parents again and again)."""
    try:
        ast.parse(text, filename=path)
    except SyntaxError as exc:
        return exc.lineno, exc.msg
    return None


# ---------------------------------------------------------------------------------------------
# public API


def parse_genome(
    files: dict[str, str],
    evolvable: Sequence[str],
    marker: str = DEFAULT_MARKER,
    kept: Mapping[str, str] | None = None,
) -> Genome:
    """Split every evolvable file into segments. GeError names the file and the fix.

    ``kept`` (see :func:`kept_names`) are the names other files use: a splice keeps them.
    """
    marker = marker.strip()
    if not marker.startswith("#") or marker == "#":
        raise GeError(
            f"the segment marker {marker!r} is not a Python comment",
            hint='use a comment such as "# --OPTION--" for [seed].marker',
        )
    if not evolvable:
        raise GeError("no evolvable files are configured", hint="list them in [seed].files")
    paths = tuple(dict.fromkeys(evolvable))
    segments: list[Segment] = []
    for path in paths:
        if path not in files:
            raise GeError(
                f"the evolvable file {path} is not in the seed",
                hint="check [seed].files against the files of [seed].dir",
            )
        text = files[path]
        error = _syntax_error(path, text)
        if error is not None:
            raise GeError(
                f"{path}:{error[0]}: the seed is not valid Python: {error[1]}",
                hint="fix the seed so that it runs before evolving it",
            )
        raw = _scan_file(path, text, marker)
        if not raw:
            near = _near_marker(text, marker)
            raise GeError(
                f"{path} has no segment marker, so nothing in it can evolve",
                hint=f"did you mean {marker!r}? line {near[0]} is {near[1]!r}; write it exactly so"
                if near
                else f"put a line {marker!r} of its own above each part that may change",
            )
        for index, item in enumerate(raw):
            code = _clean_code(item.body.code_lines)
            segments.append(
                Segment(
                    file=path,
                    index=index,
                    start=item.start,
                    end=item.end,
                    code=code,
                    notes=_lf("".join(n.text for n in item.body.notes)),
                    name=_segment_name(code, path, index),
                )
            )
    return Genome(dict(files), paths, marker, tuple(segments), dict(kept or {}))


def _module_names(path: str) -> set[str]:
    """The dotted names `a/b/m.py` can be imported as (m, b.m, a.b.m: the import root varies)."""
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return {".".join(parts[i:]) for i in range(len(parts))}


def _names_used_from(tree: ast.Module, modules: set[str]) -> set[str] | None:
    """Names `tree` may take from `modules`; None on a star import from one of them.

    Imported names, every attribute read (``model.fit``, also on a module loaded by
    ``importlib``) and every identifier-like string (``getattr(module, "Net")``): an over-estimate
    that only ever protects a name too many, never one too few for these uses.
    """
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "") in modules:
            if any(a.name == "*" for a in node.names):
                return None
            used.update(a.name for a in node.names)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            used.update([node.value] if node.value.isidentifier() else [])
    return used


def _defs_of(text: str) -> set[str]:
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError):
        return set()
    kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {node.name for node in ast.walk(tree) if isinstance(node, kinds)}


def kept_names(files: Mapping[str, str], evolvable: Sequence[str]) -> dict[str, str]:
    """Name -> file, for the classes and functions of the evolvable files that a non-evolvable
    Python file uses (see ``_names_used_from``); a file that does not parse or star-imports an
    evolvable module uses every name it mentions."""
    modules = {m for p in evolvable if p.endswith(".py") for m in _module_names(p)}
    defined = {name for p in evolvable if p in files for name in _defs_of(files[p])}
    out: dict[str, str] = {}
    for path, text in sorted(files.items()):
        if path in evolvable or not path.endswith(".py") or len(text) > _MAX_SCANNED_BYTES:
            continue
        try:
            names = _names_used_from(ast.parse(text, filename=path), modules)
        except (SyntaxError, ValueError, RecursionError):
            names = None
        if names is None:
            names = {name for _, name in _name_tokens(text)}
        for name in sorted(names & defined):
            out.setdefault(name, path)
    return out


def variant_id(files: dict[str, str], evolvable: Sequence[str]) -> str:
    """First 16 hex chars of sha256 over the evolvable files sorted by path, ``path\\0content\\0``."""
    digest = hashlib.sha256()
    for path in sorted(set(evolvable)):
        if path not in files:
            raise GeError(f"the evolvable file {path} is missing", hint="check [seed].files")
        digest.update(path.encode("utf-8") + b"\0")
        digest.update(files[path].encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:16]


def _near_marker(text: str, marker: str) -> tuple[int, str] | None:
    """The first comment line that is almost the marker (``#--OPTION--``, ``# --OPTOIN--``)."""
    from difflib import SequenceMatcher

    bare = "".join(marker.split()).lower()
    lines = ((n, line.strip()) for n, line in enumerate(text.splitlines(), 1))
    return next(((n, got) for n, got in lines if got.startswith("#") and got != marker and (
        "".join(got.split()).lower() == bare or SequenceMatcher(None, got, marker).ratio() >= 0.85
    )), None)  # fmt: skip


def differing_segments(a: Genome, b: Genome) -> list[str]:
    """Keys of the segments whose code differs (or that exist in only one of the genomes)."""
    codes_b = {s.key: s.code for s in b.segments}
    keys_a = {s.key for s in a.segments}
    out = [s.key for s in a.segments if codes_b.get(s.key) != s.code]
    out += [s.key for s in b.segments if s.key not in keys_a]
    return out


def context_view(genome: Genome, key: str, placeholder: str = CONTEXT_PLACEHOLDER) -> str:
    """The segment's file with that segment's body replaced by one placeholder line (LF)."""
    seg = genome.segment(key)
    text = genome.files[seg.file]
    body = _scan_file(seg.file, text, genome.marker)[seg.index].body
    line = f"{_segment_indent(seg.code, body)}{placeholder}\n"
    return _lf(text[: seg.start] + body.lead + line + body.trail + text[seg.end :])


def _segment_indent(code: str, body: _Body) -> str:
    first = _first_code_line(_split_lines(code))
    return _indent_of(first) if first is not None else body.marker_indent
