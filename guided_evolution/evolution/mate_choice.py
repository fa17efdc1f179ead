"""Mate choice for crossover (``[evolution] mate_choice``), pure: partner weights from code
distances, and the self-adaptive mating-preference gene. It picks only the partner: the primary
parents are the tournament's winners, with or without it (``plan.py``).

- ``tournament`` (GE): the partner is the next tournament winner; nothing here is used.
- ``dissimilar``: the primary parent comes from the tournament; its partner is drawn from a pool of
  tournament winners (a generation's parents; in steady mode, a pool drawn for the child) with
  weight ``(d + MATE_EPSILON) ** strength``, ``d`` the code distance to the first parent
  (``diversity.distance``, in [0, 1]). Identical code is almost never chosen; strength 0 draws
  uniformly from the pool, i.e. with the tournament's frequencies.
- ``self_adaptive``: each variant carries a gene ``p`` in [0, 1], the code distance it prefers,
  relative to the pool: ``r = (d - d_min) / (d_max - d_min)`` (0 the nearest candidate, 1 the
  farthest; scale-free, as a task's distances may all be small). The first parent's gene weighs
  each candidate with ``exp(-4 * strength * (r - p) ** 2)``. A child's gene is its first
  parent's (after a crossover: the mean of both parents') plus ``N(0, sigma)`` (``[evolution.mate_choice]``), clipped to
  [0, 1] and rounded to 6 decimals (so the ``Ge-Mating-Preference`` trailer holds it exactly);
  generation 0's children draw theirs uniformly, and a variant without a gene (the seed, or one
  made before the option was on) counts as 0.5. A simplification of the evolvable ideal-mate
  representation of Simões, Lourenço and Machado, "All You Need Is Sex for Diversity" (EuroGP
  2023): one scalar preferred relative distance, not a representation of the ideal partner.

Every draw comes from the caller's RNG, so plans stay deterministic; the distances and genes of
existing variants come in through a :class:`Mates` (the engine's reads them from the run).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

MATE_EPSILON = 1e-3  # dissimilar: the weight of identical code is MATE_EPSILON ** strength
NEUTRAL_GENE = 0.5  # the gene of a variant that has none
GENE_DECIMALS = 6  # the trailer's precision: a rebuilt index re-derives the same genes
MODES = ("dissimilar", "self_adaptive")


class Mates(Protocol):
    """What mate choice reads from the run: code distances and stored genes."""

    def distance(self, a: str, b: str) -> float:
        """Code distance of two variants, in [0, 1]."""
        ...

    def gene(self, vid: str) -> float | None:
        """The variant's mating preference, None when it has none."""
        ...


def partner_weights(
    mode: str, distances: Sequence[float], strength: float, preference: float = NEUTRAL_GENE
) -> list[float]:
    """The weight of each candidate partner, given its code distance to the first parent."""
    if mode == "dissimilar":
        return [(max(d, 0.0) + MATE_EPSILON) ** strength for d in distances]
    if mode != "self_adaptive":
        raise ValueError(f"unknown mate choice {mode!r}")
    low, high = min(distances, default=0.0), max(distances, default=0.0)
    span = high - low
    relative = [(d - low) / span if span > 0 else 0.5 for d in distances]
    return [math.exp(-4.0 * strength * (r - preference) ** 2) for r in relative]


def choose_partner(
    first: str,
    pool: Sequence[str],
    mates: Mates,
    mode: str,
    strength: float,
    rng: random.Random,
) -> str | None:
    """A partner for ``first`` from ``pool`` (entries repeat as tournament winners do; ``first``
    itself is left out), drawn by :func:`partner_weights`; None when there is no other candidate.
    One draw from ``rng``."""
    candidates = [c for c in pool if c != first]
    if not candidates:
        return None
    near: dict[str, float] = {}
    for c in candidates:
        if c not in near:
            near[c] = mates.distance(first, c)
    preference = gene_of(mates, first)
    weights = partner_weights(mode, [near[c] for c in candidates], strength, preference)
    if not sum(weights) > 0:  # every weight underflowed: uniform
        weights = [1.0] * len(candidates)
    return rng.choices(candidates, weights)[0]


def gene_of(mates: Mates, vid: str) -> float:
    """The variant's gene, NEUTRAL_GENE when it has none."""
    found = mates.gene(vid)
    return NEUTRAL_GENE if found is None else found


def child_gene(parents: Sequence[float], sigma: float, rng: random.Random) -> float:
    """A child's gene: the mean of its parents' plus ``N(0, sigma)``, clipped to [0, 1]."""
    base = sum(parents) / len(parents) if parents else NEUTRAL_GENE
    return round(min(1.0, max(0.0, base + rng.gauss(0.0, sigma))), GENE_DECIMALS)


def initial_gene(rng: random.Random) -> float:
    """A generation-0 child's gene: uniform in [0, 1]."""
    return round(rng.random(), GENE_DECIMALS)


@dataclass(frozen=True)
class MateChoice:
    """One plan's mate choice: the mode, the run's :class:`Mates` and the ``[evolution]``
    strength and gene mutation step."""

    mode: str  # 'dissimilar' | 'self_adaptive'
    mates: Mates
    strength: float
    sigma: float

    def partner(self, first: str, pool: Sequence[str], rng: random.Random) -> str | None:
        """:func:`choose_partner` for ``first``."""
        return choose_partner(first, pool, self.mates, self.mode, self.strength, rng)

    def gene(self, parents: Sequence[str], rng: random.Random) -> float | None:
        """The gene of a child of ``parents`` (first parent, then the crossover partner); None
        unless self-adaptive; generation 0 (``parents`` empty) draws it uniformly."""
        if self.mode != "self_adaptive":
            return None
        if not parents:
            return initial_gene(rng)
        return child_gene([gene_of(self.mates, p) for p in parents], self.sigma, rng)


def mate_choice(mode: str, mates: Mates | None, strength: float, sigma: float) -> MateChoice | None:
    """The mate choice of ``[evolution] mate_choice``: None for the tournament (GE's rule)."""
    if mode == "tournament":
        return None
    if mode not in MODES:
        raise ValueError(f"unknown mate choice {mode!r}")
    if mates is None:
        raise ValueError(f"mate_choice = {mode!r} needs the run's distances (mates)")
    return MateChoice(mode, mates, strength, sigma)
