"""The sampled pairs of the mean pairwise distance: a population over ``exact_up_to`` members is
measured on ``exact_up_to`` members' worth of distinct pairs, drawn uniformly with a fixed seed
(the ranks of ``random.Random(seed).sample`` over the pairs in combination order)."""

from __future__ import annotations

import itertools
import random

import pytest

from guided_evolution.evolution import diversity


@pytest.mark.parametrize(
    ("n", "exact_up_to", "seed"), [(25, 24, 0), (60, 24, 0), (60, 24, 7), (9, 4, 3)]
)
def test_a_large_population_gets_a_fixed_uniform_sample_of_distinct_pairs(
    n: int, exact_up_to: int, seed: int
) -> None:
    pairs, sampled = diversity._pairs(n, exact_up_to, seed)
    every = list(itertools.combinations(range(n), 2))
    budget = exact_up_to * (exact_up_to - 1) // 2
    ranks = sorted(random.Random(seed).sample(range(len(every)), budget))
    assert sampled and pairs == [every[r] for r in ranks]
    assert len(set(pairs)) == budget and all(0 <= i < j < n for i, j in pairs)


@pytest.mark.parametrize("n", [0, 1, 2, 23, 24])
def test_a_population_up_to_exact_up_to_is_measured_on_every_pair(n: int) -> None:
    pairs, sampled = diversity._pairs(n, 24, 0)
    assert not sampled and pairs == list(itertools.combinations(range(n), 2))


def test_a_statement_break_is_one_token_between_statements_only() -> None:
    expected = ("a", "=", "1", "<newline>", "b", "=", "2")
    assert diversity.tokens("a = 1; b = 2") == diversity.tokens("a = 1\nb = 2;;\n") == expected
    assert diversity.tokens(";x = 1") == ("x", "=", "1")  # no break before the first statement
