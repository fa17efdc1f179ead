"""The bandits' pulls, computed from a run's records: every child decided before a generation.
Pure: the records come through ``HistoryRecords`` (the run index satisfies it); the engine's
``Bandits`` decides with them, ``ge status``/``ge report`` show them.

A child is a pull of the model that wrote it (``variants.model``) and of its (operator, persona)
arm: ``eot/-`` when its last step was Evolution of Thought (it has a reflection; EoT has no
persona), ``mutation/<persona>`` when it was a mutation (``variants.persona``); a crossover child
that was then mutated counts for the arm of that mutation, one that was not counts for none. For
``--model offline`` the arms are the offline edit classes (there is no EoT offline). Its
reward is 1 when it improved on a parent (valid, dominates at least one parent on the selection
objectives and is dominated by none: ``RunData.improved``), else 0; a failed child is 0, and a
proposal rejected before evaluation is a 0 pull of the model of its last LLM call and, when the
bandit drew its arm, of that arm (a ``bandit_rejected`` event names it). A proposal
byte-identical to a variant the run has (recorded as that variant, never evaluated for its plan) is
likewise a 0 pull of its last call's model and of its drawn arm, with its calls' cost (a
``bandit_duplicate`` event, once per plan). A child not evaluated yet is not decided and does not
count. Cost: the summed cost of the child's LLM calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from guided_evolution.config import GeConfig
from guided_evolution.evolution.bandit import ArmStats, Pull
from guided_evolution.evolution.operators import eot, mutation, registry
from guided_evolution.evolution.scoring import ObjectiveSpec, dominates, scored

REJECTED = "bandit_rejected"  # event: the arm the bandit drew for a plan that made no child
DUPLICATE = "bandit_duplicate"  # event: a plan's child repeated a variant (its arm and calls)
EOT_ARM = eot.ARM  # EoT's arm: its turns use no persona
MUTATION = mutation.ARM_PREFIX  # prefix of the mutation arms: mutation/<persona>


class HistoryRecords(Protocol):
    """The run's records the history is computed from (``RunIndex`` satisfies it)."""

    def latest_evaluations(self) -> Mapping[str, Any]: ...

    def calls(self) -> Sequence[Any]: ...

    def variants(self) -> Sequence[Any]: ...

    def events(self, kind: str) -> Sequence[Any]: ...


def operator_arms(cfg: GeConfig) -> dict[str, float]:
    """The second bandit's arms and weights, each registered operator's in order (of the LLM set:
    ``mutation/<persona>`` for each persona and ``eot/-`` unless ``eot_probability = 0``;
    offline, the edit classes)."""
    offline = cfg.llm.offline
    found = [s.arms(cfg) for s in registry.specs() if s.offline == offline and s.arms]
    return {arm: 1.0 for arms in found for arm in arms}


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
    vid: str,
    parents: Sequence[str],
    latest: Mapping[str, Any],
    objectives: Sequence[ObjectiveSpec],
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
    index: HistoryRecords,
    objectives: Sequence[ObjectiveSpec],
    before: int | None = None,
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
    _duplicate_pulls(index, calls, before, models, personas)
    return History(models, personas)


def _duplicate_pulls(
    index: HistoryRecords,
    calls: Mapping[int, Any],
    before: int | None,
    models: list[Pull],
    personas: list[Pull],
) -> None:
    """The zero pulls of duplicate proposals (``DUPLICATE`` events, once per plan), appended."""
    found: dict[tuple[int, int], Mapping[str, Any]] = {}
    for event in index.events(DUPLICATE):
        key = (int(event.data["generation"]), int(event.data["plan"]))
        if before is None or key[0] < before:
            found.setdefault(key, event.data)
    for _, data in sorted(found.items()):
        made = [calls[i] for i in data.get("calls") or [] if i in calls]
        spent = sum(float(c.cost_usd or 0.0) for c in made)
        if made:
            models.append(Pull(made[-1].model, 0.0, spent))
        if data.get("arm"):
            personas.append(Pull(str(data["arm"]), 0.0, spent))


def stored_arms(stored: list[dict[str, Any]]) -> list[ArmStats]:
    """The arms of a stored ``bandit`` event's list (``state_dict``'s form)."""
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
