"""The engine's reads of its own run (the recorder only writes): genomes, commits, scores, what a
prompt may see of an evaluation, and what novelty rejection and the loops look up.

Reads go to the same store and index the recorder writes, on the engine's thread; parsed genomes
and commits are cached (a variant never changes). A read that fails on a damaged record names
the damage (``guard.RecordGuard``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from guided_evolution.config import GeConfig
from guided_evolution.engine.guard import RecordGuard
from guided_evolution.evolution.diversity import split_segments
from guided_evolution.evolution.heldout import HeldOut, shown_metrics
from guided_evolution.evolution.scoring import ObjectiveSpec, Scored, scored, scorer
from guided_evolution.evolution.segments import Genome, kept_names, parse_genome
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.records import EvaluationRecord
from guided_evolution.runstore.run_index import RunIndex

GENOME_CACHE = 512  # parsed genomes kept in memory (parents are read again and again)


class RunReader:
    """Reads one run's store and index for the engine and its proposer (single-threaded)."""

    def __init__(
        self, store: GitStore, index: RunIndex, cfg: GeConfig, guard: RecordGuard | None = None
    ) -> None:
        self.store = store
        self.index = index
        self.cfg = cfg
        self.guard = guard or RecordGuard()
        self.objectives: list[ObjectiveSpec] = [
            (o.name, o.direction) for o in cfg.selected_objectives
        ]
        self._genomes: OrderedDict[str, Genome] = OrderedDict()
        self._kept: dict[str, str] | None = None  # names other seed files use
        self._commits: dict[str, str] = {}
        self._all_scored: tuple[int, list[Scored]] | None = None  # (last evaluation id, list)

    # ----------------------------------------------------------------- variants

    def commit_of(self, vid: str) -> str:
        if vid not in self._commits:
            row = self.index.get_variant(vid)
            assert row is not None and row.commit_sha is not None, vid
            self._commits[vid] = row.commit_sha
        return self._commits[vid]

    def committed(self, vid: str, sha: str) -> None:
        """The recorder stored ``vid`` as commit ``sha`` (kept, not read back)."""
        self._commits[vid] = sha

    def genome(self, vid: str) -> Genome:
        """The parsed evolvable files of a variant (an LRU cache over git reads)."""
        genome = self._genomes.get(vid)
        if genome is not None:
            self._genomes.move_to_end(vid)
            return genome
        with self.guard.guarded():
            files = self.store.read_files(self.commit_of(vid))
        text = {name: files[name].decode("utf-8") for name in self.cfg.seed.files if name in files}
        if self._kept is None:  # children change evolvable files only: the others are the seed's
            python = {
                n: b.decode("utf-8", "replace") for n, b in files.items() if n.endswith(".py")
            }
            self._kept = kept_names(python, self.cfg.seed.files)
        genome = parse_genome(text, self.cfg.seed.files, self.cfg.seed.marker, self._kept)
        self._genomes[vid] = genome
        if len(self._genomes) > GENOME_CACHE:
            self._genomes.popitem(last=False)
        return genome

    def segment_texts(self, vid_or_files: str | dict[str, str]) -> dict[str, str]:
        """``{segment key: code}`` of a variant (by id) or of a child's files, cut at the
        marker lines (``diversity.split_segments``): what novelty rejection compares."""
        files = self.genome(vid_or_files).files if isinstance(vid_or_files, str) else vid_or_files
        return split_segments(files, self.cfg.seed.files, self.cfg.seed.marker)

    def segment_of(self, vid: str) -> str | None:
        row = self.index.get_variant(vid)
        return row.segment if row is not None else None

    def evaluated_before(self, generation: int) -> list[str]:
        """Variants of generations before ``generation`` with an evaluation (ok or failed), by
        generation then id (an order that does not depend on when they were evaluated)."""
        rows = [*self.index.variants(status="evaluated"), *self.index.variants(status="failed")]
        rows.sort(key=lambda v: (v.generation, v.id))
        return [v.id for v in rows if v.generation < generation]

    def outside(self, generation: int, population: Sequence[str]) -> list[tuple[str, int]]:
        """(id, island) of the children of ``generation`` that are not in ``population``."""
        held = set(population)
        return [
            (v.id, v.island or 0) for v in self.index.variants(generation=generation)
            if v.operator != "seed" and v.id not in held
        ]  # fmt: skip

    # ----------------------------------------------------------------- evaluations

    def latest_evaluation(self, vid: str) -> EvaluationRecord | None:
        return self.index.latest_evaluation(vid)

    def scored(self, ids: Sequence[str]) -> list[Scored]:
        """The selectable members of ``ids``, in order (see ``selection.scored``)."""
        out = []
        for vid in ids:
            item = scored(vid, self.index.latest_evaluation(vid), self.objectives)
            if item is not None:
                out.append(item)
        return out

    def all_scored(self) -> list[Scored]:
        """Every selectable variant, in the order of their latest evaluations: one query that
        reads only the objectives (``RunIndex.latest_values``), whatever the run's size. The
        start of a resumed run asks twice: the second call, with no evaluation recorded since,
        gets the first's list; either way the second call lets it go (78 MB at 100,000)."""
        mark = self.index.last_evaluation_id()
        if self._all_scored is not None:
            (kept_at, kept), self._all_scored = self._all_scored, None
            return kept if kept_at == mark else self._read_scored()
        found = self._read_scored()
        self._all_scored = (mark, found)
        return list(found)

    def _read_scored(self) -> list[Scored]:
        names, score = [name for name, _ in self.objectives], scorer(self.objectives)
        return [
            s
            for vid, status, values in self.index.latest_values(names)
            if (s := score(vid, EvaluationRecord(vid, status, metrics=values)))
        ]

    def best_metrics(self, ids: Sequence[str]) -> Scored | None:
        """The first selectable member of ``ids`` (its id and objectives) for the progress's
        front, or None."""
        valid = self.scored(ids)
        return valid[0] if valid else None

    # ----------------------------------------------------------------- what an LLM may see

    def objective_metrics(self, vid: str) -> dict[str, float] | None:
        """The selecting objectives' finite numbers of a variant's latest evaluation: the only
        metrics a prompt may show. Reported-only objectives (``select = false``, e.g. a held-out
        test accuracy) never reach an LLM, or the search would see the test set; other metric
        names and values are the variant's own text and never go there either."""
        evaluation = self.index.latest_evaluation(vid)
        if evaluation is None or not evaluation.metrics:
            return None
        return shown_metrics(evaluation.metrics, [o.name for o in self.cfg.selected_objectives])

    def heldout(self, vid: str) -> HeldOut:
        """The held-out rule (``evolution.heldout``) for text about ``vid``: the reported-only
        objectives, with the values recorded for them on ``vid`` and on its parents."""
        held = [o.name for o in self.cfg.objectives if not o.select]
        if not held:
            return HeldOut(())
        variant = self.index.get_variant(vid)
        ids = [vid, *(variant.parents if variant is not None else ())]
        evaluations = [self.index.latest_evaluation(v) for v in ids]
        return HeldOut.of(held, [e.metrics for e in evaluations if e is not None])

    def withheld(self, vid: str, text: str) -> str:
        """``text`` (an evaluation's feedback, failure reason or output, about ``vid``) as a
        prompt may show it: :meth:`heldout`'s rule applied."""
        return self.heldout(vid).scrub(text) if text else text
