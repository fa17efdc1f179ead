"""The LLM client's settings (``settings.LLMSettings``) from a run's ``[llm]`` config: the one
place that maps the config's models, endpoint, concurrency, timeouts, retries and budget onto
the client (for the preflight, the background import and ``client.LLMClient``), and the check
that a USD budget can be counted (every model priced) before a run starts."""

from __future__ import annotations

from guided_evolution.config import GeConfig
from guided_evolution.errors import ConfigError
from guided_evolution.llm.direct import served_name, uses_openai
from guided_evolution.llm.prices import PriceTable
from guided_evolution.llm.settings import LLMSettings, ModelSpec


def llm_settings(cfg: GeConfig) -> LLMSettings:
    """The LLM client's settings from the run's config (prices per million tokens as per token)."""
    specs = []
    for m in cfg.llm.models:
        input_price, output_price = m.token_prices()
        specs.append(ModelSpec(
            model=m.model,
            weight=m.weight,
            api_base=m.api_base or cfg.llm.api_base,
            api_key_env=m.api_key_env,
            input_cost_per_token=input_price,
            output_cost_per_token=output_price,
            client=m.client,
        ))  # fmt: skip
    return LLMSettings(
        models=tuple(specs),
        concurrency=cfg.llm.concurrency,
        timeout_s=cfg.llm.timeout_s,
        retries=cfg.llm.retries,
        backoff_s=cfg.llm.backoff_s,
        budget_usd=cfg.llm.budget_usd,
        budget_tokens=cfg.llm.budget_tokens,
        max_tokens=cfg.llm.max_tokens,
    )


def price_known(model: ModelSpec, table: PriceTable | None = None) -> bool:
    """Whether a call of ``model`` gets a USD cost, as the backends price it: the user's prices,
    else litellm's table (an OpenAI entry for the openai client's models, any provider's for
    litellm's; a ``hosted_vllm/`` or ``custom_openai/`` model has none)."""
    if model.has_prices:
        return True
    if uses_openai(model):
        if model.model.startswith(("hosted_vllm/", "custom_openai/")):
            return False
        return (table or PriceTable()).price(served_name(model)) is not None
    bare = model.model.split("/", 1)[-1]
    return (table or PriceTable(provider=None)).price(model.model, bare) is not None


def check_budget_prices(settings: LLMSettings, table: PriceTable | None = None) -> None:
    """Refuse a USD budget that could not hold: a model without a known price costs $0 per call,
    so the budget would never be reached."""
    if settings.budget_usd is None:
        return
    unpriced = [m for m in settings.models if not price_known(m, table)]
    if unpriced:
        names = ", ".join(m.model for m in unpriced)
        raise ConfigError(
            f"budget_usd {settings.budget_usd:g} cannot be counted: no price is known for {names}",
            "set input_price and output_price (USD per million tokens) in its [[llm.models]] "
            "table, or use a token budget (--budget-tokens N, [llm] budget_tokens) instead",
        )
