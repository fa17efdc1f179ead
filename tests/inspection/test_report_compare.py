"""`ge report RUN --compare CONTROL`: a best_of_n control run's best-so-far lines overlaid on the
run's own axes, and both runs' best values at the shorter run's count of evaluations."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.cli import ge_here
from tests.support.harness import FakeExecutor, run_engine, size_score
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, template_seed


def _run(tmp_path: Path, name: str, **evolution: object) -> Path:
    seed = template_seed(tmp_path / f"{name}-seed", generations=1, population=3, **evolution)
    run = tmp_path / name
    run_engine(seed, run, executor=FakeExecutor(size_score).factory, no_sandbox=True)
    return run


def _cells(html: str) -> list[list[str]]:
    table = re.search(r'<table id="compare-table">(.*?)</table>', html, re.S)
    assert table, "no comparison table"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    return [re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S) for r in rows]


def test_report_overlays_the_control_run_and_compares_at_the_shorter_count(tmp_path: Path) -> None:
    evo = _run(tmp_path, "evo")
    ctl = _run(tmp_path, "ctl", strategy="best_of_n", initial_population=2)
    out = tmp_path / "report.html"
    proc = ge_here("report", str(evo), "--compare", str(ctl), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    labels = ("evolution (evo)", "best_of_n control (ctl)")
    # one overlaid plot per selecting objective, each with both runs' lines, labelled
    for name in ("score", "size"):
        svg = re.search(rf'<svg class="plot"[^>]*aria-label="best {name} over successful evaluations, compared".*?</svg>', html, re.S)
        assert svg, name
        for cls, label in (("best", labels[0]), ("best ctl", labels[1])):
            assert f'<path class="{cls}" data-run="{label}"' in svg.group(0), (name, label)
            assert f">{label}</text>" in svg.group(0)
    rows = _cells(html)
    assert rows[0][2:4] == list(labels)
    # the shorter run's count of successful evaluations: the control ran fewer children
    heading = re.search(r"Best after (\d+) successful evaluations each", html)
    assert heading
    counts = re.search(r"This run: [^,]*, (\d+) successful evaluations; control: .*?, (\d+)\.</p>", html)
    assert counts, "no evaluation counts"
    mine, theirs = int(counts.group(1)), int(counts.group(2))
    assert mine != theirs and int(heading.group(1)) == min(mine, theirs) > 0
    by_name = {r[0]: r for r in rows[1:]}
    assert set(by_name) == {"score", "size"}
    for r in by_name.values():
        float(r[2]), float(r[3])  # both runs have a figure at that count
        assert r[4] in (*labels, "even")
    assert len(out.read_bytes()) < 400_000
    assert "over LLM calls" not in html  # offline runs: no LLM calls to plot against
    # the control run reported on its own is unchanged: no comparison section
    plain = tmp_path / "plain.html"
    assert ge_here("report", str(evo), "-o", str(plain), cwd=tmp_path).returncode == 0
    assert 'id="compare"' not in plain.read_text() and 'id="compare"' in html


def test_compare_value_at_the_shorter_count_is_that_runs_best_then(tmp_path: Path) -> None:
    from guided_evolution.inspection.report_data import collect, compare

    evo, ctl = _run(tmp_path, "evo"), _run(tmp_path, "ctl", strategy="best_of_n", initial_population=2)
    rep, control = collect(evo), collect(ctl)
    cmp = compare(rep, control)
    n = min(len(rep.progress), len(control.progress))
    assert cmp.evaluations == n > 0 and len(rep.progress) != len(control.progress)
    for row in cmp.rows:
        own = [r.scores[row.objective] for r in rep.progress[:n]]
        other = [r.scores[row.objective] for r in control.progress[:n]]
        pick = max if row.direction == "max" else min
        assert (row.run, row.control) == (pick(own), pick(other))


def test_mismatched_objectives_are_refused_in_one_line(tmp_path: Path) -> None:
    evo = _run(tmp_path, "evo")
    seed = template_seed(tmp_path / "other-seed", generations=1, population=3)
    toml = seed / "ge.toml"
    toml.write_text(toml.read_text().replace('direction = "min"', 'direction = "max"'))
    other = tmp_path / "other"
    run_engine(seed, other, executor=FakeExecutor(size_score).factory, no_sandbox=True)
    out = tmp_path / "report.html"
    proc = ge_here("report", str(evo), "--compare", str(other), "-o", str(out), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "objective size is min in evo but max in other" in lines[0]
    assert not out.exists()


def test_runs_with_llm_calls_are_also_overlaid_by_calls(tmp_path: Path) -> None:
    runs = []
    for name, evolution in (("evo", {}), ("ctl", {"strategy": "best_of_n"})):
        seed = template_seed(tmp_path / f"{name}-seed", generations=1, population=3, **evolution)
        with serve(responder=CodeWriter()) as server:
            run_engine(seed, tmp_path / name, executor=FakeExecutor(size_score).factory,
                       model="openai/test-model", api_base=server.base_url, no_sandbox=True)  # fmt: skip
        runs.append(tmp_path / name)
    out = tmp_path / "report.html"
    assert ge_here("report", str(runs[0]), "--compare", str(runs[1]), "-o", str(out), cwd=tmp_path).returncode == 0
    html = out.read_text()
    svg = re.search(r'aria-label="best score over LLM calls, compared".*?</svg>', html, re.S)
    assert svg, "no plot by LLM calls"
    assert 'data-run="evolution (evo)"' in svg.group(0)
    assert 'data-run="best_of_n control (ctl)"' in svg.group(0)
    assert ">LLM calls</text>" in svg.group(0)
