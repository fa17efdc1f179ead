"""The code distance and the diversity measures, pinned where mutmut mutants survived the other
tests (issue 25 item 7; tools/mutation_test.sh, docs/mutation-testing.md): the distance over
positions of either variant (a missing one at 1), position order, the nearest member and its
early stop, distinct segments and the mean pairwise distance of populations whose positions
differ."""

from __future__ import annotations

import random

import pytest

from guided_evolution.evolution.diversity import (
    DistanceCache,
    code_distance,
    coded_distance,
    distance,
    distinct_segments,
    edit_distance,
    mean_pairwise_distance,
    measure,
    nearest,
    per_position,
    position_order,
    split_segments,
    tokens,
)

A = {"f#0": "a = 1", "f#1": "b = 2"}
B = {"f#0": "a = 1", "f#1": "b = 3"}  # f#1: one token of three differs (1/3)
C = {"f#0": "a = 1"}  # no f#1


def test_coded_distance_is_the_mean_over_positions_of_either_variant() -> None:
    cache = DistanceCache()
    a, b, c = cache.coded(A), cache.coded(B), cache.coded(C)
    assert coded_distance(a, b, cache) == pytest.approx((0 + 1 / 3) / 2)
    assert coded_distance(a, c, cache) == 0.5  # f#1 only in a: distance 1
    assert coded_distance(c, a, cache) == 0.5
    assert coded_distance(a, a, cache) == 0.0
    assert coded_distance({}, {}, cache) == 0.0
    assert coded_distance({"f#9": a["f#0"]}, {}, cache) == 1.0
    # the token distance of each pair, both ways
    far = cache.coded({"f#0": "x = y + z", "f#1": "b = 2"})
    assert coded_distance(a, far, cache) == pytest.approx(code_distance("a = 1", "x = y + z") / 2)


def test_per_position_orders_positions_by_file_then_index_as_a_number() -> None:
    a = {"m.py#10": "x", "m.py#2": "y", "a.py#1": "z"}
    b = {"m.py#2": "y"}
    assert list(per_position(a, b)) == ["a.py#1", "m.py#2", "m.py#10"]
    assert per_position(a, b) == {"a.py#1": 1.0, "m.py#2": 0.0, "m.py#10": 1.0}
    assert per_position(A, B, keys=["f#1"]) == {"f#1": pytest.approx(1 / 3)}
    assert distance(A, B) == pytest.approx(1 / 6)
    assert distance(A, B, keys=[]) == 0.0
    assert distance(A, C, DistanceCache()) == 0.5


def test_nearest_finds_the_closest_first_on_ties_and_stops_early() -> None:
    others = [{"f#0": "q = 9 * 9"}, B, dict(B), A]
    assert nearest(A, others) == (3, 0.0)
    assert nearest(A, others[:3]) == (1, pytest.approx(1 / 6))  # first of the tied pair
    assert nearest(A, []) is None
    # stop_at: the first member within it ends the search, even if a closer one follows
    assert nearest(A, others, stop_at=0.2) == (1, pytest.approx(1 / 6))
    assert nearest(A, others, keys=["f#0"]) == (1, 0.0)


def test_distinct_segments_count_token_sequences_per_position() -> None:
    population = [A, B, {"f#0": "a  =  1  # the same tokens", "f#1": "b = 2"}, C]
    assert distinct_segments(population) == {"f#0": 1, "f#1": 2}
    assert list(distinct_segments([{"f#10": "x", "f#2": "y"}])) == ["f#2", "f#10"]


def test_measure_of_populations_whose_positions_differ() -> None:
    found = measure([A, C])
    assert found.size == 2 and found.mean_distance == 0.5 and not found.sampled
    assert found.distinct == {"f#0": 1, "f#1": 1}
    same_positions = measure([A, B, A])
    assert same_positions.mean_distance == pytest.approx((1 / 6 + 0 + 1 / 6) / 3)
    assert measure([A]).mean_distance is None
    # a sampled estimate over more members than exact_up_to
    many = [{"f#0": f"v = {i}"} for i in range(6)]
    mean, sampled = mean_pairwise_distance(many, exact_up_to=3)
    assert sampled and mean == pytest.approx(1 / 3)


def test_the_cache_remembers_tokens_and_distances() -> None:
    cache = DistanceCache()
    assert cache.tokens("a = 1  # note") == tokens("a = 1")
    assert cache.segment_distance("a = 1", "a = 1  # note") == 0.0
    assert cache.computed == 0
    assert cache.segment_distance("a = 1", "a = 2") == pytest.approx(1 / 3)
    assert cache.segment_distance("a = 2", "a = 1") == pytest.approx(1 / 3)
    assert cache.computed == 1


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_edit_distance_matches_the_textbook_recurrence() -> None:
    rng = random.Random(7)
    for _ in range(400):
        a = "".join(rng.choice("abc") for _ in range(rng.randint(0, 70)))
        b = "".join(rng.choice("abc") for _ in range(rng.randint(0, 70)))
        assert edit_distance(a, b) == _levenshtein(a, b), (a, b)
    assert edit_distance("ax", "bx") == 1


def test_nearest_stops_at_a_member_exactly_at_stop_at() -> None:
    at = distance(A, B)
    assert nearest(A, [B, A], stop_at=at) == (0, at)


def test_position_order_of_odd_keys() -> None:
    keys = ["f#x", "f#1", "a#b.py#2", "a#b.py#10", "f#0"]
    assert sorted(keys, key=position_order) == ["a#b.py#2", "a#b.py#10", "f#x", "f#0", "f#1"]


def test_split_segments_of_files_some_missing() -> None:
    files = {"b.py": "head\n# M\nx = 1\n# M\ny = 2", "c.py": "h\n# M\nz = 3"}
    assert split_segments(files, ["a.py", "b.py", "c.py"], "# M") == {
        "b.py#0": "x = 1",
        "b.py#1": "y = 2",
        "c.py#0": "z = 3",
    }


def test_the_mean_of_several_pairs_when_positions_differ() -> None:
    found = measure([A, C, C])
    assert found.mean_distance == pytest.approx((0.5 + 0.5 + 0.0) / 3)
    assert found.sampled is False and measure([A]).sampled is False
