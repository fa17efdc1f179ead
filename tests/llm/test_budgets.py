"""Budgets that hold on any endpoint: a USD budget needs a price for every model (refused at
`ge run` with one line otherwise), ``input_price``/``output_price`` are USD per million tokens,
and a token budget stops a run on a custom endpoint whose model has no price."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json
from tests.support.harness import FakeExecutor, run_engine, size_score
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, template_seed

TOKENS_PER_CALL = 200  # CodeWriter's usage: 120 prompt + 80 completion tokens


def _models(seed: Path, line: str) -> None:
    """Replace the template's offline model by ``line`` (a TOML ``models = ...`` and more)."""
    path = seed / "ge.toml"
    text = path.read_text()
    assert 'models = ["offline"]' in text
    path.write_text(text.replace('models = ["offline"]', line))


def _calls(run: Path) -> list:
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    try:
        return list(index.calls())
    finally:
        index.close()


def test_usd_budget_on_an_unpriced_endpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    writer = CodeWriter()
    with serve(responder=writer) as server:
        proc = ge_here(
            "run", str(seed), "--run-dir", str(tmp_path / "run"), "--model", "openai/mystery-7b",
            "--api-base", server.base_url, "--budget-usd", "0.001", cwd=tmp_path,
        )  # fmt: skip
    assert writer.kinds == []  # not one completion was asked for
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "no price is known for openai/mystery-7b" in lines[0]
    assert "input_price" in lines[0] and "--budget-tokens" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model", ["hosted_vllm/llama", "custom_openai/gpt-4o-mini"])
def test_self_hosted_prefixes_have_no_price(model: str) -> None:
    from guided_evolution.llm.config_settings import price_known
    from guided_evolution.llm.settings import ModelSpec

    assert not price_known(ModelSpec(model, api_base="http://localhost:1/v1"))
    assert price_known(ModelSpec(model, input_cost_per_token=0.0, output_cost_per_token=1e-6))


def test_a_known_openai_price_passes_the_check() -> None:
    from guided_evolution.llm.config_settings import check_budget_prices, price_known
    from guided_evolution.llm.settings import LLMSettings, ModelSpec

    assert price_known(ModelSpec("gpt-4o-mini"))
    check_budget_prices(LLMSettings(models=(ModelSpec("gpt-4o-mini"),), budget_usd=1.0))


def test_following_the_hint_prices_per_million_tokens_and_the_budget_stops_the_run(
    tmp_path: Path,
) -> None:
    seed = template_seed(tmp_path / "seed", generations=5)
    # 120 prompt tokens at $1000/M + 80 completion tokens at $2500/M = $0.32 per call
    _models(seed, 'models = [{ model = "openai/mystery-7b", input_price = 1000, output_price = 2500 }]\n'
            "budget_usd = 1.0")  # fmt: skip
    with serve(responder=CodeWriter()) as server:
        summary = run_engine(
            seed, tmp_path / "run", executor=FakeExecutor(size_score).factory,
            api_base=server.base_url,
        )  # fmt: skip
    calls = [c for c in _calls(tmp_path / "run") if c.outcome == "ok"]
    assert calls and all(c.cost_usd == pytest.approx(0.32) for c in calls), calls[:3]
    assert summary["finished"] and "budget of $1 reached" in summary["stop_reason"]
    # the budget is checked before each call: at most `concurrency` (4) calls were in flight past it
    assert 1.0 <= summary["cost_usd"] <= 1.0 + 4 * 0.32 + 1e-9
    assert summary["generation"] < 5


def test_both_price_units_for_one_side_is_a_one_line_error(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    _models(seed, 'models = [{ model = "openai/m", input_price = 1, input_cost_per_token = 1e-6 }]')
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "input_price" in lines[0] and "input_cost_per_token" in lines[0] and "keep one" in lines[0]


def test_token_budget_flag_stops_a_run_on_an_unpriced_endpoint(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=5)
    budget = 5 * TOKENS_PER_CALL
    with serve(responder=CodeWriter()) as server:
        summary = here_json(
            "run", str(seed), "--run-dir", str(tmp_path / "run"), "--model", "openai/mystery-7b",
            "--api-base", server.base_url, "--budget-tokens", str(budget), "--no-sandbox",
            cwd=tmp_path,
        )  # fmt: skip
    assert summary["finished"], summary
    assert f"token budget of {budget} reached" in summary["stop_reason"]
    assert summary["cost_usd"] == 0  # no price: the USD spend is unknown, the tokens are not
    status = here_json("status", str(tmp_path / "run"), cwd=tmp_path)
    used = status["prompt_tokens"] + status["completion_tokens"]
    # checked before each call: at most `concurrency` (4) calls in flight past the budget
    assert budget <= used <= budget + 4 * TOKENS_PER_CALL, used
    assert status["state"] == "finished" and status["stop_reason"] == summary["stop_reason"]
    frozen = json.loads((tmp_path / "run" / "config.json").read_text())["config"]["llm"]
    assert frozen["budget_tokens"] == budget


def test_budget_tokens_flag_is_validated(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), "--budget-tokens", "0",
              cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "--budget-tokens 0" in proc.stderr and not (tmp_path / "run").exists()
