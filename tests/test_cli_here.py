"""``tests.support.cli.ge_here`` (`ge` through ``cli.main`` in the test's process) prints what the
real `ge` process prints: exit code, stdout and stderr, for text, JSON and a one-line error.
Tests that check a read-only command's output rely on it instead of a subprocess each."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import ge, ge_here

CASES = {
    "status": (["status", "{run}"], {"COLUMNS": "200"}),
    "best-json": (["best", "{run}", "--json"], {}),
    "log": (["log", "{run}"], {"COLUMNS": "120"}),
    "bad-id": (["show", "{run}", "nosuchvariant"], {}),
    "not-a-run": (["status", "{parent}"], {}),
    "no-such-command": (["nosuch"], {}),
    "run-no-seed": (["run", "{parent}/no-seed", "--run-dir", "{parent}/never"], {}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_in_process_ge_prints_what_the_ge_process_prints(case: str, template_run: Path) -> None:
    argv, env = CASES[case]
    args = [a.format(run=template_run, parent=template_run.parent) for a in argv]
    real = ge(*args, cwd=template_run.parent, env=env)
    here = ge_here(*args, cwd=template_run.parent, env=env)
    assert (here.returncode, here.stdout, here.stderr) == (
        real.returncode,
        real.stdout,
        real.stderr,
    )
    assert real.stdout or real.stderr
    assert (real.returncode != 0) == (case in ("bad-id", "not-a-run", "no-such-command", "run-no-seed"))
