"""The engine's one writer of a run's record: git first, then the index, on the engine's thread.

It commits children (:func:`runstore.recording.record_variant`), records rejections, exports a
variant for evaluation and records its result (the result and the variant's status in one
transaction, the git note per generation), and reads back what the loop needs: genomes, commits
and scores. Before each commit and each recorded evaluation (when unsandboxed code may have run)
its ``RunWatch`` checks that nothing else damaged the record; once damage is found, nothing more
is written and every failure names the damage.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from guided_evolution.config import OFFLINE_MODEL, GeConfig
from guided_evolution.engine.progress import Progress
from guided_evolution.errors import RunDamagedError
from guided_evolution.evaluation.contract import EvalResult
from guided_evolution.evolution.diversity import split_segments
from guided_evolution.evolution.operators import Child
from guided_evolution.evolution.plan import Plan, dedup
from guided_evolution.evolution.scoring import Scored, finite_values, scored
from guided_evolution.evolution.segments import Genome, kept_names, parse_genome, variant_id
from guided_evolution.fsutil import remove_tree
from guided_evolution.runstore import damage
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.recording import record_variant
from guided_evolution.runstore.records import (
    EvaluationRecord,
    ReflectionRecord,
    VariantRecord,
    variant_branch,
)
from guided_evolution.runstore.run_index import RunIndex

COMPACT_EVERY = 2000  # children between repository compactions
GENOME_CACHE = 512  # parsed genomes kept in memory (parents are read again and again)
WITHHELD_LINE = "[line withheld: it shows a reported-only metric]"


def _number_forms(value: float) -> set[str]:
    """The usual printed forms of a metric value (to find it in an evaluator's output)."""
    forms = {repr(value), f"{value:.6g}", f"{value:.4f}", f"{value:.3f}"}
    if 0 <= value <= 1:
        forms |= {f"{100 * value:.2f}", f"{100 * value:.1f}%"}
    return {form for form in forms if sum(ch.isdigit() for ch in form) >= 3}


class Recorder:
    """Writes and reads one run's store and index for the engine (single-threaded)."""

    def __init__(
        self,
        store: GitStore,
        index: RunIndex,
        cfg: GeConfig,
        progress: Progress,
        watch: damage.RunWatch | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.cfg = cfg
        self.progress = progress
        self.watch = watch
        self.damaged: RunDamagedError | None = (
            None  # set once damage is found: nothing more is written
        )
        self.objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
        self._genomes: OrderedDict[str, Genome] = OrderedDict()
        self._kept: dict[str, str] | None = None  # names other seed files use
        self._commits: dict[str, str] = {}
        self._notes: dict[str, str] = {}
        self._compacted_at = 0

    # ----------------------------------------------------------------- damage

    def _damage(self) -> RunDamagedError | None:
        found = self.watch.damage() if self.watch is not None else []
        return damage.error(self.watch.index_path.parent, found) if self.watch and found else None

    def check(self) -> None:
        """Raise the damage that something else did to the run's record (before a write)."""
        if self.damaged is None:
            self.damaged = self._damage()
        if self.damaged is not None:
            raise self.damaged

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        """A write or read of the record: when it fails and the record is damaged, the error
        says what is damaged (not what libgit2 or SQLite made of it)."""
        try:
            yield
        except Exception as err:
            found = self._damage()
            if found is None:
                if not isinstance(err, RunDamagedError):
                    raise
                found = err
            self.damaged = found
            raise found from None

    # ----------------------------------------------------------------- reading

    def commit_of(self, vid: str) -> str:
        if vid not in self._commits:
            row = self.index.get_variant(vid)
            assert row is not None and row.commit_sha is not None, vid
            self._commits[vid] = row.commit_sha
        return self._commits[vid]

    def genome(self, vid: str) -> Genome:
        """The parsed evolvable files of a variant (an LRU cache over git reads)."""
        genome = self._genomes.get(vid)
        if genome is not None:
            self._genomes.move_to_end(vid)
            return genome
        with self._guarded():
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

    def scored(self, ids: Sequence[str]) -> list[Scored]:
        """The selectable members of ``ids``, in order (see ``selection.scored``)."""
        out = []
        for vid in ids:
            item = scored(vid, self.index.latest_evaluation(vid), self.objectives)
            if item is not None:
                out.append(item)
        return out

    # ----------------------------------------------------------------- what an LLM may see

    def objective_metrics(self, vid: str) -> dict[str, float] | None:
        """The selecting objectives' finite numbers of a variant's latest evaluation: the only
        metrics a prompt may show. Reported-only objectives (``select = false``, e.g. a held-out
        test accuracy) never reach an LLM, or the search would see the test set; other metric
        names and values are the variant's own text and never go there either."""
        evaluation = self.index.latest_evaluation(vid)
        if evaluation is None or not evaluation.metrics:
            return None
        return finite_values(evaluation.metrics, self.cfg.selected_objectives)

    def withheld(self, vid: str, text: str) -> str:
        """``text`` (an evaluation's failure reason or output, for a fix prompt) without the
        lines that name a reported-only objective or show a value recorded for one of them."""
        held = [o.name for o in self.cfg.objectives if not o.select]
        if not held or not text:
            return text
        evaluation = self.index.latest_evaluation(vid)
        recorded = finite_values(
            evaluation.metrics if evaluation else None, [(name, "max") for name in held]
        )
        needles = [name.lower() for name in held] + [
            form for value in recorded.values() for form in _number_forms(value)
        ]
        lines = [
            WITHHELD_LINE if any(n in line.lower() for n in needles) else line
            for line in text.splitlines()
        ]
        return "\n".join(lines)

    def segment_texts(self, vid_or_files: str | dict[str, str]) -> dict[str, str]:
        """``{segment key: code}`` of a variant (by id) or of a child's files, cut at the
        marker lines (``diversity.split_segments``): what novelty rejection compares."""
        files = self.genome(vid_or_files).files if isinstance(vid_or_files, str) else vid_or_files
        return split_segments(files, self.cfg.seed.files, self.cfg.seed.marker)

    def evaluated_before(self, generation: int) -> list[str]:
        """Variants of generations before ``generation`` with an evaluation (ok or failed), by
        generation then id (an order that does not depend on when they were evaluated)."""
        rows = [*self.index.variants(status="evaluated"), *self.index.variants(status="failed")]
        rows.sort(key=lambda v: (v.generation, v.id))
        return [v.id for v in rows if v.generation < generation]

    def near_duplicate(self, plan: Plan, details: dict[str, object]) -> None:
        """A proposal found to nearly repeat an evaluated variant (re-proposed or rejected)."""
        self.index.add_event(
            "near_duplicate", {"generation": plan.generation, "plan": plan.index, **details}
        )

    def warning(self, message: str) -> None:
        """A one-line warning for the run's event log."""
        self.index.add_event("warning", {"message": message})

    def segment_of(self, vid: str) -> str | None:
        row = self.index.get_variant(vid)
        return row.segment if row is not None else None

    # ----------------------------------------------------------------- writing children

    def commit(
        self, plan: Plan, child: Child, calls: list[int], *, fix_of: str | None = None
    ) -> tuple[str, bool]:
        """Store the child as a commit on its own branch, then its index row.

        Returns (variant id, whether it is new); an identical child that exists already is
        recorded as a duplicate event. ``fix_of`` is the failed variant a fix child repairs (its
        only parent).
        """
        self.check()
        with self._guarded():
            return self._commit(plan, child, calls, fix_of)

    def _commit(
        self, plan: Plan, child: Child, calls: list[int], fix_of: str | None
    ) -> tuple[str, bool]:
        vid = variant_id(child.files, self.cfg.seed.files)
        if self.index.get_variant(vid) is not None:
            self.index.add_event(
                "duplicate", {"variant": vid, "generation": plan.generation, "plan": plan.index}
            )
            return vid, False
        parents = dedup([fix_of] if fix_of else list(child.parents))
        parent_commits = [self.commit_of(p) for p in parents]
        tree = dict(self.store.read_files(parent_commits[0]))
        for name, text in child.files.items():
            tree[name] = text.encode("utf-8")
        record = VariantRecord(
            id=vid,
            generation=plan.generation,
            operator=child.operator,
            branch=variant_branch(plan.generation, vid),
            parents=parents,
            segment=child.segment,
            prompt_name=child.prompt_name,
            persona=child.persona,
            model=child.model or (OFFLINE_MODEL if self.cfg.llm.offline else ""),
            temperature=child.temperature,
            status="pending",
            eot_reflection=child.reflection,
            llm_call_id=child.call_id,
            island=plan.island if self.cfg.evolution.islands > 1 else None,
            mating_preference=plan.mating_preference,
        )
        # A crossover that was then mutated names both steps; the segment is the last step's.
        steps = [s.op for s in plan.steps] if len(plan.steps) > 1 and fix_of is None else []
        stored = record_variant(
            self.store,
            self.index,
            record,
            tree,
            parent_commits,
            description=child.description,
            steps=steps,
        )
        self._commits[vid] = stored.commit_sha or ""
        self.index.link_calls(vid, calls)
        if child.reflection:
            self.index.add_reflection(
                ReflectionRecord(
                    variant_id=vid,
                    text=child.reflection,
                    elite_id=plan.steps[-1].other,
                    segment=child.segment,
                )
            )
        self.progress.count("proposed", +1)
        return vid, True

    def reject(self, plan: Plan, operator: str, reason: str, calls: list[int]) -> None:
        """A plan that made no child: one event with the reason and the LLM calls it cost."""
        self.progress.count("rejected", +1)
        self.index.add_event(
            "proposal_rejected",
            {
                "generation": plan.generation,
                "plan": plan.index,
                "operator": operator,
                "parents": list(plan.parents),
                "reason": reason,
                "calls": calls,
            },
        )

    # ----------------------------------------------------------------- evaluations

    def checkout(self, vid: str, work: Path) -> Path:
        """Export the variant's tree into ``work/<id>`` for its evaluation; marks it evaluating."""
        workdir = work / vid
        remove_tree(workdir)  # a leftover of an interrupted evaluation
        with self._guarded():
            self.store.export(self.commit_of(vid), workdir)
            (workdir / ".ge").mkdir(exist_ok=True)
            self.index.set_variant_status(vid, "evaluating")
        return workdir

    def record_evaluation(self, vid: str, result: EvalResult) -> EvaluationRecord:
        """The result and the variant's status land together, or neither; the note follows at
        the end of the generation (:meth:`flush_notes`). An evaluation is when unsandboxed code
        can damage the record, so the record is checked first."""
        self.check()
        attempt = 1 + max((e.attempt for e in self.index.evaluations(vid)), default=0)
        record = EvaluationRecord(
            variant_id=vid,
            attempt=attempt,
            status=result.status,
            metrics=dict(result.metrics),
            started_at=result.started_at,
            duration_s=result.duration_s,
            failure_reason=result.failure_reason,
            output_tail=result.output_tail,
            stage=result.stage,
            feedback=result.feedback or None,
        )
        with self._guarded(), self.index.transaction():
            self.index.add_evaluation(record)
            self.index.set_variant_status(vid, "evaluated" if result.status == "ok" else "failed")
        self._notes[self.commit_of(vid)] = record.to_note()
        return record

    def best_metrics(self, ids: Sequence[str]) -> Scored | None:
        """The first selectable member of ``ids`` (its id and objectives) for the progress's
        front, or None."""
        valid = self.scored(ids)
        return valid[0] if valid else None

    # ----------------------------------------------------------------- between generations

    def flush_notes(self) -> None:
        """Attach the metrics notes of this generation's evaluations in one notes commit.

        The index is the primary record; after a kill before this, `ge doctor` (run at every
        start) writes the missing notes from it.
        """
        if self.damaged is not None:
            return  # the run is stopping on it: nothing more is written (doctor rewrites notes)
        self.check()
        notes, self._notes = self._notes, {}
        with self._guarded():
            self.store.set_notes(notes)

    def compact(self, force: bool) -> None:
        """Pack the repository's loose objects (about 35 KB per variant) between generations.

        Safe here: no plan is in flight, and the run lock keeps other writers out.
        """
        children = self.index.counts()["children"]
        if force or children - self._compacted_at >= COMPACT_EVERY:
            self.check()
            with self._guarded():
                # `git prune` would delete the commits of variants whose branch was deleted.
                found = damage.branch_damage(self.store, self.index.variants())
                if found:
                    self.damaged = damage.error(self.index.path.parent, found)
                    raise self.damaged
                self.store.compact()
            self._compacted_at = children
