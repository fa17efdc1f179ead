"""Keys of earlier `ge.toml` versions that now live in a table of their own (``config_sections``).

A user's `ge.toml` with such a key gets one line naming the new place (``refuse_moved``); a run's
stored ``config.json`` from before the move is read as if written the new way (``migrate``), so
old runs still resume and read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from guided_evolution.errors import ConfigError

LIMITS = (
    "memory_mb", "cpu_seconds", "file_size_mb", "max_processes", "output_cap_bytes", "tmpfs_mb",
    "disk_reserve_mb",
)  # fmt: skip
MOVED: dict[tuple[str, str], tuple[str, str]] = {
    ("evolution", "islands"): ("islands", "count"),
    ("evolution", "migration_interval"): ("islands", "migration_interval"),
    ("evolution", "migration_size"): ("islands", "migration_size"),
    ("evolution", "migration_topology"): ("islands", "migration_topology"),
    ("evolution", "mate_choice"): ("mate_choice", "kind"),
    ("evolution", "mate_strength"): ("mate_choice", "strength"),
    ("evolution", "mating_sigma"): ("mate_choice", "sigma"),
    ("evolution", "novelty_distance"): ("novelty", "distance"),
    ("evolution", "novelty_retries"): ("novelty", "retries"),
    ("evolution", "novelty_embedding_model"): ("novelty", "embedding_model"),
    ("evolution", "edit_mode"): ("diff", "mode"),
    ("evolution", "diff_min_chars"): ("diff", "min_chars"),
    ("llm", "bandit"): ("bandit", "kind"),
    ("llm", "bandit_per_dollar"): ("bandit", "per_dollar"),
    ("evaluator", "preload"): ("preload", "enabled"),  # a list: `modules` (see _new_place)
    ("evaluator", "preload_recycle_after"): ("preload", "recycle_after"),
    **{("evaluator", name): ("limits", name) for name in LIMITS},
}
"""(table, old key) -> (the new table beneath it, the key there)."""


@dataclass(frozen=True)
class Move:
    """One old key found: where it was, where it goes, and its value."""

    table: str  # "evolution"
    key: str  # "islands"
    section: str  # "islands": the new table is [evolution.islands]
    new_key: str  # "count"
    value: Any

    @property
    def old(self) -> str:
        return f"{self.table}.{self.key}"

    @property
    def new_table(self) -> str:
        return f"{self.table}.{self.section}"


def _new_place(table: str, key: str, value: Any) -> Move | None:
    place = MOVED.get((table, key))
    if place is None or not (value is None or isinstance(value, (str, int, float, list, tuple))):
        return None  # a table (a dict or a section model) is already in its new place
    section, new_key = place
    if (table, key) == ("evaluator", "preload") and isinstance(value, list):
        new_key = "modules"
    return Move(table, key, section, new_key, value)


def find_moves(data: dict[str, Any]) -> list[Move]:
    """The old flat keys in a decoded `ge.toml` (or a stored config), in file order."""
    moves = []
    for table, body in data.items():
        if isinstance(body, dict):
            moves += [m for k, v in body.items() if (m := _new_place(table, k, v)) is not None]
    return moves


def refuse_moved(data: dict[str, Any], source: str) -> None:
    """Raise one line for the first old flat key: where it lives now and how to write it."""
    moves = find_moves(data)
    if not moves:
        return
    m = moves[0]
    more = f" (and {len(moves) - 1} more old key(s))" if len(moves) > 1 else ""
    raise ConfigError(
        f"{source}: '{m.old}' moved to the table [{m.new_table}] as '{m.new_key}'{more}",
        f"write it as: [{m.new_table}] {m.new_key} = {json.dumps(m.value)} "
        "(`ge init` writes a template with every table)",
    )


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of a stored config with every old flat key moved into its table."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    moves = find_moves(data)
    for m in moves:  # first out, so that `islands = 4` leaves room for the [islands] table
        del out[m.table][m.key]
    for m in moves:  # a table already there is copied too: the caller's data stays as it was
        section = out[m.table][m.section] = dict(out[m.table].get(m.section) or {})
        section[m.new_key] = m.value
        if m.new_key == "modules":
            section.setdefault("enabled", True)
    return out
