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

from tests.support.cli import run_json
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
