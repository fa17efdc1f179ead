"""What a `ge` process imports: each command loads what it uses, nothing more (the suite starts
`ge` about a thousand times, and every module a command does not need costs each of them CPU).

Each test runs the real entry point under ``python -X importtime`` and reads the modules it
loaded from stderr; the command itself must succeed, so a run that failed early (and so
imported little) cannot pass. `benchmarks/startup.py` measures what the imports cost.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENGINE_AND_EVALUATION = ("guided_evolution.engine", "guided_evolution.evaluation")
LLM_CLIENTS = ("litellm", "openai", "httpx", "torch")


def _imported(args: list[str], cwd: Path) -> tuple[set[str], str]:
    """The modules ``ge ARGS`` imported, and its stdout (the command must exit 0)."""
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "guided_evolution", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    lines = proc.stderr.splitlines()
    assert proc.returncode == 0, "\n".join(x for x in lines if not x.startswith("import time:"))
    modules = {x.rsplit("|", 1)[1].strip() for x in lines if x.startswith("import time:")}
    assert "guided_evolution.cli" in modules, "no import trace: is -X importtime ignored?"
    return modules, proc.stdout


def _loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in packages or m.startswith(packages))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, template_run: Path) -> Path:
    """A private copy of the finished template run (the views may store lazy measures in it)."""
    import shutil

    return Path(shutil.copytree(template_run, tmp_path_factory.mktemp("startup") / "run"))


@pytest.mark.parametrize("command", ["status", "best", "log", "show"])
def test_an_inspection_command_imports_neither_engine_nor_llm_clients(
    run: Path, tmp_path: Path, command: str
) -> None:
    """The views read the index and git: no engine, executor, sandbox, LLM client or asyncio;
    no pygments but for a diff (`ge show` of a child prints one); not click itself (typer
    vendors it), nor `ge serve`'s module, nor tomllib."""
    args = [command, str(run)] + (["seed"] if command == "show" else [])
    modules, out = _imported(args, tmp_path)
    assert out.strip(), f"ge {command} printed nothing"
    assert "guided_evolution.inspection.terminal" in modules
    assert _loaded(modules, ENGINE_AND_EVALUATION + LLM_CLIENTS) == []
    assert _loaded(modules, ("asyncio", "pygments", "click", "guided_evolution.serve")) == []
    assert "tomllib" not in modules, "the run's config is config.json: TOML is for ge.toml"


def test_a_json_view_imports_no_rich(run: Path, tmp_path: Path) -> None:
    """`--json` prints JSON: rich and the terminal rendering are left unloaded."""
    modules, out = _imported(["status", str(run), "--json"], tmp_path)
    assert '"generation' in out
    assert _loaded(modules, ("rich", "guided_evolution.inspection.terminal")) == []


def test_help_imports_no_config_store_or_api(tmp_path: Path) -> None:
    """`ge --help` is typer and rich: no pydantic config, git, API or engine."""
    modules, out = _imported(["--help"], tmp_path)
    assert "Guided Evolution" in out and "status" in out
    heavy = ("pydantic", "pygit2", "guided_evolution.config", "guided_evolution.api")
    assert _loaded(modules, heavy + ENGINE_AND_EVALUATION) == []


def test_an_offline_run_imports_no_llm_client(tmp_path: Path) -> None:
    """The built-in offline proposer needs neither litellm nor the openai client (nor torch),
    nor the LLM preflight; a local executor no SLURM modules; a progress that is no terminal's
    panel no rich.live."""
    from tests.support.seeds import template_seed

    seed = template_seed(tmp_path / "seed", generations=0, initial_population=2)
    args = ["run", str(seed), "--run-dir", str(tmp_path / "run"), "--no-sandbox", "--json"]
    modules, out = _imported(args, tmp_path)
    assert '"run_dir"' in out
    assert "guided_evolution.engine.session" in modules
    assert _loaded(modules, LLM_CLIENTS) == []
    lazy = ("guided_evolution.llm.preflight", "guided_evolution.evaluation.slurm", "rich.live")
    assert _loaded(modules, (*lazy, "click")) == []
