"""What ge computes once per child instead of several times gives the answers it gave before.

The comment scan that splits a file into segments reads comments and literals with one regular
expression instead of the tokenizer; the segments' top-level definitions and a file's syntax check
are cached by their text; a splice that keeps every definition of its segment skips the walk of
the whole file. Each answer is checked against the slow way it replaced.
"""

from __future__ import annotations

import ast
import sysconfig
from pathlib import Path

import pytest

from guided_evolution.errors import GeError
from guided_evolution.evolution import segments
from guided_evolution.evolution.segments import parse_genome
from guided_evolution.evolution.splice import SpliceError, _defined_names, splice

TRICKY = [
    "x = 1  # trailing\n# alone\n    # indented alone\n",
    's = """\n# inside a docstring\n"""\n# after\n',
    "s = '''a\n# in\n''' # c\n",
    "s = 'a\\\n# continued single-quoted\n'\n# real\n",
    'b = rb"\\"#" # x\n#y\n',
    "f = f\"{'#'}\" \n# z\n",
    "t = ('a'\n     # inside brackets\n     'b')\n",
    's = """a\\"""\n# still in\n"""\n#out\n',
    "q = '''x''''#'\n#k\n",
    "e = ''\n#e\n",
    "no = 'end'# tail\n",
    "#first\n#second",
    "u = 'ü' # ü\n# ü alone\n",
]


def _stdlib_sample(every: int = 25) -> list[Path]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py"))
    return files[::every]


@pytest.mark.parametrize("text", TRICKY)
def test_the_comment_scan_reads_tricky_literals_as_the_tokenizer_does(text: str) -> None:
    assert segments._comment_only_lines("m.py", text) == (
        segments._comment_only_lines_tokenized("m.py", text)
    )


def test_the_comment_scan_agrees_with_the_tokenizer_on_the_standard_library() -> None:
    checked = 0
    for path in _stdlib_sample():
        try:
            text = path.read_text(encoding="utf-8")
            expected = segments._comment_only_lines_tokenized(str(path), text)
        except (UnicodeDecodeError, GeError):
            continue
        assert segments._comment_only_lines(str(path), text) == expected, path
        checked += 1
    assert checked > 200


@pytest.mark.parametrize(
    "text",
    ["x = 1\r\n# crlf\r\n", "s = 'open\n# c\n", "\fx = 1\n# ff\n", 's = """never closed\n# c\n'],
)
def test_text_the_scan_cannot_read_goes_to_the_tokenizer(text: str) -> None:
    try:
        expected: object = segments._comment_only_lines_tokenized("m.py", text)
    except GeError as exc:
        with pytest.raises(GeError) as got:
            segments._comment_only_lines("m.py", text)
        assert got.value.message == exc.message
        return
    assert segments._comment_only_lines("m.py", text) == expected


def test_a_marker_inside_a_docstring_is_still_refused() -> None:
    text = 'def f():\n    """\n# --OPTION--\n    """\n\n# --OPTION--\nx = 1\n'
    with pytest.raises(GeError, match="inside a string literal"):
        parse_genome({"m.py": text}, ["m.py"])


def test_top_level_definitions_are_cached_read_only_and_follow_the_text() -> None:
    first = segments._top_level_defs("def f():\n    pass\nclass C:\n    pass\n")
    assert dict(first) == {"f": "function", "C": "class"}
    with pytest.raises(TypeError):
        first["g"] = "function"  # type: ignore[index]
    again = segments._top_level_defs("def f():\n    pass\nclass C:\n    pass\n")
    assert dict(again) == dict(first)
    changed = segments._top_level_defs("def g():\n    pass\n")
    assert dict(changed) == {"g": "function"}
    # code that does not parse on its own is read by its lines' look, as before
    assert dict(segments._top_level_defs("    def h(x):\n        return (x\n")) == {"h": "function"}


def test_the_syntax_check_is_cached_by_text_not_by_path_alone() -> None:
    good = "# --OPTION--\nx = 1\n"
    bad = "# --OPTION--\nx = (\n"
    assert parse_genome({"m.py": good}, ["m.py"]).segments
    with pytest.raises(GeError, match=r"m.py:2: the seed is not valid Python"):
        parse_genome({"m.py": bad}, ["m.py"])
    with pytest.raises(GeError):  # a second time from the cache: still refused
        parse_genome({"m.py": bad}, ["m.py"])
    assert parse_genome({"m.py": good}, ["m.py"]).segments


SEED = (
    "import os\n\n# --OPTION--\ndef helper(x):\n    return x + 1\n\n"
    "# --OPTION--\ndef main():\n    return helper(2)\n"
)


@pytest.mark.parametrize(
    ("new", "rejected"),
    [
        ("def helper(x):\n    return x + 2\n", False),  # kept: the shortcut
        ("def helper2(x):\n    return x + 2\n", True),  # renamed, used by main
        ("helper = lambda x: x\n", False),  # gone as a def, still a name of the file
        ("def other():\n    def helper(x):\n        return x\n    return helper\n", False),
        ("class helper:\n    pass\n", False),
        ("if True:\n    def helper(x):\n        return x\n", False),
    ],
)
def test_a_splice_keeps_or_refuses_a_used_definition_as_the_full_walk_says(
    new: str, rejected: bool
) -> None:
    genome = parse_genome({"m.py": SEED}, ["m.py"])
    key = genome.segments[0].key
    if rejected:
        with pytest.raises(SpliceError, match="removed function helper used elsewhere"):
            splice(genome, key, new)
        return
    files = splice(genome, key, new)
    assert "helper" in _defined_names(ast.parse(files["m.py"]))


LINES = [
    "x = 1\n",
    "def f(a,\n",
    "      b):\n",
    "    return a + \\\n",
    "        b\n",
    's = """doc\n',
    "# in the doc\n",
    'end"""\n',
    "t = ('a'\n",
    "     'b')\n",
    "if x:\n",
    "    y = 2\n",
    "z = f'''{x}\n",
    "'''\n",
    "w = 'a\\\n",
    "b'\n",
]
SIMPLE = ["x = 1\n", "y = x  # same\n", "print(y)\n", "\n"]
NOTES = [
    "# -- NOTE --\n# keep it small\n# -- NOTE --\n",
    "# -- NOTE --\n\n    # indented\n# -- NOTE --\n",
    "# -- NOTE --\nprint('code in a note')\n# -- NOTE --\n",
    "# -- NOTE --\n# no newline at the end\n# -- NOTE --",
]


def test_notes_said_to_keep_the_tree_keep_it() -> None:
    """Whenever the cheap check says the NOTE blocks at their anchors leave the syntax tree as
    it is, parsing both texts agrees; it says so often, and never for a note inside a literal."""
    import random

    from guided_evolution.evolution.segments import _Note
    from guided_evolution.evolution.splice import _attach_notes, _notes_keep_tree, same_ast

    rng = random.Random(7)
    said = 0
    for _ in range(3000):
        code = [
            rng.choice(LINES) if rng.random() < 0.4 else rng.choice(SIMPLE)
            for _ in range(rng.randint(1, 8))
        ]
        try:
            tree = ast.parse("".join(code))
        except SyntaxError:
            continue
        notes = []
        for _ in range(rng.randint(1, 2)):
            anchor = rng.choice([None, *(line.strip() for line in code if line.strip())])
            notes.append(_Note(rng.choice(NOTES), anchor, rng.randint(0, 1)))
        if _notes_keep_tree(code, notes):
            said += 1
            assert same_ast(ast.parse("".join(_attach_notes(code, notes, False))), tree), (
                code,
                notes,
            )
    assert said > 150
    inside = ['s = """doc\n', 'end"""\n']
    assert not _notes_keep_tree(inside, [_Note(NOTES[0], 's = """doc', 0)])
