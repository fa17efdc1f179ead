"""With UCB1 the model bandit spreads a generation's children over the models (as the operator
arms are): from the generation's one state alone, every child of a generation asked one model."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from tests.evolution.test_bandit import _models_by_generation, _run


def test_ucb1_asks_both_models_within_a_generation(tmp_path: Path) -> None:
    run_dir = _run(tmp_path, "ucb1", "ucb1")
    models: dict[int, set[str]] = defaultdict(set)
    for generation, model in _models_by_generation(run_dir):
        models[generation].add(model)
    assert models[0] == {"openai/good", "openai/bad"}, dict(models)  # both unpulled: one each
    assert all(len(found) <= 2 for found in models.values())
    later = [g for g in models if g >= 1]
    assert later and any(len(models[g]) == 2 for g in later), dict(models)
