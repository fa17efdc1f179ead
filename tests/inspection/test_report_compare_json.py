"""`ge report RUN --compare CONTROL --json` carries the comparison the page shows: the control,
the shorter run's count of successful evaluations, and each objective's best in both runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.support.cli import ge_here
from tests.support.harness import FakeExecutor, run_engine, size_score
from tests.support.seeds import template_seed


def _run(tmp_path: Path, name: str, **evolution: object) -> Path:
    seed = template_seed(tmp_path / f"{name}-seed", generations=1, population=3, **evolution)
    run = tmp_path / name
    run_engine(seed, run, executor=FakeExecutor(size_score).factory, no_sandbox=True)
    return run


def test_report_json_has_the_comparison_of_the_page(tmp_path: Path) -> None:
    evo = _run(tmp_path, "evo")
    ctl = _run(tmp_path, "ctl", strategy="best_of_n", initial_population=2)
    out = tmp_path / "report.html"
    proc = ge_here("report", str(evo), "--compare", str(ctl), "-o", str(out), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)["comparison"]
    assert data["control"] == str(ctl)
    heading = re.search(r"Best after (\d+) successful evaluations each", out.read_text())
    assert heading and data["evaluations"] == int(heading.group(1)) > 0
    rows = {r["objective"]: r for r in data["objectives"]}
    assert set(rows) == {"score", "size"}
    assert {r["direction"] for r in rows.values()} == {"max", "min"}
    for r in rows.values():
        assert isinstance(r["run"], float) and isinstance(r["control"], float)
    plain = ge_here("report", str(evo), "-o", str(tmp_path / "plain.html"), "--json", cwd=tmp_path)
    assert "comparison" not in json.loads(plain.stdout)  # no control, no key
