"""The CI smoke evolutions of the tiny CNN seed (the README's main job, smaller): offline and LLM."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, copy_seed

SEED = Path(__file__).resolve().parents[2] / "seeds" / "tiny_cnn"


def _small_copy(tmp_path: Path) -> Path:
    seed = copy_seed(SEED, tmp_path / "tiny_cnn")
    text = (seed / "ge.toml").read_text()
    for key, value in (("initial_population", 4), ("population", 4), ("elites", 2)):
        text = text.replace(f"{key} = 6", f"{key} = {value}").replace(f"{key} = 4 ", f"{key} = {value} ")
    # The cascade check is covered by the executor tests; here it would double the torch imports.
    text = "\n".join(line for line in text.splitlines() if not line.startswith("check ="))
    # Test-sized training (2 epochs on a third of the images, ~0.3 CPU-s instead of ~2.6): what is
    # asserted here is the evolution, not the accuracy (tests/seeds/test_tiny_cnn.py trains it whole).
    old_command = 'command = "python evaluate.py"'
    assert old_command in text
    text = text.replace(old_command, 'command = "python evaluate.py --epochs 2 --limit-train 1000"')
    text = text.replace("[evolution]", "[evolution]\ncrossover_probability = 1.0\neot_probability = 1.0", 1)
    (seed / "ge.toml").write_text(text)
    return seed


def _assert_evolved(run_dir: Path, summary: dict) -> None:
    assert summary["finished"] and summary["generation"] == 2
    assert summary["children"] >= 4 and summary["evaluated"] >= 4
    assert summary["front"] and all("val_accuracy" in row["metrics"] for row in summary["front"])
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        assert index.get_generation(2) is not None and index.get_generation(1).elites
    finally:
        index.close()
    merges = subprocess.run(
        ["git", "--git-dir", str(run_dir / "repo.git"), "rev-list", "--merges", "--branches"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    assert merges, "a crossover produced a merge commit"
    logs = [p.read_text() for p in (run_dir / "logs").glob("*.log")]
    # preload = ["torch", "numpy"]: every stage ran in a fork of a slot's worker
    assert logs and all("evaluate via the worker of slot" in t for t in logs if "evaluate:" in t)


@pytest.mark.slow
def test_tiny_cnn_offline_smoke(tmp_path: Path) -> None:
    seed = _small_copy(tmp_path)
    summary = here_json("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    _assert_evolved(tmp_path / "run", summary)


@pytest.mark.slow
def test_tiny_cnn_llm_smoke(tmp_path: Path) -> None:
    seed = _small_copy(tmp_path)
    writer = CodeWriter()
    with serve(responder=writer) as server:
        summary = here_json(
            "run", str(seed), "--run-dir", str(tmp_path / "run"), "--model", "openai/smoke",
            "--api-base", server.base_url, cwd=tmp_path,
        )
    _assert_evolved(tmp_path / "run", summary)
    assert summary["llm_calls"] > 0 and "reason" in writer.kinds
