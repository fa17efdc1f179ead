"""litellm's side of a call: importing it, the request it is sent, and reading its response
(text, token usage, cost). Only the client imports litellm, lazily, through :func:`load_litellm`."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from guided_evolution.llm.settings import LLMSettings, ModelSpec

DUMMY_API_KEY = "sk-none"
"""Key sent to an ``api_base`` server when no key is configured (the openai client needs one)."""


def load_litellm() -> ModuleType:
    """Import litellm configured for offline, quiet use (no remote cost map, no banners)."""
    os.environ["LITELLM_OFFLINE_MODE"] = "true"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    if hasattr(litellm, "telemetry"):
        litellm.telemetry = False
    return litellm


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
