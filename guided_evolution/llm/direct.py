"""The openai client's side of a call, for OpenAI and OpenAI-compatible endpoints (vLLM, Ollama's
OpenAI API, any ``api_base``): which models it serves, the request, one attempt, its cost and its
first-call setup. litellm costs seconds and ~200 MB to import; the openai client, which litellm
itself uses for these endpoints, costs a fraction, so these models never load litellm. Prices come
from litellm's bundled price table, read without importing litellm (:mod:`.prices`).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
from types import ModuleType
from typing import Any

from guided_evolution.llm.errors import ErrorTypes, Failure, classify
from guided_evolution.llm.prices import PriceTable
from guided_evolution.llm.settings import LLMSettings, ModelSpec

DUMMY_API_KEY = "sk-none"
"""Key sent to an ``api_base`` server when no key is configured (the openai client needs one)."""

NOWHERE = "http://127.0.0.1:0/v1"
"""The base URL of a warm-up request: port 0 refuses a connection at once, so a warm-up that
reached the network anyway would fail on the spot instead of reaching a server."""

PREFIXES = ("openai/", "hosted_vllm/", "custom_openai/")
"""litellm provider prefixes of OpenAI-compatible endpoints: the openai client serves them."""

_OPENAI_NAME = re.compile(r"^(gpt-|chatgpt-|o\d|ft:gpt-)")
"""Bare model names litellm sends to OpenAI itself."""

_REASONING = re.compile(r"^(o\d|gpt-5)")
"""OpenAI reasoning models: ``max_completion_tokens``, and no sampling parameters but the
defaults (litellm drops the others, as ``drop_params`` asks)."""

_WARM_UP_MESSAGES = [{"role": "user", "content": "warm-up"}]


def uses_openai(model: ModelSpec) -> bool:
    """True when the openai client sends ``model``'s requests (``client = "auto"``: an
    ``openai/``, ``hosted_vllm/`` or ``custom_openai/`` model, a bare OpenAI name such as
    ``gpt-4o``, or a bare name with an ``api_base``); other providers go through litellm."""
    if model.client != "auto":
        return model.client == "openai"
    name = model.model
    if name.startswith("hosted_vllm/"):  # litellm's default base comes from the environment
        return bool(model.api_base or os.environ.get("HOSTED_VLLM_API_BASE"))
    if name.startswith(PREFIXES):
        return True
    return "/" not in name and bool(model.api_base or _OPENAI_NAME.match(name))


def served_name(model: ModelSpec) -> str:
    """The model name the endpoint is sent (the litellm provider prefix removed)."""
    for prefix in PREFIXES:
        if model.model.startswith(prefix):
            return model.model[len(prefix) :]
    return model.model


def load_openai() -> ModuleType:
    """Import the openai client (~0.4 s; call it in a thread)."""
    import openai

    return openai


def _provider_keys(model: ModelSpec) -> list[str]:
    """The key variables the openai client reads for ``model`` when none is configured."""
    return ["HOSTED_VLLM_API_KEY"] if model.model.startswith("hosted_vllm/") else ["OPENAI_API_KEY"]


def _base_url(model: ModelSpec) -> str | None:
    """``api_base``, else the base URL litellm would read from the environment (None: OpenAI's)."""
    if model.api_base:
        return model.api_base
    names = ("HOSTED_VLLM_API_BASE",) if model.model.startswith("hosted_vllm/") else ()
    for name in (*names, "OPENAI_BASE_URL", "OPENAI_API_BASE"):
        if os.environ.get(name):
            return os.environ[name]
    return None


class OpenAIBackend:
    """Sends chat completions with the openai client: one ``AsyncOpenAI`` per endpoint and key in
    the running event loop, the client's own retries off (the LLM client retries)."""

    def __init__(self, openai: ModuleType) -> None:
        self.openai = openai
        self.errors = ErrorTypes.of(openai, _provider_keys)
        self.prices = PriceTable()
        self._clients: dict[tuple[str | None, str | None, float], Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def request(
        self,
        settings: LLMSettings,
        model: ModelSpec,
        messages: list[dict],
        temperature: float,
        api_key: str | None,
        top_p: float | None = None,
    ) -> dict[str, Any]:
        """Where to send ``messages`` and the parameters of ``chat.completions.create``.

        ``api_key`` is the configured key, if any; an ``api_base`` server without one gets a
        dummy key; otherwise the openai client reads its own variable (OPENAI_API_KEY).
        """
        name = served_name(model)
        params: dict[str, Any] = {"model": name, "messages": messages}
        reasoning = _REASONING.match(name) is not None and not model.api_base
        if not reasoning or temperature == 1:
            params["temperature"] = temperature
        if top_p is not None and not reasoning:
            params["top_p"] = top_p
        if settings.max_tokens is not None:
            params["max_completion_tokens" if reasoning else "max_tokens"] = settings.max_tokens
        hosted = model.model.startswith("hosted_vllm/") and not model.api_base
        if api_key is None and (model.api_base or hosted):
            api_key = (os.environ.get("HOSTED_VLLM_API_KEY") if hosted else None) or DUMMY_API_KEY
        return {"base_url": _base_url(model), "api_key": api_key, "timeout": settings.timeout_s,
                "params": params}  # fmt: skip

    async def send(self, kwargs: dict[str, Any]) -> Any:
        """One attempt (no retry); raises what the openai client raises."""
        client = self._client(kwargs["base_url"], kwargs["api_key"], kwargs["timeout"])
        return await client.chat.completions.create(**kwargs["params"])

    def classify(self, model: ModelSpec, error: BaseException) -> Failure:
        """The failure kind of an exception of :meth:`send`."""
        return classify(self.errors, model, error)

    def cost(
        self, model: ModelSpec, response: Any, prompt_tokens: int, completion_tokens: int
    ) -> tuple[float, bool]:
        """(cost in USD, whether the price is known): user prices, else litellm's price table
        for an OpenAI model (a self-hosted one has no price there), else unknown."""
        if model.has_prices:
            return user_cost(model, prompt_tokens, completion_tokens), True
        if model.model.startswith(("hosted_vllm/", "custom_openai/")):
            return 0.0, False
        answered = str(getattr(response, "model", "") or "")
        price = self.prices.price(served_name(model), answered)
        if price is None:
            return 0.0, False
        details = getattr(getattr(response, "usage", None), "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        return price.cost(prompt_tokens, completion_tokens, cached), True

    async def warm_up(self, settings: LLMSettings, model: ModelSpec) -> None:
        """The first-call setup (the client's lazy imports, response models, the price entry) with
        one request answered in memory: nothing is sent, nothing is spent."""
        kwargs = self.request(settings, model, _WARM_UP_MESSAGES, 0.0, DUMMY_API_KEY)
        client = offline_client(self.openai)
        try:
            response = await client.chat.completions.create(**kwargs["params"])
        finally:
            await client.close()
        self.cost(model, response, *usage(response))

    async def aclose(self) -> None:
        """Close the HTTP clients of the running event loop."""
        clients, self._clients = list(self._clients.values()), {}
        if self._loop is asyncio.get_running_loop():
            for client in clients:
                await client.close()

    def _client(self, base_url: str | None, api_key: str | None, timeout: float) -> Any:
        """The ``AsyncOpenAI`` of this endpoint and key in the running loop (an event loop owns
        its connections, so another loop gets new clients)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._clients, self._loop = {}, loop
        key = (base_url, api_key, timeout)
        if key not in self._clients:
            self._clients[key] = self.openai.AsyncOpenAI(
                api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
            )
        return self._clients[key]


def user_cost(model: ModelSpec, prompt_tokens: int, completion_tokens: int) -> float:
    """The cost of a call at the prices the user set for ``model``."""
    return prompt_tokens * (model.input_cost_per_token or 0.0) + completion_tokens * (
        model.output_cost_per_token or 0.0
    )


def _httpx_of(openai: ModuleType) -> ModuleType:
    """The httpx package the openai client is built on (``httpx2`` from openai 3 on): the
    warm-up goes through its transport, and importing another one (``httpx`` imports its
    command line's pygments, ~0.1 s) would be wasted."""
    for cls in getattr(openai, "DefaultAsyncHttpxClient", object).__mro__:
        package = cls.__module__.partition(".")[0]
        if cls.__name__ == "AsyncClient" and package in sys.modules:
            return sys.modules[package]
    import httpx

    return httpx


def offline_client(openai: ModuleType) -> Any:
    """An ``openai.AsyncOpenAI`` whose HTTP transport answers every request in memory."""
    httpx = _httpx_of(openai)

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
