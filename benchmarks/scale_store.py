"""The 100,000-variant run of ``benchmarks/scale.py``, built through ge's real store and index
writers without evaluating anything (``python benchmarks/scale_store.py RUN_DIR GENERATIONS``).

Evaluating 100,000 children through the engine takes hours on a small machine, so this extends a
real run (``ge run`` of the template seed: its first generations evaluated by the real evaluator
under the sandbox) generation after generation with ge's own parts, as the generational engine
would: ``evolution.plan.plan_generation`` plans each generation from the last checkpoint, the
offline operators make the children (``evolution.operators.offline``), ``runstore.recording.
record_variant`` commits each one (git, then the index), its evaluation is an index row and a git
note, ``evolution.generations.close_generation`` closes the generation, its checkpoint and events
are written as the engine writes them, the repository is compacted every 2,000 children, and the
measures of each generation are stored (``runstore.measures.Measurer``).

What differs from an engine run, plainly: **no evaluator runs** for these children: their metrics
are a stand-in computed from the code in this process (``stand_in_metrics``: the syntax tree's
size, a deterministic pseudo score; a child that does not parse is a failed evaluation), no
sandbox, no worker, no per-child directory; a generation's writes share one index transaction.
So the store and the index have the shape and the size of a real run's (what the inspection
commands, ``ge doctor`` and ``ge resume`` read), but the build's time per child says nothing
about ge's cost per child (``benchmarks/scale.py``'s 1,000 and 10,000 runs do).
"""

from __future__ import annotations

import argparse
import ast
import random
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guided_evolution.config import OFFLINE_MODEL  # noqa: E402
from guided_evolution.engine.reader import RunReader  # noqa: E402
from guided_evolution.engine.recorder import code_key  # noqa: E402
from guided_evolution.evolution.generations import close_generation  # noqa: E402
from guided_evolution.evolution.operators import offline, registry  # noqa: E402
from guided_evolution.evolution.operators.spec import PAIR, Child  # noqa: E402
from guided_evolution.evolution.plan import Plan, dedup, plan_generation  # noqa: E402
from guided_evolution.evolution.segments import parse_genome, variant_id  # noqa: E402
from guided_evolution.evolution.splice import SpliceError  # noqa: E402
from guided_evolution.runstore import rundir as rd  # noqa: E402
from guided_evolution.runstore.git_store import GitStore  # noqa: E402
from guided_evolution.runstore.measures import Measurer  # noqa: E402
from guided_evolution.runstore.recording import record_variant  # noqa: E402
from guided_evolution.runstore.records import (  # noqa: E402
    META_FINISHED,
    META_SEED,
    EvaluationRecord,
    GenerationRecord,
    VariantRecord,
    variant_branch,
)
from guided_evolution.runstore.run_index import RunIndex  # noqa: E402

COMPACT_EVERY = 2000


def stand_in_metrics(text: str) -> dict[str, float] | str:
    """The template's two objectives from the code alone (``size``: syntax nodes; ``score``: a
    deterministic pseudo value), or a failure reason where the code does not parse."""
    try:
        size = sum(1 for _ in ast.walk(ast.parse(text)))
    except SyntaxError as err:
        return f"exit code 1: SyntaxError: {err.msg}"
    return {"score": -(zlib.crc32(text.encode()) % 10_000) / 1000.0, "size": float(size)}


class Extender:
    """Extends one run (under its lock) through ge's writers; see the module."""

    def __init__(self, run: Path) -> None:
        self.paths, self.resolved = rd.open_run(run)
        self.cfg = self.resolved.config
        self.store = GitStore.open(self.paths.repo)
        self.index = RunIndex.open(self.paths.index)
        self.reader = RunReader(self.store, self.index, self.cfg)
        self.measurer = Measurer(self.store, self.index, self.cfg)
        self.seed_id = self.index.get_meta(META_SEED) or ""
        self.main_file = self.cfg.seed.files[0]
        self.since_compact = 0

    def code_keys(self) -> int:
        """Store the code_key of every committed variant without one (as the engine's recorder
        stores each child's); how many."""
        names, found = self.cfg.seed.files, []
        for vid, sha in self.index.without_code_key():
            data = self.store.read_files(sha)
            found.append((vid, code_key({n: data[n].decode() for n in names if n in data}, names)))
        self.index.add_code_keys(found)
        return len(found)

    def close(self) -> None:
        self.store.close()
        self.index.close()

    def extend(self, generations: int, report_every: int = 50) -> None:
        """Generations after the last checkpoint up to ``generations`` in total."""
        last = self.index.last_generation()
        assert last is not None, "the run has no checkpoint"
        self.resolved = rd.extend_generations(self.paths, self.resolved, generations)
        self.cfg = self.resolved.config
        self.index.set_meta(META_FINISHED, "")
        population, hof = last.population, last.hall_of_fame
        t0 = time.perf_counter()
        for gen in range(last.generation + 1, generations + 1):
            population, hof = self.generation(gen, population, hof)
            if gen % report_every == 0:
                children = self.index.counts()["children"]
                print(f"  generation {gen}: {children} children, {time.perf_counter() - t0:.0f} s",
                      flush=True)  # fmt: skip
        self.store.compact()
        self.code_keys()
        self.index.set_meta(META_FINISHED, "generations")
        self.index.add_event("run_finished", {"reason": "generations", "built_by": "scale_store"})

    def generation(self, gen: int, population: list[str], hof: list[str]) -> tuple[list[str], list[str]]:
        evo, objectives = self.cfg.evolution, self.reader.objectives
        seed = self.reader.scored([self.seed_id])
        planned = plan_generation(
            gen, self.reader.scored(population), seed[0] if seed else None, self.seed_id, evo,
            objectives, eot=False,
        )  # fmt: skip
        self.index.add_event("generation_started", {"generation": gen, "plans": len(planned.plans)})
        children: list[tuple[int, str]] = []
        notes: dict[str, str] = {}
        with self.index.transaction():
            for plan in planned.plans:
                vid = self.child(plan, notes)
                if vid is not None:
                    children.append((0, vid))
        self.store.set_notes(notes)
        closed = close_generation(
            gen, self.seed_id, [planned.elites], [], children, hof, self.reader.scored, evo, objectives
        )
        record = GenerationRecord(gen, closed.population, closed.elites, closed.hall_of_fame)
        with self.index.transaction():
            self.index.save_generation(record)
        self.index.add_event("generation_finished", {"generation": gen, "children": len(children)})
        self.since_compact += len(children)
        if self.since_compact >= COMPACT_EVERY:
            self.store.compact()
            self.since_compact = 0
        self.measurer.record(gen, record.population)
        return closed.population, closed.hall_of_fame

    def _propose(self, plan: Plan, rng: random.Random) -> Child:
        genome = self.reader.genome(plan.parents[0])
        child: Child | None = None
        for step in plan.steps:
            if child is not None:
                genome = parse_genome(child.files, genome.evolvable, genome.marker, genome.kept)
            made = registry.counterpart(step.op)
            if made.role == PAIR and step.other is not None:
                child = offline.crossover_child(genome, self.reader.genome(step.other), plan.parents, rng)
            else:
                child = offline.mutation_child(genome, plan.parents, rng)
        assert child is not None
        return child

    def child(self, plan: Plan, notes: dict[str, str]) -> str | None:
        """Make, commit and 'evaluate' one planned child; None where it made none (no edit
        applied) or repeated a variant (a duplicate event, as the engine records)."""
        rng = random.Random(f"scale:{plan.generation}:{plan.index}")
        try:
            child = self._propose(plan, rng)
        except SpliceError as err:
            self.index.add_event("proposal_rejected", {
                "generation": plan.generation, "plan": plan.index, "operator": plan.steps[-1].op,
                "parents": list(plan.parents), "reason": str(err), "calls": [],
            })  # fmt: skip
            return None
        vid = variant_id(child.files, self.cfg.seed.files)
        if self.index.has_variant(vid):
            self.index.add_event("duplicate", {"variant": vid, "generation": plan.generation, "plan": plan.index})
            return vid
        parents = dedup(list(child.parents))
        commits = [self.reader.commit_of(p) for p in parents]
        tree = dict(self.store.read_files(commits[0]))
        for name, text in child.files.items():
            tree[name] = text.encode("utf-8")
        record = VariantRecord(
            id=vid, generation=plan.generation, operator=child.operator,
            branch=variant_branch(plan.generation, vid), parents=parents, segment=child.segment,
            prompt_name=child.prompt_name, persona=child.persona, model=OFFLINE_MODEL,
            temperature=child.temperature, status="evaluated",
        )  # fmt: skip
        steps = [s.op for s in plan.steps] if len(plan.steps) > 1 else []
        stored = record_variant(self.store, self.index, record, tree, commits,
                                description=child.description, steps=steps)  # fmt: skip
        self.reader.committed(vid, stored.commit_sha or "")
        self.index.add_code_keys([(vid, code_key(child.files, self.cfg.seed.files))])
        self._evaluate(vid, child.files.get(self.main_file, ""), stored.commit_sha or "", notes)
        return vid

    def _evaluate(self, vid: str, text: str, commit: str, notes: dict[str, str]) -> None:
        found = stand_in_metrics(text)
        failed = isinstance(found, str)
        evaluation = EvaluationRecord(
            variant_id=vid, status="failed" if failed else "ok",
            metrics=None if failed else found, started_at=time.time(), duration_s=0.0,
            failure_reason=found if failed else None,
        )  # fmt: skip
        self.index.add_evaluation(evaluation)
        self.index.set_variant_status(vid, "failed" if failed else "evaluated")
        notes[commit] = evaluation.to_note()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished `ge run` (generational) to extend")
    parser.add_argument("generations", type=int, help="the total number of generations")
    parser.add_argument("--code-keys", action="store_true", help="only store missing code keys")
    args = parser.parse_args()
    with rd.RunLock(args.run.resolve()):
        ext = Extender(args.run)
        try:
            if args.code_keys:
                print(f"stored the code keys of {ext.code_keys()} variants")
            else:
                ext.extend(args.generations)
        finally:
            ext.close()


if __name__ == "__main__":
    main()
