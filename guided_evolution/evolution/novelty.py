"""Novelty rejection before evaluation (``[evolution.novelty] distance``): is a proposal's new code
within a distance of what the run has already evaluated?

The archive holds the evolvable segments of every evaluated variant (an ``ok`` evaluation or a
failed one: code near a failure is as little worth a second evaluation as code near a success),
by segment position, each segment as the id of its token sequence (``diversity.DistanceCache``),
so a segment shared by many variants is compared once. A proposal is compared on its *new*
segments only (positions where its code differs from every parent's there): a mutation's
segment, a crossover's merged segment. A child that only recombines its parents' segments has no
new code and is not checked (a byte-identical child is the recorder's ``duplicate``).

The distance to an archived variant is the mean over those positions of the token edit distance
(``diversity``) or, with embedding vectors given, of the cosine distance of the segments'
vectors. A position the archived variant lacks is at distance 1. The length difference is a lower
bound of the token distance, so most segments are ruled out without an edit distance.

Pure: no I/O; the engine supplies the evaluated variants and (optionally) the vectors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from guided_evolution.evolution.diversity import Codes, DistanceCache

Vectors = Mapping[int, Sequence[float]]  # segment id -> embedding vector


@dataclass(frozen=True)
class NearDuplicate:
    """A proposal too close to an evaluated variant."""

    variant: str  # the evaluated variant it nearly repeats
    distance: float
    threshold: float
    keys: tuple[str, ...]  # the proposal's new segment positions
    code: str  # the evaluated variant's code at the first of them

    @property
    def reason(self) -> str:
        """One line for the rejection event."""
        return (
            f"near-duplicate of {self.variant} "
            f"(distance {self.distance:.3g} <= {self.threshold:.3g})"
        )


def new_keys(child: Codes, parents: Sequence[Codes]) -> tuple[str, ...]:
    """Positions where the child's code is none of its parents' code there (in order)."""
    return tuple(key for key, code in child.items() if all(p.get(key) != code for p in parents))


def cosine_distance(a: Sequence[float], b: Sequence[float]) -> float:
    """1 - cosine similarity, clipped to [0, 1] (opposite vectors count as unrelated)."""
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    if norm == 0.0:
        return 0.0 if not any(a) and not any(b) else 1.0
    return min(1.0, max(0.0, 1.0 - dot / norm))


@dataclass
class NoveltyArchive:
    """The evaluated variants' segments by position: a per-run cache, grown as they evaluate."""

    threshold: float
    cache: DistanceCache = field(default_factory=DistanceCache)
    members: dict[str, dict[str, int]] = field(default_factory=dict)  # vid -> key -> segment id
    holders: dict[str, dict[int, str]] = field(default_factory=dict)  # key -> id -> first vid
    texts: dict[int, str] = field(default_factory=dict)  # segment id -> its first code seen
    compared: int = 0  # segment pairs whose distance was looked up (not ruled out by length)

    def __contains__(self, vid: object) -> bool:
        return vid in self.members

    def add(self, vid: str, codes: Codes) -> None:
        """Archive an evaluated variant's segments (again: no change)."""
        if vid in self.members:
            return
        coded = self.cache.coded(codes)
        self.members[vid] = coded
        for key, sid in coded.items():
            self.holders.setdefault(key, {}).setdefault(sid, vid)
            self.texts.setdefault(sid, codes[key])

    def texts_for(self, candidate: Codes, keys: Iterable[str]) -> dict[int, str]:
        """``{segment id: code}`` of what a check of ``candidate`` at ``keys`` compares: the
        candidate's segments and every archived segment there (what needs embedding vectors)."""
        out: dict[int, str] = {}
        for key in keys:
            if key in candidate:
                out.setdefault(self.cache.segment_id(candidate[key]), candidate[key])
                for sid in self.holders.get(key, {}):
                    out.setdefault(sid, self.text(sid))
        return out

    def text(self, sid: int) -> str:
        return self.texts.get(sid) or " ".join(self.cache.sequences[sid])

    def _pair(self, a: int, b: int, bound: float, vectors: Vectors | None) -> float:
        """Distance of two segment ids; a lower bound above ``bound`` when that rules it out."""
        if a == b:
            return 0.0
        if vectors is not None:
            self.compared += 1
            return cosine_distance(vectors[a], vectors[b])
        la, lb = len(self.cache.sequences[a]), len(self.cache.sequences[b])
        low = abs(la - lb) / max(la, lb)
        if low > bound:
            return low
        self.compared += 1
        return self.cache.id_distance(a, b)

    def check(
        self, candidate: Codes, keys: Sequence[str], vectors: Vectors | None = None
    ) -> NearDuplicate | None:
        """The nearest archived variant within the threshold at ``keys`` (the first archived on
        ties), or None. ``vectors``: embedding distance instead of the token distance."""
        keys = [k for k in keys if k in candidate]
        if not keys or not self.members or self.threshold <= 0:
            return None
        mine = {k: self.cache.segment_id(candidate[k]) for k in keys}
        # A single position's distance can reach len(keys) * threshold with the mean within it.
        bound = self.threshold * len(keys)
        per_key = {
            k: {sid: self._pair(mine[k], sid, bound, vectors) for sid in self.holders.get(k, {})}
            for k in keys
        }
        if len(keys) == 1:
            (key,) = keys
            found = min(per_key[key].items(), key=lambda item: item[1], default=None)
            if found is None or found[1] > self.threshold:
                return None
            vid = self.holders[key][found[0]]
            return self._near(vid, found[1], keys)
        best: tuple[str, float] | None = None
        for vid, coded in self.members.items():
            total = sum(per_key[k][coded[k]] if k in coded else 1.0 for k in keys)
            value = total / len(keys)
            if value <= self.threshold and (best is None or value < best[1]):
                best = (vid, value)
        return self._near(best[0], best[1], keys) if best else None

    def _near(self, vid: str, value: float, keys: Sequence[str]) -> NearDuplicate:
        sid = self.members[vid].get(keys[0])
        code = self.text(sid) if sid is not None else ""
        return NearDuplicate(vid, value, self.threshold, tuple(keys), code)
