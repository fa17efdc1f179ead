"""SEARCH/REPLACE edits, written against the survivors of `tools/mutation_test.sh` on
`evolution/diffedit.py` (issue 25): the block a failure names and what it says (a fix prompt
shows both), line endings, the tolerant fallback's re-indentation and blank edges, the snippet's
length, and the smallest block `edit_block` makes. Each test was checked against its mutants."""

from __future__ import annotations

import pytest

from guided_evolution.evolution import diffedit
from guided_evolution.evolution.diffedit import (
    DiffBlock,
    DiffError,
    apply_blocks,
    apply_diff,
    edit_block,
    parse_blocks,
)

CODE = "def f(a):\n    x = a + 1\n    y = x * 2\n    return y\n"


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


GOOD = block("    x = a + 1\n", "    x = a + 2\n")


def _error(reply: str, code: str = CODE) -> tuple[str, int | None, str]:
    with pytest.raises(DiffError) as info:
        apply_diff(reply, code)
    return info.value.reason, info.value.block, info.value.detail


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (
            "<<<<<<< SEARCH\n    y\n<<<<<<< SEARCH\n",
            (diffedit.REASON_MALFORMED, 2, "SEARCH line inside a block"),
        ),
        (
            ">>>>>>> REPLACE\n",
            (diffedit.REASON_MALFORMED, 2, "REPLACE line without its SEARCH and ======= lines"),
        ),
        (
            "<<<<<<< SEARCH\n    y\n=======\n    z\n=======\n",
            (diffedit.REASON_MALFORMED, 2, "a second ======= line"),
        ),
        (
            "<<<<<<< SEARCH\n    y = x * 2\n=======\n",
            (diffedit.REASON_TRUNCATED, 2, "no >>>>>>> REPLACE line"),
        ),
    ],
)
def test_a_malformed_second_block_is_named_with_what_is_wrong(
    tail: str, expected: tuple[str, int, str]
) -> None:
    with pytest.raises(DiffError) as info:
        parse_blocks(GOOD + tail)
    assert (info.value.reason, info.value.block, info.value.detail) == expected


def test_an_unfinished_reasoning_says_why() -> None:
    with pytest.raises(DiffError) as info:
        parse_blocks("<think>\n" + GOOD)
    assert info.value.reason == diffedit.REASON_UNFINISHED and info.value.block is None
    assert info.value.detail  # the extraction's own reason


def test_a_reply_with_lone_carriage_returns_parses_as_lines() -> None:
    blocks = parse_blocks(GOOD.replace("\n", "\r"))
    assert blocks == [DiffBlock("    x = a + 1\n", "    x = a + 2\n")]


# --------------------------------------------------------------------------- line endings


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_code_with_other_line_endings_is_edited_by_lines(newline: str) -> None:
    result = apply_diff(GOOD, CODE.replace("\n", newline))
    assert result.code == CODE.replace("a + 1", "a + 2")  # LF lines, the final newline kept
    assert result.tolerant == ()


def test_the_final_newline_or_its_absence_is_kept() -> None:
    assert apply_diff(GOOD, CODE.removesuffix("\n")).code == CODE.replace("a + 1", "a + 2")[:-1]
    assert apply_diff(GOOD, CODE).code.endswith("return y\n")


# --------------------------------------------------------------------------- failures' details


def test_not_found_and_ambiguous_details_show_the_search() -> None:
    assert _error(block("    z = 0\n", "    z = 1\n")) == (
        diffedit.REASON_NOT_FOUND, 1, "z = 0",
    )  # fmt: skip
    twice = CODE + "    x = a + 1\n"
    assert _error(GOOD, twice) == (diffedit.REASON_AMBIGUOUS, 1, "2 places: x = a + 1")


def test_a_long_search_is_shortened_to_80_characters_in_the_detail() -> None:
    long = "    w = " + "1 + " * 30 + "1\n"
    reason, _, detail = _error(block(long, "    w = 0\n"))
    assert reason == diffedit.REASON_NOT_FOUND
    assert len(detail) == 80 and detail.endswith("...") and detail[:-3] == long.strip()[:77]
    exact = "    v = " + "1" * (80 - len("v = ")) + "\n"  # 80 characters stripped: kept whole
    assert _error(block(exact, "    v = 0\n"))[2] == exact.strip()


def test_a_search_found_only_outside_with_other_spacing_reaches_outside() -> None:
    outside = "class Net:\n  def g(self):\n      return 7\n"
    with pytest.raises(DiffError) as info:
        apply_diff(block("    return 7\n", "    return 8\n"), CODE, outside=outside)
    assert info.value.reason == diffedit.REASON_OUTSIDE


def test_a_custom_marker_line_in_the_search_reaches_outside() -> None:
    reply = block("# ==EVOLVE==\n    x = a + 1\n", "    x = a + 2\n")
    with pytest.raises(DiffError) as info:
        apply_diff(reply, CODE, marker="# ==EVOLVE==")
    assert (info.value.reason, info.value.block) == (diffedit.REASON_OUTSIDE, 1)
    assert "# ==EVOLVE==" in info.value.detail


# --------------------------------------------------------------------------- the tolerant path


def test_a_replacement_moved_left_of_column_0_names_its_block() -> None:
    reply = GOOD + block("x = a * 3\n", "x = 4\n        y = 5\n  z = 6\n")
    code = CODE + "x = a * 3\n"
    with pytest.raises(DiffError) as info:
        apply_diff(reply.replace("x = a * 3\n=", "    x = a * 3\n="), code)
    assert (info.value.reason, info.value.block) == (diffedit.REASON_INDENT, 2)


def test_the_tolerant_fallback_reindents_blank_lines_and_column_0() -> None:
    # The search is indented 8, the code 4: every replacement line moves 4 to the left; a line
    # at 4 lands at column 0 (allowed), a blank line stays empty and the lines after it stay.
    reply = block(
        "        x = a + 1\n\n        y = x * 2\n",
        "        x = a + 3\n\n    Xs = [x]\n        y = x * 4\n",
    )
    code = "def f(a):\n    x = a + 1\n\n    y = x * 2\n    return y\n"
    result = apply_diff(reply, code)
    assert result.tolerant == (1,)
    assert result.code == "def f(a):\n    x = a + 3\n\nXs = [x]\n    y = x * 4\n    return y\n"


def test_a_blank_line_with_spaces_in_the_search_matches_an_empty_one() -> None:
    reply = block("        x = a + 1\n        \n        y = x * 2\n", "        x = 0\n")
    code = "def f(a):\n    x = a + 1\n\n    y = x * 2\n"
    assert apply_diff(reply, code).code == "def f(a):\n    x = 0\n"


def test_tabs_in_the_found_place_indent_the_replacement_with_tabs_and_spaces() -> None:
    code = "def f(a):\n\tif a:\n\t\tx = 1\n"
    reply = block("        if a:\n                x = 1\n", "        if a:\n                  x = 2\n")
    assert apply_diff(reply, code).code == "def f(a):\n\tif a:\n\t\t  x = 2\n"


def test_blank_edges_of_the_search_are_dropped_with_as_many_of_the_replacement() -> None:
    code = "def f(a):\n    x = a + 1\n    return x\n"
    reply = block("\n\n  x = a + 1\n\n", "\n  x = a + 2\n\n")
    assert apply_diff(reply, code).code == "def f(a):\n    x = a + 2\n    return x\n"
    kept = block("\n  x = a + 1\n\n", "  x = a + 2\n  y = 0\n")  # no blank edges to drop
    assert apply_diff(kept, code).code == "def f(a):\n    x = a + 2\n    y = 0\n    return x\n"


def test_trailing_blank_edges_of_a_longer_search_are_dropped() -> None:
    code = "def f(a):\n    x = a + 1\n    return x\n"
    reply = block("  x = a + 1\n  return x\n\n", "  x = a + 2\n  y = x\n  return y\n\n")
    assert apply_diff(reply, code).code == "def f(a):\n    x = a + 2\n    y = x\n    return y\n"


def test_the_found_places_base_is_its_narrowest_indentation_tabs_counted_as_8() -> None:
    code = "def f(a):\n\tif a:\n    x = 1\n"  # a tab (width 8) above 4 spaces
    reply = block("        if a:\n    x = 1\n", "        if a:\n    x = 2\n")
    assert apply_diff(reply, code).code == "def f(a):\n\tif a:\n    x = 2\n"


def test_tolerant_ambiguity_shows_the_places_and_the_search() -> None:
    code = "def f(a):\n    if a:\n        return a\n    return a\n"
    with pytest.raises(DiffError) as info:
        apply_diff(block("return a\n", "return -a\n"), code)
    assert info.value.detail == "2 places: return a"


def test_a_search_that_is_nowhere_is_not_found_whatever_it_says() -> None:
    assert _error(block("XXXX\n", "y\n"))[:2] == (diffedit.REASON_NOT_FOUND, 1)


def test_an_empty_fenced_replacement_deletes_the_lines() -> None:
    reply = "<<<<<<< SEARCH\n    y = x * 2\n=======\n```python\n```\n>>>>>>> REPLACE\n"
    assert parse_blocks(reply) == [DiffBlock("    y = x * 2\n", "")]
    assert apply_diff(reply, CODE).code == "def f(a):\n    x = a + 1\n    return y\n"


# --------------------------------------------------------------------------- edit_block


def test_edit_block_grows_one_line_each_side_until_its_search_is_unique() -> None:
    old = "a = 1\nx = 0\nb = 2\nc = 3\nx = 0\nd = 4\ne = 5\nf = 6\n"
    new = old.replace("c = 3\nx = 0\n", "c = 3\nx = 9\n")
    found = edit_block(old, new)
    assert found == DiffBlock("c = 3\nx = 0\nd = 4\n", "c = 3\nx = 9\nd = 4\n")
    assert apply_blocks(old, [found]).code == new


def test_edit_block_never_searches_blank_lines_only() -> None:
    old = "a = 1\n\n\nb = 2\n"
    new = "a = 1\nc = 3\nb = 2\n"
    found = edit_block(old, new)
    assert found.search.strip()
    assert apply_blocks(old, [found]).code == new
    with pytest.raises(ValueError, match="same lines"):
        edit_block(old, old)
