"""The built-in no-LLM baseline (``--model offline``): classic genetic-programming edits, its two
operators (``offline-mutation``, ``offline-crossover``: the counterparts of mutation and crossover).

Mutation applies one to three edits (``offline_edits``: literal nudges, torch call swaps,
statement duplication/deletion) to one segment's code; crossover exchanges whole segments between
two parents. Everything is deterministic given the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from guided_evolution.config import GeConfig
from guided_evolution.evolution.operators.offline_edits import EDITS, Source
from guided_evolution.evolution.operators.spec import PAIR, SINGLE, Child, OperatorSpec
from guided_evolution.evolution.segments import Genome, Segment, differing_segments, parse_genome
from guided_evolution.evolution.splice import SpliceError, splice

EDIT_CLASSES = ("nudge", "swap", "statement")  # its edit classes: the operator bandit's arms
_WEIGHTS = {"nudge": 0.45, "swap": 0.3, "statement": 0.25}

@dataclass(frozen=True)
class OfflineEdit:
    """A mutated segment body and what was done to it."""

    code: str  # the new segment body
    description: str  # e.g. "nudged 3 numeric literals; swapped ReLU -> GELU"


# ---------------------------------------------------------------------------------------------
# public API


def offline_mutate(
    segment: Segment,
    rng: random.Random,
    strength: float = 1.0,
    operators: Sequence[str] = EDIT_CLASSES,
) -> OfflineEdit:
    """A random GP edit of the segment's code that parses and differs from it.

    `operators` restricts the operator classes ("nudge", "swap", "statement"); `strength`
    scales how many literals change and how far. SpliceError when no edit applies.
    """
    unknown = set(operators) - set(EDIT_CLASSES)
    if unknown:
        raise ValueError(f"unknown offline operators: {sorted(unknown)}")
    original = Source.parse(segment.code)
    if original is None or not segment.code.strip():
        raise SpliceError("no applicable offline edit")
    base = _base_indent(segment.code)
    n_edits = 1 + sum(rng.random() < 0.3 * strength for _ in range(2))
    src = original
    done: list[str] = []
    pending = [op for op in EDIT_CLASSES if op in operators]  # each class at most once per edit
    tries = dict.fromkeys(pending, 2)  # a failed class is retried once (its draws are random)
    while pending and len(done) < n_edits:
        op = _weighted_pick(pending, rng)
        result = EDITS[op](src, rng, strength)
        candidate = None
        if result is not None and result[0] != src.text:
            try:
                candidate = Source(result[0], src.wrap)
            except (SyntaxError, ValueError):
                candidate = None
        if candidate is None or result is None:
            tries[op] -= 1
            if tries[op] <= 0:
                pending.remove(op)
            continue
        src = candidate
        done.append(result[1])
        pending.remove(op)
    code = textwrap.indent(src.unwrap(src.text), base)
    if not done or code == segment.code or src.text == original.text:
        raise SpliceError("no applicable offline edit")
    if not code.endswith("\n"):
        code += "\n"
    return OfflineEdit(code, "; ".join(done))


def _base_indent(code: str) -> str:
    """The common indentation that textwrap.dedent removes."""
    for line, dedented in zip(code.split("\n"), textwrap.dedent(code).split("\n"), strict=True):
        if line.strip():
            return line[: len(line) - len(dedented)]
    return ""


def _weighted_pick(names: list[str], rng: random.Random) -> str:
    total = sum(_WEIGHTS[n] for n in names)
    x = rng.random() * total
    for name in names:
        x -= _WEIGHTS[name]
        if x < 0:
            return name
    return names[-1]


def offline_crossover(a: Genome, b: Genome, rng: random.Random) -> tuple[dict[str, str], str]:
    """Uniform crossover: each differing segment from `a` or `b` with p=0.5, spliced into `a`.

    With two or more differing segments the child always takes at least one from each parent.
    A segment of `b` that `splice` rejects in the mixed file stays as in `a`.
    """
    keys_b = {s.key for s in b.segments}
    keys = [k for k in differing_segments(a, b) if k in keys_b and k in a.keys]
    if not keys:
        return dict(a.files), "crossover: the parents' segments are identical; copied the first"
    take = [rng.random() < 0.5 for _ in keys]
    if len(keys) >= 2 and (all(take) or not any(take)):
        flip = rng.randrange(len(keys))
        take[flip] = not take[flip]
    wanted = [k for k, t in zip(keys, take, strict=True) if t]
    genome = a
    taken: list[str] = []
    for _ in range(2):  # a second pass for segments that depend on another one from b
        for key in wanted:
            if key in taken:
                continue
            try:
                files = splice(genome, key, b.segment(key).code)
            except SpliceError:
                continue
            genome = parse_genome(files, a.evolvable, a.marker, a.kept)
            taken.append(key)
    kept = [k for k in keys if k not in taken]
    parts = [f"{', '.join(taken) or 'nothing'} from the second parent"]
    if kept:
        parts.append(f"{', '.join(kept)} from the first")
    rejected = [k for k in wanted if k not in taken]
    if rejected:
        parts.append(f"rejected {', '.join(rejected)}")
    return dict(genome.files), "uniform crossover: " + "; ".join(parts)


def mutation_child(
    genome: Genome, parents: tuple[str, ...], rng: random.Random, arm: str | None = None
) -> Child:
    """An offline mutation of a random segment that offers an edit (``arm``: the bandit's edit
    class, else any). SpliceError when no segment offers one."""
    edits = (arm,) if arm else EDIT_CLASSES
    segments = list(genome.segments)
    rng.shuffle(segments)
    last: SpliceError | None = None
    for segment in segments:  # some segments offer no edit (e.g. no literal, no known call)
        try:
            edit = offline_mutate(segment, rng, operators=edits)
            files = splice(genome, segment.key, edit.code)
        except SpliceError as err:
            last = err
            continue
        return Child(files, MUTATION.name, segment.key, "offline", arm, parents, 0.0, None,
                     edit.description)  # fmt: skip
    raise last or SpliceError("no applicable offline edit")


def crossover_child(
    genome: Genome, other: Genome, parents: tuple[str, ...], rng: random.Random
) -> Child:
    """An offline uniform crossover of ``genome`` with ``other``."""
    files, description = offline_crossover(genome, other, rng)
    return Child(files, CROSSOVER.name, "*", "offline", None, parents, 0.0, None, description)


def arms(_cfg: GeConfig) -> tuple[str, ...]:
    """The edit classes."""
    return EDIT_CLASSES


MUTATION = OperatorSpec(name="offline-mutation", role=SINGLE, calls=(), offline=True, arms=arms)
CROSSOVER = OperatorSpec(name="offline-crossover", role=PAIR, calls=(), offline=True)
