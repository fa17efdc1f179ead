"""litellm's side of a call, for the providers the openai client does not serve (anthropic,
bedrock, vertex, ollama...; see :func:`guided_evolution.llm.direct.uses_openai`): importing it,
its first-call setup, the request it is sent, one attempt, and its cost. Only the client imports
litellm, lazily, through :func:`load_litellm`, and only when a model needs it."""

from __future__ import annotations

import gc
import os
from types import ModuleType
from typing import Any

from guided_evolution.llm.direct import (
    DUMMY_API_KEY,
    NOWHERE,
    offline_client,
    text,
    usage,
    user_cost,
)
from guided_evolution.llm.errors import ErrorTypes, Failure, classify
from guided_evolution.llm.settings import LLMSettings, ModelSpec

__all__ = ["DUMMY_API_KEY", "NOWHERE", "LiteLLMBackend", "load_litellm", "text", "usage"]

_WARM_UP_MESSAGES = [{"role": "user", "content": "warm-up"}]


def offline_env() -> None:
    """The environment litellm reads at import: offline, the bundled cost map."""
    os.environ["LITELLM_OFFLINE_MODE"] = "true"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


def load_litellm() -> ModuleType:
    """Import litellm configured for offline, quiet use (no remote cost map, no banners), the
    garbage collector paused meanwhile: the import makes hundreds of thousands of objects and
    no garbage, and the collections it set off were ~20 % of its CPU (4-5 s here)."""
    offline_env()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        import litellm
    finally:
        if was_enabled:
            gc.enable()

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
    import openai  # litellm's dependency, imported with it

    client = offline_client(openai)
    try:
        response = await litellm.acompletion(**{**kwargs, "api_base": NOWHERE, "client": client})
    finally:
        await client.close()
    cost(litellm, model, response, *usage(response))


def _provider(litellm: ModuleType, model: ModelSpec) -> str:
    """The provider litellm routes ``model`` to (``openai``, ``ollama``...)."""
    return str(litellm.get_llm_provider(model=model.model, api_base=model.api_base)[1])


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


def cost(
    litellm: ModuleType,
    model: ModelSpec,
    response: Any,
    prompt_tokens: int,
    completion_tokens: int,
) -> tuple[float, bool]:
    """(cost in USD, whether the price is known): user prices, else litellm's table, else 0."""
    if model.has_prices:
        return user_cost(model, prompt_tokens, completion_tokens), True
    try:
        return float(litellm.completion_cost(completion_response=response, model=model.model)), True
    except Exception:
        return 0.0, False


def _missing_keys(litellm: ModuleType, model: ModelSpec) -> list[str]:
    """The key variables litellm finds unset for ``model``."""
    return list(litellm.validate_environment(model.model).get("missing_keys") or [])


class LiteLLMBackend:
    """Sends chat completions through litellm (its own retries off: the LLM client retries)."""

    def __init__(self, litellm: ModuleType) -> None:
        self.litellm = litellm
        self.errors = ErrorTypes.of(litellm, lambda model: _missing_keys(litellm, model))

    def request(
        self,
        settings: LLMSettings,
        model: ModelSpec,
        messages: list[dict],
        temperature: float,
        api_key: str | None,
        top_p: float | None = None,
    ) -> dict[str, Any]:
        """The keyword arguments of ``litellm.acompletion`` (``top_p`` only when given)."""
        kwargs = request(settings, model, messages, temperature, api_key)
        if top_p is not None:
            kwargs["top_p"] = top_p
        return kwargs

    async def send(self, kwargs: dict[str, Any]) -> Any:
        """One attempt; raises what litellm raises."""
        return await self.litellm.acompletion(**kwargs)

    def classify(self, model: ModelSpec, error: BaseException) -> Failure:
        """The failure kind of an exception of :meth:`send`."""
        return classify(self.errors, model, error)

    def cost(
        self, model: ModelSpec, response: Any, prompt_tokens: int, completion_tokens: int
    ) -> tuple[float, bool]:
        """(cost in USD, whether the price is known), see :func:`cost`."""
        return cost(self.litellm, model, response, prompt_tokens, completion_tokens)

    async def warm_up(self, settings: LLMSettings, model: ModelSpec) -> None:
        """litellm's first-call setup for ``model`` (:func:`warm_up`)."""
        await warm_up(self.litellm, settings, model)

    async def aclose(self) -> None:
        """Nothing to close: litellm's pooled HTTP clients are shared and closed at exit."""
