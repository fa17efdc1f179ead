"""Adaptive choice among arms (the models of an ensemble, the mutation personas), pure.

A bandit's state is a tally of :class:`Pull` s (arm, reward in [0, 1], cost); it is always
recomputed from the children decided so far, never kept in memory, so a resumed run that
replays the same pulls gets the same state. Choices draw from the RNG passed in (the plan's
per-child RNG), so the same state and RNG always choose the same arm.

- ``thompson``: each arm's success rate has a Beta posterior; one sample per arm is drawn from
  the RNG and the highest wins. A generation's children share one state (its rewards arrive only
  when the generation is evaluated), and the samples still spread them over the arms.
- ``ucb1``: the arm with the highest mean plus ``sqrt(2 ln N / n)``; an arm never pulled goes
  first. Deterministic given the state, so every child of a generation gets the same arm (the RNG
  only breaks ties).

Priors: each arm starts with ``PRIOR_PULLS`` pseudo-pulls whose mean is ``0.5 * w / max(w)``
(``w``: its configured weight), so equal weights give the uniform Beta(1, 1), and a heavier arm
is favoured until real rewards outweigh the prior.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

ALGORITHMS = ("off", "thompson", "ucb1")
PRIOR_PULLS = 2.0


@dataclass(frozen=True)
class Pull:
    """One decided child credited to an arm: its reward in [0, 1] and what its LLM calls cost."""

    arm: str
    reward: float
    cost: float = 0.0


@dataclass(frozen=True)
class ArmStats:
    """An arm's tally: real pulls, summed rewards, improvements (reward > 0), spend, prior."""

    arm: str
    weight: float
    pulls: int = 0
    rewards: float = 0.0
    improvements: int = 0
    cost: float = 0.0

    @property
    def prior_mean(self) -> float:
        return self.weight

    @property
    def alpha(self) -> float:
        return PRIOR_PULLS * self.prior_mean + self.rewards

    @property
    def beta(self) -> float:
        return PRIOR_PULLS * (1.0 - self.prior_mean) + (self.pulls - self.rewards)

    @property
    def rate(self) -> float:
        """Improvements per pull (0 when never pulled)."""
        return self.improvements / self.pulls if self.pulls else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "arm": self.arm,
            "pulls": self.pulls,
            "rewards": round(self.rewards, 6),
            "improvements": self.improvements,
            "rate": round(self.rate, 6),
            "cost_usd": round(self.cost, 8),
            "prior": round(self.prior_mean, 6),
        }


def per_dollar(pulls: Sequence[Pull]) -> list[Pull]:
    """Rewards per dollar, kept in [0, 1]: each reward times ``min(1, ref / cost)``, where ``ref``
    is the median cost of the children of the cheapest arm (by its median). A child as cheap as
    the cheapest arm's typical child keeps its reward; one of an arm five times dearer keeps a
    fifth. Arm medians do not move with how often an arm is pulled, so neither does the scale."""
    by_arm: dict[str, list[float]] = {}
    for p in pulls:
        if p.cost > 0:
            by_arm.setdefault(p.arm, []).append(p.cost)
    if not by_arm:
        return list(pulls)
    ref = min(statistics.median(costs) for costs in by_arm.values())
    return [
        Pull(p.arm, p.reward * min(1.0, ref / p.cost) if p.cost > 0 else p.reward, p.cost)
        for p in pulls
    ]


def tally(weights: Mapping[str, float], pulls: Iterable[Pull]) -> list[ArmStats]:
    """The arms' state (in ``weights`` order) after ``pulls``; pulls of unknown arms are ignored.

    ``weights`` are the configured weights (any positive scale); they become the priors."""
    top = max(weights.values(), default=1.0) or 1.0
    acc = {a: [0, 0.0, 0, 0.0] for a in weights}
    for p in pulls:
        if p.arm in acc:
            row = acc[p.arm]
            row[0] += 1
            row[1] += min(1.0, max(0.0, p.reward))
            row[2] += p.reward > 0
            row[3] += p.cost
    return [
        ArmStats(a, 0.5 * weights[a] / top, int(r[0]), float(r[1]), int(r[2]), float(r[3]))
        for a, r in acc.items()
    ]


def choose(algorithm: str, arms: Sequence[ArmStats], rng: random.Random) -> str:
    """The arm to pull next (``thompson`` or ``ucb1``), drawing only from ``rng``."""
    if not arms:
        raise ValueError("a bandit needs at least one arm")
    if len(arms) == 1:
        return arms[0].arm
    if algorithm == "thompson":
        samples = [rng.betavariate(max(a.alpha, 1e-6), max(a.beta, 1e-6)) for a in arms]
        return arms[max(range(len(arms)), key=samples.__getitem__)].arm
    if algorithm == "ucb1":
        return _ucb1(arms, rng)
    raise ValueError(f"unknown bandit algorithm {algorithm!r}")


def _ucb1(arms: Sequence[ArmStats], rng: random.Random) -> str:
    """UCB1 over the prior-smoothed means; unpulled arms first (heaviest prior first)."""
    fresh = [a for a in arms if a.pulls == 0]
    if fresh:
        best = max(a.prior_mean for a in fresh)
        return rng.choice([a.arm for a in fresh if a.prior_mean == best])
    total = sum(a.pulls for a in arms)
    scores = [
        a.alpha / (a.alpha + a.beta) + math.sqrt(2.0 * math.log(total) / a.pulls) for a in arms
    ]
    top = max(scores)
    return rng.choice([a.arm for a, s in zip(arms, scores, strict=True) if s >= top - 1e-12])


def state_dict(arms: Sequence[ArmStats]) -> list[dict[str, float | int | str]]:
    """The arms as stored in a ``bandit`` event and shown by the views."""
    return [a.as_dict() for a in arms]
