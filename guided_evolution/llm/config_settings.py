"""The LLM client's settings (``settings.LLMSettings``) from a run's ``[llm]`` config: the one
place that maps the config's models, endpoint, concurrency, timeouts, retries and budget onto
the client (for the preflight, the background import and ``client.LLMClient``)."""

from __future__ import annotations

from guided_evolution.config import GeConfig
from guided_evolution.llm.settings import LLMSettings, ModelSpec


def llm_settings(cfg: GeConfig) -> LLMSettings:
    """The LLM client's settings from the run's config."""
    return LLMSettings(
        models=tuple(
            ModelSpec(
                model=m.model,
                weight=m.weight,
                api_base=m.api_base or cfg.llm.api_base,
                api_key_env=m.api_key_env,
                input_cost_per_token=m.input_cost_per_token,
                output_cost_per_token=m.output_cost_per_token,
                client=m.client,
            )
            for m in cfg.llm.models
        ),
        concurrency=cfg.llm.concurrency,
        timeout_s=cfg.llm.timeout_s,
        retries=cfg.llm.retries,
        backoff_s=cfg.llm.backoff_s,
        budget_usd=cfg.llm.budget_usd,
        budget_tokens=cfg.llm.budget_tokens,
        max_tokens=cfg.llm.max_tokens,
    )
