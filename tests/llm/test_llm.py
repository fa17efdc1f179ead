"""The LLM client over real HTTP against a scripted local server, through both of its paths: the
openai client (what OpenAI-compatible endpoints get) and litellm (what other providers get), forced
per model with ``ModelSpec.client``. Every test runs once per path."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest

from guided_evolution.errors import ConfigError, GeError
from guided_evolution.llm.client import LLMClient
from guided_evolution.llm.errors import BudgetExhausted, LLMError
from guided_evolution.llm.provider import load_litellm
from guided_evolution.llm.records import CachedReply, LLMReply, MemoryRecorder, cache_key
from guided_evolution.llm.settings import LLMSettings, ModelSpec
from tests.support.openai_server import (
    OpenAIServer,
    empty,
    hang,
    huge,
    malformed,
    reply,
    reset,
    serve,
    status,
)

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]

CLIENT_ENV = "GE_TEST_LLM_CLIENT"
"""Which library the models of a test use (also read by the fresh interpreters of a test)."""


@pytest.fixture(autouse=True, params=["openai", "litellm"])
def client_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(CLIENT_ENV, request.param)
    return str(request.param)


def spec(server: OpenAIServer, name: str = "openai/test-model", **kw: Any) -> ModelSpec:
    kw.setdefault("client", os.environ[CLIENT_ENV])
    return ModelSpec(model=name, api_base=server.base_url, **kw)


def client_for(model: ModelSpec, recorder: MemoryRecorder | None = None, **kw: Any) -> LLMClient:
    settings: dict[str, Any] = {
        "timeout_s": 5.0,
        "retries": 2,
        "backoff_s": 0.01,
        "max_backoff_s": 0.05,
    }
    settings.update(kw)
    return LLMClient(LLMSettings(models=(model,), **settings), recorder)


def call(client: LLMClient, model: ModelSpec, **kw: Any) -> LLMReply:
    kw.setdefault("temperature", 0.5)
    return asyncio.run(client.complete(MESSAGES, model=model, **kw))


def call_error(client: LLMClient, model: ModelSpec, **kw: Any) -> LLMError:
    with pytest.raises(LLMError) as info:
        call(client, model, **kw)
    return info.value


def test_round_trip_sends_request_and_records_call() -> None:
    recorder = MemoryRecorder()
    with serve([reply("hello there", prompt_tokens=12, completion_tokens=7)]) as server:
        model = spec(server)
        out = call(
            client_for(model, recorder),
            model,
            temperature=0.3,
            purpose="mutation",
            variant_hint="abc",
        )
        (request,) = server.requests
        headers = server.request_headers[0]
    assert (out.text, out.model, out.prompt_tokens, out.completion_tokens) == (
        "hello there", "openai/test-model", 12, 7,
    )  # fmt: skip
    assert out.attempts == 1 and not out.cached and out.call_id == 1
    assert request["model"] == "test-model"
    assert request["messages"] == MESSAGES
    assert request["temperature"] == 0.3
    assert headers["authorization"] == "Bearer sk-none"
    (record,) = recorder.calls
    assert record.outcome == "ok" and record.reply == "hello there"
    assert record.purpose == "mutation" and record.variant_id == "abc"
    assert record.messages == MESSAGES and record.attempts == 1
    assert (record.prompt_tokens, record.completion_tokens) == (12, 7)


def test_top_p_is_sent_only_when_given() -> None:
    with serve([reply("a"), reply("b")]) as server:
        model = spec(server)
        client = client_for(model)
        call(client, model)
        call(client, model, top_p=0.1, sample_index=1)
        plain, nucleus = server.requests
    assert "top_p" not in plain and nucleus["top_p"] == 0.1


def test_key_is_read_from_the_named_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GE_TEST_LLM_KEY", "sk-secret-123")
    with serve() as server:
        model = spec(server, api_key_env="GE_TEST_LLM_KEY")
        call(client_for(model), model)
        assert server.request_headers[0]["authorization"] == "Bearer sk-secret-123"


def test_missing_key_env_fails_without_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GE_TEST_LLM_KEY", raising=False)
    with serve() as server:
        model = spec(server, api_key_env="GE_TEST_LLM_KEY")
        client = client_for(model)
        assert client.credential_problems() == [
            f"openai/test-model at {server.base_url}: environment variable GE_TEST_LLM_KEY is not set"
        ]
        error = call_error(client, model)
        assert server.requests == []
    assert error.kind == "auth" and error.fatal and "GE_TEST_LLM_KEY" in error.reason


def test_rate_limit_then_success_is_retried_honouring_retry_after() -> None:
    with serve([status(429, retry_after=0.2), reply("second")]) as server:
        model = spec(server)
        started = time.monotonic()
        out = call(client_for(model, max_backoff_s=1.0), model)
        elapsed = time.monotonic() - started
        assert len(server.requests) == 2
    assert out.text == "second" and out.attempts == 2
    assert elapsed >= 0.2  # waited as the server asked


def test_persistent_server_error_fails_after_bounded_attempts() -> None:
    recorder = MemoryRecorder()
    with serve(responder=lambda _: status(500)) as server:
        model = spec(server)
        error = call_error(client_for(model, recorder, retries=2), model)
        assert len(server.requests) == 3
    assert error.kind == "server" and not error.fatal and error.attempts == 3
    assert error.reason == f"openai/test-model at {server.base_url}: HTTP 500 after 3 attempts"
    assert "\n" not in error.reason
    (record,) = recorder.calls
    assert record.outcome == "error" and record.error == error.reason and record.attempts == 3
    assert error.call_id == 1


def test_service_unavailable_is_retried() -> None:
    with serve([status(503), status(502), reply("up")]) as server:
        model = spec(server)
        assert call(client_for(model), model).attempts == 3


@pytest.mark.parametrize(
    ("code", "kind"), [(401, "auth"), (403, "auth"), (400, "bad_request"), (404, "not_found")]
)
def test_client_errors_fail_fast(code: int, kind: str) -> None:
    with serve(responder=lambda _: status(code)) as server:
        model = spec(server)
        error = call_error(client_for(model, retries=3), model)
        assert len(server.requests) == 1
    assert error.kind == kind and error.fatal and error.attempts == 1
    assert isinstance(error, GeError) and "\n" not in error.reason


def test_auth_failure_names_the_env_var() -> None:
    with serve([status(401)]) as server:
        model = spec(server, api_key_env="HOME")  # any set variable
        error = call_error(client_for(model), model)
    assert "authentication failed: set HOME" in error.reason


def test_hang_past_deadline_fails_within_bounded_time() -> None:
    # A deadline long enough for each request to reach the server on a loaded machine (at 0.3 s
    # the first attempt's deadline could pass before its request arrived, at load ~19).
    timeout, retries, max_backoff = 1.5, 1, 0.05
    if os.environ[CLIENT_ENV] == "litellm":
        load_litellm()  # the one-off import is not part of the bound
    with serve(responder=lambda _: hang(30)) as server:
        model = spec(server)
        client = client_for(model, timeout_s=timeout, retries=retries, max_backoff_s=max_backoff)
        error = call_error(client, model)
        assert len(server.requests) == retries + 1
        # no clock: both requests still hang on the server, so the client cut each one at its
        # deadline (a client that waited would have got the reply the hang ends with)
        assert server.in_flight == retries + 1
    assert error.kind == "timeout" and error.attempts == retries + 1
    assert error.reason.endswith("deadline of 1.5 s exceeded after 2 attempts")


def test_malformed_json_is_retried_then_reported() -> None:
    with serve([malformed(), reply("fine")]) as server:
        model = spec(server)
        assert call(client_for(model), model).attempts == 2
    with serve(responder=lambda _: malformed()) as server:
        model = spec(server)
        error = call_error(client_for(model, retries=1), model)
        assert len(server.requests) == 2
    assert error.kind == "malformed" and "invalid response" in error.reason


def test_connection_reset_is_retried() -> None:
    with serve([reset(), reply("back")]) as server:
        model = spec(server)
        out = call(client_for(model), model)
    assert out.text == "back" and out.attempts == 2


def test_connection_refused_is_a_connection_error() -> None:
    with serve() as server:
        model = spec(server)
    error = call_error(client_for(model, retries=1), model)  # server is gone
    assert error.kind == "connection" and error.attempts == 2


def test_empty_reply_is_returned_and_recorded() -> None:
    recorder = MemoryRecorder()
    with serve([empty()]) as server:
        model = spec(server)
        out = call(client_for(model, recorder), model)
    assert out.text == ""
    assert recorder.calls[0].outcome == "ok" and recorder.calls[0].reply == ""


def test_one_megabyte_reply() -> None:
    with serve([huge(1_000_000)]) as server:
        model = spec(server)
        out = call(client_for(model), model)
    assert len(out.text) == 1_000_000 and out.completion_tokens == 250_000


def test_user_prices_give_the_cost() -> None:
    with serve([reply("a", prompt_tokens=1000, completion_tokens=200)]) as server:
        model = spec(server, input_cost_per_token=1e-6, output_cost_per_token=5e-6)
        client = client_for(model)
        out = call(client, model)
    assert out.cost_usd == pytest.approx(1000 * 1e-6 + 200 * 5e-6)
    assert out.cost_known and client.spent_usd == pytest.approx(out.cost_usd)
    assert client.spent_tokens == 1200


def test_unknown_model_costs_zero_and_is_marked_unknown() -> None:
    with serve() as server:
        model = spec(server, name="openai/no-such-priced-model")
        out = call(client_for(model), model)
    assert out.cost_usd == 0.0 and not out.cost_known


def test_known_model_uses_litellm_price() -> None:
    with serve([reply("a", prompt_tokens=1000, completion_tokens=100)]) as server:
        model = spec(server, name="openai/gpt-4o")
        out = call(client_for(model), model)
    assert out.cost_known and out.cost_usd > 0


def test_usd_budget_stops_further_calls() -> None:
    with serve(responder=lambda _: reply("x", prompt_tokens=100, completion_tokens=0)) as server:
        model = spec(server, input_cost_per_token=0.01, output_cost_per_token=0.0)
        client = client_for(model, budget_usd=1.5)
        call(client, model, sample_index=0)  # $1.00
        assert not client.exhausted
        call(client, model, sample_index=1)  # $2.00 >= $1.50
        assert client.exhausted and "$1.5" in (client.exhausted_reason or "")
        with pytest.raises(BudgetExhausted) as info:
            call(client, model, sample_index=2)
        assert len(server.requests) == 2
    assert info.value.kind == "budget"


def test_token_budget_stops_further_calls() -> None:
    with serve(responder=lambda _: reply("x", prompt_tokens=30, completion_tokens=20)) as server:
        model = spec(server)
        client = client_for(model, budget_tokens=50)
        call(client, model)
        assert client.exhausted and client.spent_tokens == 50
        with pytest.raises(BudgetExhausted):
            call(client, model, sample_index=1)
        assert len(server.requests) == 1


def test_resumed_spend_counts_toward_the_budget() -> None:
    with serve() as server:
        model = spec(server)
        settings = LLMSettings(models=(model,), budget_usd=1.0)
        client = LLMClient(settings, spent_usd=1.0)
        assert client.exhausted
        with pytest.raises(BudgetExhausted):
            call(client, model)
        assert server.requests == []


def test_identical_call_is_served_from_cache() -> None:
    recorder = MemoryRecorder()
    with serve(
        responder=lambda _: reply("fresh", prompt_tokens=10, completion_tokens=10)
    ) as server:
        model = spec(server, input_cost_per_token=0.001, output_cost_per_token=0.001)
        client = client_for(model, recorder)
        first = call(client, model, temperature=0.7)
        second = call(client, model, temperature=0.7)
        assert len(server.requests) == 1
        other = call(client, model, temperature=0.7, sample_index=1)  # a new sample: new request
        assert len(server.requests) == 2
    assert second.cached and not first.cached and not other.cached
    assert second.text == "fresh" and second.cost_usd == 0.0 and second.attempts == 0
    assert client.spent_usd == pytest.approx(2 * first.cost_usd)
    assert [c.outcome for c in recorder.calls] == ["ok", "cached", "ok"]


def test_cache_replays_offline_from_a_filled_recorder() -> None:
    recorder = MemoryRecorder()
    with serve() as server:
        model = spec(server)
    key = cache_key(model.model, MESSAGES, 0.2, 0)
    recorder.cache_put(key, CachedReply("from cache", model.model, 5, 6, 0.5))
    out = call(client_for(model, recorder), model, temperature=0.2)  # the server is gone
    assert (
        out.cached
        and out.text == "from cache"
        and (out.prompt_tokens, out.completion_tokens) == (5, 6)
    )


def test_cache_key_ignores_dict_order_but_not_content() -> None:
    a = [{"role": "user", "content": "x"}]
    b = [{"content": "x", "role": "user"}]
    assert cache_key("m", a, 0.5, 0) == cache_key("m", b, 0.5, 0)
    assert cache_key("m", a, 0.5, 0) != cache_key("m", a, 0.5, 1)
    assert cache_key("m", a, 0.5, 0) != cache_key("m", a, 0.6, 0)
    assert cache_key("m", a, 0.5, 0) != cache_key("n", a, 0.5, 0)


def test_concurrency_bound_is_respected() -> None:
    with serve(responder=lambda _: hang(0.15, reply("slow"))) as server:
        model = spec(server)
        client = client_for(model, concurrency=2)

        async def many() -> list[LLMReply]:
            return await asyncio.gather(
                *(
                    client.complete(MESSAGES, temperature=0.5, model=model, sample_index=i)
                    for i in range(6)
                )
            )

        replies = asyncio.run(many())
        assert server.max_in_flight == 2
        assert len(server.requests) == 6
    assert [r.text for r in replies] == ["slow"] * 6


def test_pick_model_follows_weights() -> None:
    a, b = ModelSpec("openai/a", weight=3.0), ModelSpec("openai/b", weight=1.0)
    client = LLMClient(LLMSettings(models=(a, b)))
    rng = random.Random(7)
    counts = Counter(client.pick_model(rng).model for _ in range(4000))
    assert 0.70 < counts["openai/a"] / 4000 < 0.80
    again = [LLMClient(LLMSettings(models=(a, b))).pick_model(random.Random(1)) for _ in range(3)]
    assert len(set(again)) == 1  # the rng decides, nothing else


def test_closed_client_refuses_calls() -> None:
    with serve() as server:
        model = spec(server)
        client = client_for(model)
        asyncio.run(client.aclose())
        assert call_error(client, model).kind == "closed"
        assert server.requests == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"weight": 0.0},
        {"weight": float("nan")},
        {"api_key_env": "sk-abc123-not-a-name"},
        {"input_cost_per_token": -1.0},
        {"client": "requests"},
    ],
)
def test_invalid_model_spec_is_a_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ModelSpec("openai/x", **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [{"models": ()}, {"concurrency": 0}, {"timeout_s": 0}, {"retries": -1}, {"budget_usd": 0}],
)
def test_invalid_settings_are_a_config_error(kwargs: dict[str, Any]) -> None:
    kwargs.setdefault("models", (ModelSpec("openai/x"),))
    with pytest.raises(ConfigError):
        LLMSettings(**kwargs)


def _fresh_python(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a new interpreter (nothing imported yet), litellm kept offline."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "LITELLM_OFFLINE_MODE": "true"},
    )


def test_concurrent_first_calls_in_a_fresh_process_share_one_import() -> None:
    """Regression: concurrent first calls saw a half-imported litellm ('no attribute Timeout')."""
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio, os, sys
        sys.path.insert(0, ".")
        from tests.support.openai_server import serve
        from guided_evolution.llm.client import LLMClient
        from guided_evolution.llm.settings import LLMSettings, ModelSpec

        async def main(url):
            model = ModelSpec("openai/m", api_base=url, client=os.environ["GE_TEST_LLM_CLIENT"])
            client = LLMClient(LLMSettings(models=(model,), retries=0))
            msgs = [{"role": "user", "content": "hi"}]
            replies = await asyncio.gather(*[
                client.complete(msgs, temperature=0.1, model=client.settings.models[0], sample_index=i)
                for i in range(6)
            ])
            print(len(replies))

        with serve() as server:
            asyncio.run(main(server.base_url))
        """
    )
    proc = _fresh_python(script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "6"


def test_warm_up_does_the_first_call_setup_without_sending_or_recording() -> None:
    """In a fresh process, warm_up leaves nothing for the first call to set up (no module is
    imported during it; before, litellm imported ~40 and built schemas, ~0.2-0.6 s of the first
    attempt's deadline), and it neither sends a request nor records a call."""
    import json
    import textwrap

    script = textwrap.dedent(
        """
        import asyncio, json, os, sys
        sys.path.insert(0, ".")
        from tests.support.openai_server import serve
        from guided_evolution.llm.client import LLMClient
        from guided_evolution.llm.records import MemoryRecorder
        from guided_evolution.llm.settings import LLMSettings, ModelSpec

        LIBRARIES = ("litellm", "openai", "httpx", "httpcore", "aiohttp", "pydantic")

        async def main(server):
            model = ModelSpec("openai/m", api_base=server.base_url, client=os.environ["GE_TEST_LLM_CLIENT"])
            recorder = MemoryRecorder()
            client = LLMClient(LLMSettings(models=(model,), timeout_s=2, retries=0), recorder)
            await client.warm_up()
            sent, recorded = len(server.requests), len(recorder.calls)
            before = set(sys.modules)
            out = await client.complete([{"role": "user", "content": "hi"}], temperature=0.1, model=model)
            imported = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in LIBRARIES)
            print(json.dumps({"warm_up_sent": sent, "warm_up_recorded": recorded, "text": out.text,
                              "attempts": out.attempts, "sent": len(server.requests),
                              "imported": imported}))

        with serve() as server:
            asyncio.run(main(server))
        """
    )
    proc = _fresh_python(script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["warm_up_sent"] == 0 and result["warm_up_recorded"] == 0, result
    assert (result["text"], result["attempts"], result["sent"]) == ("ok", 1, 1), result
    assert result["imported"] == [], "the first call still set litellm up"


def test_warm_up_survives_failures_and_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from guided_evolution.llm import provider

    models = (ModelSpec("nonexistent-provider/x"), ModelSpec("openai/m", api_base=provider.NOWHERE))
    recorder = MemoryRecorder()
    client = LLMClient(LLMSettings(models=models, timeout_s=1), recorder)
    asyncio.run(client.warm_up())  # an unknown provider fails its setup; the run goes on
    assert recorder.calls == []

    finished: list[str] = []

    async def hang(litellm: Any, settings: Any, model: ModelSpec) -> None:
        await asyncio.sleep(3)  # same event loop: the 0.2 s limit fires first, however loaded
        finished.append(model.model)

    monkeypatch.setattr(provider, "warm_up", hang)
    asyncio.run(client.warm_up(limit_s=0.2))
    assert finished == [], "warm_up waited for the set-up instead of giving up after limit_s"
    assert recorder.calls == []
