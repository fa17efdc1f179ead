"""`ge run` against an endpoint that cannot work fails before the run directory exists: a port
nothing listens on, a host that does not resolve, a bare model name litellm cannot route. Each
gives one line naming the fix (exit 2), no run directory, no `runs/latest` (issue 26 item 2)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from guided_evolution.llm.preflight import plan, route_problem
from guided_evolution.llm.settings import ModelSpec
from tests.support.cli import ge_here
from tests.support.seeds import template_seed

_NO_KEYS = {"OPENAI_API_KEY": "", "OPENAI_BASE_URL": "", "OPENAI_API_BASE": ""}


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _refused_run(tmp_path: Path, *flags: str) -> str:
    """`ge run` in ``tmp_path`` with ``flags``: its one stderr line, after checking that it
    failed as a user error and left no run behind."""
    seed = template_seed(tmp_path / "seed", generations=1)
    env = {k: v for k, v in os.environ.items() if k not in _NO_KEYS}
    proc = ge_here("run", str(seed), *flags, cwd=tmp_path, env={**env, **_NO_KEYS})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").iterdir())
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), list(tmp_path.iterdir())
    return " ".join(proc.stderr.split())


def test_a_port_nothing_listens_on_fails_before_the_run(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{_closed_port()}/v1"
    line = _refused_run(tmp_path, "--model", "openai/fake", "--api-base", base)
    assert f"nothing listens on 127.0.0.1:{base.split(':')[2][:-3]} (connection refused)" in line
    assert "start the server, or fix the port in --api-base" in line


def test_an_unknown_host_fails_before_the_run(tmp_path: Path) -> None:
    base = "http://nonexistent.invalid:8000/v1"
    line = _refused_run(tmp_path, "--model", "openai/fake", "--api-base", base)
    assert "its host 'nonexistent.invalid' is unknown" in line
    assert "fix the host in --api-base" in line


def test_a_model_name_litellm_cannot_route_fails_before_the_run(tmp_path: Path) -> None:
    line = _refused_run(tmp_path, "--model", "gpt4o-mini")
    assert "litellm cannot route model 'gpt4o-mini'" in line
    assert "did you mean --model gpt-4o-mini?" in line


@pytest.mark.parametrize(
    ("model", "api_base", "routable"),
    [
        ("gpt4o-mini", None, False),
        ("gpt-4o-mini", None, True),  # in the table
        ("openai/gpt4o-mini", None, True),  # a provider: litellm routes it (the server judges)
        ("gpt4o-mini", "http://127.0.0.1:9/v1", True),  # a server: the openai client's path
        ("ft:gpt-4o-mini:org::id", None, True),  # fine-tuned names are not in the table
    ],
)
def test_route_problem_only_for_a_bare_unknown_name_without_a_server(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    api_base: str | None,
    routable: bool,
) -> None:
    for var in _NO_KEYS:
        monkeypatch.delenv(var, raising=False)
    table = tmp_path / "prices.json"
    table.write_text(json.dumps({"gpt-4o-mini": {}, "openai/gpt-4o": {}, "o3-mini": {}}))
    problem = route_problem(plan(ModelSpec(model, api_base=api_base)), table)
    assert (problem is None) == routable, problem
