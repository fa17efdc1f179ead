"""Splicing: an LLM's (or an offline edit's) new code for one segment, put into the genome's file.

The other half of ``segments``: it reuses that module's scanner, so a splice sees the file exactly
as parsing does. Every byte outside the segment's body stays as it was; NOTE blocks come back
unchanged; the result must compile, keep the segment structure and keep names used elsewhere.
"""

from __future__ import annotations

import ast
import functools
import re
import textwrap
import warnings
from collections.abc import Callable, Sequence

from guided_evolution.errors import GeError
from guided_evolution.evolution.segments import (
    _LEXEME_RE,
    _MAX_SCANNED_BYTES,
    NOTE_MARKER,
    Genome,
    Segment,
    _first_code_line,
    _has_code,
    _indent_of,
    _lf,
    _name_tokens,
    _Note,
    _parsed_top_level_defs,
    _RawSegment,
    _scan_file,
    _segment_indent,
    _split_lines,
    _strip_blank_edges,
    _top_level_defs,
)


class SpliceError(Exception):
    """A new segment was rejected; ``reason`` is one line that can be shown to the LLM."""

    def __init__(self, reason: str) -> None:
        reason = " ".join(reason.split())
        super().__init__(reason)
        self.reason = reason


def _clean_new_code(new_code: str, marker: str) -> list[str]:
    """LLM code as LF lines: NOTE blocks and an echoed leading marker removed, no blank edges."""
    lines = _split_lines(_lf(new_code))
    kept: list[str] = []
    in_note = False
    for line in lines:
        if line.strip() == NOTE_MARKER:
            in_note = not in_note
            continue
        if not in_note:
            kept.append(line)
    if in_note:  # a dangling NOTE line: keep what followed it, drop the delimiter only
        kept = [line for line in lines if line.strip() != NOTE_MARKER]
    kept = _strip_blank_edges(kept)
    while kept and kept[0].strip() == marker:
        kept = _strip_blank_edges(kept[1:])
    for n, line in enumerate(kept, 1):
        if line.strip() == marker:
            raise SpliceError(
                f"the new code contains the marker line {marker!r} (line {n}); return one segment only"
            )
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    return kept


def _indent_candidates(lines: list[str], base: str) -> list[list[str]]:
    """Ways to fit the new code at indentation `base`, most plausible first.

    As given; dedented and reindented to `base`; or with only its first line moved to `base`
    (an LLM often strips the first line's indentation but keeps the rest).
    """
    first = _first_code_line(lines)
    if first is None:
        return [lines]
    dedented = textwrap.dedent("".join(lines))
    reindented = _split_lines("".join(base + x if x.strip() else x for x in _split_lines(dedented)))
    k = lines.index(first)
    fixed = [*lines[:k], base + first.lstrip(" \t"), *lines[k + 1 :]]
    rest = [x for x in lines[k + 1 :] if x.strip()]
    if _indent_of(first) == base:
        order = [lines, reindented, fixed]
    elif (
        rest and first.rstrip().endswith(":") and min(len(_indent_of(x)) for x in rest) > len(base)
    ):
        order = [fixed, reindented, lines]
    else:
        order = [reindented, lines, fixed]
    unique: list[list[str]] = []
    for cand in order:
        if cand not in unique:
            unique.append(cand)
    return unique


def _note_positions(code_lines: list[str], notes: Sequence[_Note], at_top: bool) -> list[int]:
    """Where each NOTE block goes: before ``code_lines[pos]`` (after its anchor line or at 0)."""
    positions: list[int] = []
    for note in notes:
        pos = 0
        if note.anchor is not None and not at_top:
            seen = [i for i, line in enumerate(code_lines) if line.strip() == note.anchor]
            if seen:
                pos = (seen[note.occurrence] if note.occurrence < len(seen) else seen[0]) + 1
        positions.append(pos)
    return positions


def _attach_notes(code_lines: list[str], notes: Sequence[_Note], at_top: bool) -> list[str]:
    """Insert the NOTE blocks after their anchor lines (or at the top)."""
    if not notes:
        return list(code_lines)
    positions = _note_positions(code_lines, notes, at_top)
    out: list[str] = []
    for i in range(len(code_lines) + 1):
        out.extend(_lf(note.text) for note, pos in zip(notes, positions, strict=True) if pos == i)
        if i < len(code_lines):
            out.append(code_lines[i])
    return out


_COMMENT_LINE = re.compile(r"[ \t]*(?:#[^\r\n]*)?\n")


def _notes_keep_tree(code_lines: list[str], notes: Sequence[_Note]) -> bool:
    """True when putting the NOTE blocks at their anchors cannot change the code's syntax tree:
    every line of them is blank or a comment and ends with a newline, and none goes inside a
    string literal or after a line continuation (the code starts outside any literal: a marker
    comment is above it). False means "not known": the trees are compared then."""
    if not all(_COMMENT_LINE.fullmatch(line) for n in notes for line in _split_lines(n.text)):
        return False
    inside: set[int] = set()  # i: a literal runs on from code line i-1 into line i
    row, seen, code = 0, 0, "".join(code_lines)
    for match in _LEXEME_RE.finditer(code):
        if match.lastgroup == "open":
            return False
        if match.lastgroup == "string" and "\n" in match.group():
            row += code.count("\n", seen, match.start())
            seen = match.start()
            inside.update(range(row + 1, row + 1 + match.group().count("\n")))
    for pos in _note_positions(code_lines, notes, False):
        if pos in inside or (pos > 0 and code_lines[pos - 1].rstrip("\n").endswith("\\")):
            return False
    return True


def _syntax_reason(exc: SyntaxError, first_row: int, n_lines: int) -> str:
    row = (exc.lineno or first_row) - first_row + 1
    row = min(max(row, 1), max(n_lines, 1))
    return f"syntax error at line {row}: {exc.msg}"


def _compile(text: str, path: str) -> None:
    """Compile (a parse that also catches e.g. `return` outside a function); SyntaxError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compile(text, path, "exec", dont_inherit=True)
    except (ValueError, RecursionError, MemoryError) as exc:
        raise SyntaxError(f"cannot parse: {type(exc).__name__}: {exc}") from exc


def _parsed(text: str, path: str) -> ast.Module:
    """The syntax tree of text that compiled."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ast.parse(text, filename=path)


def _defined_names(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def _check_kept_names(
    genome: Genome, seg: Segment, new_code: str, new_tree: Callable[[], ast.Module]
) -> None:
    """SpliceError when the new code (``new_tree()``: the file's) drops a def another part uses."""
    original = _top_level_defs(seg.code)
    if not original:
        return
    kept = _parsed_top_level_defs(new_code)
    # A def at the top level of new code that parses on its own is a def of the file it compiled
    # in (it starts after a marker comment, outside any literal, and no def can stand inside
    # brackets): when it keeps them all, the file's walk below could only say the same.
    if kept is not None and kept.keys() >= original.keys():
        return
    missing = set(original) - _defined_names(new_tree())
    if not missing:
        return
    text = genome.files[seg.file]
    users = {name: genome.kept[name] for name in missing if name in genome.kept}
    for offset, name in _name_tokens(text):
        if name in missing and not seg.start <= offset < seg.end:
            users.setdefault(name, seg.file)
    for path, other in genome.files.items():
        if path == seg.file or not path.endswith(".py") or len(other) > _MAX_SCANNED_BYTES:
            continue
        for _, name in _name_tokens(other):
            if name in missing:
                users.setdefault(name, path)
    for name in original:  # report in the segment's order
        if name in users:
            raise SpliceError(f"removed {original[name]} {name} used elsewhere in {users[name]}")


def splice(genome: Genome, key: str, new_code: str) -> dict[str, str]:
    """The new file mapping with exactly the segment `key` replaced by `new_code`.

    NOTE blocks of the segment are re-attached unchanged; every byte outside the segment's
    body stays as it was. Raises SpliceError when the result is rejected.
    """
    seg = genome.segment(key)
    lines = _clean_new_code(new_code, genome.marker)
    if not _has_code("".join(lines)):
        raise SpliceError("empty code")
    if "".join(lines) == seg.code:
        return dict(genome.files)
    text = genome.files[seg.file]
    body = _scan_file(seg.file, text, genome.marker)[seg.index].body
    eol = "\r\n" if "\r\n" in text else "\n"
    base = _segment_indent(seg.code, body)
    prefix = text[: seg.start]
    if prefix and not prefix.endswith("\n"):  # a marker on the last line without a newline
        prefix += eol
    first_row = prefix.count("\n") + body.lead.count("\n") + 1
    ends_without_newline = seg.end == len(text) and not body.trail and not text.endswith("\n")

    def build(code_lines: list[str], notes: str) -> str:
        """The new file; `notes` is "none" (code alone), "anchor" or "top"."""
        attached = (
            code_lines if notes == "none" else _attach_notes(code_lines, body.notes, notes == "top")
        )
        core = "".join(attached)
        if eol != "\n":
            core = core.replace("\n", eol)
        if ends_without_newline and core.endswith(eol):
            core = core[: -len(eol)]
        return prefix + body.lead + core + body.trail + text[seg.end :]

    chosen = _first_compiling(lines, base, lambda cand: build(cand, "none"), seg.file, first_row)
    tree = functools.partial(_parsed, build(chosen, "none"), seg.file)  # when it is needed
    new_text = build(chosen, "anchor")
    if (
        body.notes
        and not _notes_keep_tree(chosen, body.notes)
        and not _same_tree(new_text, tree(), seg.file)
    ):
        new_text = build(chosen, "top")
    new_raw = _scan_file_for_splice(seg.file, new_text, genome.marker)
    if len(new_raw) != len(_scan_file(seg.file, text, genome.marker)):
        raise SpliceError("the new code swallows a segment marker (an unterminated string?)")
    _check_kept_names(genome, seg, "".join(chosen), tree)
    files = dict(genome.files)
    files[seg.file] = new_text
    return files


def _first_compiling(
    lines: list[str], base: str, build: Callable[[list[str]], str], path: str, first_row: int
) -> list[str]:
    """The first way to indent ``lines`` whose file (``build``) compiles; SpliceError if none."""
    first_error: SyntaxError | None = None
    for cand in _indent_candidates(lines, base):
        try:
            _compile(build(cand), path)
        except SyntaxError as exc:
            first_error = first_error or exc
            continue
        return cand
    assert first_error is not None
    raise SpliceError(_syntax_reason(first_error, first_row, len(lines)))


def _same_tree(text: str, tree: ast.Module, path: str) -> bool:
    try:
        return same_ast(ast.parse(text, filename=path), tree)
    except SyntaxError:
        return False


def same_ast(a: object, b: object) -> bool:
    """``ast.dump(a) == ast.dump(b)`` (the fields, not the positions), without building the two
    strings and stopping at the first difference: a splice compares whole files per child."""
    if isinstance(a, ast.AST):
        return type(a) is type(b) and all(
            same_ast(getattr(a, name, None), getattr(b, name, None)) for name in a._fields
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_ast, a, b))
    return type(a) is type(b) and repr(a) == repr(b)  # 1 vs 1.0 vs True, 0.0 vs -0.0 differ


def _scan_file_for_splice(path: str, text: str, marker: str) -> list[_RawSegment]:
    try:
        return _scan_file(path, text, marker)
    except GeError as exc:
        raise SpliceError(f"the new code breaks the segment structure: {exc.message}") from exc
