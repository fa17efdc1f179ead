"""The one home of a run's stored formats: a variant's commit message with its ``Ge-*`` trailers,
its evaluation's git note, and the index's other records (reflections, events, checkpoints). Pure.

A variant is written twice, to git (the durable record) and to the SQLite index (for queries); the
index can be rebuilt from git, so every field the index needs about a variant is in its commit
message (:meth:`VariantRecord.to_commit_message` / :meth:`VariantRecord.from_commit`) and every
field of its latest evaluation is in its note (:meth:`EvaluationRecord.to_note` /
:meth:`EvaluationRecord.from_note`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guided_evolution.evolution.heldout import HeldOut

SEED_BRANCH = "seed"
VARIANT_BRANCH_PREFIX = "v/"
META_SEED = "seed_variant"  # index meta key: the seed's variant id
META_FINISHED = "finished"  # index meta key: why the run finished (absent while it is not)
TRAILER_PREFIX = "Ge-"

EVALUATION_STATUSES = ("ok", "failed")
STAGES = ("check", "evaluate")

_TRAILER_LINE = re.compile(r"Ge-([A-Za-z0-9][A-Za-z0-9-]*):[ \t]?(.*)\Z")
_INT_TRAILERS = frozenset({"generation", "island"})
_FLOAT_TRAILERS = frozenset({"temperature", "mating_preference"})
_LIST_TRAILERS = frozenset({"parents"})
_JSON_TRAILERS = frozenset({"reflection"})


def note_blob_id(text: str) -> str:
    """The git blob id of the note ``text`` as ``GitStore.set_notes`` stores it (with a final
    newline): the SHA-1 of git's ``blob <size>\\0`` header and the bytes."""
    data = (text if text.endswith("\n") else text + "\n").encode()
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def variant_branch(generation: int, variant_id: str) -> str:
    """The branch of a child: ``v/<generation>/<id>``."""
    return f"{VARIANT_BRANCH_PREFIX}{generation}/{variant_id}"


def is_variant_branch(name: str) -> bool:
    """Whether a branch holds a variant (the seed or a child)."""
    return name == SEED_BRANCH or name.startswith(VARIANT_BRANCH_PREFIX)


# --------------------------------------------------------------------------- Ge-* trailers


def _trailer_name(key: str) -> str:
    """``prompt_name``/``Ge-Prompt-Name`` -> ``prompt_name`` (the form parse_trailers returns)."""
    key = key.strip()
    if key.lower().startswith(TRAILER_PREFIX.lower()):
        key = key[len(TRAILER_PREFIX) :]
    return key.replace("-", "_").lower()


def format_trailers(fields: Mapping[str, Any]) -> str:
    """``Ge-*`` trailer lines, one per field; None values are left out.

    Keys are snake_case names (``variant``, ``generation``, ``parents``, ...) and become
    ``Ge-Variant``, ``Ge-Generation``, ... ``parents`` is a list of variant ids (space separated),
    ``reflection`` is JSON-escaped onto one line; any other value must be one line of text.
    """
    lines = []
    for key, value in fields.items():
        if value is None:
            continue
        name = _trailer_name(key)
        label = TRAILER_PREFIX + "-".join(part.capitalize() for part in name.split("_"))
        if name in _LIST_TRAILERS:
            text = " ".join(str(item) for item in value)
        elif name in _JSON_TRAILERS:
            text = json.dumps(str(value), ensure_ascii=False)
        else:
            text = repr(value) if isinstance(value, float) else str(value)
        if "\n" in text or "\r" in text:
            raise ValueError(f"trailer {label} must be a single line: {text!r}")
        lines.append(f"{label}: {text}")
    return "\n".join(lines)


def parse_trailers(message: str) -> dict[str, Any]:
    """The ``Ge-*`` trailers of a commit message, keyed as format_trailers takes them.

    ``generation`` -> int, ``temperature`` -> float, ``parents`` -> list[str],
    ``reflection`` -> str (JSON-decoded); other keys stay strings. Malformed numbers stay strings.
    """
    result: dict[str, Any] = {}
    for line in message.split("\n"):
        match = _TRAILER_LINE.match(line.rstrip("\r"))
        if not match:
            continue
        name = _trailer_name(match.group(1))
        text = match.group(2).strip()
        value: Any = text
        try:
            if name in _INT_TRAILERS:
                value = int(text)
            elif name in _FLOAT_TRAILERS:
                value = float(text)
            elif name in _LIST_TRAILERS:
                value = text.split()
            elif name in _JSON_TRAILERS:
                value = json.loads(text)
        except ValueError:
            value = text
        result[name] = value
    return result


def format_message(subject: str, fields: Mapping[str, Any], body: str = "") -> str:
    """A commit message: one subject line, the body (if any), the ``Ge-*`` trailers."""
    subject = " ".join(subject.split()) or "variant"
    parts = [subject, body.strip(), format_trailers(fields)]
    return "\n\n".join(p for p in parts if p) + "\n"


# --------------------------------------------------------------------------- records


@dataclass
class VariantRecord:
    """One variant (a committed child, the seed, or an invalid child that never landed)."""

    id: str
    generation: int
    operator: str
    commit_sha: str | None = None
    branch: str | None = None
    parents: list[str] = field(default_factory=list)
    segment: str | None = None
    prompt_name: str | None = None
    persona: str | None = None
    model: str | None = None
    temperature: float | None = None
    status: str = "pending"
    created_at: float = field(default_factory=time.time)
    eot_reflection: str | None = None
    llm_call_id: int | None = None
    island: int | None = None
    """The island the variant was born on (``[evolution.islands] count`` > 1), else None."""
    mating_preference: float | None = None
    """Its mating-preference gene (``[evolution.mate_choice] kind = "self_adaptive"``), else None."""

    @property
    def is_seed(self) -> bool:
        return self.operator == "seed"

    def subject(self, steps: Sequence[str] = ()) -> str:
        """The commit subject, e.g. ``mutation of model.py#2 (expert, gpt-4o, T=0.21)``.

        ``steps`` names each operator applied when there were several (``crossover then eot``).
        """
        if self.is_seed:
            return "seed"
        what = " then ".join(steps) if steps else self.operator
        who = self.persona or self.prompt_name
        return (
            f"{what} of {self.segment} ({who}, {self.model or ''}, T={self.temperature or 0.0:.2f})"
        )

    def trailers(self) -> dict[str, Any]:
        """The ``Ge-*`` fields the index is rebuilt from (see :meth:`from_commit`)."""
        if self.is_seed:
            return {"variant": self.id, "generation": "0", "operator": "seed", "parents": []}
        temperature = None if self.temperature is None else f"{self.temperature:.4f}"
        return {  # None is left out, so that from_commit gives None back (not "")
            "variant": self.id,
            "generation": str(self.generation),
            "operator": self.operator,
            "prompt": self.prompt_name,
            "persona": self.persona,
            "model": self.model,
            "temperature": temperature,
            "segment": self.segment,
            "parents": self.parents,
            "reflection": self.eot_reflection or None,  # JSON-escaped onto one line
            "island": None if self.island is None else str(self.island),
            "mating_preference": (
                None if self.mating_preference is None else f"{self.mating_preference:.6f}"
            ),
        }

    def to_commit_message(self, description: str = "", steps: Sequence[str] = ()) -> str:
        """The commit message: subject, the operator's description, the ``Ge-*`` trailers."""
        return format_message(self.subject(steps), self.trailers(), description)

    @classmethod
    def from_commit(
        cls, branch: str, sha: str, message: str, timestamp: float
    ) -> VariantRecord | None:
        """The record a variant's commit describes (status pending), or None without a
        ``Ge-Variant`` trailer. Tolerant: a malformed field falls back to what the branch says."""
        meta = parse_trailers(message)
        variant_id = meta.get("variant")
        if not isinstance(variant_id, str) or not variant_id:
            return None
        generation = meta.get("generation")
        if not isinstance(generation, int):
            parts = branch.split("/")
            generation = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
        temperature = meta.get("temperature")
        parents = meta.get("parents")
        reflection = meta.get("reflection")
        island, gene = meta.get("island"), meta.get("mating_preference")
        return cls(
            id=variant_id,
            generation=generation,
            operator=str(meta.get("operator") or ("seed" if branch == SEED_BRANCH else "mutation")),
            commit_sha=sha,
            branch=branch,
            parents=list(parents) if isinstance(parents, list) else [],
            # Earlier versions wrote an empty trailer for a missing value.
            segment=meta.get("segment") or None,
            prompt_name=meta.get("prompt") or None,
            persona=meta.get("persona") or None,
            model=meta.get("model") or None,
            temperature=temperature if isinstance(temperature, float) else None,
            status="pending",
            created_at=float(timestamp),
            eot_reflection=reflection if isinstance(reflection, str) else None,
            island=island if isinstance(island, int) else None,
            mating_preference=gene if isinstance(gene, float) else None,
        )


@dataclass
class EvaluationRecord:
    """One stage of one evaluation attempt of a variant."""

    variant_id: str
    status: str
    stage: str = "evaluate"
    attempt: int = 1
    metrics: dict[str, Any] | None = None
    started_at: float | None = None
    duration_s: float | None = None
    failure_reason: str | None = None
    output_tail: str | None = None
    id: int | None = None
    feedback: str | None = None
    """The evaluator's feedback text (``GE_FEEDBACK``), or a failure's reason and last line."""

    def to_note(self) -> str:
        """The JSON note stored on the variant's commit (everything but the output tail)."""
        fields: dict[str, Any] = {
            "status": self.status,
            "metrics": self.metrics,
            "failure_reason": self.failure_reason,
            "duration_s": self.duration_s,
            "stage": self.stage,
            "attempt": self.attempt,
            "started_at": self.started_at,
        }
        if self.feedback:  # left out when empty: notes of runs without feedback stay the same
            fields["feedback"] = self.feedback
        return json.dumps(fields, sort_keys=True)

    def prompt_feedback(
        self, withheld: Sequence[str], others: Sequence[Mapping[str, Any] | None] = ()
    ) -> str:
        """The feedback as a prompt may show it: ``evolution.heldout``'s rule for the
        ``withheld`` (reported-only) metrics, with the values recorded in this evaluation and in
        ``others`` (the parents' metrics: a variant that failed has none of its own)."""
        return HeldOut.of(withheld, [self.metrics, *others]).scrub(self.feedback or "")

    @classmethod
    def from_note(cls, variant_id: str, text: str) -> EvaluationRecord:
        """Parse a note written by :meth:`to_note`; ValueError when it is not one."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("status") not in EVALUATION_STATUSES:
            raise ValueError(f"not an evaluation note: {text[:80]!r}")
        metrics = data.get("metrics")
        return cls(
            variant_id=variant_id,
            status=data["status"],
            stage=data.get("stage") if data.get("stage") in STAGES else "evaluate",
            attempt=int(data.get("attempt") or 1),
            metrics=metrics if isinstance(metrics, dict) else None,
            started_at=data.get("started_at"),
            duration_s=data.get("duration_s"),
            failure_reason=data.get("failure_reason"),
            feedback=data["feedback"] if isinstance(data.get("feedback"), str) else None,
        )


@dataclass
class ReflectionRecord:
    """An EoT reflection written for a variant against an elite."""

    variant_id: str
    text: str
    elite_id: str | None = None
    segment: str | None = None
    created_at: float = field(default_factory=time.time)
    id: int | None = None


@dataclass
class EventRecord:
    """A run event (start, stop, budget reached, ...)."""

    id: int
    time: float
    kind: str
    data: dict[str, Any]


@dataclass
class GenerationRecord:
    """The engine's checkpoint at the end of a generation."""

    generation: int
    population: list[str]
    elites: list[str] = field(default_factory=list)
    hall_of_fame: list[str] = field(default_factory=list)
    finished_at: float = field(default_factory=time.time)
    islands: list[list[str]] = field(default_factory=list)
    """Each island's population after migration (``[evolution.islands] count`` > 1), else empty."""
