"""The run's two bandits as the engine uses them: each generation's state computed from the
children decided before it (``evolution.bandit_history``), stored as a ``bandit`` event and read
back on resume; the choices of models and (operator, persona) arms; rejected plans' pulls and
byte-identical duplicate proposals' pulls."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.evolution.bandit import ArmStats, choose, per_dollar, state_dict, tally
from guided_evolution.evolution.bandit_history import (
    DUPLICATE,
    EOT_ARM,
    MUTATION,
    REJECTED,
    operator_arms,
    read_history,
    stored_arms,
)
from guided_evolution.evolution.operators import eot as eot_op
from guided_evolution.evolution.operators import registry
from guided_evolution.evolution.scoring import ObjectiveSpec
from guided_evolution.evolution.segments import variant_id


def batch_ucb1(arms: Sequence[ArmStats], plan: int) -> str:
    """UCB1's arm for child ``plan`` of a generation: the ``plan``-th pick when each pick is
    counted as a pull at the arm's current mean before the next (batched UCB1; ties go to the
    first arm, unpulled arms first, heaviest prior first). A generation's children share one
    state and UCB1 is deterministic: picking from the state alone, every child of a generation
    explored the same arm (offline, an edit that may apply nowhere: every proposal rejected, the
    run stopped). A pure function of the state and the plan index: a resumed run makes the same
    choices."""
    out = list(arms)
    for _ in range(max(plan, 0) + 1):
        fresh = [a for a in out if a.pulls == 0]
        if fresh:
            pick = max(fresh, key=lambda a: a.prior_mean)
        else:
            total = sum(a.pulls for a in out)
            pick = max(out, key=lambda a: _ucb1_score(a, total))
        mean = pick.alpha / (pick.alpha + pick.beta)
        virtual = dataclasses.replace(pick, pulls=pick.pulls + 1, rewards=pick.rewards + mean)
        out = [virtual if a is pick else a for a in out]
    return pick.arm


def _ucb1_score(arm: ArmStats, total: int) -> float:
    return arm.alpha / (arm.alpha + arm.beta) + math.sqrt(2.0 * math.log(total) / arm.pulls)


@dataclass(frozen=True)
class BanditState:
    """Both bandits as one generation's children see them."""

    models: list[ArmStats]
    personas: list[ArmStats]


class Bandits:
    """The run's two bandits (``[llm.bandit]``): over the ensemble's models, and over the
    (operator, persona) arms of mutation steps (offline: the edit classes). The state of each
    generation is computed at its first choice from the children decided before it, stored as a
    ``bandit`` event (the second bandit under ``personas``), and read back from that event by a
    resumed run, so that the same plan always makes the same choices."""

    def __init__(
        self,
        cfg: GeConfig,
        index: Any,
        objectives: Sequence[ObjectiveSpec],
    ) -> None:
        self.algorithm = cfg.llm.bandit.kind
        self.per_dollar = cfg.llm.bandit.per_dollar
        self.offline = cfg.llm.offline
        self.index = index
        self.objectives = objectives
        self.model_weights = {} if self.offline else {m.model: m.weight for m in cfg.llm.models}
        self.persona_weights = operator_arms(cfg)
        self._states: dict[int, BanditState] = {}
        self._drawn: dict[tuple[int, int], str] = {}  # (generation, plan) -> arm drawn
        self.evolvable = cfg.seed.files
        self._made: dict[str, tuple[int, int]] = {}  # a new child's id -> (generation, plan)

    @property
    def chooses_eot(self) -> bool:
        """The bandit, not the ``eot_probability`` coin, chooses EoT where it is possible."""
        return self.on and EOT_ARM in self.persona_weights

    @property
    def on(self) -> bool:
        return self.algorithm != "off"

    def state(self, generation: int) -> BanditState:
        """The state for ``generation`` (stored at its first use)."""
        if generation in self._states:
            return self._states[generation]
        stored = next(
            (e.data for e in self.index.events("bandit") if e.data.get("generation") == generation),
            None,
        )
        if stored is None:
            stored = self.snapshot(generation)
            self.index.add_event("bandit", stored)
        found = BanditState(stored_arms(stored["models"]), stored_arms(stored["personas"]))
        self._states[generation] = found
        return found

    def snapshot(self, generation: int) -> dict[str, Any]:
        """The ``bandit`` event of ``generation``: each arm's tally of the children before it."""
        history = read_history(self.index, self.objectives, generation, self.offline)
        models, personas = history.models, history.personas
        if self.per_dollar:
            models, personas = per_dollar(models), per_dollar(personas)
        return {
            "generation": generation,
            "algorithm": self.algorithm,
            "per_dollar": self.per_dollar,
            "models": state_dict(tally(self.model_weights, models)),
            "personas": state_dict(tally(self.persona_weights, personas)),
        }

    def model(self, generation: int, rng: random.Random, plan: int = -1) -> str | None:
        """The model to ask for plan ``plan`` (None: the bandit is off or there is one model).
        UCB1 spreads a generation's children over the models as it does the arms
        (``batch_ucb1``): from the generation's one state alone, every call of a generation
        went to the same model."""
        if not self.on or len(self.model_weights) < 2:
            return None
        if self.algorithm == "ucb1" and plan >= 0:
            return batch_ucb1(self.state(generation).models, plan)
        return choose(self.algorithm, self.state(generation).models, rng)

    def persona(self, generation: int, rng: random.Random, plan: int = -1) -> str | None:
        """The persona (offline: edit class) of a mutation of plan ``plan`` where EoT is not a
        choice (None: off or only one)."""
        chosen = self.operator(generation, rng, plan, eot=False)
        return chosen[1] if chosen else None

    def operator(
        self, generation: int, rng: random.Random, plan: int, eot: bool
    ) -> tuple[str, str | None] | None:
        """(operator, persona) of a mutation step of plan ``plan``: ``("eot", None)`` (only when
        ``eot``: EoT is possible there) or ``("mutation", persona)``; offline ``("mutation", edit
        class)``. None: the bandit is off, or there is nothing to choose from."""
        names = [
            n
            for n in self.persona_weights
            if self.offline or n.startswith(MUTATION) or (eot and n == EOT_ARM)
        ]
        if not self.on or len(names) < 2:
            return None
        arms = [a for a in self.state(generation).personas if a.arm in names]
        if self.algorithm == "ucb1" and plan >= 0:
            arm = batch_ucb1(arms, plan)
        else:
            arm = choose(self.algorithm, arms, rng)
        self._drawn[(generation, plan)] = arm
        if self.offline:
            return registry.base().name, arm
        if arm == EOT_ARM:
            return eot_op.SPEC.name, None
        return registry.base().name, arm.removeprefix(MUTATION)

    def rejected(self, generation: int, plan: int) -> None:
        """Plan ``plan`` made no child: its drawn arm (if any) is a pull with reward 0."""
        arm = self._drawn.pop((generation, plan), None)
        if arm is not None:
            self.index.add_event(REJECTED, {"generation": generation, "plan": plan, "arm": arm})

    def proposed(self, generation: int, plan: int, files: dict[str, str], calls: list[int]) -> None:
        """Plan ``plan`` made a child with ``files`` (its LLM calls: ``calls``). A child
        byte-identical to a variant the run has is recorded as that variant and never evaluated
        as this plan's: its drawn arm and the model of its last call are a pull with reward 0 (a
        ``bandit_duplicate`` event, with the calls for their cost). Not when the variant is this
        plan's own child replayed by a resumed run (a child of the same generation this process
        has not seen made); nothing is written with the bandit off."""
        if not self.on:
            return
        key = (generation, plan)
        vid = variant_id(files, self.evolvable)
        existing = self.index.get_variant(vid)
        made = self._made.get(vid)
        if existing is None or (made is None and existing.generation == generation):
            self._made.setdefault(vid, key)
            return
        if made == key:
            return
        arm = self._drawn.pop(key, None)
        data = {"generation": generation, "plan": plan, "variant": vid, "arm": arm, "calls": calls}
        self.index.add_event(DUPLICATE, data)
