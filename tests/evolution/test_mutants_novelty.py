"""Novelty rejection's decisions, pinned where hand-made and mutmut mutants survived the other
tests (issue 25 item 7; tools/mutation_test.sh, docs/mutation-testing.md): the multi-position
pruning bound, a position the archived variant lacks, which positions are new, ties, the
threshold's edge and the reason line."""

from __future__ import annotations

import pytest

from guided_evolution.evolution.diversity import tokens
from guided_evolution.evolution.novelty import NoveltyArchive, cosine_distance, new_keys

SAME = "x = a + b"
# Five tokens against three, none shared: edit distance 5 of 5 (1.0), while the length bound
# (the lower bound the archive prunes with) is only 2 / 5 = 0.4.
LONG, SHORT = "p ( q ) r", "u v w"


def test_the_example_segments_are_what_the_bound_test_needs() -> None:
    assert len(tokens(LONG)) == 5 and len(tokens(SHORT)) == 3
    assert not set(tokens(LONG)) & set(tokens(SHORT))


def test_a_far_position_is_measured_exactly_not_by_its_length_bound() -> None:
    # Two positions: A identical (0), B at distance 1.0 whose length bound is 0.4. The mean is
    # 0.5 > 0.3: not a near-duplicate. Pruning B at the bare threshold (0.3 < 0.4) would use
    # 0.4 and find a mean of 0.2.
    archive = NoveltyArchive(threshold=0.3)
    archive.add("old", {"f#0": SAME, "f#1": LONG})
    assert archive.check({"f#0": SAME, "f#1": SHORT}, ["f#0", "f#1"]) is None
    # the same pair within the bound on its own is a near-duplicate at the exact mean
    archive = NoveltyArchive(threshold=0.5)
    archive.add("old", {"f#0": SAME, "f#1": LONG})
    found = archive.check({"f#0": SAME, "f#1": SHORT}, ["f#0", "f#1"])
    assert found is not None and found.variant == "old" and found.distance == 0.5


def test_a_single_position_is_pruned_by_its_length_bound_only_above_the_threshold() -> None:
    archive = NoveltyArchive(threshold=0.45)
    archive.add("old", {"f#0": LONG})
    assert archive.check({"f#0": SHORT}, ["f#0"]) is None  # bound 0.4 <= 0.45: exact 1.0
    assert archive.compared == 1
    archive = NoveltyArchive(threshold=0.3)
    archive.add("old", {"f#0": LONG})
    assert archive.check({"f#0": SHORT}, ["f#0"]) is None
    assert archive.compared == 0  # ruled out by length: no edit distance taken


def test_a_position_the_archived_variant_lacks_counts_as_distance_one() -> None:
    archive = NoveltyArchive(threshold=0.4)
    archive.add("old", {"f#0": SAME})
    # new code at f#0 (identical to old's) and f#1 (old has none): mean (0 + 1) / 2 = 0.5
    assert archive.check({"f#0": SAME, "f#1": SHORT}, ["f#0", "f#1"]) is None
    archive = NoveltyArchive(threshold=0.5)
    archive.add("old", {"f#0": SAME})
    found = archive.check({"f#0": SAME, "f#1": SHORT}, ["f#0", "f#1"])
    assert found is not None and found.distance == 0.5


def test_new_keys_are_positions_unlike_every_parent() -> None:
    child = {"f#0": "a = 1", "f#1": "b = 2", "f#2": "c = 3"}
    first = {"f#0": "a = 1", "f#1": "b = 0", "f#2": "c = 0"}
    second = {"f#0": "a = 0", "f#1": "b = 2", "f#2": "c = 0"}
    # a crossover child's f#0 is the first parent's, f#1 the second's: only f#2 is new
    assert new_keys(child, [first, second]) == ("f#2",)
    assert new_keys(child, [first]) == ("f#1", "f#2")
    assert new_keys(child, []) == ("f#0", "f#1", "f#2")
    assert new_keys(first, [first, second]) == ()


def test_the_nearest_of_several_archived_variants_is_named_and_ties_go_to_the_first() -> None:
    archive = NoveltyArchive(threshold=0.6)
    archive.add("far", {"f#0": "x = 1 + 2 + 3", "f#1": "y = 9"})
    archive.add("near", {"f#0": "x = 1 + 2 + 4", "f#1": "y = 9"})
    archive.add("near-too", {"f#0": "x = 1 + 2 + 4", "f#1": "y = 9"})  # same code: not a new id
    candidate = {"f#0": "x = 1 + 2 + 4", "f#1": "y = 8"}
    found = archive.check(candidate, ["f#0", "f#1"])
    assert found is not None and found.variant == "near"
    assert found.keys == ("f#0", "f#1") and found.code == "x = 1 + 2 + 4"
    assert 0 < found.distance <= 0.6
    assert found.reason == f"near-duplicate of near (distance {found.distance:.3g} <= 0.6)"
    one = archive.check({"f#0": "x = 1 + 2 + 4"}, ["f#0"])
    assert one is not None and one.variant == "near" and one.distance == 0.0


def test_the_threshold_is_inclusive_and_zero_turns_the_check_off() -> None:
    archive = NoveltyArchive(threshold=0.5)
    archive.add("old", {"f#0": "a b c d"})
    edge = archive.check({"f#0": "a b x y"}, ["f#0"])  # 2 of 4 tokens: exactly 0.5
    assert edge is not None and edge.distance == 0.5
    assert NoveltyArchive(threshold=0.49, members={}).check({"f#0": "a"}, ["f#0"]) is None
    off = NoveltyArchive(threshold=0.0)
    off.add("old", {"f#0": "a b c d"})
    assert off.check({"f#0": "a b c d"}, ["f#0"]) is None
    # keys the candidate lacks are ignored; none left: nothing to check
    assert archive.check({"f#0": "a b x y"}, ["f#9"]) is None


def test_adding_a_variant_twice_keeps_the_first_holder_and_text() -> None:
    archive = NoveltyArchive(threshold=0.5)
    archive.add("a", {"f#0": "x = 1"})
    archive.add("b", {"f#0": "x  =  1  # same tokens"})
    archive.add("a", {"f#0": "z = 2"})  # again: no change
    assert "a" in archive and "b" in archive and "c" not in archive
    sid = archive.members["a"]["f#0"]
    assert archive.members["b"]["f#0"] == sid
    assert archive.holders["f#0"] == {sid: "a"} and archive.text(sid) == "x = 1"
    assert archive.texts_for({"f#0": "x = 2"}, ["f#0", "f#5"]) == {
        archive.cache.segment_id("x = 2"): "x = 2",
        sid: "x = 1",
    }


def test_embedding_vectors_replace_the_token_distance() -> None:
    assert cosine_distance([1.0, 0.0], [0.0, 1.0]) == 1.0
    assert cosine_distance([1.0, 0.0], [-1.0, 0.0]) == 1.0  # opposite: clipped to unrelated
    assert cosine_distance([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert cosine_distance([0.0, 0.0], [1.0, 0.0]) == 1.0
    assert abs(cosine_distance([1.0, 1.0], [1.0, 0.0]) - (1 - 2**-0.5)) < 1e-12
    archive = NoveltyArchive(threshold=0.2)
    archive.add("old", {"f#0": "a = 1"})
    old = archive.members["old"]["f#0"]
    new = archive.cache.segment_id("completely different code here")
    vectors = {old: [1.0, 0.0], new: [1.0, 0.1]}
    found = archive.check({"f#0": "completely different code here"}, ["f#0"], vectors)
    assert found is not None and found.distance < 0.2 and archive.compared == 1
    vectors = {old: [1.0, 0.0], new: [0.0, 1.0]}
    assert archive.check({"f#0": "completely different code here"}, ["f#0"], vectors) is None
    assert archive.compared == 2


def test_pairs_at_exactly_the_length_bound_are_measured() -> None:
    archive = NoveltyArchive(threshold=0.4)  # LONG/SHORT's length bound is exactly 0.4
    archive.add("old", {"f#0": LONG})
    assert archive.check({"f#0": SHORT}, ["f#0"]) is None  # measured: 1.0, not the bound
    assert archive.compared == 1
    archive.add("other", {"f#0": "p ( q ) s"})
    assert archive.check({"f#0": SHORT}, ["f#0"]) is None
    assert archive.compared == 3  # counted, not reset


def test_the_reported_code_is_empty_when_the_near_variant_lacks_the_first_key() -> None:
    archive = NoveltyArchive(threshold=0.5)
    archive.add("old", {"f#0": SAME})
    found = archive.check({"f#1": SHORT, "f#0": SAME}, ["f#1", "f#0"])
    assert found is not None and found.variant == "old" and found.distance == 0.5
    assert found.code == ""


def test_texts_for_a_position_nobody_archived_and_text_of_an_unarchived_segment() -> None:
    archive = NoveltyArchive(threshold=0.5)
    archive.add("a", {"f#0": "x=1"})
    sid = archive.members["a"]["f#0"]
    assert archive.text(sid) == "x=1"  # the first code seen, not its tokens
    new = archive.cache.segment_id("y  =  2")
    assert archive.text(new) == "y = 2"  # never archived: its tokens
    assert archive.texts_for({"f#3": "z = 3"}, ["f#3"]) == {
        archive.cache.segment_id("z = 3"): "z = 3"
    }


def test_cosine_distance_of_vectors_of_different_lengths_uses_the_common_part() -> None:
    assert cosine_distance([1.0, 0.0, 5.0], [1.0, 0.0]) == pytest.approx(1 - 1 / 26**0.5)


def test_a_single_position_no_archived_variant_has_is_not_a_near_duplicate() -> None:
    archive = NoveltyArchive(threshold=0.9)
    archive.add("old", {"f#0": SAME})
    assert archive.check({"f#1": SAME}, ["f#1"]) is None
