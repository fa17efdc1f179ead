"""Where the LLM spend went: the bandits' arms (which model and which (operator, persona) arm,
such as ``mutation/expert`` or ``eot/-``, offline the edit class, made the children that improved
on a parent, at what cost) and the tokens per operator and edit mode, for `ge status`,
`ge log --bandit` and the report.

The arms are tallied from the index with the engine's own rule (``evolution.bandit_history``), so they are
shown whether the bandit is on or off; with it on, ``generations`` lists the state each
generation's choices were drawn from (its ``bandit`` events).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from guided_evolution.config import GeConfig
from guided_evolution.evolution.bandit import per_dollar, state_dict, tally
from guided_evolution.evolution.bandit_history import operator_arms, read_history
from guided_evolution.evolution.operators import registry
from guided_evolution.inspection.html_parts import esc
from guided_evolution.inspection.json_view import OMITTED_IF_NONE, JsonView

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
    """The records `read_history` reads, its LLM calls without their messages (the index's
    ``call_costs``): a long run's prompts are never loaded to count its spend."""

    def __init__(self, index: Any) -> None:
        self._index = index

    def latest_evaluations(self) -> Any:
        return self._index.latest_evaluations()

    def calls(self) -> Any:
        return self._index.call_costs()

    def variants(self) -> Any:
        return self._index.variants()

    def events(self, kind: str) -> Any:
        return self._index.events(kind)


def bandit_view(index: Any, cfg: GeConfig, history: bool = False) -> BanditView:
    """The arms of both bandits now (and, with ``history``, the stored per-generation states)."""
    objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
    offline = cfg.llm.offline
    found = read_history(_Spend(index), objectives, offline=offline)
    models, personas = found.models, found.personas
    if cfg.llm.bandit.per_dollar:
        models, personas = per_dollar(models), per_dollar(personas)
    return BanditView(
        algorithm=cfg.llm.bandit.kind,
        per_dollar=cfg.llm.bandit.per_dollar,
        models=state_dict(
            tally({} if offline else {m.model: m.weight for m in cfg.llm.models}, models)
        ),
        personas=state_dict(tally(operator_arms(cfg), personas)),
        generations=[e.data for e in index.events("bandit")] if history else None,
    )


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
