"""The openai client path of the LLM client (OpenAI and OpenAI-compatible endpoints) over real HTTP
against the fake server: which models take it, requests, usage and cost from litellm's price table
(litellm never imported), retries, auth hints, deadline; and that a `ge run` against an
OpenAI-compatible endpoint, or an offline one, never loads litellm."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.llm.client import LLMClient
from guided_evolution.llm.direct import uses_openai
from guided_evolution.llm.errors import LLMError
from guided_evolution.llm.prices import PriceTable, price_file
from guided_evolution.llm.records import LLMReply, MemoryRecorder
from guided_evolution.llm.settings import LLMSettings, ModelSpec
from tests.support.openai_server import hang, reply, serve, status
from tests.support.seeds import CodeWriter, template_seed

MESSAGES = [{"role": "user", "content": "hi"}]
ROOT = Path(__file__).resolve().parents[2]


def client_for(model: ModelSpec, recorder: MemoryRecorder | None = None, **kw: Any) -> LLMClient:
    settings: dict[str, Any] = {"timeout_s": 5.0, "retries": 2, "backoff_s": 0.01}
    settings.update(kw)
    return LLMClient(LLMSettings(models=(model,), **settings), recorder)


def call(client: LLMClient, model: ModelSpec, **kw: Any) -> LLMReply:
    kw.setdefault("temperature", 0.5)
    return asyncio.run(client.complete(MESSAGES, model=model, **kw))


def call_error(client: LLMClient, model: ModelSpec, **kw: Any) -> LLMError:
    with pytest.raises(LLMError) as info:
        call(client, model, **kw)
    return info.value


def table_cost(name: str, prompt_tokens: int, completion_tokens: int) -> float:
    """The cost by litellm's bundled price table, parsed whole here."""
    path = price_file()
    assert path is not None, "litellm's price table is not installed"
    entry = json.loads(path.read_text())[name]
    return (
        prompt_tokens * entry["input_cost_per_token"]
        + completion_tokens * entry["output_cost_per_token"]
    )


@pytest.mark.parametrize(
    ("model", "api_base", "direct"),
    [
        ("openai/test-model", "http://h/v1", True),
        ("openai/gpt-4o", None, True),
        ("gpt-4o-mini", None, True),
        ("o3-mini", None, True),
        ("hosted_vllm/meta-llama/Llama-3-8B", "http://h/v1", True),
        ("llama3", "http://localhost:11434/v1", True),  # Ollama's OpenAI API
        ("hosted_vllm/m", None, False),  # no base: litellm reports the missing setting
        ("anthropic/claude-3-5-sonnet", None, False),
        ("ollama/llama3", "http://localhost:11434", False),  # Ollama's own API
        ("claude-3-5-sonnet", None, False),
    ],
)
def test_which_models_use_the_openai_client(model: str, api_base: str | None, direct: bool) -> None:
    assert uses_openai(ModelSpec(model, api_base=api_base)) is direct
    assert uses_openai(ModelSpec(model, api_base=api_base, client="litellm")) is False
    assert uses_openai(ModelSpec(model, api_base=api_base, client="openai")) is True


def test_retries_then_records_reply_usage_and_price_table_cost() -> None:
    recorder = MemoryRecorder()
    script = [status(500), status(429, retry_after=0), reply("done", 1000, 100)]
    with serve(script) as server:
        model = ModelSpec("openai/gpt-4o", api_base=server.base_url)
        client = client_for(model, recorder)
        out = call(client, model, purpose="mutation")
        assert len(server.requests) == 3 and server.requests[-1]["model"] == "gpt-4o"
    expected = table_cost("gpt-4o", 1000, 100)
    assert expected > 0
    assert (out.text, out.attempts, out.cost_known) == ("done", 3, True)
    assert out.cost_usd == pytest.approx(expected) and client.spent_usd == pytest.approx(expected)
    (record,) = recorder.calls
    assert (record.outcome, record.attempts, record.prompt_tokens, record.completion_tokens) == (
        "ok", 3, 1000, 100,
    )  # fmt: skip
    assert record.cost_usd == pytest.approx(expected)


def test_cost_is_the_same_through_litellm() -> None:
    with serve(responder=lambda _: reply("a", 1234, 321)) as server:
        costs = []
        for client_kind in ("openai", "litellm"):
            model = ModelSpec("openai/gpt-4o-mini", api_base=server.base_url, client=client_kind)
            costs.append(call(client_for(model), model).cost_usd)
    assert costs[0] > 0 and costs[0] == pytest.approx(costs[1])


def test_self_hosted_model_has_its_prefix_removed_and_no_price() -> None:
    with serve([reply("x", 1000, 100)]) as server:
        model = ModelSpec("hosted_vllm/gpt-4o", api_base=server.base_url)
        out = call(client_for(model), model)
        (request,) = server.requests
        assert server.request_headers[0]["authorization"] == "Bearer sk-none"
    assert request["model"] == "gpt-4o"
    assert (out.cost_usd, out.cost_known) == (0.0, False)  # not OpenAI's price for a local model


def test_openai_model_reads_base_url_and_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with serve() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        model = ModelSpec("gpt-4o-mini")
        out = call(client_for(model), model)
        assert server.request_headers[0]["authorization"] == "Bearer sk-from-env"
        assert server.requests[0]["model"] == "gpt-4o-mini"
    assert out.cost_known and out.cost_usd == pytest.approx(table_cost("gpt-4o-mini", 10, 5))


def test_missing_openai_key_is_fatal_with_the_variable_to_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with serve() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        model = ModelSpec("openai/gpt-4o")
        error = call_error(client_for(model, retries=3), model)
        assert server.requests == []
    assert error.kind == "auth" and error.fatal and error.attempts == 1
    assert error.reason == "openai/gpt-4o: authentication failed: set OPENAI_API_KEY"


def test_rejected_key_is_fatal_with_the_variable_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with serve(responder=lambda _: status(401)) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        model = ModelSpec("gpt-4o")
        error = call_error(client_for(model, retries=3), model)
        assert len(server.requests) == 1
    assert error.kind == "auth" and error.fatal
    assert "authentication failed: set OPENAI_API_KEY" in error.reason


def test_reasoning_model_gets_max_completion_tokens_and_default_sampling(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    with serve() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        model = ModelSpec("o3-mini")
        call(client_for(model, max_tokens=100), model, top_p=0.5)
        (request,) = server.requests
    assert request["max_completion_tokens"] == 100
    assert not {"max_tokens", "temperature", "top_p"} & set(request)


@pytest.mark.parametrize("client_kind", ["openai", "litellm"])
def test_context_window_error_is_named(client_kind: str) -> None:
    body = {"error": {"message": "This model's maximum context length is 8192 tokens.",
                      "type": "invalid_request_error", "code": "context_length_exceeded"}}  # fmt: skip
    with serve(responder=lambda _: status(400, body)) as server:
        model = ModelSpec("openai/m", api_base=server.base_url, client=client_kind)
        error = call_error(client_for(model), model)
        assert len(server.requests) == 1
    assert error.kind == "bad_request" and "context window" in error.reason
    assert error.hint and "longer context" in error.hint


def test_deadline_cuts_a_hanging_request() -> None:
    with serve(responder=lambda _: hang(30)) as server:
        model = ModelSpec("openai/m", api_base=server.base_url)
        # 2 s: at a load of 10 on 2 cores, 0.3 s ran out before the request reached the server
        error = call_error(client_for(model, timeout_s=2, retries=0), model)
        assert server.in_flight == 1  # the server still hangs: the client gave up at its deadline
    assert error.kind == "timeout" and error.reason.endswith("deadline of 2 s exceeded")


def test_price_table_reads_entries_of_any_layout_and_misses_cleanly(tmp_path: Path) -> None:
    entries = {
        "gpt-x": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6,
                  "cache_read_input_token_cost": 5e-7, "litellm_provider": "openai"},
        "claude-x": {"input_cost_per_token": 3e-6, "output_cost_per_token": 4e-6,
                     "litellm_provider": "anthropic"},
        "free-x": {"litellm_provider": "openai"},
    }  # fmt: skip
    for layout in (json.dumps(entries, indent=4), json.dumps(entries)):
        path = tmp_path / "prices.json"
        path.write_text(layout)
        table = PriceTable(path)
        price = table.price("no-such-model", "gpt-x")
        assert price is not None and price.cost(100, 10, cached_tokens=40) == pytest.approx(
            60 * 1e-6 + 40 * 5e-7 + 10 * 2e-6
        )
        assert table.price("claude-x") is None  # another provider's model
        assert table.price("free-x") is None and table.price("absent") is None
    assert PriceTable(tmp_path / "missing.json").price("gpt-x") is None


def _fresh_python(script: str, cwd: Path = ROOT) -> dict[str, Any]:
    """Run ``script`` in a new interpreter; the JSON of its last stdout line."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True, text=True, timeout=240, cwd=cwd,
        env={**os.environ, "LITELLM_OFFLINE_MODE": "true", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("model", "litellm_loaded"), [("openai/m", False), ("anthropic/claude-3-5-sonnet", True)]
)
def test_warm_up_loads_litellm_only_for_providers_that_need_it(
    model: str, litellm_loaded: bool
) -> None:
    result = _fresh_python(
        f"""
        import asyncio, json, sys
        from guided_evolution.llm.client import LLMClient
        from guided_evolution.llm.settings import LLMSettings, ModelSpec

        client = LLMClient(LLMSettings(models=(ModelSpec({model!r}),)))
        asyncio.run(client.warm_up(limit_s=60))
        print(json.dumps({{name: name in sys.modules for name in ("litellm", "openai")}}))
        """
    )
    assert result == {"litellm": litellm_loaded, "openai": True}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("online", [True, False])
def test_ge_run_never_imports_litellm_for_openai_compatible_or_offline(
    tmp_path: Path, online: bool
) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    args = ["run", str(seed), "--run-dir", str(tmp_path / "run"), "--json"]
    with serve(responder=CodeWriter()) as server:
        if online:
            args += ["--model", "openai/test-model", "--api-base", server.base_url]
        result = _fresh_python(
            f"""
            import json, sys
            from guided_evolution.cli import main

            sys.argv = ["ge", *{args!r}]
            try:
                main()
            except SystemExit as stop:
                assert not stop.code, stop.code
            print(json.dumps({{name: name in sys.modules for name in ("litellm", "openai")}}))
            """,
            cwd=tmp_path,
        )
        requests = len(server.requests)
    assert result == {"litellm": False, "openai": online}
    assert (requests > 0) is online
