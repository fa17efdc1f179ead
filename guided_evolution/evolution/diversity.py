"""A cheap, deterministic code distance between variants, and diversity measures of a population.

A variant is seen as its evolvable segments: ``{segment key: code}`` (:func:`segment_codes`).
Code is compared as Python tokens (``tokenize``), so comments, blank lines, indentation width and
line breaks inside brackets never count; a statement break (newline or ``;``) is one token, and so
is a block's start and end (a statement moved into an ``if`` is a change). The
distance of two segments is the token edit distance (Levenshtein, exact: common prefix and suffix
cut, then the bit-parallel algorithm of Myers/Hyyrö on Python integers) divided by the longer
token count, so it lies in [0, 1]: 0 for the same code, 1 for code with nothing in common. Two
variants' distance is the mean over the segment positions of either.

Pure: no I/O. A :class:`DistanceCache` gives each distinct token sequence an id and remembers
distances by id pair, so a population whose members share most segments (the usual case: a
child changes one) costs little.
"""

from __future__ import annotations

import itertools
import random
import re
import textwrap
import tokenize
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from guided_evolution.evolution import pytokens
from guided_evolution.evolution.segments import Genome

Codes = Mapping[str, str]  # segment key -> code
EXACT_PAIRS_UP_TO = 24  # members (276 pairs); above, the mean pairwise distance is over a sample
SAMPLE_SEED = 0

_BREAK = "<newline>"  # NEWLINE and ";" alike: one statement break
_BLOCK = {tokenize.INDENT: "<indent>", tokenize.DEDENT: "<dedent>"}  # the width is not kept
_FALLBACK = re.compile(r"\w+|[^\w\s]")


def segment_codes(genome: Genome) -> dict[str, str]:
    """``{segment key: code}`` of a genome: what the distance compares."""
    return {s.key: s.code for s in genome.segments}


def split_segments(
    files: Mapping[str, str], evolvable: Sequence[str], marker: str
) -> dict[str, str]:
    """``{segment key: body}`` of a stored variant's files, cut at the marker lines only.

    A cheap stand-in for :func:`segment_codes` of ``parse_genome`` when only distances are
    wanted: the body keeps its NOTE blocks and blank lines, which are comments and layout to
    :func:`tokens`, so the distances agree (a stored variant's markers were checked when it was
    made). An evolvable file missing from ``files`` has no segments.
    """
    out: dict[str, str] = {}
    wanted = marker.strip()
    for path in dict.fromkeys(evolvable):
        if path not in files:
            continue
        index, body = -1, []
        for line in files[path].split("\n"):  # as segments.py: "\n" only, not form feeds
            if line.strip() == wanted:
                if index >= 0:
                    out[f"{path}#{index}"] = "\n".join(body)
                index, body = index + 1, []
            elif index >= 0:
                body.append(line)
        if index >= 0:
            out[f"{path}#{index}"] = "\n".join(body)
    return out


def position_order(key: str) -> tuple[str, int, str]:
    """Sort key of a segment key ``file#index``: by file, then by index as a number."""
    path, _, index = key.rpartition("#")
    return (path, int(index), "") if index.isdigit() else (path, -1, key)


def tokens(code: str) -> tuple[str, ...]:
    """The code's Python tokens without comments and layout; a statement break is one token,
    and so are a block's start and end (whatever the indentation width).

    Code that does not tokenize (an unclosed bracket) falls back to words and symbols.
    """
    out: list[str] = []
    try:
        for kind, string in pytokens.code_tokens(textwrap.dedent(code)):
            if kind == tokenize.ENDMARKER:
                continue
            if kind == tokenize.NEWLINE or string == ";":
                if out and out[-1] != _BREAK:
                    out.append(_BREAK)
                continue
            out.append(_BLOCK.get(kind, string))
    except (tokenize.TokenError, SyntaxError):
        return tuple(_FALLBACK.findall(code))
    while out and out[-1] == _BREAK:
        out.pop()
    return tuple(out)


def edit_distance(a: Sequence[object], b: Sequence[object]) -> int:
    """Levenshtein distance of two sequences of hashable items (exact)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi and a[lo] == b[lo]:
        lo += 1
    ea, eb = len(a), len(b)
    while ea > lo and eb > lo and a[ea - 1] == b[eb - 1]:
        ea -= 1
        eb -= 1
    a, b = a[lo:ea], b[lo:eb]
    if len(a) < len(b):  # the longer one as bits, the loop over the shorter
        a, b = b, a
    if not b:
        return len(a)
    return _myers(a, b)


def _myers(a: Sequence[object], b: Sequence[object]) -> int:
    """Bit-parallel edit distance (Myers 1999, Hyyrö's formulation): one bit per item of ``a``."""
    m = len(a)
    peq: dict[object, int] = {}
    for i, item in enumerate(a):
        peq[item] = peq.get(item, 0) | (1 << i)
    mask = (1 << m) - 1
    top = 1 << (m - 1)
    pv, mv, score = mask, 0, m
    for item in b:
        eq = peq.get(item, 0)
        xv = eq | mv
        xh = (((eq & pv) + pv) ^ pv) | eq
        ph = mv | (~(xh | pv) & mask)
        mh = pv & xh
        if ph & top:
            score += 1
        elif mh & top:
            score -= 1
        ph = ((ph << 1) | 1) & mask
        mh = (mh << 1) & mask
        pv = mh | (~(xv | ph) & mask)
        mv = ph & xv
    return score


def token_distance(a: Sequence[str], b: Sequence[str]) -> float:
    """Edit distance of two token sequences over the longer one's length: in [0, 1]."""
    longest = max(len(a), len(b))
    return edit_distance(a, b) / longest if longest else 0.0


def code_distance(a: str, b: str) -> float:
    """Normalised token edit distance of two pieces of code, in [0, 1]."""
    return token_distance(tokens(a), tokens(b))


@dataclass
class DistanceCache:
    """Segments by text and distances by pair, remembered (memory only, one inspection or run).

    Each distinct token sequence gets a small integer id, so equal code (comments and layout
    aside) is recognised without comparing texts, and a pair's distance is computed once.
    """

    ids: dict[str, int] = field(default_factory=dict)  # code -> id of its tokens
    by_tokens: dict[tuple[str, ...], int] = field(default_factory=dict)
    sequences: list[tuple[str, ...]] = field(default_factory=list)  # id -> tokens
    pairs: dict[tuple[int, int], float] = field(default_factory=dict)
    computed: int = 0  # distances actually computed (not found in the cache)
    max_pairs: int = 250_000  # the pair cache starts over beyond this (~40 MB): a long run's bound

    def segment_id(self, code: str) -> int:
        """The id of the code's tokens: equal ids, equal code."""
        found = self.ids.get(code)
        if found is None:
            toks = tokens(code)
            found = self.by_tokens.get(toks)
            if found is None:
                found = self.by_tokens[toks] = len(self.sequences)
                self.sequences.append(toks)
            self.ids[code] = found
        return found

    def tokens(self, code: str) -> tuple[str, ...]:
        """``tokens(code)``, remembered."""
        return self.sequences[self.segment_id(code)]

    def id_distance(self, a: int, b: int) -> float:
        """Normalised token edit distance of two segments given by id."""
        if a == b:
            return 0.0
        key = (a, b) if a < b else (b, a)
        found = self.pairs.get(key)
        if found is None:
            self.computed += 1
            found = token_distance(self.sequences[a], self.sequences[b])
            if len(self.pairs) >= self.max_pairs:
                self.pairs.clear()
            self.pairs[key] = found
        return found

    def segment_distance(self, a: str, b: str) -> float:
        """Normalised token edit distance of two segments' code."""
        return 0.0 if a == b else self.id_distance(self.segment_id(a), self.segment_id(b))

    def coded(self, member: Codes) -> dict[str, int]:
        """``{segment key: segment id}`` of a variant."""
        return {key: self.segment_id(code) for key, code in member.items()}


def coded_distance(a: Mapping[str, int], b: Mapping[str, int], cache: DistanceCache) -> float:
    """:func:`distance` of two coded variants over every position of either."""
    keys = sorted(a.keys() | b.keys())  # a fixed order: the same sum on every run
    if not keys:
        return 0.0
    total = 0.0
    for key in keys:
        x, y = a.get(key), b.get(key)
        total += 1.0 if x is None or y is None else cache.id_distance(x, y)
    return total / len(keys)


def _keys(a: Codes, b: Codes) -> list[str]:
    return sorted(set(a) | set(b), key=position_order)


def per_position(
    a: Codes, b: Codes, cache: DistanceCache | None = None, keys: Iterable[str] | None = None
) -> dict[str, float]:
    """Distance per segment position (``keys``, default: every position of either variant); a
    position only one of them has is at distance 1."""
    cache = cache if cache is not None else DistanceCache()
    out: dict[str, float] = {}
    for key in _keys(a, b) if keys is None else keys:
        x, y = a.get(key), b.get(key)
        out[key] = 1.0 if x is None or y is None else cache.segment_distance(x, y)
    return out


def distance(
    a: Codes, b: Codes, cache: DistanceCache | None = None, keys: Iterable[str] | None = None
) -> float:
    """The code distance of two variants: the mean of :func:`per_position`, in [0, 1]."""
    values = per_position(a, b, cache, keys)
    return sum(values.values()) / len(values) if values else 0.0


def nearest(
    candidate: Codes,
    others: Sequence[Codes],
    cache: DistanceCache | None = None,
    keys: Iterable[str] | None = None,
    stop_at: float = 0.0,
) -> tuple[int, float] | None:
    """(index, distance) of the member of ``others`` closest to ``candidate``, the first on ties;
    None when there are none. ``keys`` limits the comparison to some positions (e.g. the segment
    a proposal changed); the search stops at the first member within ``stop_at``."""
    cache = cache if cache is not None else DistanceCache()
    wanted = None if keys is None else list(keys)
    best: tuple[int, float] | None = None
    for i, other in enumerate(others):
        d = distance(candidate, other, cache, wanted)
        if best is None or d < best[1]:
            best = (i, d)
            if d <= stop_at:
                break
    return best


def distinct_segments(
    population: Sequence[Codes], cache: DistanceCache | None = None
) -> dict[str, int]:
    """Per segment position: how many different segments (by tokens: comments and layout
    ignored) the population holds there."""
    cache = cache if cache is not None else DistanceCache()
    seen: dict[str, set[int]] = {}
    for member in population:
        for key, code in member.items():
            seen.setdefault(key, set()).add(cache.segment_id(code))
    return {key: len(seen[key]) for key in sorted(seen, key=position_order)}


def _pairs(n: int, exact_up_to: int, seed: int) -> tuple[list[tuple[int, int]], bool]:
    """All index pairs of ``n`` members, or a deterministic sample of as many pairs as
    ``exact_up_to`` members have; and whether it is a sample."""
    total = n * (n - 1) // 2
    budget = exact_up_to * (exact_up_to - 1) // 2
    if n <= exact_up_to or total <= budget:
        return list(itertools.combinations(range(n), 2)), False
    picks = sorted(random.Random(seed).sample(range(total), budget))
    pairs, k, p = [], 0, 0
    for i in range(n):  # walk the pairs in order, taking the picked ranks
        row = n - 1 - i
        while p < len(picks) and picks[p] < k + row:
            pairs.append((i, i + 1 + picks[p] - k))
            p += 1
        k += row
    return pairs, True


def mean_pairwise_distance(
    population: Sequence[Codes],
    cache: DistanceCache | None = None,
    exact_up_to: int = EXACT_PAIRS_UP_TO,
    seed: int = SAMPLE_SEED,
) -> tuple[float | None, bool]:
    """Mean distance over the population's pairs (None under two members), and whether it was
    estimated from a deterministic sample of pairs (populations over ``exact_up_to`` members)."""
    cache = cache if cache is not None else DistanceCache()
    pairs, sampled = _pairs(len(population), exact_up_to, seed)
    if not pairs:
        return None, False
    keys = sorted({k for member in population for k in member}, key=position_order)
    if any(len(member) != len(keys) for member in population):  # positions differ: the slow way
        coded = [cache.coded(member) for member in population]
        total = sum(coded_distance(coded[i], coded[j], cache) for i, j in pairs)
        return total / len(pairs), sampled
    rows = [tuple(cache.segment_id(member[k]) for k in keys) for member in population]
    total = 0.0
    for i, j in pairs:
        a, b = rows[i], rows[j]
        if a != b:
            total += sum(cache.id_distance(x, y) for x, y in zip(a, b, strict=True)) / len(keys)
    return total / len(pairs), sampled


@dataclass(frozen=True)
class PopulationDiversity:
    """Diversity measures of one population."""

    size: int
    distinct: dict[str, int]  # segment key -> distinct segments there
    mean_distance: float | None
    sampled: bool  # mean_distance estimated from a sample of pairs


def measure(population: Sequence[Codes], cache: DistanceCache | None = None) -> PopulationDiversity:
    """Size, distinct segments per position and mean pairwise distance of a population."""
    cache = cache if cache is not None else DistanceCache()
    mean, sampled = mean_pairwise_distance(population, cache)
    return PopulationDiversity(len(population), distinct_segments(population, cache), mean, sampled)
