"""What the LLM client is configured with: the models of the ensemble and how to call them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from guided_evolution.errors import ConfigError

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

CLIENTS = ("auto", "openai", "litellm")
"""Which library sends a model's requests: ``auto`` (the openai client for OpenAI and
OpenAI-compatible endpoints, litellm for the rest), or one of them forced."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the ensemble. ``api_key_env`` names the env var holding the key, never the key."""

    model: str
    weight: float = 1.0
    api_base: str | None = None
    api_key_env: str | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    client: str = "auto"  # auto | openai | litellm (see guided_evolution.llm.direct.uses_openai)

    def __post_init__(self) -> None:
        if self.client not in CLIENTS:
            raise ConfigError(
                f"model {self.model}: client {self.client!r} is not one of {', '.join(CLIENTS)}"
            )
        if not self.model.strip():
            raise ConfigError(
                "an LLM model name is empty", "give a litellm model string, e.g. gpt-4o"
            )
        if not (math.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(
                f"model {self.model}: weight {self.weight} is not a positive number",
                "set weight > 0",
            )
        if self.api_key_env is not None and not _ENV_NAME.match(self.api_key_env):
            raise ConfigError(
                f"model {self.model}: api_key_env {self.api_key_env[:4]}... is not an environment variable name",
                "put the NAME of the variable holding the key (e.g. OPENAI_API_KEY), not the key",
            )
        for name in ("input_cost_per_token", "output_cost_per_token"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"model {self.model}: {name} must be >= 0, got {value}")

    @property
    def label(self) -> str:
        """How errors name this model: ``openai/foo at http://host/v1`` or ``gpt-4o``."""
        return f"{self.model} at {self.api_base}" if self.api_base else self.model

    @property
    def has_prices(self) -> bool:
        """True when the user set per-token prices (they override litellm's price table)."""
        return self.input_cost_per_token is not None or self.output_cost_per_token is not None


@dataclass(frozen=True)
class LLMSettings:
    """How the client talks to the models. ``timeout_s`` is a hard deadline per attempt."""

    models: tuple[ModelSpec, ...]
    concurrency: int = 4
    timeout_s: float = 120.0
    retries: int = 4
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0  # bounds every wait, a server's Retry-After included
    budget_usd: float | None = None
    budget_tokens: int | None = None
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError(
                "no LLM model is configured", "add at least one model to [llm] models"
            )
        checks = (
            (self.concurrency >= 1, f"llm concurrency must be >= 1, got {self.concurrency}"),
            (self.timeout_s > 0, f"llm timeout_s must be > 0, got {self.timeout_s}"),
            (self.retries >= 0, f"llm retries must be >= 0, got {self.retries}"),
            (self.backoff_s >= 0, f"llm backoff_s must be >= 0, got {self.backoff_s}"),
            (self.max_backoff_s >= 0, f"llm max_backoff_s must be >= 0, got {self.max_backoff_s}"),
            (self.budget_usd is None or self.budget_usd > 0, "llm budget_usd must be > 0"),
            (self.budget_tokens is None or self.budget_tokens > 0, "llm budget_tokens must be > 0"),
            (self.max_tokens is None or self.max_tokens > 0, "llm max_tokens must be > 0"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
