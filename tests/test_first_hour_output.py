"""`ge run` in a log file or CI (issue 26 item 3): stderr is not a terminal, so a plain progress
line per generation (steady mode: per generation drawn, i.e. per `population` children) and at
least every minute; the final table whole (no name cut to 80 columns); `--json` unchanged."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

from guided_evolution.engine.progress import LogProgress, make_progress
from guided_evolution.evolution.scoring import Scored
from tests.support.cli import ge_here
from tests.support.seeds import template_seed

LONG = "held_out_validation_accuracy_top1_percent"  # a reported metric's name, 41 characters


def _seed(tmp_path: Path, **evolution: object) -> Path:
    """The `ge init` seed (3 generations of 3) whose evaluator also writes the long-named metric."""
    seed = template_seed(
        tmp_path / "seed", generations=3, population=3, initial_population=3, **evolution
    )
    evaluate = seed / "evaluate.py"
    text = evaluate.read_text()
    evaluate.write_text(text.replace('"size": size}', f'"size": size, "{LONG}": 0.5}}'))
    with (seed / "ge.toml").open("a") as fh:
        fh.write(f'\n[[objectives]]\nname = "{LONG}"\ndirection = "max"\nselect = false\n')
    return seed


def _progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if re.match(r"\[\d+s\] (seed|generation)", line)]


def test_a_run_into_a_file_prints_a_line_per_generation_and_its_table_whole(tmp_path: Path) -> None:
    seed = _seed(tmp_path)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _progress_lines(proc.stderr)
    started = [line for line in lines if " started " in line]
    assert [re.search(r"generation (\d+)/3", line)[1] for line in started] == ["0", "1", "2", "3"]
    assert " generation 3/3 done " in lines[-1]
    for line in lines:
        assert "evaluated" in line and "failed" in line and "rejected" in line
        assert re.search(r"front: \d+  best score ↑ \S+ \([0-9a-f]{8}\)  size ↓ \d+", line), line
        assert "LLM $0.0000" in line
    evaluated = [int(re.search(r"(\d+) evaluated", line)[1]) for line in started]
    assert evaluated == sorted(evaluated) and evaluated[-1] > evaluated[0]
    # the final table, in a pipe: every column's name whole, nothing cut with an ellipsis
    assert LONG in proc.stdout and "score ↑" in proc.stdout and "size ↓" in proc.stdout
    assert "…" not in proc.stdout
    assert "offline-mutation" in proc.stdout
    summary = [line for line in proc.stdout.splitlines() if " LLM calls (" in line]
    assert len(summary) == 1 and "completed 3 generations" in summary[0]  # not wrapped


def test_steady_mode_prints_a_line_per_population_of_children(tmp_path: Path) -> None:
    seed = _seed(tmp_path, mode="steady")
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = _progress_lines(proc.stderr)
    started = [line.split()[2] for line in lines if " started " in line]
    assert started == ["0/3", "1/3", "2/3", "3/3"]
    assert " done " in lines[-1]


def test_json_output_has_no_progress_lines(tmp_path: Path) -> None:
    seed = _seed(tmp_path)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["finished"] is True
    assert _progress_lines(proc.stderr) == []
    assert type(make_progress(True)).__name__ == "Progress"


def test_a_long_wait_still_prints_a_line_every_interval() -> None:
    out = io.StringIO()
    progress = LogProgress([("score", "max")], generations=2, every_s=0.05, stream=out)
    with progress:
        progress.generation(1, 2, 4)
        progress.best(Scored("a" * 16, {"score": 0.5}))
        time.sleep(0.6)  # an evaluation that takes long: nothing else happens
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[0s] generation 1/2 started  0 evaluated")
    running = [line for line in lines if " running " in line]
    assert len(running) >= 3, lines
    assert all("best score ↑ 0.5 (aaaaaaaa)" in line for line in running)
    assert lines[-1].startswith("[0s] generation 1/2 done")
