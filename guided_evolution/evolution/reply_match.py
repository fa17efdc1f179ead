"""From an LLM reply to the new code of the one segment an operator asked to change.

Models answer in several forms: the segment alone; the whole file echoed (with or without the
marker lines) with the segment changed; several segments of the file; the segment followed by an
example-usage or a test block. Two rules make each of these the child a user expects:

- Of several code blocks, those that define the most of the segment's own names (its classes,
  functions and assigned names) are the candidates, largest first: an example or a test that only
  uses those names never replaces the segment. Only when no block defines any of them does the
  largest block compete (then ``splice`` names any kept name it drops).
- A block that is the file, or several pieces of it, is aligned with the parent's file: split at
  the marker lines as the genome is (or, without markers, aligned line by line, whitespace
  ignored), each part is matched to the header or a segment, and only the requested segment's
  part is taken. Changes to the header or other segments never reach the child; when the
  requested segment is unchanged but others changed, the reply is rejected (the request, its
  prompt and the child's lineage name the requested segment, so taking another would mislabel
  the child).
"""

from __future__ import annotations

import ast
import difflib
import functools
import re
import textwrap
import warnings
from collections import Counter
from collections.abc import Sequence

from guided_evolution.evolution.codeblock import ExtractionError, best_blocks, code_blocks
from guided_evolution.evolution.segments import (
    NOTE_MARKER,
    Genome,
    Segment,
    _lf,
    _split_lines,
    _top_level_defs,
)

HEADER = -1  # label of the file's part before its first marker
MAX_ALIGNED_LINES = 3000  # longer replies or files are taken as the segment alone (no alignment)
_DEF_RE = re.compile(r"^[ \t]*(?:async[ \t]+def|def|class)[ \t]+([A-Za-z_]\w*)", re.M)
_ASSIGN_RE = re.compile(r"^[ \t]*([A-Za-z_]\w*)[ \t]*(?::[^=\n]*)?=(?!=)", re.M)


def _parse(code: str) -> ast.Module | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None


@functools.lru_cache(maxsize=256)
def _names(code: str) -> tuple[frozenset[str], frozenset[str], frozenset[str]] | None:
    """(the names defined at the top level, those defined at any depth, the imported ones) of a
    piece of code, from one parse; None when it does not parse. Cached: a reply's blocks are
    ranked and checked, and its parent's pieces compared, more than once each."""
    tree = _parse(code)
    if tree is None:
        return None
    top: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            top.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                top.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    defined: set[str] = set()
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            imported.update((a.asname or a.name).split(".")[0] for a in node.names)
    return frozenset(top), frozenset(defined), frozenset(imported)


def top_names(code: str) -> set[str]:
    """The classes, functions and names a piece of code defines at its own top level."""
    names = _names(code)
    return set(_top_level_defs(code)) if names is None else set(names[0])


def defined_names(code: str) -> set[str]:
    """Every class, function and assigned name a block defines, at any depth."""
    names = _names(code)
    if names is None:
        return set(_DEF_RE.findall(code)) | set(_ASSIGN_RE.findall(code))
    return set(names[1])


def _key(line: str) -> str:
    return " ".join(line.split())


def _norm(text: str, *, comments: bool = True) -> list[str]:
    """The text's non-blank lines, whitespace-normalised, NOTE blocks (and maybe comments) out."""
    out: list[str] = []
    in_note = False
    for line in _split_lines(_lf(text)):
        key = _key(line)
        if key == NOTE_MARKER:
            in_note = not in_note
        elif key and not in_note and (comments or not key.startswith("#")):
            out.append(key)
    return out


def segment_code(reply: str, genome: Genome, key: str) -> str:
    """The new code a reply proposes for segment `key` of `genome` (ready for ``splice``).

    ExtractionError with a one-line reason when the reply has no usable code for it. The
    segment's own code back means the reply leaves it unchanged.
    """
    seg = genome.segment(key)
    names = top_names(seg.code)
    rank = (lambda code: len(names & defined_names(code))) if names else None
    first_error: ExtractionError | None = None
    unchanged: str | None = None
    for code in best_blocks(code_blocks(reply), rank):
        try:
            new = _segment_part(code, genome, seg)
            if _norm(new) != _norm(seg.code):
                _check_kept(new, genome, names)
                return new
        except ExtractionError as exc:
            first_error = first_error or exc
            continue
        unchanged = unchanged or new
    if unchanged is not None:
        return unchanged
    assert first_error is not None  # best_blocks returns at least one block
    raise first_error


def _check_kept(code: str, genome: Genome, names: set[str]) -> None:
    """ExtractionError when the new code imports, instead of defining, a segment's name that another
    file uses: an example-usage or test block (``splice`` names a kept name that is just gone)."""
    parsed = _names(code)
    imported = parsed[2] if parsed is not None else frozenset()
    missing = sorted(n for n in names - defined_names(code) if n in genome.kept and n in imported)
    if missing:
        raise ExtractionError(
            f"the reply's code imports {missing[0]} instead of defining it (an example or a test, "
            f"not the segment); {genome.kept[missing[0]]} uses it"
        )


class _ParentFile:
    """The requested segment's file as lines (markers dropped), each labelled with its piece."""

    def __init__(self, genome: Genome, seg: Segment) -> None:
        self.lines: list[str] = []
        self.labels: list[int] = []
        label = HEADER
        for line in _split_lines(_lf(genome.files[seg.file])):
            if line.strip() == genome.marker:
                label += 1
                continue
            self.lines.append(line)
            self.labels.append(label)
        self.markers = label + 1
        self._texts = _texts(self.lines, self.labels)

    def text(self, label: int) -> str:
        return self._texts.get(label, "")


def _texts(lines: list[str], labels: Sequence[int | None]) -> dict[int, str]:
    """The lines of each label, joined in order."""
    parts: dict[int, list[str]] = {}
    for line, label in zip(lines, labels, strict=True):
        if label is not None:
            parts.setdefault(label, []).append(line)
    return {label: "".join(x) for label, x in parts.items()}


def _chunks(lines: list[str], marker: str) -> list[list[int]]:
    """Line indices of the parts of a block between its marker lines (first: before any)."""
    out: list[list[int]] = [[]]
    for i, line in enumerate(lines):
        if line.strip() == marker:
            out.append([])
        else:
            out[-1].append(i)
    return out


def _is_file_like(lines: list[str], parent: _ParentFile, genome: Genome, seg: Segment) -> bool:
    """Whether a block holds more than the segment: code on both sides of a marker line, names
    that another piece of the file defines, or the file's header at its start."""
    chunks = _chunks(lines, genome.marker)
    if sum(1 for c in chunks if any(lines[i].strip() for i in c)) > 1:
        return True
    code = "".join(lines)
    others: set[str] = set()
    for label in range(HEADER, parent.markers):
        if label != seg.index:
            others |= top_names(parent.text(label))
    if top_names(code) & (others - top_names(seg.code)):
        return True
    header = _norm(parent.text(HEADER))
    return bool(header) and _norm(code)[: len(header)] == header


def _segment_part(code: str, genome: Genome, seg: Segment) -> str:
    """The requested segment's code in one block: the block itself, or its matching part."""
    lines = _split_lines(code)
    parent = _ParentFile(genome, seg)
    too_long = max(len(lines), len(parent.lines)) > MAX_ALIGNED_LINES
    if too_long or not _is_file_like(lines, parent, genome, seg):
        if any(line.strip() == genome.marker for line in lines):  # echoed markers at the edges
            return "".join(line for line in lines if line.strip() != genome.marker)
        return code
    parts = _texts(lines, _labels(lines, parent, genome.marker, seg.index))
    mine = parts.pop(seg.index, "")
    if _norm(mine) and _norm(mine) != _norm(seg.code):
        return mine
    changed = [  # comments dropped: a model often drops them from what it echoes
        lab
        for lab, text in sorted(parts.items())
        if _norm(text) and _norm(text, comments=False) != _norm(parent.text(lab), comments=False)
    ]
    others = [s for s in genome.segments if s.file == seg.file and s.index in changed]
    if others:
        names = ", ".join(f"{s.name} ({s.key})" for s in others)
        raise ExtractionError(
            f"the reply changes {names} but not the requested segment {seg.name} ({seg.key})"
        )
    if changed:
        raise ExtractionError(
            f"the reply changes only code outside the segments, not {seg.name} ({seg.key})"
        )
    return seg.code


def _labels(lines: list[str], parent: _ParentFile, marker: str, requested: int) -> list[int | None]:
    """The parent piece (HEADER or segment index) of each line of a block; None for markers."""
    rows = [i for i, line in enumerate(lines) if line.strip() and line.strip() != marker]
    prow = [i for i, line in enumerate(parent.lines) if line.strip()]
    aligned = _align(
        [_key(parent.lines[i]) for i in prow],
        [parent.labels[i] for i in prow],
        [_key(lines[i]) for i in rows],
        requested,
    )
    by_row = dict(zip(rows, aligned, strict=True))
    chunks = _chunks(lines, marker)
    if len(chunks) > 1:  # the marker lines decide: by position, or by what each part matches
        for n, chunk in enumerate(chunks):
            votes = Counter(by_row[i] for i in chunk if i in by_row)
            label = n - 1 if len(chunks) == parent.markers + 1 else None
            if label is None and votes:
                label = votes.most_common(1)[0][0]
            for i in chunk:
                by_row[i] = label if label is not None else HEADER
    out: list[int | None] = []
    last: int | None = next(iter(by_row.values()), HEADER)
    for i, line in enumerate(lines):
        if line.strip() == marker:
            out.append(None)
            continue
        last = by_row.get(i, last)
        out.append(last)
    return out


def _align(
    parent_keys: list[str], parent_labels: list[int], keys: list[str], requested: int
) -> list[int]:
    """A label for each reply line: that of the parent line it equals, or of the lines it
    replaces; lines added between pieces go to the requested segment when it lies there."""
    n = len(parent_keys)
    out = [HEADER] * len(keys)
    matcher = difflib.SequenceMatcher(None, parent_keys, keys, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        span = parent_labels[i1:i2]
        if tag == "delete":
            continue
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1 and len(set(span)) > 1):
            out[j1:j2] = span
            continue
        around = span or [
            parent_labels[i1 - 1] if i1 > 0 else HEADER,
            parent_labels[min(i1, n - 1)] if n else HEADER,
        ]
        low, high = min(around), max(around)
        out[j1:j2] = [requested if low <= requested <= high else low] * (j2 - j1)
    return out
