"""What an operator is: its typed spec (``OperatorSpec``), the request it builds
(``OperatorRequest``), the child a reply makes (``Child``), and what a request builder is given
(``StepContext``). Types only; each operator's module fills a spec, ``registry`` holds them.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from guided_evolution.config import EvolutionConfig, GeConfig
from guided_evolution.evolution.diff_ops import EDIT_WHOLE
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome

Role = Literal["single", "pair", "alternative", "repair", "follow-up"]
"""Where an operator stands in a child's plan:

- ``single``: the base step on one parent (mutation; offline: offline-mutation);
- ``pair``: the first step, on two parents (crossover; offline: offline-crossover);
- ``alternative``: drawn in place of a ``single`` step, with its ``probability`` (EoT);
- ``repair``: a failed child's repair (fix), not planned;
- ``follow-up``: a request asked again in the same conversation (novelty re-proposal), never
  stored as a child's operator: the child keeps the operator of the request it continues.
"""
SINGLE: Role = "single"
PAIR: Role = "pair"
ALTERNATIVE: Role = "alternative"
REPAIR: Role = "repair"
FOLLOW_UP: Role = "follow-up"


@dataclass(frozen=True)
class OperatorRequest:
    """One LLM call to make: its messages, temperature and what the reply will be used for."""

    operator: str  # the spec's name ('mutation', 'crossover', 'eot', 'fix', ...)
    segment: str  # key of the target segment
    prompt_name: str
    persona: str | None
    messages: list[dict[str, str]]
    temperature: float
    parents: tuple[str, ...]  # variant ids of the parents
    stage: str = "final"  # a later turn of a chain: EoT's 'reason', then 'apply'
    detail: str = ""  # extra words for the child's description
    base: Genome | None = None  # genome the reply is spliced into, when not the caller's parent
    edit: str = EDIT_WHOLE  # 'whole': the reply is the new segment; 'diff': SEARCH/REPLACE blocks
    description: str = ""  # the child's description ("" : "<operator> of <segment>")


@dataclass(frozen=True)
class Child:
    """A proposed variant: its files and how it was made."""

    files: dict[str, str]
    operator: str
    segment: str
    prompt_name: str
    persona: str | None
    parents: tuple[str, ...]
    temperature: float
    reflection: str | None
    description: str
    model: str = ""  # the LLM that wrote it (set by the engine)
    call_id: int | None = None  # the index row of that call


class Rejected(Exception):
    """A reply that cannot become a child; `reason` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StepSource(Protocol):
    """What a request builder may read about other variants (the engine's recorder, adapted)."""

    def genome(self, vid: str) -> Genome: ...

    def objective_metrics(self, vid: str) -> Mapping[str, object] | None: ...

    def feedback(self, vid: str) -> str:
        """The evaluator's words about ``vid`` as a prompt may show them ("" : none)."""
        ...


@dataclass(frozen=True)
class StepContext:
    """Everything a request builder is given for one step of a child's plan."""

    lib: PromptLibrary
    genome: Genome  # the genome the step works on (the parent, or an earlier step's result)
    parent_id: str  # the plan's parent
    other: str | None  # the step's partner (crossover) or teacher (EoT)
    rng: random.Random  # the plan's RNG: builders draw from it in a fixed order
    temperature_range: Sequence[float]  # the spec's range for this generation
    source: StepSource
    seed_id: str
    of_parent: bool = True  # the step works on the parent itself (not an earlier step's child)
    personas: Sequence[str] = ()
    # The persona to use: the bandit's arm, or its draw (None: the builder draws one).
    persona: Callable[[], str | None] = lambda: None
    edit_mode: str = "never"
    diff_min_chars: int = 800
    directions: Mapping[str, str] = field(default_factory=dict)  # metric -> 'max' | 'min'


Builder = Callable[[StepContext], "OperatorRequest | None"]
"""A step's first request (None: not possible here, e.g. identical parents: a mutation instead)."""
FollowUp = Callable[[StepContext, OperatorRequest, str], OperatorRequest]
"""The next turn of a chain, from the previous request and its reply's text (EoT's apply)."""


def always(_evo: EvolutionConfig) -> int:
    """An alternative's first generation when it names none: generation 1 (0 is mutations)."""
    return 1


@dataclass(frozen=True)
class OperatorSpec:
    """One operator, as the plan, the proposer, the driver, the bandit, the index and the report
    read it. ``name`` is what is stored (the ``Ge-Operator`` trailer, ``variants.operator``, an
    LLM call's purpose): never change a shipped operator's name."""

    name: str
    role: Role
    label: str = ""  # what reports call it ("" : its name)
    prompts: tuple[str, ...] = ()  # its prompt files (without .txt); mutation: a pattern
    temperature: str | None = None  # its [evolution.temperature] / top_p key
    first_temperature: str | None = None  # the key in generation 0 (mutation: 'initial')
    calls: tuple[str, ...] = ("final",)  # the stages of its LLM calls, in order; () offline
    teacher: bool = False  # Evolution of Thought: the plan gives the step an elite to learn from
    diff: bool = False  # [evolution.diff] mode applies to its requests
    offline: bool = False  # one of the no-LLM baseline's operators (--model offline)
    counterpart: str | None = None  # the offline operator that stands in for it
    arms: Callable[[GeConfig], tuple[str, ...]] | None = None  # its arms of the operator bandit
    probability: Callable[[EvolutionConfig], float] | None = None  # how often the plan draws it
    start_generation: Callable[[EvolutionConfig], int] = always  # alternatives: first generation
    build: Builder | None = None  # its first request
    follow: FollowUp | None = None  # its next turn (a two-call chain)

    @property
    def shown(self) -> str:
        """Its report label."""
        return self.label or self.name

    def temperature_key(self, generation: int) -> str | None:
        """The temperature / top_p key of its calls in ``generation``."""
        if generation == 0 and self.first_temperature:
            return self.first_temperature
        return self.temperature
