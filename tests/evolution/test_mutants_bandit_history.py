"""Edges of the bandit history pinned against mutmut's survivors (docs/mutation-testing.md): an
event without a generation belongs to generation 0 (so its cost goes to its generation-0 draw and
a bound of 1 keeps it), a drawn arm whose proposal left no record costs nothing, and a duplicate's
unpriced calls cost nothing."""

from __future__ import annotations

from guided_evolution.evolution.bandit import Pull
from guided_evolution.evolution.bandit_history import DUPLICATE, REJECTED, read_history
from tests.evolution.test_mutants_bandit import OBJECTIVES, _call, _event, _ok, _Records, _variant


def _records() -> _Records:
    latest = {"seed": _ok(0.5, 10)}
    variants = [_variant("seed", [], generation=0, model="", persona="")]
    calls = [_call(1, None, "m1", 0.125), _call(2, None, "m2", None)]
    events = {
        "proposal_rejected": [_event(plan=2, calls=[1])],  # no generation: generation 0
        REJECTED: [
            _event(generation=0, plan=2, arm="mutation/first"),
            _event(generation=0, plan=5, arm="mutation/unrecorded"),  # no proposal record
        ],
        DUPLICATE: [_event(generation=0, plan=7, arm="mutation/twin", calls=[2])],
    }
    return _Records(latest, variants, calls, events)


def test_events_without_a_generation_are_generation_0() -> None:
    history = read_history(_records(), OBJECTIVES, before=1)
    assert history.models == [Pull("m1", 0.0, 0.125), Pull("m2", 0.0, 0.0)]
    assert history.personas == [
        Pull("mutation/first", 0.0, 0.125),  # the cost of its generation-0 proposal
        Pull("mutation/unrecorded", 0.0, 0.0),
        Pull("mutation/twin", 0.0, 0.0),  # the duplicate's one call is unpriced
    ]
    assert read_history(_records(), OBJECTIVES, before=0) == read_history(
        _Records({"seed": _ok(0.5, 10)}, []), OBJECTIVES
    )
