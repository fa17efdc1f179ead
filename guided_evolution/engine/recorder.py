"""The engine's one writer of a run's record: git first, then the index, on the engine's thread.

It commits children (:func:`runstore.recording.record_variant`), records rejections and
near-duplicates, exports a variant for evaluation and records its result (the result and the
variant's status in one transaction, the git note per generation), and compacts the repository.
It reads nothing back for the loop (``engine.reader.RunReader`` does; the recorder asks it for
the parents' commits). Before each commit and each recorded evaluation (when unsandboxed code may
have run) its guard checks that nothing else damaged the record; once damage is found, nothing
more is written and every failure names the damage.
"""

from __future__ import annotations

import hashlib
import json
import re
import tokenize
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from guided_evolution.config import OFFLINE_MODEL, GeConfig
from guided_evolution.engine.progress import Progress
from guided_evolution.engine.reader import RunReader
from guided_evolution.errors import RunDamagedError
from guided_evolution.evaluation.contract import EvalResult
from guided_evolution.evolution import pytokens
from guided_evolution.evolution.operators import Child
from guided_evolution.evolution.plan import Plan, dedup
from guided_evolution.evolution.segments import variant_id
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

if TYPE_CHECKING:
    from guided_evolution.engine.reload import EvaluatorFiles

COMPACT_EVERY = 2000  # children between repository compactions
_CODING = re.compile(r"^#.*?coding[:=]")  # PEP 263's declaration (lines 1 and 2)


def _kept_comment(tok: tokenize.TokenInfo) -> bool:
    """A comment that changes how the file runs: a shebang (line 1), a coding declaration."""
    line = tok.start[0]
    return (line == 1 and tok.string.startswith("#!")) or (line <= 2 and bool(_CODING.match(tok.string)))


def _python_tokens(text: str) -> str | None:
    """A Python file as what the interpreter runs: its tokens without comments, blank lines,
    spacing and indentation width (INDENT/DEDENT kept, so the structure stays), every string
    literal untouched. A shebang and a coding declaration stay (they change how the file is run
    or read). None where the file does not tokenize."""
    try:
        if "#" in "\n".join(text.split("\n", 2)[:2]):  # a shebang or coding line may be there
            found = list(pytokens.pure_code_tokens(text, keep_comment=_kept_comment))
        else:
            found = pytokens.code_tokens(text)
    except (tokenize.TokenError, SyntaxError):
        return None
    return json.dumps(found, ensure_ascii=False)


def code_key(files: Mapping[str, str], evolvable: Sequence[str]) -> str:
    """The identity of a child's program: like ``segments.variant_id`` but blind to comments,
    blank lines and spacing in Python files (``_python_tokens``); other files (and a Python file
    that does not tokenize) as written. Two children with one key run the same code, so the
    second is a duplicate of the first and costs no evaluation."""
    digest = hashlib.sha256()
    for path in sorted(set(evolvable)):
        text = files.get(path, "")
        tokens = _python_tokens(text) if path.endswith(".py") else None
        form = "tokens\0" + tokens if tokens is not None else "text\0" + text
        digest.update(path.encode("utf-8") + b"\0" + form.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:16]


class Recorder:
    """Writes one run's store and index for the engine (single-threaded)."""

    def __init__(
        self, store: GitStore, index: RunIndex, cfg: GeConfig, progress: Progress, reader: RunReader
    ) -> None:
        self.store = store
        self.index = index
        self.cfg = cfg
        self.progress = progress
        self.reader = reader
        self.guard = reader.guard
        self._notes: dict[str, str] = {}
        self._compacted_at = 0
        self._children: int | None = None  # the run's children: counted once, then kept
        self._keys_complete = False  # every committed variant's code_key is in the index
        self.evaluator_files: EvaluatorFiles | None = None  # `--reload-evaluator` (engine.reload)

    @property
    def damaged(self) -> RunDamagedError | None:
        """The damage found (then nothing more is written), or None."""
        return self.guard.damaged

    def check(self) -> None:
        """Raise the damage that something else did to the run's record (before a write)."""
        self.guard.check()

    # ----------------------------------------------------------------- events

    def near_duplicate(self, plan: Plan, details: dict[str, object]) -> None:
        """A proposal found to nearly repeat an evaluated variant (re-proposed or rejected)."""
        self.index.add_event(
            "near_duplicate", {"generation": plan.generation, "plan": plan.index, **details}
        )

    def warning(self, message: str) -> None:
        """A one-line warning for the run's event log."""
        self.index.add_event("warning", {"message": message})

    # ----------------------------------------------------------------- writing children

    def commit(
        self, plan: Plan, child: Child, calls: list[int], *, fix_of: str | None = None
    ) -> tuple[str, bool]:
        """Store the child as a commit on its own branch, then its index row.

        Returns (variant id, whether it is new); a child that exists already, or differs from
        a variant only in comments, blank lines or spacing (``code_key``), is that variant,
        recorded as a duplicate event. ``fix_of`` is the failed variant a fix child repairs (its
        only parent).
        """
        self.check()
        with self.guard.guarded():
            vid, fresh = self._commit(plan, child, calls, fix_of)
        if fresh and self._children is not None:
            self._children += 1
        return vid, fresh

    def _commit(
        self, plan: Plan, child: Child, calls: list[int], fix_of: str | None
    ) -> tuple[str, bool]:
        vid = variant_id(child.files, self.cfg.seed.files)
        key = code_key(child.files, self.cfg.seed.files)
        twin = vid if self.index.get_variant(vid) is not None else self._twin(key)
        if twin is not None:
            where = {"generation": plan.generation, "plan": plan.index}
            same = {} if twin == vid else {"child": vid, "same": "up to comments and spacing"}
            self.index.add_event("duplicate", {"variant": twin, **where, **same})
            return twin, False
        parents = dedup([fix_of] if fix_of else list(child.parents))
        parent_commits = [self.reader.commit_of(p) for p in parents]
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
            island=plan.island if self.cfg.evolution.islands.count > 1 else None,
            mating_preference=plan.mating_preference,
        )
        # A crossover that was then mutated names both steps; the segment is the last step's.
        steps = [s.op for s in plan.steps] if len(plan.steps) > 1 and fix_of is None else []
        with self.index.transaction():  # the row, its code key and its calls: one commit
            stored = record_variant(
                self.store,
                self.index,
                record,
                tree,
                parent_commits,
                description=child.description,
                steps=steps,
            )
            self.index.add_code_keys([(vid, key)])
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
        self.reader.committed(vid, stored.commit_sha or "")
        self.progress.count("proposed", +1)
        return vid, True

    def _twin(self, key: str) -> str | None:
        """The first variant whose program has ``code_key`` ``key`` (the index keeps each
        variant's key; those of variants without one, from an earlier ge or a rebuilt index, are
        read from git once per process)."""
        if not self._keys_complete:
            names, found = self.cfg.seed.files, []
            for vid, sha in self.index.without_code_key():
                data = self.store.read_files(sha)
                text = {n: data[n].decode("utf-8", "replace") for n in names if n in data}
                found.append((vid, code_key(text, names)))
            self.index.add_code_keys(found)
            self._keys_complete = True
        return self.index.code_key_owner(key)

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
        with self.guard.guarded():
            self.store.export(self.reader.commit_of(vid), workdir)
            if self.evaluator_files is not None:
                self.evaluator_files.apply(workdir, self.cfg.seed.files)
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
        with self.guard.guarded(), self.index.transaction():
            self.index.add_evaluation(record)
            self.index.set_variant_status(vid, "evaluated" if result.status == "ok" else "failed")
        self._notes[self.reader.commit_of(vid)] = record.to_note()
        return record

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
        with self.guard.guarded():
            self.store.set_notes(notes)

    def compact(self, force: bool) -> None:
        """Pack the repository's loose objects (about 35 KB per variant) between generations:
        every ``COMPACT_EVERY`` children the new ones only (``GitStore.pack_loose``: a cost
        flat over a long run); with ``force`` (the run's end) the whole repository, dropping
        what nothing reaches (old notes trees).

        Safe here: no plan is in flight, and the run lock keeps other writers out.
        """
        if self._children is None:  # once a process: a count scans every variant
            self._children = int(self.index.counts()["children"])
        children = self._children
        if not force and children - self._compacted_at >= COMPACT_EVERY:
            self.check()
            with self.guard.guarded():
                self.store.pack_loose()
            self._compacted_at = children
        elif force:
            self.check()
            with self.guard.guarded():
                # `git prune` would delete the commits of variants whose branch was deleted.
                found = damage.branch_damage(self.store, self.index.variant_refs())
                if found:
                    self.guard.damaged = damage.error(self.index.path.parent, found)
                    raise self.guard.damaged
                self.store.compact()
            self._compacted_at = children
