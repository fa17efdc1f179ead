"""The genome: segment parsing, NOTE blocks, splicing and its validation, variant ids."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from guided_evolution.errors import GeError
from guided_evolution.evolution.segments import (
    NOTE_MARKER,
    Genome,
    context_view,
    differing_segments,
    parse_genome,
    variant_id,
)
from guided_evolution.evolution.splice import SpliceError, splice

MODEL = '''"""A header docstring that mentions the marker style but not the marker line."""

import math

# --OPTION--
def features(x):
    # -- NOTE --
    # Return a list of floats computed from x.
    # -- NOTE --
    return [1.0, x, x * x]


# --OPTION--
class SE:
    def __init__(self, k=3):
        self.k = k

    def __call__(self, v):
        return [a * self.k for a in v]


# --OPTION--
def predict(x, weights):
    return sum(w * f for w, f in zip(weights, SE()(features(x))))
'''

# segments that sit inside a class body (indented markers)
INDENTED = """import torch


class Net:
    def __init__(self):
        self.width = 4

    # --OPTION--
    def forward(self, x):
        return helper(x) * self.width

    # --OPTION--
    def extra(self, x):
        # -- NOTE --
        # keep this cheap
        # -- NOTE --
        return x + 1


def helper(x):
    return x
"""

# a segment that is a list of layers inside brackets
BRACKETS = """layers = [
    # --OPTION--
    ("conv", 3, 16),
    ("relu",),
    # --OPTION--
    ("pool", 2),
]
"""

CRLF = MODEL.replace("\n", "\r\n")

NO_FINAL_NEWLINE = "import os\n# --OPTION--\nA = 1\n# --OPTION--\ndef f():\n    return A"


def genome(text: str = MODEL, **extra: str) -> Genome:
    files = {"model.py": text, "README.md": "# docs\n", **extra}
    return parse_genome(files, ["model.py"])


# ----------------------------------------------------------------------------------- parsing


def test_parse_splits_segments_with_notes_and_names() -> None:
    g = genome()
    assert [s.key for s in g.segments] == ["model.py#0", "model.py#1", "model.py#2"]
    assert [s.name for s in g.segments] == ["features", "SE", "predict"]
    first = g.segments[0]
    assert first.code == "def features(x):\n    return [1.0, x, x * x]\n"
    assert first.notes == (
        "    # -- NOTE --\n    # Return a list of floats computed from x.\n    # -- NOTE --\n"
    )
    assert g.segments[1].notes == ""
    # offsets: the body starts right after a marker line and ends where the next one starts
    for seg in g.segments:
        assert MODEL[: seg.start].endswith("# --OPTION--\n")
        assert seg.end == len(MODEL) or MODEL[seg.end :].startswith("# --OPTION--")


def test_segment_without_definition_is_named_by_file_and_index() -> None:
    g = parse_genome({"m.py": "# --OPTION--\nX = 1\n"}, ["m.py"])
    assert g.segments[0].name == "m.py:0"
    assert g.segment("m.py#0").code == "X = 1\n"


def test_several_evolvable_files() -> None:
    files = {"a.py": MODEL, "b.py": INDENTED, "c.py": "x = 1\n"}
    g = parse_genome(files, ["a.py", "b.py"])
    assert g.evolvable == ("a.py", "b.py")
    assert [s.key for s in g.segments] == [
        "a.py#0",
        "a.py#1",
        "a.py#2",
        "b.py#0",
        "b.py#1",
    ]
    assert g.segment("b.py#0").name == "forward"
    assert g.files["c.py"] == "x = 1\n"
    with pytest.raises(KeyError):
        g.segment("c.py#0")


def test_marker_in_docstring_is_an_error_naming_file_and_line() -> None:
    text = 'def f():\n    """Doc.\n\n    # --OPTION--\n    """\n\n# --OPTION--\nX = 1\n'
    with pytest.raises(GeError, match=r"model\.py:4: .*inside a string literal"):
        parse_genome({"model.py": text}, ["model.py"])


def test_file_without_markers_is_an_error_with_the_fix() -> None:
    with pytest.raises(GeError) as info:
        parse_genome({"model.py": "x = 1\n"}, ["model.py"])
    assert "model.py" in info.value.message
    assert info.value.hint is not None and "# --OPTION--" in info.value.hint


def test_missing_file_unclosed_note_and_bad_seed_are_errors() -> None:
    with pytest.raises(GeError, match="not in the seed"):
        parse_genome({"a.py": MODEL}, ["model.py"])
    unclosed = "# --OPTION--\ndef f():\n    # -- NOTE --\n    return 1\n"
    with pytest.raises(GeError, match="not closed"):
        parse_genome({"m.py": unclosed}, ["m.py"])
    with pytest.raises(GeError, match="not valid Python"):
        parse_genome({"m.py": "# --OPTION--\ndef f(:\n"}, ["m.py"])
    with pytest.raises(GeError, match="not a Python comment"):
        parse_genome({"m.py": MODEL}, ["m.py"], marker="--OPTION--")


def test_custom_marker() -> None:
    text = "import os\n# >>> evolve\nA = 1\n# >>> evolve\nB = 2\n"
    g = parse_genome({"m.py": text}, ["m.py"], marker="# >>> evolve")
    assert [s.code for s in g.segments] == ["A = 1\n", "B = 2\n"]


def test_context_view_marks_the_segment_place() -> None:
    view = context_view(genome(), "model.py#1")
    assert "class SE" not in view
    assert "def features(x):" in view and "def predict" in view
    assert "# --OPTION--\n# <<< the segment being changed goes here >>>\n" in view


# ------------------------------------------------------------------------------ splicing


def _new_code_for(seg_code: str) -> str:
    indent = seg_code[: len(seg_code) - len(seg_code.lstrip(" "))]
    if seg_code.lstrip().startswith("("):  # an element of a bracketed list
        return f'{indent}("changed",),\n' + seg_code
    return seg_code.rstrip("\n") + f"\n{indent}_changed = [1, 2]\n"


@pytest.mark.parametrize(
    "text",
    [MODEL, INDENTED, BRACKETS, CRLF, NO_FINAL_NEWLINE],
    ids=["plain", "indented", "brackets", "crlf", "no-final-newline"],
)
def test_splicing_any_segment_changes_exactly_its_bytes(text: str) -> None:
    files = {"model.py": text, "other.py": "from model import *\n", "data.txt": "x"}
    g = parse_genome(files, ["model.py"])
    assert len(g.segments) >= 2
    for seg in g.segments:
        new_files = splice(g, seg.key, _new_code_for(seg.code))
        new_text = new_files["model.py"]
        # every byte before the body and after it is unchanged
        assert new_text[: seg.start] == text[: seg.start]
        tail = text[seg.end :]
        assert new_text.endswith(tail)
        assert new_text[seg.start : len(new_text) - len(tail)] != text[seg.start : seg.end]
        assert {k: v for k, v in new_files.items() if k != "model.py"} == {
            k: v for k, v in files.items() if k != "model.py"
        }
        child = parse_genome(new_files, ["model.py"])
        assert differing_segments(g, child) == [seg.key]
        assert child.segment(seg.key).notes == seg.notes
        assert "_changed" in child.segment(seg.key).code or "changed" in child.segment(seg.key).code
        if "\r\n" in text:
            assert "\n" not in new_text.replace("\r\n", "")


def test_splicing_every_segment_in_turn_composes() -> None:
    g = genome()
    for seg in list(g.segments):
        g = parse_genome(splice(g, seg.key, _new_code_for(seg.code)), ["model.py"])
    assert all("_changed" in s.code for s in g.segments)
    assert g.files["model.py"].startswith(MODEL[: genome().segments[0].start])


def test_identity_splice_changes_nothing() -> None:
    for text in (MODEL, INDENTED, CRLF):
        g = genome(text)
        for seg in g.segments:
            assert splice(g, seg.key, seg.code) == g.files
            assert splice(g, seg.key, seg.notes + seg.code) == g.files


def test_notes_are_reattached_after_their_anchor_line() -> None:
    g = genome()
    new = splice(g, "model.py#0", "def features(x):\n    return [1.0, x]\n")["model.py"]
    assert (
        "def features(x):\n    # -- NOTE --\n    # Return a list of floats computed from x.\n"
        in new
    )
    assert "    # -- NOTE --\n    return [1.0, x]\n" in new


def test_notes_go_to_the_top_when_the_anchor_is_gone() -> None:
    g = genome()
    new = splice(g, "model.py#0", "def features(y):\n    return [y]\n")["model.py"]
    assert "# --OPTION--\n    # -- NOTE --\n    # Return a list" in new
    assert parse_genome({"model.py": new}, ["model.py"]).segments[0].notes == g.segments[0].notes


def test_echoed_or_edited_notes_are_not_duplicated() -> None:
    g = genome()
    reply = (
        "def features(x):\n    # -- NOTE --\n    # my own note\n    # -- NOTE --\n    return [x]\n"
    )
    new = splice(g, "model.py#0", reply)["model.py"]
    assert new.count(NOTE_MARKER) == 2
    assert "my own note" not in new and "Return a list of floats" in new


def test_echoed_leading_marker_is_dropped_but_inner_markers_are_rejected() -> None:
    g = genome()
    new = splice(g, "model.py#2", "# --OPTION--\ndef predict(x, weights):\n    return 0\n")
    assert new["model.py"].count("# --OPTION--") == 3
    with pytest.raises(SpliceError, match="marker"):
        splice(g, "model.py#2", "def predict(x, w):\n    return 0\n# --OPTION--\nY = 2\n")


def test_reindents_a_body_returned_at_column_zero() -> None:
    g = parse_genome({"model.py": INDENTED}, ["model.py"])
    new = splice(g, "model.py#0", "def forward(self, x):\n    return helper(x) * 2\n")["model.py"]
    assert "    def forward(self, x):\n        return helper(x) * 2\n" in new
    # first line stripped by the LLM, the rest correctly indented
    new = splice(g, "model.py#0", "def forward(self, x):\n        return helper(x) * 3\n")[
        "model.py"
    ]
    assert "    def forward(self, x):\n        return helper(x) * 3\n" in new


def test_crlf_reply_into_lf_file_has_no_carriage_returns() -> None:
    g = genome()
    new = splice(g, "model.py#2", "def predict(x, weights):\r\n    return 1\r\n")["model.py"]
    assert "\r" not in new


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("", "empty code"),
        ("   \n\n", "empty code"),
        ("# only a comment\n", "empty code"),
        ("def predict(x, weights):\n    return (1\n", "syntax error at line 2"),
        (
            "def predict(x, weights):\n    pass\nreturn 3\n",
            "syntax error at line 3: 'return' outside function",
        ),
        ("def predict(x, weights):\n    x = '''\n", "syntax error at line 2"),
    ],
)
def test_invalid_code_is_rejected_with_a_reason(code: str, reason: str) -> None:
    with pytest.raises(SpliceError) as info:
        splice(genome(), "model.py#2", code)
    assert info.value.reason.startswith(reason)
    assert "\n" not in info.value.reason


def test_removing_a_name_used_elsewhere_is_rejected() -> None:
    g = genome()
    with pytest.raises(SpliceError, match=r"removed class SE used elsewhere in model\.py"):
        splice(g, "model.py#1", "class Squeeze:\n    pass\n")
    with pytest.raises(SpliceError, match=r"removed function features used elsewhere in model\.py"):
        splice(g, "model.py#0", "def feats(x):\n    return [x]\n")
    # predict is not used anywhere else: renaming it is fine
    new = splice(g, "model.py#2", "def predict2(x, weights):\n    return 0\n")
    assert "def predict2" in new["model.py"]
    # still defined under the same name by an assignment: fine
    splice(g, "model.py#1", "class Squeeze:\n    pass\n\n\nSE = Squeeze\n")


def test_names_used_by_other_files_are_protected() -> None:
    g = genome(
        MODEL.replace("SE()(features(x))", "features(x)"),
        **{"evaluate.py": "from model import SE\n"},
    )
    with pytest.raises(SpliceError, match=r"removed class SE used elsewhere in evaluate\.py"):
        splice(g, "model.py#1", "class Other:\n    pass\n")


def test_new_code_that_swallows_a_marker_is_rejected() -> None:
    text = "# --OPTION--\nA = 1\n# --OPTION--\nB = 1  # '''\n"
    g = parse_genome({"m.py": text}, ["m.py"])
    # opens a string that the next segment's quotes close: the file parses, the marker is eaten
    with pytest.raises(SpliceError, match="segment"):
        splice(g, "m.py#0", "A = '''\n")


# ------------------------------------------------------------------------- ids and diffs


def test_variant_id_follows_the_contract() -> None:
    files = {"b.py": "B\n", "a.py": "A\n", "data.txt": "ignored"}
    expected = hashlib.sha256(b"a.py\0A\n\0b.py\0B\n\0").hexdigest()[:16]
    assert variant_id(files, ["b.py", "a.py"]) == expected
    assert variant_id({**files, "data.txt": "other"}, ["a.py", "b.py"]) == expected
    assert variant_id({**files, "a.py": "A2\n"}, ["a.py", "b.py"]) != expected
    with pytest.raises(GeError):
        variant_id(files, ["c.py"])


def test_differing_segments() -> None:
    a = genome()
    b = parse_genome(splice(a, "model.py#1", _new_code_for(a.segments[1].code)), ["model.py"])
    assert differing_segments(a, a) == []
    assert differing_segments(a, b) == ["model.py#1"]
    assert differing_segments(b, a) == ["model.py#1"]


def test_blank_lines_around_the_reply_are_ignored() -> None:
    code = textwrap.dedent(
        """
        def predict(x, weights):
            return 42
        """
    )
    new = splice(genome(), "model.py#2", code)["model.py"]
    assert new.endswith("def predict(x, weights):\n    return 42\n")
