"""The bandits' pulls, read from a run's index: every child decided before a generation.

A child is a pull of the model that wrote it (``variants.model``) and of its (operator, persona)
arm: ``eot/-`` when its last step was Evolution of Thought (it has a reflection; EoT has no
persona), ``mutation/<persona>`` when it was a mutation (``variants.persona``); a crossover child
that was then mutated counts for the arm of that mutation, one that was not counts for none. For
``--model offline`` the arms are the offline edit classes (there is no EoT offline). Its
reward is 1 when it improved on a parent (valid, dominates at least one parent on the selection
objectives and is dominated by none: ``RunData.improved``), else 0; a failed child is 0, and a
proposal rejected before evaluation is a 0 pull of the model of its last LLM call and, when the
bandit drew its arm, of that arm (a ``bandit_rejected`` event names it). A child not evaluated yet is not
decided and does not count. Cost: the summed cost of the child's LLM calls.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.evolution.bandit import ArmStats, Pull, choose, per_dollar, state_dict, tally
from guided_evolution.evolution.offline_operators import OPERATORS as OFFLINE_EDITS
from guided_evolution.evolution.scoring import ObjectiveSpec, dominates, scored

REJECTED = "bandit_rejected"  # event: the arm the bandit drew for a plan that made no child
EOT_ARM = "eot/-"  # EoT's arm: its turns use no persona
MUTATION = "mutation/"  # prefix of the mutation arms: mutation/<persona>


def operator_arms(cfg: GeConfig) -> dict[str, float]:
    """The second bandit's arms and weights: ``mutation/<persona>`` for each persona and ``eot/-``
    (unless ``eot_probability = 0``); offline, the edit classes."""
    if cfg.llm.offline:
        return dict.fromkeys(OFFLINE_EDITS, 1.0)
    arms = {f"{MUTATION}{p}": 1.0 for p in cfg.evolution.personas}
    if cfg.evolution.eot_probability > 0:
        arms[EOT_ARM] = 1.0
    return arms


def arm_of(variant: Any, offline: bool) -> str | None:
    """The (operator, persona) arm a child counts for (offline: its edit class); None: none."""
    if offline:
        return variant.persona or None
    if variant.eot_reflection:
        return EOT_ARM
    return f"{MUTATION}{variant.persona}" if variant.persona else None


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
    index: Any, objectives: Sequence[ObjectiveSpec], before: int | None = None,
    offline: bool = False,
) -> History:
    """The pulls of the children of generations < ``before`` (None: all) decided so far
    (``offline``: the second bandit's arms are the offline edit classes)."""
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
        arm = arm_of(v, offline)
        if arm:
            personas.append(Pull(arm, reward, spent))
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
            drawn[key] = str(event.data.get("arm") or event.data.get("persona"))
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
    """The run's two bandits (``[llm] bandit``): over the ensemble's models, and over the
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
        self.algorithm = cfg.llm.bandit
        self.per_dollar = cfg.llm.bandit_per_dollar
        self.offline = cfg.llm.offline
        self.index = index
        self.objectives = objectives
        self.model_weights = {} if self.offline else {m.model: m.weight for m in cfg.llm.models}
        self.persona_weights = operator_arms(cfg)
        self._states: dict[int, BanditState] = {}
        self._drawn: dict[tuple[int, int], str] = {}  # (generation, plan) -> arm drawn

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
        found = BanditState(_arms(stored["models"]), _arms(stored["personas"]))
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

    def model(self, generation: int, rng: random.Random) -> str | None:
        """The model to ask (None: the bandit is off or there is one model)."""
        if not self.on or len(self.model_weights) < 2:
            return None
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
        arm = choose(self.algorithm, arms, rng)
        self._drawn[(generation, plan)] = arm
        if self.offline:
            return "mutation", arm
        if arm == EOT_ARM:
            return "eot", None
        return "mutation", arm.removeprefix(MUTATION)

    def rejected(self, generation: int, plan: int) -> None:
        """Plan ``plan`` made no child: its drawn arm (if any) is a pull with reward 0."""
        arm = self._drawn.pop((generation, plan), None)
        if arm is not None:
            self.index.add_event(REJECTED, {"generation": generation, "plan": plan, "arm": arm})
