"""MLflow tracking (issue 28 item 3), against the real `mlflow` package and a local file store:
a tracked run logs one MLflow run per settled variant under one parent run, `ge resume` adds
none twice, a variant's metric names and values cannot break or inject into MLflow, and a store
that fails is one warning while the run finishes."""

from __future__ import annotations

import importlib.util
import io
import math
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.support.harness import FakeExecutor, resume_engine, run_engine, size_score, view_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, template_seed

if importlib.util.find_spec("mlflow") is None:  # imported where used: not by every worker
    pytest.skip(
        "the mlflow extra is not installed: pip install -e '.[mlflow]'", allow_module_level=True
    )
if TYPE_CHECKING:
    from mlflow import MlflowClient

SETTLED = ("evaluated", "failed", "invalid")


@pytest.fixture(autouse=True)
def _file_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's own client reads the file store that ge's follower wrote (MLflow 3 asks)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")


def tracked_seed(root: Path, uri: str, **evolution: Any) -> Path:
    seed = template_seed(root / "seed", **evolution)
    config = seed / "ge.toml"
    config.write_text(
        config.read_text() + f'\n[tracking]\nmlflow = "{uri}"\ninterval_s = 0.2\n'
    )
    return seed


def client_of(store: Path) -> MlflowClient:
    """An MLflow client of the file store ``store``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=store.as_uri())


def variant_runs(client: MlflowClient, experiment: str) -> tuple[Any, list[Any]]:
    """The parent run and the variant runs of an experiment (active ones only)."""
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id], max_results=5000)
    parents = [r for r in runs if r.data.tags.get("ge.role") == "run"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if "ge.variant" in r.data.tags]


def settled(run: Path) -> dict[str, Any]:
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    try:
        return {v.id: v for v in index.variants() if v.status in SETTLED}
    finally:
        index.close()


def check_logged(client: MlflowClient, run: Path) -> list[Any]:
    """Every settled variant logged exactly once, with its parameters, metrics and tags, and the
    front tags as `ge best` says."""
    parent, runs = variant_runs(client, run.name)
    variants = settled(run)
    ids = [r.data.tags["ge.variant"] for r in runs]
    assert sorted(ids) == sorted(variants), "one MLflow run per settled variant, none twice"
    front = {row["id"] for row in view_json("best", run)["front"]}
    for r in runs:
        v = variants[r.data.tags["ge.variant"]]
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["ge.branch"] == v.branch
        assert r.data.tags["ge.front"] == ("true" if v.id in front else "false")
        assert r.data.params["generation"] == str(v.generation)
        assert r.data.params["operator"] == v.operator
        assert r.data.params.get("parents", "") == ",".join(v.parents)
        assert {"score", "size", "ge.llm_cost_usd", "ge.llm_tokens"} <= set(r.data.metrics)
    return runs


PRICED = 'models = [{ model = "openai/priced", input_cost_per_token = 0.001, output_cost_per_token = 0.001 }]'


@pytest.mark.slow
def test_a_tracked_run_logs_each_variant_once_and_resume_adds_none_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # "file:./mlruns" is relative to where ge runs
    seed = tracked_seed(tmp_path, "file:./mlruns", generations=1)
    config = seed / "ge.toml"
    config.write_text(config.read_text().replace('models = ["offline"]', PRICED))
    run = tmp_path / "run"
    fake = FakeExecutor(size_score)
    with serve(responder=CodeWriter()) as server:
        summary = run_engine(seed, run, executor=fake.factory, api_base=server.base_url)
        assert summary["warnings"] == [] and summary["cost_usd"] > 0
        store = (tmp_path / "mlruns").resolve()
        client = client_of(store)
        runs = check_logged(client, run)
        parent, _ = variant_runs(client, run.name)
        assert parent.info.status == "FINISHED"
        assert parent.data.params["evolution.generations"] == "1"
        assert parent.data.metrics["ge.children"] == summary["children"]
        assert parent.data.metrics["ge.llm_cost_usd"] == pytest.approx(summary["cost_usd"])
        assert "config.json" in [a.path for a in client.list_artifacts(parent.info.run_id)]
        child = next(r for r in runs if r.data.params.get("parents"))
        assert child.data.params["model"] == "openai/priced" and child.data.params["persona"]
        assert child.data.metrics["ge.llm_tokens"] > 0 and child.data.metrics["ge.llm_cost_usd"] > 0
        patch = client.download_artifacts(child.info.run_id, "diff.patch", str(tmp_path))
        expected = view_json(
            "diff", run, a=child.data.tags["ge.variant"], b=child.data.params["parents"].split(",")[0]
        )["diff"]
        assert Path(patch).read_text() == expected and expected.startswith("diff --git")

        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)  # the store resolved at the first start is kept
        resumed = resume_engine(run, executor=fake.factory, generations=3)
    assert resumed["children"] > summary["children"]
    assert not (elsewhere / "mlruns").exists()
    runs = check_logged(client, run)
    ids = [r.data.tags["ge.variant"] for r in runs]
    assert len(ids) == len(set(ids)) == len(settled(run))
    parent, _ = variant_runs(client, run.name)
    assert parent.data.metrics["ge.llm_cost_usd"] == pytest.approx(resumed["cost_usd"])


HOSTILE: dict[str, Any] = {
    "../../escaped": 1.0,
    "/abs/path": 2.0,
    "a//b/./c/..": 3.0,
    ".": 4.0,
    "": 5.0,
    "tab\tand\nnewline": 6.0,
    "naïve résumé": 7.0,
    "x" * 1000: 8.0,
    "ge.llm_cost_usd": 999.0,  # one of ge's own keys
    "ge." + "y" * 247: 11.0,  # a valid 250-character key, too long once set apart from ge's
    "a:b": 9.0,
    "a_b": 10.0,  # what a:b would be cleaned to
    "nan": math.nan,
    "inf": math.inf,
    "text": "12",
    "flag": True,
    "huge": 10**400,
    **{f"m{i:03d}": float(i) for i in range(150)},
}


def hostile_score(files: dict[str, str]) -> dict[str, Any]:
    return {**size_score(files), **HOSTILE}


def test_hostile_metric_names_and_values_are_made_safe(tmp_path: Path) -> None:
    from mlflow.utils import validation

    store = tmp_path / "mlruns"
    seed = tracked_seed(tmp_path, store.as_uri(), generations=1)
    run = tmp_path / "run"
    summary = run_engine(seed, run, executor=FakeExecutor(hostile_score).factory)
    assert summary["warnings"] == [] and summary["failed"] == 0
    client = client_of(store)
    runs = check_logged(client, run)
    assert {p.name for p in tmp_path.iterdir()} == {"seed", "run", "mlruns"}, "nothing escaped"
    for r in runs:
        metrics = r.data.metrics
        assert r.data.metrics["ge.llm_cost_usd"] == 0.0, "a variant's metric is not ge's cost"
        assert metrics["variant.ge.llm_cost_usd"] == 999.0  # ... it is kept, under its own key
        assert all(math.isfinite(v) for v in metrics.values())
        assert {6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 1.0, 2.0, 3.0} <= set(metrics.values())
        for key in metrics:
            assert validation.validate_param_and_metric_name(key), key
            assert not validation.path_not_unique(key), key
            assert len(key) <= 250
        own = [k for k in metrics if not k.startswith("ge.")]
        assert len(own) == 100, "a variant's metrics are capped (objectives first)"
        assert {"score", "size"} <= set(own)


def test_a_failing_store_is_one_warning_and_the_run_finishes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    seed = tracked_seed(tmp_path, (blocker / "mlruns").as_uri(), generations=1)
    summary = run_engine(seed, tmp_path / "run", executor=FakeExecutor(size_score).factory)
    assert summary["finished"] and summary["children"] > 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "MLflow" in ln]
    assert len(lines) == 1, lines
    assert lines[0].startswith("warning: MLflow tracking failed (")
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.slow
def test_the_hint_without_mlflow_logs_the_run_and_replaces_a_half_logged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "mlruns"
    seed = tracked_seed(tmp_path, store.as_uri(), generations=1)
    run = tmp_path / "run"
    real = __import__("importlib").util.find_spec

    def without_mlflow(name: str, *args: Any) -> Any:
        return None if name == "mlflow" else real(name, *args)

    with monkeypatch.context() as patched:
        patched.setattr("importlib.util.find_spec", without_mlflow)
        run_engine(seed, run, executor=FakeExecutor(size_score).factory)
    warning = [ln for ln in capsys.readouterr().err.splitlines() if "MLflow" in ln]
    assert len(warning) == 1 and "is not installed" in warning[0]
    assert not store.exists()
    hint = warning[0].split("`")[3]  # `pip install ...`, then `python -m ... --once`
    assert hint == f"python -m guided_evolution.tracking.follower {run} --once"
    command = [sys.executable, *hint.split()[1:]]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_ALLOW_FILE_STORE"}  # as a user's

    def once() -> str:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    assert once().startswith(f"logged {len(settled(run))} new variant run(s) of {run}")
    client = client_of(store)
    _, runs = variant_runs(client, run.name)
    victim = runs[0]
    client.delete_tag(victim.info.run_id, "ge.logged")  # as a follower killed mid-way leaves it
    assert once().startswith("logged 1 new variant run(s)")
    check_logged(client, run)
    assert client.get_run(victim.info.run_id).info.lifecycle_stage == "deleted"


def test_a_variant_mlflow_refuses_is_left_out_and_holds_back_no_other(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Were a variant's metric to get past the key cleaning (here: cleaning switched off), MLflow
    refuses that variant alone: one line says so, the others and the parent run are logged."""
    from guided_evolution.tracking import follower, snapshot

    store = tmp_path / "mlruns"
    seed = tracked_seed(tmp_path, store.as_uri(), generations=1)
    seen: list[bool] = []

    def one_hostile(files: dict[str, str]) -> dict[str, Any]:
        seen.append(True)  # the first variant evaluated reports a name MLflow refuses
        return {**size_score(files), **({"../escaped": 1.0} if len(seen) == 1 else {})}

    run = tmp_path / "run"
    run_engine(seed, run, executor=FakeExecutor(one_hostile).factory)
    client = client_of(store)
    for found in client.search_runs([client.get_experiment_by_name(run.name).experiment_id]):
        client.delete_run(found.info.run_id)  # start from an empty experiment
    monkeypatch.setattr(snapshot, "clean_key", str)
    out = io.StringIO()
    assert follower.follow(run, out, threading.Event(), once=True) == 0
    lines = out.getvalue().splitlines()
    refused = [ln for ln in lines if ln.startswith("MLflow refused variant")]
    assert len(refused) == 1 and "it is left out" in refused[0]
    _, runs = variant_runs(client, run.name)
    assert len(runs) == len(settled(run)) - 1
    assert lines[-1].startswith(f"logged {len(runs)} new variant run(s)")


def test_two_runs_of_one_seed_in_one_experiment_keep_their_own_runs(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    seed = tracked_seed(tmp_path, store.as_uri(), generations=1)
    config = seed / "ge.toml"
    config.write_text(config.read_text().replace("[tracking]\n", '[tracking]\nexperiment = "sweep"\n'))
    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        run_engine(seed, run, executor=FakeExecutor(size_score).factory)
    client = client_of(store)
    found = client.search_runs([client.get_experiment_by_name("sweep").experiment_id])
    parents = {r.data.tags["ge.run"]: r for r in found if r.data.tags.get("ge.role") == "run"}
    assert sorted(p.info.run_name for p in parents.values()) == ["a", "b"]
    for key, parent in parents.items():
        mine = [r for r in found if r.data.tags.get("ge.run") == key and "ge.variant" in r.data.tags]
        assert {r.data.tags["mlflow.parentRunId"] for r in mine} == {parent.info.run_id}
        assert len(mine) == len(settled(tmp_path / parent.info.run_name))
