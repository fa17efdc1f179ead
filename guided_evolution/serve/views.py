"""The JSON of `ge serve`'s other requests: the list of runs (`brief`, without their points) and one
variant: `views_data.show` (metrics, prompt, reply, reflection, feedback, output), its diff
against each parent and against the seed (`views_data.diff`) and `views_data.lineage`; long
texts are cut to `MAX_TEXT` characters (a variant may write megabytes), saying so."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError
from guided_evolution.inspection.run_data import open_run_index
from guided_evolution.inspection.views_data import diff, lineage, run_state, show
from guided_evolution.runstore.records import META_FINISHED
from guided_evolution.serve.live import files as live_files
from guided_evolution.serve.live import lock_key
from guided_evolution.serve.runs import holder

MAX_TEXT = 200_000
MAX_LINEAGE = 400


def clipped(text: str | None) -> str | None:
    """``text`` cut to `MAX_TEXT` characters, with a line that says how much was left out."""
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"\n… ({len(text) - MAX_TEXT:,} more characters not shown; `ge show` has all)"


def brief(root: Path) -> dict[str, Any]:
    """A run's line on the first page: its state (`views_data.run_state`) and counters, read
    without its points."""
    with open_run_index(root) as (index, resolved, paths):
        last = index.last_generation()
        return {
            "state": run_state(index, paths.root, index.get_meta(META_FINISHED), holder).to_json(),
            "counts": {
                **index.counts(),
                "generation": last.generation if last else 0,
                "generations": resolved.config.evolution.generations,
            },
        }


def run_rows(runs: dict[str, Path], cache: dict[Path, tuple[Any, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per run (or why it cannot be read), each read again only when its files or its
    lock changed (``cache``: run -> (what was looked at, its row))."""
    rows = []
    for name, root in runs.items():
        key = (live_files(root), lock_key(root))
        if root not in cache or cache[root][0] != key:
            try:
                row = brief(root)
            except GeError as err:
                row = {"error": err.one_line()}
            except sqlite3.Error as err:
                row = {"error": f"cannot read its index now ({err})"}
            cache[root] = (key, row)
        rows.append({"name": name, **cache[root][1]})
    return rows


def _diff(root: Path, to: str, base: str, label: str) -> dict[str, Any]:
    try:
        view = diff(root, to, base).to_json()
    except GeError as err:
        return {"label": label, "error": err.one_line()}
    view["diff"] = clipped(view["diff"])
    return {"label": label, **view}


def variant_view(root: Path, variant: str) -> dict[str, Any]:
    """Everything the page shows about one variant (a `GeError` for an unknown id)."""
    shown = show(root, variant).to_json()
    for key in ("prompt", "reply", "output_tail", "feedback", "eot_reflection", "diff"):
        shown[key] = clipped(shown.get(key))
    vid = shown["id"]
    diffs = [_diff(root, vid, p, f"against parent {p}") for p in shown["parents"]]
    family = lineage(root, vid).to_json()
    seed = family.get("seed")
    if seed and seed != vid and seed not in shown["parents"]:
        diffs.append(_diff(root, vid, seed, "against the seed"))
    nodes = family["nodes"]
    family["nodes"], family["more"] = nodes[:MAX_LINEAGE], max(len(nodes) - MAX_LINEAGE, 0)
    return {"variant": shown, "diffs": diffs, "lineage": family}
