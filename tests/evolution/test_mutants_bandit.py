"""The bandits' decisions, pinned where hand-made and mutmut mutants survived the other tests
(issue 25 item 7; tools/mutation_test.sh, docs/mutation-testing.md): UCB1's exploration term and
its order of unpulled arms, the reward rule (improve on one parent, be beaten by none), rejected
proposals as zero pulls, children not evaluated yet, the tally and the per-dollar scale."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from guided_evolution.config import load_config
from guided_evolution.evolution.bandit import (
    PRIOR_PULLS,
    Pull,
    choose,
    per_dollar,
    state_dict,
    tally,
)
from guided_evolution.evolution.bandit_history import (
    REJECTED,
    arm_of,
    improved,
    operator_arms,
    read_history,
    stored_arms,
)

OBJECTIVES = (("acc", "max"), ("ops", "min"))


def _ok(acc: float, ops: float) -> SimpleNamespace:
    return SimpleNamespace(status="ok", metrics={"acc": acc, "ops": ops})


# -- UCB1 ---------------------------------------------------------------------------------------


def test_ucb1_explores_a_rarely_pulled_arm_over_a_better_mean() -> None:
    # a: mean 0.6 over 100 pulls; b: one pull, no reward (mean 1/3 with its prior), but its
    # exploration term sqrt(2 ln 101 / 1) = 3.04 dwarfs a's 0.30: b is chosen.
    arms = tally(
        {"a": 1.0, "b": 1.0}, [Pull("a", 1.0)] * 60 + [Pull("a", 0.0)] * 40 + [Pull("b", 0.0)]
    )
    assert {choose("ucb1", arms, random.Random(i)) for i in range(20)} == {"b"}
    # with many pulls each, the better mean wins
    arms = tally(
        {"a": 1.0, "b": 1.0}, [Pull("a", 1.0)] * 60 + [Pull("a", 0.0)] * 40 + [Pull("b", 0.0)] * 50
    )
    assert {choose("ucb1", arms, random.Random(i)) for i in range(20)} == {"a"}


def test_ucb1_pulls_the_heaviest_unpulled_arm_first_and_breaks_ties_with_the_rng() -> None:
    arms = tally({"a": 1.0, "b": 3.0, "c": 3.0}, [Pull("a", 1.0)])
    picks = {choose("ucb1", arms, random.Random(i)) for i in range(40)}
    assert picks == {"b", "c"}  # never a (pulled), never only one of the tied heaviest
    equal = tally({"a": 1.0, "b": 1.0}, [Pull("a", 1.0), Pull("b", 1.0)])
    assert {choose("ucb1", equal, random.Random(i)) for i in range(40)} == {"a", "b"}


def test_choose_rejects_no_arms_and_unknown_algorithms_and_takes_a_lone_arm() -> None:
    with pytest.raises(ValueError, match="at least one arm"):
        choose("ucb1", [], random.Random(0))
    with pytest.raises(ValueError, match="unknown bandit algorithm 'greedy'"):
        choose("greedy", tally({"a": 1.0, "b": 1.0}, []), random.Random(0))
    assert choose("nonsense", tally({"solo": 1.0}, []), random.Random(0)) == "solo"


def test_thompson_follows_the_posterior() -> None:
    arms = tally({"a": 1.0, "b": 1.0}, [Pull("a", 1.0)] * 30 + [Pull("b", 0.0)] * 30)
    picks = [choose("thompson", arms, random.Random(i)) for i in range(200)]
    assert picks.count("a") == 200
    # the last arm can win too (index order is not a bias)
    arms = tally({"a": 1.0, "b": 1.0}, [Pull("b", 1.0)] * 30 + [Pull("a", 0.0)] * 30)
    assert [choose("thompson", arms, random.Random(i)) for i in range(200)].count("b") == 200


# -- the tally ----------------------------------------------------------------------------------


def test_tally_clips_rewards_counts_improvements_and_sums_costs() -> None:
    pulls = [Pull("a", 1.5, 0.25), Pull("a", -1.0, 0.5), Pull("a", 0.5), Pull("zz", 1.0, 9.0)]
    (a, b) = tally({"a": 2.0, "b": 1.0}, pulls)
    assert (a.arm, a.pulls, a.rewards, a.improvements, a.cost) == ("a", 3, 1.5, 2, 0.75)
    assert a.prior_mean == 0.5 and b.prior_mean == 0.25 and b.pulls == 0 and b.rate == 0.0
    assert a.rate == pytest.approx(2 / 3)
    assert a.alpha == PRIOR_PULLS * 0.5 + 1.5 and a.beta == PRIOR_PULLS * 0.5 + 1.5
    assert b.alpha == PRIOR_PULLS * 0.25 and b.beta == PRIOR_PULLS * 0.75
    (z,) = tally({"z": 0.0}, [])
    assert z.prior_mean == 0.0  # a zero top weight is not a division by zero
    stored = state_dict([a, b])
    assert stored[0] == {"arm": "a", "pulls": 3, "rewards": 1.5, "improvements": 2,
                         "rate": round(2 / 3, 6), "cost_usd": 0.75, "prior": 0.5}  # fmt: skip
    assert stored_arms(stored) == [a, b]
    third = tally({"c": 1.0}, [Pull("c", 1 / 3, 1 / 7)])[0].as_dict()
    assert third["rewards"] == 0.333333 and third["rate"] == 1.0
    assert third["cost_usd"] == 0.14285714 and third["prior"] == 0.5


def test_per_dollar_scales_by_the_cheapest_arm_s_median_child() -> None:
    pulls = [Pull("cheap", 1.0, 1.0), Pull("cheap", 1.0, 3.0), Pull("dear", 1.0, 10.0),
             Pull("dear", 0.0, 10.0), Pull("free", 1.0, 0.0)]  # fmt: skip
    scaled = per_dollar(pulls)
    # the cheap arm's median is 2.0: a child costing 1.0 keeps 1, one costing 3.0 keeps 2/3
    assert [p.reward for p in scaled] == [1.0, pytest.approx(2 / 3), 0.2, 0.0, 1.0]
    assert [p.cost for p in scaled] == [p.cost for p in pulls]
    assert per_dollar([Pull("a", 0.5)]) == [Pull("a", 0.5)]


# -- the reward ---------------------------------------------------------------------------------


def test_a_child_improves_when_it_beats_one_parent_and_loses_to_none() -> None:
    latest = {"p1": _ok(0.5, 10), "p2": _ok(0.9, 20), "c": _ok(0.6, 10), "worse": _ok(0.4, 30)}
    # c dominates p1; against p2 it is better in ops, worse in acc (neither dominates)
    assert improved("c", ["p1", "p2"], latest, OBJECTIVES)
    assert improved("c", ["p1"], latest, OBJECTIVES)
    assert not improved("c", ["p2"], latest, OBJECTIVES)
    latest["p3"] = _ok(0.7, 5)  # dominates c: no reward, whatever it beats
    assert not improved("c", ["p1", "p3"], latest, OBJECTIVES)
    assert not improved("worse", ["p1"], latest, OBJECTIVES)
    assert not improved("c", ["missing"], latest, OBJECTIVES)  # no known parent
    assert improved("c", ["missing", "p1"], latest, OBJECTIVES)
    latest["failed"] = SimpleNamespace(status="failed", metrics={})
    assert not improved("failed", ["p1"], latest, OBJECTIVES)
    assert not improved("c", [], latest, OBJECTIVES)


# -- the history of pulls -----------------------------------------------------------------------


@dataclass
class _Records:
    """A run's records as read_history sees them (the run index's shape)."""

    latest: dict[str, Any]
    variant_rows: list[Any]
    call_rows: list[Any] = field(default_factory=list)
    event_rows: dict[str, list[Any]] = field(default_factory=dict)

    def latest_evaluations(self) -> Mapping[str, Any]:
        return self.latest

    def calls(self) -> Sequence[Any]:
        return self.call_rows

    def variants(self) -> Sequence[Any]:
        return self.variant_rows

    def events(self, kind: str) -> Sequence[Any]:
        return self.event_rows.get(kind, [])


def _variant(vid: str, parents: list[str], generation: int = 1, model: str = "m1",
             persona: str = "expert", eot: str = "") -> SimpleNamespace:  # fmt: skip
    return SimpleNamespace(id=vid, parents=parents, generation=generation, model=model,
                           persona=persona, eot_reflection=eot)  # fmt: skip


def _call(cid: int, vid: str | None, model: str, cost: float) -> SimpleNamespace:
    return SimpleNamespace(id=cid, variant_id=vid, model=model, cost_usd=cost)


def _event(**data: Any) -> SimpleNamespace:
    return SimpleNamespace(data=data)


def _records() -> _Records:
    latest = {"seed": _ok(0.5, 10), "good": _ok(0.6, 10), "bad": _ok(0.4, 10), "two": _ok(0.7, 1)}
    variants = [
        _variant("seed", [], generation=0, model="", persona=""),
        _variant("good", ["seed"], model="m1", persona="expert"),
        _variant("bad", ["seed"], model="m2", persona="", eot="thought"),
        _variant("pending", ["seed"], model="m2", persona="expert"),  # not evaluated yet
        _variant("later", ["seed"], generation=3, model="m1", persona="expert"),
        _variant("two", ["seed"], generation=2, model="m3", persona="expert"),
    ]
    latest["later"] = _ok(0.9, 1)
    calls = [_call(1, "good", "m1", 0.25), _call(2, "good", "m1", 0.5), _call(3, "bad", "m2", 1.0),
             _call(4, None, "m1", 0.125), _call(5, None, "m2", 2.0),
             _call(6, "two", "m3", None), _call(7, None, "m3", None)]  # fmt: skip
    events = {
        "proposal_rejected": [
            _event(generation=1, plan=4, calls=[4, 5]),  # its last call was m2's
            _event(generation=3, plan=0, calls=[4]),
            _event(generation=1, plan=6, calls=[]),  # no call made: nobody's pull
            _event(generation=2, plan=1, calls=[7]),  # at the bound: left out
            _event(plan=2, calls=[7]),  # no generation: generation 0
            _event(generation=1, calls=[4]),  # no plan: plan -1
        ],
        REJECTED: [
            _event(generation=1, plan=4, arm="mutation/hacker"),
            _event(generation=1, plan=4, arm="mutation/hacker"),  # a resumed run, again
            _event(generation=1, plan=6, persona="mutation/old"),
            _event(generation=3, plan=0, arm="mutation/late"),
            _event(generation=2, plan=1, arm="mutation/at-bound"),
            _event(generation=0, plan=2, arm="mutation/first"),
            _event(generation=1, plan=-1, arm="mutation/no-plan"),
        ],
    }
    return _Records(latest, variants, calls, events)


def test_the_history_counts_decided_children_and_rejected_proposals() -> None:
    history = read_history(_records(), OBJECTIVES, before=2)
    assert history.models == [
        Pull("m1", 1.0, 0.75),  # good improved on the seed; its two calls
        Pull("m2", 0.0, 1.0),  # bad did not
        Pull("m2", 0.0, 2.125),  # the rejected proposal: a zero pull of its last call's model
        Pull("m3", 0.0, 0.0),  # generation 0's rejection; a call of unknown cost costs 0
        Pull("m1", 0.0, 0.125),  # plan -1's
    ]
    assert history.personas == [
        Pull("mutation/expert", 1.0, 0.75),
        Pull("eot/-", 0.0, 1.0),
        Pull("mutation/first", 0.0, 0.0),
        Pull("mutation/no-plan", 0.0, 0.125),
        Pull("mutation/hacker", 0.0, 2.125),  # the drawn arm of the rejected plan, once
        Pull("mutation/old", 0.0, 0.0),
    ]
    at_three = read_history(_records(), OBJECTIVES, before=3)
    assert Pull("m3", 1.0, 0.0) in at_three.models  # generation 2's child, its call unpriced
    assert Pull("mutation/at-bound", 0.0, 0.0) in at_three.personas
    # without a bound the later generation counts too; the pending child never does
    everything = read_history(_records(), OBJECTIVES)
    assert len(everything.models) == 9 and Pull("m1", 1.0, 0.0) in everything.models
    assert Pull("m1", 0.0, 0.125) in everything.models
    assert Pull("mutation/late", 0.0, 0.125) in everything.personas
    assert all(p.arm != "m2" or p.cost != 0.0 for p in everything.models)


def test_offline_histories_count_the_edit_classes() -> None:
    history = read_history(_records(), OBJECTIVES, before=2, offline=True)
    # good: its edit class "expert"; bad has none (no persona); then the rejected plans' arms
    assert [p.arm for p in history.personas][:2] == ["expert", "mutation/first"]


def test_arms_of_children() -> None:
    assert arm_of(_variant("v", ["p"], persona="expert"), offline=False) == "mutation/expert"
    assert arm_of(_variant("v", ["p"], persona="expert", eot="t"), offline=False) == "eot/-"
    assert arm_of(_variant("v", ["p"], persona=""), offline=False) is None
    assert arm_of(_variant("v", ["p"], persona="swap"), offline=True) == "swap"
    assert arm_of(_variant("v", ["p"], persona="", eot="t"), offline=True) is None


def test_ucb1_s_exploration_constant_is_two() -> None:
    # b: 40 pulls, mean 25/42; a: 10 pulls, mean 1/12 (prior-smoothed). With ln 50 = 3.91 the
    # bonuses are 0.885 (a) and 0.442 (b) for the constant 2: b wins by 0.07; a constant of 3
    # (1.083, 0.542) would pick a.
    b_pulls = [Pull("b", 1.0)] * 24 + [Pull("b", 0.0)] * 16
    arms = tally({"a": 1.0, "b": 1.0}, [Pull("a", 0.0)] * 10 + b_pulls)
    assert {choose("ucb1", arms, random.Random(i)) for i in range(10)} == {"b"}
    # b's mean 16/42: the difference 0.30 is within the bonus gap 0.44: a wins (a smaller
    # constant, or 2 / ln N, would pick b)
    b_pulls = [Pull("b", 1.0)] * 15 + [Pull("b", 0.0)] * 25
    arms = tally({"a": 1.0, "b": 1.0}, [Pull("a", 0.0)] * 10 + b_pulls)
    assert {choose("ucb1", arms, random.Random(i)) for i in range(10)} == {"a"}


def test_edges_of_the_tally_and_of_the_per_dollar_scale() -> None:
    assert tally({}, [Pull("a", 1.0)]) == []
    (a,) = tally({"a": 1.0}, [Pull("a", 0.0), Pull("a", 1.0)])
    assert a.improvements == 1  # a zero reward is no improvement
    first = tally({"a": 1.0, "b": 3.0}, [])[0].as_dict()
    assert first["prior"] == 0.166667
    with pytest.raises(ValueError, match=r"^a bandit needs at least one arm$"):
        choose("thompson", [], random.Random(0))
    # costs below a dollar are scaled too (only a zero cost is not)
    small = per_dollar([Pull("cheap", 1.0, 0.01), Pull("dear", 1.0, 0.05), Pull("free", 1.0)])
    assert [p.reward for p in small] == [1.0, pytest.approx(0.2), 1.0]


def test_operator_arms_of_the_llm_and_offline_operator_sets() -> None:
    toml = Path(__file__).resolve().parents[2] / "seeds" / "fast_exp" / "ge.toml"
    offline = load_config(toml)
    assert operator_arms(offline) == {"nudge": 1.0, "swap": 1.0, "statement": 1.0}
    llm = load_config(toml, overrides={"llm.models": ["openai/x"]})
    personas = {f"mutation/{p}": 1.0 for p in llm.evolution.personas}
    assert operator_arms(llm) == {**personas, "eot/-": 1.0}
    no_eot = load_config(
        toml, overrides={"llm.models": ["openai/x"], "evolution.eot_probability": 0.0}
    )
    assert operator_arms(no_eot) == personas
