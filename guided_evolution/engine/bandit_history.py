"""The bandits' pulls, read from a run's index: every child decided before a generation.

A child is a pull of the model that wrote it (``variants.model``) and of its persona
(``variants.persona``; for ``--model offline`` with the bandit on, its offline edit class). Its
reward is 1 when it improved on a parent (valid, dominates at least one parent on the selection
objectives and is dominated by none: ``RunData.improved``), else 0; a failed child is 0, and a
proposal rejected before evaluation is a 0 pull of the model of its last LLM call and, when the
bandit drew its persona, of that persona (a ``bandit_rejected`` event names it). A child not evaluated yet is not
decided and does not count. Cost: the summed cost of the child's LLM calls.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guided_evolution.evolution.bandit import ArmStats, Pull, choose, per_dollar, state_dict, tally
from guided_evolution.evolution.scoring import ObjectiveSpec, dominates, scored

REJECTED = "bandit_rejected"  # event: the persona the bandit drew for a plan that made no child


@dataclass(frozen=True)
class History:
    """The pulls of the two bandits before a generation."""

    models: list[Pull]
    personas: list[Pull]


def improved(
    vid: str, parents: Sequence[str], latest: dict[str, Any], objectives: Sequence[ObjectiveSpec]
) -> bool:
    """Valid, dominates at least one of its parents and is dominated by none of them."""
    mine = scored(vid, latest.get(vid), objectives)
    found = [scored(p, latest.get(p), objectives) for p in parents]
    known = [s for s in found if s is not None]
    if mine is None or not known:
        return False
    return any(dominates(mine, p, objectives) for p in known) and not any(
        dominates(p, mine, objectives) for p in known
    )


def read_history(
    index: Any, objectives: Sequence[ObjectiveSpec], before: int | None = None
) -> History:
    """The pulls of the children of generations < ``before`` (None: all) decided so far."""
    latest = index.latest_evaluations()
    calls = {c.id: c for c in index.calls()}
    cost: dict[str, float] = {}
    for c in calls.values():
        if c.variant_id:
            cost[c.variant_id] = cost.get(c.variant_id, 0.0) + float(c.cost_usd or 0.0)
    models: list[Pull] = []
    personas: list[Pull] = []
    for v in index.variants():
        if not v.parents or (before is not None and v.generation >= before):
            continue
        if v.id not in latest:
            continue  # not evaluated yet: not decided
        reward = 1.0 if improved(v.id, v.parents, latest, objectives) else 0.0
        spent = cost.get(v.id, 0.0)
        if v.model:
            models.append(Pull(v.model, reward, spent))
        if v.persona:
            personas.append(Pull(v.persona, reward, spent))
    spent_on: dict[tuple[int, int], float] = {}
    for event in index.events("proposal_rejected"):
        data = event.data
        if before is not None and int(data.get("generation", 0)) >= before:
            continue
        made = [calls[i] for i in data.get("calls") or [] if i in calls]
        spent = sum(float(c.cost_usd or 0.0) for c in made)
        spent_on[(int(data.get("generation", 0)), int(data.get("plan", -1)))] = spent
        if made:
            models.append(Pull(made[-1].model, 0.0, spent))
    drawn = {}  # a resumed run may reject the same plan again: once per plan
    for event in index.events(REJECTED):
        key = (int(event.data["generation"]), int(event.data["plan"]))
        if before is None or key[0] < before:
            drawn[key] = str(event.data["persona"])
    personas += [Pull(arm, 0.0, spent_on.get(key, 0.0)) for key, arm in sorted(drawn.items())]
    return History(models, personas)


def _arms(stored: list[dict[str, Any]]) -> list[ArmStats]:
    return [
        ArmStats(
            str(a["arm"]),
            float(a["prior"]),
            int(a["pulls"]),
            float(a["rewards"]),
            int(a["improvements"]),
            float(a["cost_usd"]),
        )
        for a in stored
    ]


@dataclass(frozen=True)
class BanditState:
    """Both bandits as one generation's children see them."""

    models: list[ArmStats]
    personas: list[ArmStats]


class Bandits:
    """The run's two bandits (``[llm] bandit``): the state of each generation is computed at its
    first choice from the children decided before it, stored as a ``bandit`` event, and read back
    from that event by a resumed run, so that the same plan always makes the same choices."""

    def __init__(
        self,
        algorithm: str,
        per_dollar_rewards: bool,
        index: Any,
        objectives: Sequence[ObjectiveSpec],
        models: dict[str, float],
        personas: dict[str, float],
    ) -> None:
        self.algorithm = algorithm
        self.per_dollar = per_dollar_rewards
        self.index = index
        self.objectives = objectives
        self.model_weights = models
        self.persona_weights = personas
        self._states: dict[int, BanditState] = {}
        self._drawn: dict[tuple[int, int], str] = {}  # (generation, plan) -> persona drawn

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
        found = BanditState(_arms(stored["models"]), _arms(stored["personas"]))
        self._states[generation] = found
        return found

    def snapshot(self, generation: int) -> dict[str, Any]:
        """The ``bandit`` event of ``generation``: each arm's tally of the children before it."""
        history = read_history(self.index, self.objectives, before=generation)
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

    def model(self, generation: int, rng: random.Random) -> str | None:
        """The model to ask (None: the bandit is off or there is one model)."""
        if not self.on or len(self.model_weights) < 2:
            return None
        return choose(self.algorithm, self.state(generation).models, rng)

    def persona(self, generation: int, rng: random.Random, plan: int = -1) -> str | None:
        """The persona (offline: edit class) of a mutation of plan ``plan`` (None: off or only
        one)."""
        if not self.on or len(self.persona_weights) < 2:
            return None
        arm = choose(self.algorithm, self.state(generation).personas, rng)
        self._drawn[(generation, plan)] = arm
        return arm

    def rejected(self, generation: int, plan: int) -> None:
        """Plan ``plan`` made no child: its drawn persona (if any) is a pull with reward 0."""
        arm = self._drawn.pop((generation, plan), None)
        if arm is not None:
            self.index.add_event(REJECTED, {"generation": generation, "plan": plan, "persona": arm})
