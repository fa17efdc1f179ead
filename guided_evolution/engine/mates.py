"""The run's side of mate choice (``evolution.mate_choice.Mates``): code distances of stored
variants and their mating-preference genes, read from the run's store and index (``engine.reader``).

A variant's evolvable segments are read once from its commit (``diversity.split_segments``) and
kept as segment ids of one ``diversity.DistanceCache``, so a pair of segments is compared once per
run; genes come from the index (``VariantRecord.mating_preference``) and are kept too (a
variant's commit and gene never change). Memory: a few integers per variant, and the cache's
bounded pair table.
"""

from __future__ import annotations

from guided_evolution.config import EvolutionConfig
from guided_evolution.engine.reader import RunReader
from guided_evolution.evolution import diversity


class RunMates:
    """``Mates`` over one run's reader (single-threaded, like the engine)."""

    def __init__(self, reader: RunReader) -> None:
        self.reader = reader
        self.cache = diversity.DistanceCache()
        self._coded: dict[str, dict[str, int]] = {}
        self._genes: dict[str, float | None] = {}

    def coded(self, vid: str) -> dict[str, int]:
        """``{segment key: segment id}`` of a stored variant."""
        found = self._coded.get(vid)
        if found is None:
            seed = self.reader.cfg.seed
            raw = self.reader.store.read_files(self.reader.commit_of(vid))
            files = {p: raw[p].decode("utf-8", "surrogateescape") for p in seed.files if p in raw}
            codes = diversity.split_segments(files, seed.files, seed.marker)
            found = self._coded[vid] = self.cache.coded(codes)
        return found

    def distance(self, a: str, b: str) -> float:
        """``diversity.distance`` of two stored variants (mean over every segment position)."""
        return diversity.coded_distance(self.coded(a), self.coded(b), self.cache)

    def gene(self, vid: str) -> float | None:
        """The variant's stored mating preference (None: it has none)."""
        if vid not in self._genes:
            row = self.reader.index.get_variant(vid)
            self._genes[vid] = row.mating_preference if row is not None else None
        return self._genes[vid]


def run_mates(reader: RunReader, evo: EvolutionConfig) -> RunMates | None:
    """The run's mates when ``mate_choice`` needs them (None for the tournament)."""
    return None if evo.mate_choice.kind == "tournament" else RunMates(reader)
