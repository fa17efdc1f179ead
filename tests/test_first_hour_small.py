"""The smaller first-hour findings of issue 26 (item 9): a command-line mistake is one line (not
click's boxed panel), a bad flag value names the flag (not `ge.toml:`), a config error never
shows pydantic's union tags (`'executor.slots.int'`), the counts add up (the seed is named),
status and the stop reason name the same generation, `ge log --bandit` says why it is empty, and
the report says "offline" only on offline runs."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.inspection.report_bandit import BanditView, TokenView, bandit_html
from guided_evolution.runstore.records import META_FINISHED
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge, ge_here
from tests.support.seeds import template_seed


def _one_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "╭" not in proc.stderr and "Traceback" not in proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["init"], ["Missing argument 'DIRECTORY'", "init [OPTIONS] DIRECTORY;", "init --help`"]),
        (["best", "--bogus"], ["No such option: --bogus", "best --help`"]),
        (["nosuch"], ["No such command 'nosuch'", "guided_evolution --help`"]),
        (["run", "--slots", "x"], ["'--slots'", "run --help`"]),
        (["status", "a", "b"], ["unexpected extra argument(s) (b)", "status --help`"]),
    ],
)
def test_a_command_line_mistake_is_one_line(args: list[str], words: list[str], tmp_path: Path) -> None:
    line = _one_line(ge_here(*args, cwd=tmp_path))
    for word in words:
        assert word in line, line


def test_help_version_and_a_doctor_finding_keep_their_exit_codes(tmp_path: Path) -> None:
    assert ge("--version", cwd=tmp_path).returncode == 0
    assert ge("init", "--help", cwd=tmp_path).returncode == 0
    assert ge(cwd=tmp_path).returncode == 2  # `ge` alone: its help, as before


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--slots", "0"], 'error: --slots 0: must be >= 1 or "auto"'),
        (["--generations", "-1"], "error: --generations -1: "),
        (["--executor", "gpu"], 'error: --executor "gpu": '),
        (["--model", ""], 'error: --model "": '),
        (["--budget-usd", "-1"], "error: --budget-usd -1.0: "),
        (["--model", "offline", "--model", "gpt-4o"], "error: --model (with the [llm] table of "),
    ],
)
def test_a_bad_flag_value_names_the_flag_not_the_file(
    flags: list[str], expected: str, tmp_path: Path
) -> None:
    seed = template_seed(tmp_path / "seed")
    line = _one_line(ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), *flags, cwd=tmp_path))
    assert line.startswith(expected) and ("ge.toml" not in line or "table of" in expected), line
    assert not (tmp_path / "run").exists()


def test_a_union_keys_error_names_the_key_without_pydantics_tags(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    toml = seed / "ge.toml"
    toml.write_text(toml.read_text().replace("slots = 2", "slots = 1.5"))
    line = _one_line(ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path))
    assert "'executor.slots' = 1.5" in line and ".int" not in line, line
    assert "or 'auto'" in line


def test_the_summary_and_status_counts_add_up_and_name_the_seed(
    template_run: Path, copy_run: Any, tmp_path: Path
) -> None:
    run = copy_run(template_run)
    summary = ge_here("resume", str(run), cwd=tmp_path)  # a finished run prints its summary again
    assert summary.returncode == 0, summary.stderr
    found = re.search(r"(\d+) children \+ seed: (\d+) evaluated, (\d+) failed,", summary.stdout)
    assert found, summary.stdout
    children, evaluated, failed = map(int, found.groups())
    assert evaluated + failed == children + 1
    with RunIndex.open(run / "index.sqlite") as index:  # as a run stopped by Ctrl-C in gen 2
        index.set_meta(META_FINISHED, "")
        index.add_event("generation_started", {"generation": 2, "plans": 4})
        index.add_event("run_interrupted", {"generation": 2})
    status = ge_here("status", str(run), cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    assert "generation 1/1 completed, generation 2 unfinished" in status, status
    assert "interrupted (Ctrl-C) in generation 2" in status
    assert f"{children} children + seed: {evaluated} evaluated, {failed} failed" in status


def test_log_bandit_on_an_offline_run_says_why_it_shows_no_arm(
    template_run: Path, tmp_path: Path
) -> None:
    proc = ge_here("log", str(template_run), "--bandit", cwd=tmp_path)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert proc.returncode == 0 and len(lines) == 1, proc.stdout
    assert lines[0].startswith("no bandit arms to show: an offline run has no models"), lines


def test_the_reports_arm_heading_says_offline_only_on_offline_runs() -> None:
    arm = {"arm": "x", "pulls": 1, "improvements": 0, "rate": 0.0, "cost_usd": 0.0}
    tokens = TokenView([], 0, None)
    llm = bandit_html(BanditView("off", False, [arm, arm], [arm]), tokens)
    offline = bandit_html(BanditView("off", False, [], [arm]), tokens)
    assert "<h3>operator/persona</h3>" in llm and "offline" not in llm
    assert "<h3>edit class (offline)</h3>" in offline and "operator/persona" not in offline


def _quotes_an_output_tail(node: ast.AST) -> bool:
    """``x.stderr[-300:]`` (a slice of a process's output) inside an expression."""
    return any(
        isinstance(n, ast.Subscript)
        and isinstance(n.slice, ast.Slice)
        and isinstance(n.value, ast.Attribute)
        and n.value.attr in ("stderr", "stdout")
        for n in ast.walk(node)
    )


def test_no_skip_reason_quotes_an_output_tail() -> None:
    """A skip reason is one line: an output tail (a traceback) made one a dozen lines long."""
    found = []
    for path in sorted(Path(__file__).parent.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "skip"
                and any(_quotes_an_output_tail(a) for a in node.args)
            ):
                found.append(f"{path.name}:{node.lineno}")
    assert not found, found


@pytest.mark.parametrize("typo", ["#--OPTION--", "# --option--", "# --OPTOIN--"])
def test_a_marker_typo_gets_a_did_you_mean(typo: str, tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    model = seed / "model.py"
    model.write_text(model.read_text().replace("# --OPTION--", typo))
    line = _one_line(ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path))
    assert "has no segment marker" in line and f"did you mean '# --OPTION--'? line 7 is '{typo}'" in line
    assert not (tmp_path / "run").exists()
