"""The first hour with ge (issue 13): Ctrl-C, finding the latest run, live/stopped status,
extending a finished run, credentials checked before the run exists, readable failures and help.

Every test drives the real `ge` entry point in a subprocess on the offline template seed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.cli import ge, run_json
from tests.support.seeds import template_seed


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "guided_evolution", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_ctrl_c_says_where_the_run_is_and_how_to_resume(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=3)
    run = tmp_path / "run"
    proc = _start(["run", str(seed), "--run-dir", str(run)], tmp_path)
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the run directory is named as the run starts
    assert f"run: {run}" in first, first
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted in generation" in err and "children so far" in err, err
    assert f"ge resume {run}" in err, err
    assert "Traceback" not in err
    done = run_json("resume", str(run), cwd=tmp_path)
    assert done["finished"] and done["generation"] == 3


def _commands() -> list[tuple[list[str], str]]:
    """Every command of `ge` (the app itself first) with its help text as written."""
    import typer.main

    from guided_evolution.cli import app

    group = typer.main.get_command(app)
    return [([], group.help or "")] + [
        ([name], cmd.help or "")
        for name, cmd in group.commands.items()  # type: ignore[attr-defined]
    ]


def test_every_help_reads_as_written(tmp_path: Path) -> None:
    import inspect
    import re

    from rich.text import Text

    for words, help_text in _commands():
        proc = ge(*words, "--help", cwd=tmp_path, env={"COLUMNS": "400"})
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert "<bool>" not in out, words
        assert not re.search(r"\[/?(bold|red|green|dim|cyan)\]", out), (words, out)
        lines = [" ".join(line.strip(" │").split()) for line in out.splitlines()]
        for paragraph in inspect.cleandoc(help_text).split("\n\n"):
            plain = " ".join(Text.from_markup(paragraph).plain.split())
            assert plain in lines, (words, plain, out)  # one paragraph, one unbroken line
    run_help = ge("run", "--help", cwd=tmp_path, env={"COLUMNS": "400"}).stdout
    assert "Apply the [profile.NAME] tables" in run_help
