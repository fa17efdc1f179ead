"""Cost of novelty rejection per proposal (``[evolution] novelty_distance``, evolution/novelty.py).

On the segments of fast_exp's and ExquisiteNetV2's seeds: an archive of ``--archive`` evaluated
variants is grown as a run grows it (each a random archived variant with one segment changed by
1 to 3 offline mutations in a row), then ``--proposals`` new proposals (the same kind of child)
are checked against it. Printed per seed, as medians over the proposals:

- ``archive``: ms per proposal of ``NoveltyArchive.check`` with the run's one cache (the token
  ids of every archived segment known, distances remembered, the length bound ruling out most
  pairs), the proposal's own tokenizing included; and ms to archive one evaluated variant;
- ``naive``: ms per proposal of ``diversity.nearest`` over every archived variant at the same
  position with a fresh ``DistanceCache`` (what a check would cost without the per-run cache:
  every archived segment tokenized and compared again);
- how many proposals were near-duplicates at ``--threshold``, and edit distances computed.

    python benchmarks/novelty_cost.py [--archive 300] [--proposals 200] [--threshold 0.05]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import time
from pathlib import Path

from guided_evolution.evolution import diversity
from guided_evolution.evolution.novelty import NoveltyArchive, new_keys
from guided_evolution.evolution.operators.offline import offline_mutate
from guided_evolution.evolution.segments import Genome, parse_genome
from guided_evolution.evolution.splice import SpliceError

ROOT = Path(__file__).resolve().parents[1]
SEEDS = {"fast_exp": "approx.py", "exquisitenet_v2": "model.py"}


def _seed_genome(name: str) -> Genome:
    path = SEEDS[name]
    text = (ROOT / "seeds" / name / path).read_text(encoding="utf-8")
    return parse_genome({path: text}, [path])


def _child(genome: Genome, parent: dict[str, str], rng: random.Random) -> dict[str, str]:
    """The parent with one segment changed by 1 to 3 offline mutations in a row."""
    mutable = [s for s in genome.segments if s.code.strip()]
    seg = dataclasses.replace(rng.choice(mutable))
    seg = dataclasses.replace(seg, code=parent[seg.key])
    for _ in range(rng.randint(1, 3)):
        try:
            seg = dataclasses.replace(seg, code=offline_mutate(seg, rng).code)
        except SpliceError:
            break
    return {**parent, seg.key: seg.code}


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000


def measure(name: str, archive_size: int, proposals: int, threshold: float) -> None:
    genome = _seed_genome(name)
    rng = random.Random(0)
    seed = diversity.segment_codes(genome)
    archive = NoveltyArchive(threshold)
    members: list[tuple[str, dict[str, str]]] = [("v0", seed)]
    add_ms = []
    start = time.perf_counter()
    archive.add("v0", seed)
    add_ms.append(_ms(start))
    while len(members) < archive_size:
        _, parent = rng.choice(members)
        codes = _child(genome, parent, rng)
        members.append((f"v{len(members)}", codes))
        start = time.perf_counter()
        archive.add(members[-1][0], codes)
        add_ms.append(_ms(start))
    fast, slow, near, agree = [], [], 0, 0
    computed_before = archive.cache.computed
    for _ in range(proposals):
        _, parent = rng.choice(members)
        codes = _child(genome, parent, rng)
        keys = new_keys(codes, [parent])
        start = time.perf_counter()
        found = archive.check(codes, keys)
        fast.append(_ms(start))
        start = time.perf_counter()
        best = diversity.nearest(
            codes, [m for _, m in members], diversity.DistanceCache(), keys, stop_at=0.0
        )
        slow.append(_ms(start))
        naive = keys and best is not None and best[1] <= threshold
        near += found is not None
        agree += bool(naive) == (found is not None)
    computed = archive.cache.computed - computed_before
    tokens = sorted(len(diversity.tokens(s.code)) for s in genome.segments if s.code.strip())
    print(f"{name}: {len(tokens)} segments, tokens per segment {tokens}")
    print(f"  archive {archive_size} variants, {proposals} proposals, threshold {threshold}")
    print(f"  archive one evaluated variant (median)  {statistics.median(add_ms):.3f} ms")
    print(f"  check one proposal, archive (median)    {statistics.median(fast):.3f} ms")
    print(f"  check one proposal, naive (median)      {statistics.median(slow):.3f} ms")
    print(f"  near-duplicates {near}/{proposals}; decisions agree with naive {agree}/{proposals}")
    print(f"  edit distances computed by the archive  {computed / proposals:.1f} per proposal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=int, default=300)
    parser.add_argument("--proposals", type=int, default=200)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--seeds", default=",".join(SEEDS))
    args = parser.parse_args()
    for name in args.seeds.split(","):
        measure(name, args.archive, args.proposals, args.threshold)


if __name__ == "__main__":
    main()
