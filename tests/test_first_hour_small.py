"""The smaller first-hour findings of issue 26 (item 9): a command-line mistake is one line (not
click's boxed panel), a bad flag value names the flag (not `ge.toml:`), and a config error never
shows pydantic's union tags (`'executor.slots.int'`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.cli import ge
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
    line = _one_line(ge(*args, cwd=tmp_path))
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
    ],
)
def test_a_bad_flag_value_names_the_flag_not_the_file(
    flags: list[str], expected: str, tmp_path: Path
) -> None:
    seed = template_seed(tmp_path / "seed")
    line = _one_line(ge("run", str(seed), "--run-dir", str(tmp_path / "run"), *flags, cwd=tmp_path))
    assert line.startswith(expected) and "ge.toml" not in line, line
    assert not (tmp_path / "run").exists()


def test_a_union_keys_error_names_the_key_without_pydantics_tags(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    toml = seed / "ge.toml"
    toml.write_text(toml.read_text().replace("slots = 2", "slots = 1.5"))
    line = _one_line(ge("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path))
    assert "'executor.slots' = 1.5" in line and ".int" not in line, line
    assert "or 'auto'" in line
