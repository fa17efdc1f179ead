"""Tests of the tiny_cnn smoke seed: its check, its metrics, determinism, its ge.toml."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from guided_evolution.config import load_config
from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import EvalRequest
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.workers.preload import preload_pool

if not all(importlib.util.find_spec(m) for m in ("torch", "numpy")):  # not imported here
    pytest.skip("the tiny_cnn seed needs torch and numpy", allow_module_level=True)

SEED = Path(__file__).resolve().parents[2] / "seeds" / "tiny_cnn"
METRICS = ("val_accuracy", "params", "test_accuracy", "train_seconds")


def _copy_seed(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("model.py", "evaluate.py"):
        shutil.copy(SEED / name, dest / name)
    return dest


def _check(workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "evaluate.py", "--check"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def seed_check(tmp_path_factory: pytest.TempPathFactory) -> subprocess.CompletedProcess[str]:
    """`python evaluate.py --check` of the seed, run once for the tests that read it."""
    return _check(_copy_seed(tmp_path_factory.mktemp("check") / "seed"))


@pytest.fixture(scope="module")
def two_evaluations(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, float]]:
    """The seed evaluated twice at once (2 slots), once via $GE_METRICS and once via --metrics."""
    runs = []
    for i, via_env in enumerate((True, False)):
        workdir = _copy_seed(tmp_path_factory.mktemp("eval") / f"v{i}")
        metrics = workdir.parent / "metrics.json"
        env = dict(os.environ)
        env.pop("GE_METRICS", None)
        cmd = [sys.executable, "evaluate.py"]
        if via_env:
            env["GE_METRICS"] = str(metrics)
        else:
            cmd += ["--metrics", str(metrics)]
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        runs.append((proc, metrics))
    results = []
    for proc, metrics in runs:
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, output
        results.append(json.loads(metrics.read_text()))
    return results


def test_check_passes_and_counts_params(seed_check: subprocess.CompletedProcess[str]) -> None:
    proc = seed_check
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"check ok: \d+ parameters", proc.stdout)


def test_check_rejects_a_wrong_output_shape(tmp_path: Path) -> None:
    workdir = _copy_seed(tmp_path / "broken")
    model = workdir / "model.py"
    text = model.read_text()
    assert "num_classes=10" in text
    model.write_text(text.replace("num_classes=10", "num_classes=9"))
    proc = _check(workdir)
    assert proc.returncode != 0
    assert "output shape" in proc.stderr and "(4, 9)" in proc.stderr


@pytest.mark.slow  # trains the CNN
def test_evaluation_writes_every_metric_above_chance(
    two_evaluations: list[dict[str, float]], seed_check: subprocess.CompletedProcess[str]
) -> None:
    metrics = two_evaluations[0]
    assert set(METRICS) <= set(metrics)
    assert all(isinstance(metrics[k], (int, float)) and math.isfinite(metrics[k]) for k in METRICS)
    assert metrics["val_accuracy"] > 0.5  # chance is 0.1
    assert metrics["test_accuracy"] > 0.5
    assert metrics["train_seconds"] > 0
    assert f"check ok: {metrics['params']} parameters" in seed_check.stdout


@pytest.mark.slow  # trains the CNN
def test_evaluation_is_deterministic(two_evaluations: list[dict[str, float]]) -> None:
    first, second = two_evaluations
    for key in ("val_accuracy", "test_accuracy", "params"):
        assert first[key] == second[key], key


@pytest.mark.slow  # trains the CNN
def test_forked_evaluation_gives_what_a_fresh_process_gives(
    two_evaluations: list[dict[str, float]], tmp_path: Path
) -> None:
    """The seed's `preload` (torch, numpy): check and evaluate run in forks of a worker that
    imported them once, with the same metrics as a fresh `python evaluate.py`."""
    config = load_config(SEED / "ge.toml")
    assert set(config.evaluator.preload.modules) == {"torch", "numpy"}
    sandbox = Sandbox(SandboxPolicy())
    try:
        sandbox.probe()
    except GeError as exc:
        pytest.skip(f"no sandbox here: {exc}")
    pool, warnings = preload_pool(
        sandbox, config.evaluator.preload.modules, config.evaluator.command, config.evaluator.check,
        start_timeout_s=120.0, recycle_after=config.evaluator.preload.recycle_after,
        work_dir=tmp_path / "run" / "work", run_dir=tmp_path / "run",
    )
    if pool is None:
        pytest.skip(warnings[0])
    workdir = _copy_seed(tmp_path / "run" / "work" / "v0")
    request = EvalRequest(
        variant_id="v0", workdir=workdir, run_dir=tmp_path / "run",
        command=config.evaluator.command, check_command=config.evaluator.check,
        timeout_s=120.0, check_timeout_s=60.0, metrics_path=workdir / ".ge" / "metrics.json",
        log_path=tmp_path / "run" / "logs" / "v0.log", objectives=METRICS, env={},
    )
    executor = LocalExecutor(1, None, None, sandbox, workers=pool)

    async def main() -> object:
        try:
            return await executor.evaluate(request)
        finally:
            await executor.aclose()

    result = asyncio.run(main())
    log = request.log_path.read_text()
    assert result.status == "ok", log
    assert "check via the worker" in log and "evaluate via the worker" in log
    for key in ("val_accuracy", "test_accuracy", "params"):
        assert result.metrics[key] == two_evaluations[0][key], key


def test_config_loads_and_selects_validation_metrics_only() -> None:
    config = load_config(SEED / "ge.toml")
    assert [(o.name, o.direction) for o in config.selected_objectives] == [
        ("val_accuracy", "max"),
        ("params", "min"),
    ]
    assert {o.name for o in config.objectives} == set(METRICS)
    assert config.llm.offline
    assert config.executor.slots == 2
    assert config.evaluator.check is not None and "--check" in config.evaluator.check
    assert all((SEED / config.seed.dir / f).is_file() for f in config.seed.files)


def test_model_is_marked_into_segments() -> None:
    config = load_config(SEED / "ge.toml")
    text = (SEED / "model.py").read_text()
    parts = text.split(f"\n{config.seed.marker}\n")
    header, segments = parts[0], parts[1:]
    assert "import torch" in header
    assert len(segments) >= 3
    assert any(s.lstrip().startswith("def get_optimizer(") for s in segments)
    net = next(s for s in segments if s.lstrip().startswith("class Net("))
    assert net.count("# -- NOTE --") == 2
    compile(text, "model.py", "exec")
