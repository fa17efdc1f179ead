"""Mate choice (``[evolution] mate_choice``): dissimilar and self-adaptive partner choice and the
mating-preference gene, on the pure plan with seeded draws, and in a real offline run.

Variants sit at points on a line (``LineMates``: distance = the gap, at most 1). Frequencies are
checked within 5 binomial standard deviations over thousands of seeded draws, as in
tests/evolution/test_plan.py; each test fails when its rule is removed (weights, gene inheritance, gene use).
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.evolution.mate_choice import (
    MATE_EPSILON,
    NEUTRAL_GENE,
    child_gene,
    choose_partner,
    mate_choice,
    partner_weights,
)
from guided_evolution.evolution.plan import Plan, plan_child, plan_generation
from guided_evolution.evolution.scoring import Scored
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from tests.evolution.test_plan import GENERATIONS, OBJ, SEED, assert_rate, evo, front
from tests.support.harness import FakeExecutor, resume_engine, run_engine
from tests.support.seeds import copy_seed

FAST_EXP = Path(__file__).resolve().parents[2] / "seeds" / "fast_exp"
FAR = "f5"  # a member in the middle of the front (finite crowding distance)


@dataclass
class LineMates:
    """``Mates`` of variants at points on a line; genes by id (missing: none)."""

    at: dict[str, float]
    genes: dict[str, float] = field(default_factory=dict)

    def distance(self, a: str, b: str) -> float:
        return min(1.0, abs(self.at[a] - self.at[b]))

    def gene(self, vid: str) -> float | None:
        return self.genes.get(vid)


def one_far(pop: list[Scored]) -> LineMates:
    """Every member near 0 except FAR at 0.9."""
    return LineMates({s.id: 0.9 if s.id == FAR else 0.005 * i for i, s in enumerate(pop)})


def plans(cfg: Any, pop: list[Scored], mates: LineMates | None, **kw: Any) -> list[Plan]:
    out: list[Plan] = []
    for g in GENERATIONS:
        out += plan_generation(g, pop, SEED, "seed", cfg, OBJ, mates=mates, **kw).plans
    return out


def far_partners(out: list[Plan]) -> tuple[int, int]:
    """(crossover children of a near primary whose partner is FAR, all such children)."""
    crossed = [p for p in out if p.parent != FAR and len(p.parents) == 2]
    return sum(p.parents[1] == FAR for p in crossed), len(crossed)


# --------------------------------------------------------------------------- partner weights


def draw_partners(first: str, pool: list[str], mates: LineMates, mode: str, s: float) -> list[str]:
    rng = random.Random(7)
    picks = [choose_partner(first, pool, mates, mode, s, rng) for _ in range(4000)]
    assert None not in picks
    return [p for p in picks if p is not None]


@pytest.mark.parametrize("strength", [0.0, 1.0, 2.0])
def test_dissimilar_weights_grow_with_distance_to_the_first_parent(strength: float) -> None:
    mates = LineMates({"a": 0.0, "n1": 0.1, "n2": 0.1, "n3": 0.1, "far": 0.9})
    picks = draw_partners("a", ["a", "n1", "n2", "n3", "far"], mates, "dissimilar", strength)
    w_far, w_near = (0.9 + 1e-3) ** strength, (0.1 + 1e-3) ** strength
    assert_rate(picks.count("far"), len(picks), w_far / (w_far + 3 * w_near), "far partner")


def test_dissimilar_pool_multiplicity_counts_and_identical_code_is_avoided() -> None:
    mates = LineMates({"a": 0.0, "clone": 0.0, "b": 0.2, "c": 0.2})
    uniform = draw_partners("a", ["b", "b", "b", "c", "a"], mates, "dissimilar", 0.0)
    assert_rate(uniform.count("b"), len(uniform), 3 / 4, "strength 0: the pool's frequencies")
    picks = draw_partners("a", ["clone", "b", "c"], mates, "dissimilar", 2.0)
    assert picks.count("clone") <= 3  # weight 1e-6 against 2 x 0.04: expected 0.1 in 4000


def test_no_partner_but_the_first_parent_itself() -> None:
    mates = LineMates({"a": 0.0})
    assert choose_partner("a", ["a", "a"], mates, "dissimilar", 2.0, random.Random(0)) is None


@pytest.mark.parametrize(("gene", "expected"), [(0.0, "near"), (1.0, "far"), (0.5, "mid")])
def test_self_adaptive_gene_is_the_preferred_relative_distance(gene: float, expected: str) -> None:
    mates = LineMates({"a": 0.0, "near": 0.1, "mid": 0.5, "far": 0.9}, {"a": gene})
    picks = draw_partners("a", ["near", "mid", "far"], mates, "self_adaptive", 2.0)
    relative = {"near": 0.0, "mid": 0.5, "far": 1.0}
    weights = {k: math.exp(-8.0 * (r - gene) ** 2) for k, r in relative.items()}
    share = weights[expected] / sum(weights.values())
    assert share > 0.6
    assert_rate(picks.count(expected), len(picks), share, f"gene {gene} picks {expected}")


# --------------------------------------------------------------------------- the plan


def test_dissimilar_plans_cross_with_the_far_member_far_more_often() -> None:
    pop = front(10)
    cfg = evo(crossover_probability=1.0, mutation_probability=0.0, mate_strength=2.0)
    k_t, n_t = far_partners(plans(cfg, pop, one_far(pop)))  # tournament: mates unused
    k_d, n_d = far_partners(
        plans(evo(**{**dict(cfg), "mate_choice": "dissimilar"}), pop, one_far(pop))
    )
    assert n_t > 1000 and n_d > 1000
    assert k_t / n_t < 0.3
    assert k_d / n_d > 0.8, f"dissimilar: {k_d}/{n_d} far partners (tournament {k_t}/{n_t})"


def test_dissimilar_strength_zero_keeps_the_tournament_frequencies() -> None:
    pop = front(10)
    base = {"crossover_probability": 1.0, "mutation_probability": 0.0, "population": 200}
    k_t, n_t = far_partners(plans(evo(**base), pop, None))
    cfg = evo(**base, mate_choice="dissimilar", mate_strength=0.0)
    k_d, n_d = far_partners(plans(cfg, pop, one_far(pop)))
    p = (k_t + k_d) / (n_t + n_d)
    sigma = math.sqrt(p * (1 - p) * (1 / n_t + 1 / n_d))
    assert abs(k_t / n_t - k_d / n_d) <= 5 * sigma, (k_t, n_t, k_d, n_d)


def test_self_adaptive_genes_are_inherited_with_gaussian_steps() -> None:
    pop = front(10)
    genes = {s.id: 0.3 + 0.04 * i for i, s in enumerate(pop)}
    mates = LineMates({s.id: i / 9 for i, s in enumerate(pop)}, genes)
    sigma = 0.05
    cfg = evo(mate_choice="self_adaptive", mating_sigma=sigma, crossover_probability=0.5)
    out = plans(cfg, pop, mates)
    z = []
    for p in out:
        assert p.mating_preference is not None
        expected = statistics.fmean(genes[x] for x in p.parents)  # crossover: the parents' mean
        z.append((p.mating_preference - expected) / sigma)
    crossed = sum(len(p.parents) == 2 for p in out)
    assert 0.3 * len(out) < crossed < 0.7 * len(out)
    assert max(map(abs, z)) < 6
    assert abs(statistics.fmean(z)) < 5 / math.sqrt(len(z))
    assert 0.9 < statistics.pstdev(z) < 1.1  # mutated: not copied


def test_self_adaptive_genes_start_uniform_and_without_genes_count_as_half() -> None:
    cfg = evo(mate_choice="self_adaptive", initial_population=2000, mating_sigma=0.0)
    mates = LineMates({"seed": 0.0})
    first = plan_generation(0, [], SEED, "seed", cfg, OBJ, mates=mates).plans
    genes = [p.mating_preference for p in first if p.mating_preference is not None]
    assert len(genes) == 2000 and len(set(genes)) > 1900
    assert_rate(sum(g < 0.25 for g in genes), 2000, 0.25, "uniform genes below 0.25")
    later = plan_generation(1, front(6), SEED, "seed", cfg, OBJ, mates=one_far(front(6))).plans
    assert {p.mating_preference for p in later} == {0.5}  # sigma 0, no stored genes


def test_self_adaptive_gene_chooses_near_or_far_partners() -> None:
    pop = front(10)
    at = {s.id: i / 9 for i, s in enumerate(pop)}
    mean_gap = {}
    for gene in (0.0, 1.0):
        mates = LineMates(at, {s.id: gene for s in pop})
        cfg = evo(mate_choice="self_adaptive", crossover_probability=1.0, mate_strength=4.0)
        gaps = [mates.distance(*p.parents) for p in plans(cfg, pop, mates) if len(p.parents) == 2]
        mean_gap[gene] = statistics.fmean(gaps)
    assert mean_gap[0.0] < 0.2 < 0.5 < mean_gap[1.0], mean_gap


def test_steady_children_use_mate_choice_and_carry_genes() -> None:
    pop = front(10)
    mates = one_far(pop)
    mates.genes = {s.id: 0.5 for s in pop}
    out = {}
    for mode in ("tournament", "dissimilar", "self_adaptive"):
        cfg = evo(population=20, crossover_probability=1.0, mate_choice=mode, mate_strength=2.0)
        out[mode] = [plan_child(g, i, pop, SEED, "seed", cfg, OBJ, mates=mates)
                     for g in range(1, 101) for i in range(20)]  # fmt: skip
    k_t, n_t = far_partners([p for p in out["tournament"] if p])
    k_d, n_d = far_partners([p for p in out["dissimilar"] if p])
    assert k_t / n_t < 0.3 and k_d / n_d > 0.8
    assert all(p.mating_preference is None for p in out["dissimilar"] if p)
    assert all(p.mating_preference is not None for p in out["self_adaptive"] if p)
    zero = plan_child(0, 3, pop, SEED, "seed", evo(mate_choice="self_adaptive"), OBJ, mates=mates)
    assert zero is not None and zero.mating_preference is not None


# --------------------------------------------------------------------------- determinism


def test_plans_and_genes_are_deterministic_and_tournament_ignores_mates() -> None:
    pop = front(10)
    mates = one_far(pop)
    mates.genes = {s.id: 0.1 * i for i, s in enumerate(pop)}
    for mode in ("dissimilar", "self_adaptive"):
        cfg = evo(mate_choice=mode, crossover_probability=0.7)
        assert plans(cfg, pop, mates) == plans(cfg, pop, mates)
        assert plans(cfg, pop, mates) != plans(evo(mate_choice=mode, seed=5), pop, mates)
    cfg = evo(crossover_probability=0.7)
    assert plans(cfg, pop, mates) == plans(cfg, pop, None)
    assert plans(cfg, pop, None) != plans(
        evo(mate_choice="dissimilar", crossover_probability=0.7), pop, mates
    )
    with pytest.raises(ValueError, match="mates"):
        plan_generation(1, pop, SEED, "seed", evo(mate_choice="dissimilar"), OBJ)


# --------------------------------------------------------------------------- a real run


def mating_seed(directory: Path) -> Path:
    """fast_exp, 3 generations, self-adaptive mate choice with a small gene step."""
    seed = copy_seed(FAST_EXP, directory)
    toml = seed / "ge.toml"
    text = toml.read_text().replace(
        "seed = 0\n",
        'seed = 0\nmate_choice = { kind = "self_adaptive", sigma = 0.02 }\ncrossover_probability = 0.5\n',
    )
    toml.write_text(text.replace("generations = 6", "generations = 3"))
    return seed


def exp_score(files: dict[str, str]) -> dict[str, float | str]:
    """fast_exp's objectives from the code's size (partners are chosen by code distance and
    genes, so the evaluation need only give scores)."""
    chars = float(len(files["approx.py"]))
    return {"accuracy": -chars / 1000.0, "ops": chars, "heldout_accuracy": -chars / 1000.0}


def lineage(run: Path) -> list[tuple[int, str, tuple[str, ...], float | None]]:
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    rows = [(v.generation, v.id, tuple(v.parents), v.mating_preference) for v in index.variants()]
    return sorted(rows)


def test_offline_run_stores_inherited_genes_in_trailers_and_index(tmp_path: Path) -> None:
    seed = mating_seed(tmp_path / "seed")
    fake = FakeExecutor(exp_score).factory  # in-process: tests/support/harness.py
    run_engine(seed, tmp_path / "run", executor=fake)
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    variants = {v.id: v for v in index.variants()}
    genes = {vid: v.mating_preference for vid, v in variants.items()}
    children = [v for v in variants.values() if v.operator != "seed"]
    assert children and all(genes[v.id] is not None for v in children)
    assert genes[next(v.id for v in variants.values() if v.operator == "seed")] is None
    inherited = 0
    for v in children:
        if v.generation == 0 or v.operator not in {"offline-mutation", "offline-crossover"}:
            continue
        parents = [genes[p] if genes[p] is not None else 0.5 for p in v.parents]
        assert abs(genes[v.id] - statistics.fmean(parents)) < 6 * 0.02, v
        inherited += 1
    assert inherited >= 5
    assert len({genes[v.id] for v in children}) > len(children) // 2  # mutated, not copied
    with GitStore.open(tmp_path / "run" / "repo.git") as store:
        for v in children:
            assert v.commit_sha is not None
            message = store.commit_message(v.commit_sha)
            assert f"Ge-Mating-Preference: {genes[v.id]:.6f}" in message
    # A run stopped after generation 1 and resumed re-derives the same partners and genes.
    resumed = tmp_path / "resumed"
    run_engine(seed, resumed, executor=fake, generations=1)
    resume_engine(resumed, executor=fake, generations=3)
    assert lineage(resumed) == lineage(tmp_path / "run")


def test_a_steady_runs_replayed_plan_keeps_its_gene() -> None:
    from guided_evolution.engine.steady import plan_event, plan_from_event
    from guided_evolution.evolution.plan import Plan, Step

    plan = Plan(3, 5, "p", (Step("crossover", "q"), Step("mutation")), mating_preference=0.25)
    assert plan_from_event(plan_event(3, 5, plan)) == plan
    plain = Plan(3, 6, "p", (Step("mutation"),))
    assert "mating_preference" not in plan_event(3, 6, plain)  # events of other runs unchanged
    assert plan_from_event(plan_event(3, 6, plain)) == plain


# --------------------------------------------------------------------------- edge cases


def test_partner_weights_at_the_edges() -> None:
    near, far = partner_weights("dissimilar", [0.0, 0.5], 1.0)
    assert near == pytest.approx(MATE_EPSILON) and far == pytest.approx(0.5 + MATE_EPSILON)
    assert partner_weights("self_adaptive", [], 1.0) == []
    # equal distances: every candidate sits at relative distance 0.5
    assert partner_weights("self_adaptive", [0.3, 0.3], 1.0, 0.5) == [1.0, 1.0]
    assert partner_weights("self_adaptive", [0.3, 0.3], 1.0, 0.0) == [math.exp(-1.0)] * 2
    with pytest.raises(ValueError, match="unknown mate choice 'x'"):
        partner_weights("x", [0.1], 1.0)
    with pytest.raises(ValueError, match="unknown mate choice 'x'"):
        mate_choice("x", LineMates({}), 1.0, 0.1)


def test_weights_that_all_underflow_draw_uniformly() -> None:
    mates = LineMates({"a": 0.0, "b": 0.0, "c": 0.0})
    picks = draw_partners("a", ["a", "b", "c"], mates, "dissimilar", 2000.0)
    assert_rate(picks.count("b"), len(picks), 0.5, "b among identical partners")


def test_a_gene_without_parents_is_neutral_and_genes_stay_in_zero_one() -> None:
    rng = random.Random(3)
    assert child_gene([], 0.0, rng) == NEUTRAL_GENE
    genes = [child_gene([1.0], 0.5, rng) for _ in range(1000)] + [
        child_gene([0.0], 0.5, rng) for _ in range(1000)
    ]
    assert min(genes) == 0.0 and max(genes) == 1.0
    assert_rate(genes.count(1.0), 2000, 0.25, "genes clipped to 1 or 0")


def test_every_child_inherits_its_parents_genes_also_the_odd_last_and_steady_ones() -> None:
    """mating_sigma 0: a child's gene is exactly its parents' mean (the EoT teacher's gene does
    not count); the odd parent's child too, and a steady child without a population draws one."""
    pop = front(9)
    mates = LineMates(
        {s.id: i / 8 for i, s in enumerate(pop)}, {s.id: i / 8 for i, s in enumerate(pop)}
    )
    cfg = evo(
        mate_choice="self_adaptive",
        mating_sigma=0.0,
        population=5,
        crossover_probability=0.5,
        eot_probability=1.0,
    )
    out = plans(cfg, pop, mates)
    steady = [
        plan_child(g, i, pop, SEED, "seed", cfg, OBJ, mates=mates)
        for g in GENERATIONS
        for i in range(5)
    ]
    odd = [p for p in out if p.index == 4]
    assert len(odd) == len(GENERATIONS)
    children = out + [p for p in steady if p]
    assert sum(len(p.parents) == 2 for p in children) > 50
    assert sum(p.steps[-1].op == "eot" for p in children) > 50
    for p in children:
        assert p.mating_preference == round(statistics.fmean(mates.genes[x] for x in p.parents), 6)
        assert p.island == 0
    orphan = plan_child(2, 0, [], None, "seed", cfg, OBJ, mates=mates)
    assert orphan is not None and 0.0 <= (orphan.mating_preference or -1.0) <= 1.0
