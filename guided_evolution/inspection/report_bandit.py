"""Where the LLM spend went: the bandits' arms (which model and which (operator, persona) arm,
such as ``mutation/expert`` or ``eot/-``, offline the edit class, made the children that improved
on a parent, at what cost) and the tokens per operator and edit mode, for `ge status`,
`ge log --bandit` and the report.

The arms are tallied from the index with the engine's own rule (``evolution.bandit_history``), so they are
shown whether the bandit is on or off; with it on, ``generations`` lists the state each
generation's choices were drawn from (its ``bandit`` events).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.evolution.bandit import ArmStats, per_dollar, state_dict, tally
from guided_evolution.evolution.bandit_history import operator_arms, read_history
from guided_evolution.evolution.operators import registry
from guided_evolution.inspection.html_parts import esc
from guided_evolution.inspection.json_view import OMITTED_IF_NONE, JsonView
from guided_evolution.runstore import tallies

Arm = dict[str, float | int | str]  # one arm as `evolution.bandit.state_dict` writes it


@dataclass(frozen=True)
class BanditView(JsonView):
    """Both bandits' arms now (each `Arm`: arm, pulls, rewards, improvements, rate, cost_usd,
    prior) and, for `ge log --bandit`, each generation's stored state (its ``bandit`` event)."""

    algorithm: str
    per_dollar: bool
    models: list[Arm]
    personas: list[Arm]
    generations: list[dict[str, Any]] | None = field(default=None, metadata=OMITTED_IF_NONE)  # the events' data


@dataclass
class TokenRow(JsonView):
    """The calls of one operator and mode and their tokens (summed while read)."""

    operator: str
    mode: str
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class TokenView(JsonView):
    """Tokens per operator and mode, and per valid child (None without one)."""

    by_operator: list[TokenRow]
    valid_children: int
    tokens_per_valid_child: float | None


class _Spend:
    """The records `read_history` reads, lean: its LLM calls without their messages (the index's
    ``call_costs``), the variants without their text columns (``variant_briefs``), each latest
    evaluation's status and selection objectives only (``latest_values``). With ``variants``,
    ``latest`` and ``calls`` given, those (one generation's children); ``events``: whether the
    events are read (the rejected and duplicate proposals' pulls)."""

    def __init__(
        self, index: Any, objectives: list[str], variants: Any = None, latest: Any = None,
        calls: Any = None, events: bool = True,
    ) -> None:  # fmt: skip
        self._index, self._objectives, self._events = index, objectives, events
        self._variants, self._latest, self._calls = variants, latest, calls

    def latest_evaluations(self) -> Any:
        if self._latest is not None:
            return self._latest
        return {
            vid: Latest(status, values)
            for vid, status, values in self._index.latest_values(self._objectives)
        }

    def calls(self) -> Any:
        return self._index.call_costs() if self._calls is None else self._calls

    def variants(self) -> Any:
        return self._index.variant_briefs() if self._variants is None else self._variants

    def events(self, kind: str) -> Any:
        return self._index.events(kind) if self._events else []


@dataclass(frozen=True, slots=True)
class Latest:
    """A latest evaluation's status and selection objectives (what ``scoring.scored`` reads)."""

    status: str
    metrics: dict[str, Any]


def bandit_view(index: Any, cfg: GeConfig, history: bool = False) -> BanditView:
    """The arms of both bandits now (and, with ``history``, the stored per-generation states)."""
    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    offline = cfg.llm.offline
    model_weights = {} if offline else {m.model: m.weight for m in cfg.llm.models}
    if cfg.llm.bandit.per_dollar:  # rewards per dollar need every pull's cost: read them all
        found = read_history(_Spend(index, [n for n, _ in objectives]), objectives, offline=offline)
        models = tally(model_weights, per_dollar(found.models))
        personas = tally(operator_arms(cfg), per_dollar(found.personas))
    else:
        model_agg, persona_agg = _arm_tallies(index, objectives, offline)
        models = _stats(model_weights, model_agg)
        personas = _stats(operator_arms(cfg), persona_agg)
    return BanditView(
        algorithm=cfg.llm.bandit.kind,
        per_dollar=cfg.llm.bandit.per_dollar,
        models=state_dict(models),
        personas=state_dict(personas),
        generations=[e.data for e in index.events("bandit")] if history else None,
    )


def _stats(weights: dict[str, float], agg: tallies.Agg) -> list[ArmStats]:
    """``evolution.bandit.tally`` of the pulls summed in ``agg``."""
    return [
        replace(a, pulls=int(r[0]), rewards=float(r[1]), improvements=int(r[2]), cost=float(r[3]))
        if (r := agg.get(a.arm)) is not None
        else a
        for a in tally(weights, [])
    ]


def _arm_tallies(
    index: Any, objectives: list[tuple[str, str]], offline: bool
) -> tuple[tallies.Agg, tallies.Agg]:
    """Both bandits' pulls summed per arm: each generation's children from its stored tally
    (``runstore.tallies``; computed and stored where there is none current), the rejected and
    duplicate proposals from their events."""
    names = [n for n, _ in objectives]
    key = json.dumps([[list(o) for o in objectives], offline])
    mark = index.query(tallies.mark)  # before reading: a later evaluation makes a row stale
    counts = index.query(tallies.counts_per_generation)
    have = index.query(lambda c: tallies.current(c, tallies.stored(c), counts, key))
    missing = sorted(set(counts) - set(have))
    if missing:
        found = _compute(index, names, objectives, offline, missing, mark, key)
        last = index.last_generation()
        closed = [t for t in found if last is not None and t.generation <= last.generation]
        tallies.store_lazily(Path(index.path), closed)
        have.update((t.generation, t) for t in found)
    events = read_history(_Spend(index, names, [], {}), objectives, offline=offline)
    models = [t.models for t in have.values()] + [tallies.aggregate(events.models)]
    personas = [t.personas for t in have.values()] + [tallies.aggregate(events.personas)]
    return tallies.merge(models), tallies.merge(personas)


def _compute(
    index: Any, names: list[str], objectives: list[tuple[str, str]], offline: bool,
    gens: list[int], mark: int, key: str,
) -> list[tallies.GenerationTally]:  # fmt: skip
    """The tallies of generations ``gens`` (``read_history`` over each one's children)."""
    wanted = set(gens)
    briefs = [b for b in index.variant_briefs(min(gens)) if b.generation in wanted]
    parents = {p for b in briefs for p in b.parents}
    ids = [b.id for b in briefs]
    generation = {b.id: b.generation for b in briefs}
    outside = [p for p in parents if p not in generation]
    generation.update((v.id, v.generation) for v in index.variants_of(outside).values())
    whole = len(gens) == len(index.query(tallies.counts_per_generation))
    rows = index.latest_values(names, None if whole else [*ids, *outside])
    latest = {vid: Latest(status, values) for vid, status, values in rows}
    by_variant: dict[str, list[Any]] = {}
    for call in index.call_costs():
        if call.variant_id in generation:
            by_variant.setdefault(call.variant_id, []).append(call)
    by_gen: dict[int, list[Any]] = {g: [] for g in gens}
    for b in briefs:
        by_gen[b.generation].append(b)
    out = []
    for g, members in by_gen.items():
        calls = [c for b in members for c in by_variant.get(b.id, ())]
        found = read_history(_Spend(index, names, members, latest, calls, events=False), objectives, offline=offline)
        spanned = [g, *(generation[p] for b in members for p in b.parents if p in generation)]
        out.append(tallies.GenerationTally(
            g, len(members), mark, min(spanned), max(spanned), key,
            tallies.aggregate(found.models), tallies.aggregate(found.personas),
        ))  # fmt: skip
    return out


def _mode(purpose: str) -> tuple[str, str]:
    """(operator, mode) of an LLM call's purpose: ``eot:apply:diff`` -> (eot, diff)."""
    parts = purpose.split(":")
    mode = "diff" if "diff" in parts[1:] else "reason" if "reason" in parts[1:] else "whole"
    return parts[0], mode


def token_view(index: Any) -> TokenView:
    """Prompt and completion tokens per operator and mode (whole segment, edit blocks, EoT's
    reasoning turn), and tokens per valid child (the tokens of every call over the valid
    children); replies served from the cache are left out (they cost nothing)."""
    rows: dict[tuple[str, str], TokenRow] = {}
    total = 0
    for found in index.call_totals():  # per purpose and outcome, summed by the index
        if found["outcome"] == "cached":
            continue  # paid for by the call it repeats (a resumed run re-asks from the cache)
        op, mode = _mode(found["purpose"])
        row = rows.setdefault((op, mode), TokenRow(op, mode))
        row.calls += found["calls"]
        row.prompt_tokens += found["prompt_tokens"]
        row.completion_tokens += found["completion_tokens"]
        total += found["prompt_tokens"] + found["completion_tokens"]
    valid = index.count_children(status="evaluated")
    rank = {op: i for i, op in enumerate(registry.report_order())}
    ordered = sorted(rows.values(), key=lambda r: (rank.get(r.operator, 99), r.operator, r.mode))
    return TokenView(
        by_operator=ordered,
        valid_children=valid,
        tokens_per_valid_child=round(total / valid, 1) if valid else None,
    )


def _arm_rows(arms: list[Arm]) -> str:
    return "".join(
        f"<tr><td>{esc(a['arm'])}</td><td>{a['pulls']}</td><td>{a['improvements']}</td>"
        f"<td>{a['rate']:.0%}</td><td>${a['cost_usd']:.4f}</td></tr>"
        for a in arms
    )


def bandit_html(bandit: BanditView, tokens: TokenView) -> str:
    """The report's section: an arms table per bandit and the tokens table."""
    head = "<tr><th>arm</th><th>pulls</th><th>improvements</th><th>rate</th><th>spend</th></tr>"
    parts = [f"<h2>LLM spend</h2><p>bandit: {esc(bandit.algorithm)}</p>"]
    persona = "operator/persona" if bandit.models else "edit class (offline)"  # offline: no models
    for arms, title in ((bandit.models, "models"), (bandit.personas, persona)):
        if arms:
            parts.append(f"<h3>{title}</h3><table>{head}{_arm_rows(arms)}</table>")
    if tokens.by_operator:
        rows = "".join(
            f"<tr><td>{esc(registry.label(r.operator))}</td><td>{esc(r.mode)}</td><td>{r.calls}</td>"
            f"<td>{r.prompt_tokens}</td><td>{r.completion_tokens}</td></tr>"
            for r in tokens.by_operator
        )
        parts.append(
            "<h3>tokens</h3><table><tr><th>operator</th><th>mode</th><th>calls</th>"
            f"<th>prompt</th><th>completion</th></tr>{rows}</table>"
            f"<p>tokens per valid child: {tokens.tokens_per_valid_child or '-'}</p>"
        )
    return "".join(parts)
