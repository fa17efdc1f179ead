"""`ge report` on a large run (issue 29 item 2): the clouds (variants off the front, the
evaluations under the best-so-far lines) are an even sample past `report_svg.CLOUD_LIMIT`
points, and the page says so under each such plot; the front and the lines stay exact.

A run of thousands of variants is too slow for a test, so the limit is lowered on a small run.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from guided_evolution.inspection import report_svg
from guided_evolution.inspection.html_report import write_report
from guided_evolution.inspection.report_data import collect

SAMPLED = "an even sample of"


def _circles(svg: str, cls: str) -> int:
    return len(re.findall(rf'<circle class="{cls}"', svg))


def test_small_clouds_are_whole_and_say_nothing(template_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    write_report(template_run, out)
    assert SAMPLED not in out.read_text()


def test_a_sampled_cloud_is_said_and_the_front_stays_exact(
    template_run: Path,
    copy_run: Callable[[Path], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run = copy_run(template_run)
    rep = collect(run)
    front = [p for p in rep.points if p.front]
    rest = [p for p in rep.points if not p.front and p.id != rep.seed_id]
    assert len(rest) > 3 and len(rep.progress) > 3
    monkeypatch.setattr(report_svg, "CLOUD_LIMIT", 3)

    plot = report_svg.front_svgs(rep)[0]
    assert _circles(plot, "pt front") == len(front)  # every front member
    seed_drawn = any(p.id == rep.seed_id and not p.front for p in rep.points)
    assert _circles(plot, "pt") == 3 + seed_drawn  # the sample, and the seed
    assert f"{SAMPLED} 3 of {len(rest)}" in plot

    curve = report_svg.progress_svgs(rep, "time")[0]
    assert _circles(curve, "dot") + _circles(curve, "dot off") == 3
    assert f"{SAMPLED} 3 of {len(rep.progress)}" in curve
    name = rep.selected[0][0]
    best = [r.best[name] for r in rep.progress]
    steps = sum(1 for a, b in itertools.pairwise(best) if a != b)
    assert _circles(curve, "step") == steps  # the line's every step, sampled or not

    out = tmp_path / "r.html"
    write_report(run, out)
    assert out.read_text().count(SAMPLED) >= 2


def test_sample_is_even_and_keeps_both_ends() -> None:
    items = list(range(10_000))
    kept = report_svg.sample(items, 100)
    assert len(kept) == 100 and kept[0] == 0 and kept[-1] == 9_999
    gaps = {b - a for a, b in itertools.pairwise(kept)}
    assert max(gaps) - min(gaps) <= 1
    assert report_svg.sample(items[:50], 100) == items[:50]


def test_a_front_of_ties_draws_one_lineage_per_point_and_says_so(
    template_run: Path, copy_run: Callable[[Path], Path], tmp_path: Path
) -> None:
    """A large run's front can be thousands of variants with the same scores: the lineage is
    drawn for one of each distinct point, and the page says how many it stands for."""
    run = copy_run(template_run)
    db = sqlite3.connect(run / "index.sqlite")
    db.execute(
        "UPDATE evaluations SET metrics = '{\"score\": 1.0, \"size\": 10.0}' WHERE status = 'ok'"
    )
    db.commit()
    db.close()
    rep = collect(run)
    assert len(rep.front) > 1 and rep.lineage_of == 1
    assert sum(1 for n in rep.graph if n.front) >= 1
    out = tmp_path / "r.html"
    write_report(run, out)
    assert (
        f"The lineage of 1 front variants, one per distinct point of the front ({len(rep.front)}"
        in out.read_text()
    )
