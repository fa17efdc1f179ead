"""litellm's side of a call: importing it, its first-call setup, the request it is sent, and
reading its response (text, token usage, cost). Only the client imports litellm, lazily, through
:func:`load_litellm`."""

from __future__ import annotations

import json
import os
import time
from types import ModuleType
from typing import Any

from guided_evolution.llm.settings import LLMSettings, ModelSpec

DUMMY_API_KEY = "sk-none"
"""Key sent to an ``api_base`` server when no key is configured (the openai client needs one)."""

NOWHERE = "http://127.0.0.1:0/v1"
"""The ``api_base`` of a warm-up request: port 0 refuses a connection at once, so a warm-up that
reached the network anyway would fail on the spot instead of reaching a server."""

_WARM_UP_MESSAGES = [{"role": "user", "content": "warm-up"}]


def load_litellm() -> ModuleType:
    """Import litellm configured for offline, quiet use (no remote cost map, no banners)."""
    os.environ["LITELLM_OFFLINE_MODE"] = "true"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    if hasattr(litellm, "telemetry"):
        litellm.telemetry = False
    return litellm


async def warm_up(litellm: ModuleType, settings: LLMSettings, model: ModelSpec) -> None:
    """Do litellm's first-call setup for ``model`` without sending anything or spending.

    The first ``acompletion`` of a process imports modules and builds pydantic schemas for
    ~0.2 s (more on a loaded machine), which a real call would count against its deadline. A
    ``mock_response`` call runs routing, request building and logging for any provider; a model
    litellm sends through the OpenAI SDK then makes one more call through that SDK with an
    in-memory HTTP transport (response parsing and cost included). Both carry a dummy key; the
    second also the :data:`NOWHERE` ``api_base``. Raises what litellm raises.
    """
    kwargs = request(settings, model, _WARM_UP_MESSAGES, 0.0, DUMMY_API_KEY)
    await litellm.acompletion(**kwargs, mock_response="ok")
    if _provider(litellm, model) != "openai":
        return
    client = _offline_openai_client()
    try:
        response = await litellm.acompletion(**{**kwargs, "api_base": NOWHERE, "client": client})
    finally:
        await client.close()
    cost(litellm, model, response, *usage(response))


def _provider(litellm: ModuleType, model: ModelSpec) -> str:
    """The provider litellm routes ``model`` to (``openai``, ``ollama``...)."""
    return str(litellm.get_llm_provider(model=model.model, api_base=model.api_base)[1])


def _offline_openai_client() -> Any:
    """An ``openai.AsyncOpenAI`` whose HTTP transport answers every request in memory (openai and
    httpx are litellm's dependencies, imported here once litellm is)."""
    import httpx
    import openai

    def answer(http_request: Any) -> Any:
        model = json.loads(http_request.content or b"{}").get("model", "warm-up")
        return httpx.Response(200, json=_completion_body(str(model)), request=http_request)

    return openai.AsyncOpenAI(
        api_key=DUMMY_API_KEY,
        base_url=NOWHERE,
        max_retries=0,
        http_client=httpx.AsyncClient(transport=httpx.MockTransport(answer)),
    )


def _completion_body(model: str) -> dict[str, Any]:
    """A minimal chat.completion: one assistant message, one token each way."""
    return {
        "id": "chatcmpl-warm-up",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def request(
    settings: LLMSettings,
    model: ModelSpec,
    messages: list[dict],
    temperature: float,
    api_key: str | None,
) -> dict[str, Any]:
    """The keyword arguments of ``litellm.acompletion``: one attempt, litellm's own retries off.

    ``api_key`` is the configured key, if any; an ``api_base`` server without one gets a dummy key.
    """
    kwargs: dict[str, Any] = {
        "model": model.model,
        "messages": messages,
        "temperature": temperature,
        "timeout": settings.timeout_s,
        "num_retries": 0,
        "max_retries": 0,
        "drop_params": True,
    }
    if settings.max_tokens is not None:
        kwargs["max_tokens"] = settings.max_tokens
    if model.api_base:
        kwargs["api_base"] = model.api_base
    if api_key is not None:
        kwargs["api_key"] = api_key
    elif model.api_base:
        kwargs["api_key"] = DUMMY_API_KEY
    return kwargs


def usage(response: Any) -> tuple[int, int]:
    """(prompt tokens, completion tokens) of a response; 0 where the server did not say."""
    counts = getattr(response, "usage", None)
    prompt = getattr(counts, "prompt_tokens", 0) if counts is not None else 0
    completion = getattr(counts, "completion_tokens", 0) if counts is not None else 0
    return int(prompt or 0), int(completion or 0)


def text(response: Any) -> str:
    """The reply text of a response's first choice ('' when there is none)."""
    choices = getattr(response, "choices", None) or []
    if not choices:
        return ""
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if content is None:
        return ""
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


def cost(
    litellm: ModuleType,
    model: ModelSpec,
    response: Any,
    prompt_tokens: int,
    completion_tokens: int,
) -> tuple[float, bool]:
    """(cost in USD, whether the price is known): user prices, else litellm's table, else 0."""
    if model.has_prices:
        return (
            prompt_tokens * (model.input_cost_per_token or 0.0)
            + completion_tokens * (model.output_cost_per_token or 0.0),
            True,
        )
    try:
        return float(litellm.completion_cost(completion_response=response, model=model.model)), True
    except Exception:
        return 0.0, False
