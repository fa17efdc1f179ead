"""A front without clutter (issue 26 item 5): variants with equal selection values are one row
(the oldest, with ``×N``) in `ge best`, the run's summary and the report; `--json` keeps every
row; the values of one column print with the same digits."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from guided_evolution.inspection.view_models import FrontRow, Objective
from guided_evolution.inspection.views_data import column_numbers, front_groups
from guided_evolution.runstore.records import EvaluationRecord
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json

CopyRun = Callable[[Path], Path]
A_SCORE, B_SCORE = 0.319056263, 0.3190562634  # 10 digits tell them apart; A's 10th is a 0


def _tied_run(template_run: Path, copy_run: CopyRun) -> tuple[Path, list[str], str, str]:
    """A copy of the template run whose front is three tied variants (score 0.5, size 10) and
    two that differ in the tenth digit: (run, the tied ids oldest first, a, b)."""
    run = copy_run(template_run)
    with RunIndex.open(run / "index.sqlite") as index:
        kids = sorted(
            (v for v in index.variants() if v.operator != "seed"),
            key=lambda v: (v.generation, v.id),
        )
        tied, a, b = kids[-3:], kids[0], kids[1]  # the oldest tied member is not the first child
        values = [(v, 0.5, 10) for v in tied] + [(a, A_SCORE, 5), (b, B_SCORE, 6)]
        for v, score, size in values:
            metrics = {"score": score, "size": size}
            index.add_evaluation(EvaluationRecord(v.id, attempt=9, status="ok", metrics=metrics))
    return run, [v.id for v in tied], a.id, b.id


def _rows(text: str) -> dict[str, str]:
    return {line.split()[0]: line for line in text.splitlines() if re.match(r"\s*[0-9a-f]{16}\b", line)}


def test_best_shows_ties_once_with_their_count_and_json_keeps_them_all(
    template_run: Path, copy_run: CopyRun, tmp_path: Path
) -> None:
    run, tied, a, b = _tied_run(template_run, copy_run)
    proc = ge_here("best", str(run), cwd=tmp_path, env={"COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert set(rows) == {tied[0], a, b}, proc.stdout
    assert "×3" in rows[tied[0]] and "×" not in rows[a] + rows[b]
    assert "oldest shown" in proc.stdout
    # one column, one number of digits: 0.3190562630, not 0.319056263
    assert "0.3190562630" in rows[a] and "0.3190562634" in rows[b]
    assert "0.5000000000" in rows[tied[0]]
    front = here_json("best", str(run), cwd=tmp_path)["front"]
    assert {r["id"] for r in front} == {*tied, a, b}


def test_the_run_summary_groups_the_front_too(
    template_run: Path, copy_run: CopyRun, tmp_path: Path
) -> None:
    run, tied, a, b = _tied_run(template_run, copy_run)
    proc = ge_here("resume", str(run), cwd=tmp_path)  # a finished run prints its summary
    assert proc.returncode == 0, proc.stderr
    rows = _rows(proc.stdout)
    assert set(rows) == {tied[0], a, b} and "×3" in rows[tied[0]], proc.stdout


def test_the_report_table_groups_ties_and_names_the_others(
    template_run: Path, copy_run: CopyRun, tmp_path: Path
) -> None:
    run, tied, *_ = _tied_run(template_run, copy_run)
    here_json("report", str(run), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    html = (tmp_path / "r.html").read_text()
    table = html[html.index('id="table"') :]
    assert table.count('<tr id="v-') == 3
    assert f'<tr id="v-{tied[0]}"' in table and f'<tr id="v-{tied[1]}"' not in table
    assert "×3" in table and f"also {tied[1]}, {tied[2]}" in table
    assert ">0.3190562630<" in table and ">0.3190562634<" in table


def test_groups_need_every_selection_value_equal_not_the_reported_ones() -> None:
    objectives = [Objective("s", "max", True), Objective("t", "min", True), Objective("r", "max", False)]
    rows = [
        FrontRow("b" * 16, None, 2, "m", {"s": 1.0, "t": 2, "r": 0.1}),
        FrontRow("a" * 16, None, 2, "m", {"s": 1.0, "t": 2, "r": 0.9}),  # reported differs
        FrontRow("c" * 16, None, 1, "m", {"s": 1.0, "t": 3, "r": 0.1}),  # t differs
        FrontRow("d" * 16, None, 3, "m", {"s": 1.0, "t": 2, "r": 0.1}),
    ]
    groups = front_groups(rows, objectives)
    assert [(g.row.id[0], g.same, g.count) for g in groups] == [
        ("a", ["b" * 16, "d" * 16], 3),  # the oldest: generation 2, then the id
        ("c", [], 1),
    ]


def test_column_numbers_share_their_digits() -> None:
    assert column_numbers([A_SCORE, B_SCORE, -0.5909917263]) == [
        "0.3190562630",
        "0.3190562634",
        "-0.5909917263",
    ]
    assert column_numbers([-0.3190412908115, -0.319056262954, -0.3190562629542]) == [
        "-0.3190412908115",  # 13 digits: still fixed decimals, not exponent form
        "-0.3190562629540",
        "-0.3190562629542",
    ]
    assert column_numbers([0.1 + 0.2, 0.3]) == ["0.30000000000000004", "0.29999999999999999"]
    assert column_numbers([164.0, 192.0]) == ["164", "192"]
    assert column_numbers([0.826, 0.8]) == ["0.826", "0.800"]
    assert column_numbers([1e-9, 1000.0]) == ["1.00000e-09", "1.00000e+03"]  # magnitudes apart
    assert column_numbers([3, None, float("nan")]) == [None, None, None]  # the caller's to write
