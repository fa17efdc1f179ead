"""The JSON of `ge serve`'s other requests: the list of runs (from each run's `LiveRun`) and one
variant: `views_data.show` (metrics, prompt, reply, reflection, feedback, output), its diff
against each parent and against the seed (`views_data.diff`) and `views_data.lineage`; long
texts are cut to `MAX_TEXT` characters (a variant may write megabytes), saying so."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError
from guided_evolution.inspection.views_data import diff, lineage, show
from guided_evolution.serve.live import LiveRun

MAX_TEXT = 200_000
MAX_LINEAGE = 400


def clipped(text: str | None) -> str | None:
    """``text`` cut to `MAX_TEXT` characters, with a line that says how much was left out."""
    if text is None or len(text) <= MAX_TEXT:
        return text
    return text[:MAX_TEXT] + f"\n… ({len(text) - MAX_TEXT:,} more characters not shown; `ge show` has all)"


def run_rows(runs: dict[str, Path], live: Callable[[Path], LiveRun]) -> list[dict[str, Any]]:
    """One row per run: its state, counters and front size (or why it cannot be read)."""
    rows = []
    for name, root in runs.items():
        try:
            head = live(root).head()
        except GeError as err:
            rows.append({"name": name, "error": err.one_line()})
            continue
        rows.append(
            {
                "name": name,
                "state": head["state"],
                "counts": head["counts"],
                "front_size": head["front_size"],
                "objectives": head["objectives"],
            }
        )
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
