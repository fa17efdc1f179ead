"""The LLM client: ensemble choice, bounded concurrency, hard per-attempt deadline, retries, spend
and budget, a reply cache, and a record of every call.

All providers go through litellm (imported lazily: the import takes seconds). Any litellm model
string works: hosted (``gpt-4o``), ``ollama/...``, ``hosted_vllm/...``, or any OpenAI-compatible
server as ``openai/<name>`` with ``api_base``. litellm's own retries are off (its ``timeout`` is per
attempt); this module retries with exponential backoff and jitter, so a call takes at most
``(retries + 1) * timeout_s`` plus the backoff waits.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import math
import os
import random
import re
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

from guided_evolution.errors import ConfigError, GeError

DUMMY_API_KEY = "sk-none"
"""Key sent to an ``api_base`` server when no key is configured (the openai client needs one)."""

RETRYABLE_KINDS = frozenset({"rate_limit", "server", "timeout", "connection", "malformed"})
"""Error kinds worth another attempt; every other kind fails the call at once."""

FATAL_KINDS = frozenset({"auth", "bad_request", "not_found"})
"""Error kinds that will fail every call the same way: the run should stop and tell the user."""

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MISSING_KEY = re.compile(
    r"missing credentials|api[_ ]?key.{0,40}(must be set|not set|missing)", re.I
)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class ModelSpec:
    """One model of the ensemble. ``api_key_env`` names the env var holding the key, never the key."""

    model: str
    weight: float = 1.0
    api_base: str | None = None
    api_key_env: str | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None

    def __post_init__(self) -> None:
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


# --------------------------------------------------------------------------- results and records


@dataclass(frozen=True)
class LLMReply:
    """A completed call. ``cost_usd`` is 0 for a cached reply (it was paid for before) and for a
    model with no known price (then ``cost_known`` is False). ``latency_s`` spans all attempts."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    attempts: int
    cached: bool
    call_id: int | None
    cost_known: bool = True


@dataclass
class CallRecord:
    """One LLM call as the index stores it. ``outcome`` is 'ok', 'error' or 'cached'.
    ``id`` is filled in by a recorder that wants to (the SQLite index does)."""

    variant_id: str | None
    purpose: str
    model: str
    messages: list[dict[str, Any]]
    reply: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    latency_s: float
    outcome: str
    error: str | None
    attempts: int
    cache_key: str
    created_at: float  # unix time
    id: int | None = None


@dataclass(frozen=True)
class CachedReply:
    """What the cache keeps of a reply."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class CallRecorder(Protocol):
    """Where calls are recorded and replies cached (the SQLite index implements it)."""

    def record_call(self, record: CallRecord) -> int:
        """Store ``record``; return its call id."""
        ...

    def cache_get(self, key: str) -> CachedReply | None: ...

    def cache_put(self, key: str, reply: CachedReply) -> None: ...


@dataclass
class MemoryRecorder:
    """A :class:`CallRecorder` in memory, for tests and for runs without an index."""

    calls: list[CallRecord] = field(default_factory=list)
    cache: dict[str, CachedReply] = field(default_factory=dict)

    def record_call(self, record: CallRecord) -> int:
        self.calls.append(record)
        return len(self.calls)

    def cache_get(self, key: str) -> CachedReply | None:
        return self.cache.get(key)

    def cache_put(self, key: str, reply: CachedReply) -> None:
        self.cache[key] = reply


# --------------------------------------------------------------------------- errors


class LLMError(GeError):
    """A call that failed. ``reason`` is one line; ``kind`` is one of RETRYABLE_KINDS, FATAL_KINDS,
    'budget', 'closed' or 'unexpected'. A fatal error will repeat on every call: stop the run."""

    def __init__(
        self,
        reason: str,
        kind: str,
        *,
        hint: str | None = None,
        attempts: int = 0,
        call_id: int | None = None,
    ) -> None:
        super().__init__(reason, hint)
        self.reason = reason
        self.kind = kind
        self.attempts = attempts
        self.call_id = call_id

    @property
    def fatal(self) -> bool:
        return self.kind in FATAL_KINDS


class BudgetExhausted(LLMError):
    """The spend limit (USD or tokens) is reached; no request was sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "budget", hint="raise the budget or resume with a larger one")


@dataclass(frozen=True)
class _Failure:
    """A classified failed attempt."""

    kind: str
    detail: str
    retry_after: float | None = None
    hint: str | None = None

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE_KINDS


# --------------------------------------------------------------------------- helpers


def cache_key(
    model: str, messages: list[dict[str, Any]], temperature: float, sample_index: int
) -> str:
    """The reply-cache key: sha256 over the model string, messages, temperature and sample index."""
    payload = json.dumps(
        [model, messages, round(temperature, 6), sample_index], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def load_litellm() -> ModuleType:
    """Import litellm configured for offline, quiet use (no remote cost map, no banners)."""
    os.environ["LITELLM_OFFLINE_MODE"] = "true"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True
    if hasattr(litellm, "telemetry"):
        litellm.telemetry = False
    return litellm


def _short(error: BaseException, limit: int = 160) -> str:
    """The gist of a litellm error message, on one line."""
    text = " ".join(str(error).split())
    text = text.rsplit("Exception - ", 1)[-1] if "Exception - " in text else text
    text = re.sub(r"^litellm\.\w+: (\w+: )?", "", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(error: BaseException) -> float | None:
    """Seconds from a Retry-After header of the error's HTTP response, if any."""
    for headers in (
        getattr(getattr(error, "response", None), "headers", None),
        getattr(error, "litellm_response_headers", None),
        getattr(error, "headers", None),
    ):
        value = headers.get("retry-after") if headers else None
        if not value:
            continue
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def _key_hint(litellm: ModuleType, spec: ModelSpec) -> str:
    """Which environment variable to set for ``spec``."""
    if spec.api_key_env:
        return f"set {spec.api_key_env}"
    if spec.api_base:
        return "set api_key_env to the variable that holds this server's key"
    try:
        missing = litellm.validate_environment(spec.model).get("missing_keys") or []
    except Exception:
        missing = []
    keys = [k for k in missing if "KEY" in k or "TOKEN" in k]
    if keys:
        return "set " + " or ".join(keys)
    return "set the provider's API key, or api_key_env in ge.toml"


def _classify(litellm: ModuleType, spec: ModelSpec, error: BaseException) -> _Failure:
    """Turn an exception from litellm into a failure kind and a one-line detail."""
    message = _short(error)
    code = getattr(error, "status_code", None)
    if isinstance(error, (TimeoutError, litellm.Timeout)):
        return _Failure("timeout", "")
    if isinstance(error, litellm.RateLimitError) or code == 429:
        return _Failure("rate_limit", "HTTP 429 (rate limited)", _retry_after(error))
    if (
        isinstance(error, (litellm.AuthenticationError, litellm.PermissionDeniedError))
        or code in (401, 403)
        or _MISSING_KEY.search(message)
    ):
        hint = _key_hint(litellm, spec)
        return _Failure("auth", f"authentication failed: {hint}")
    if isinstance(error, litellm.NotFoundError) or code == 404:
        return _Failure(
            "not_found",
            f"model or endpoint not found (HTTP 404: {message})",
            hint="check the model name and api_base",
        )
    if isinstance(error, litellm.APIConnectionError) or "connection error" in message.lower():
        return _Failure("connection", f"connection failed ({message})")
    if isinstance(code, int) and 400 <= code < 500 and code not in (408, 409):
        return _Failure(
            "bad_request",
            f"request rejected (HTTP {code}: {message})",
            hint="check model and settings",
        )
    if isinstance(error, (litellm.APIError, litellm.OpenAIError)) or isinstance(code, int):
        # A real HTTP error response carries headers; a body litellm could not parse has none.
        real = bool(getattr(getattr(error, "response", None), "headers", None))
        if real or not isinstance(error, litellm.InternalServerError):
            return _Failure("server", f"HTTP {code or 500}", _retry_after(error))
        return _Failure("malformed", f"invalid response ({message})")
    return _Failure("unexpected", f"{type(error).__name__}: {message}")


def _usage(response: Any) -> tuple[int, int]:
    usage = getattr(response, "usage", None)
    prompt = getattr(usage, "prompt_tokens", 0) if usage is not None else 0
    completion = getattr(usage, "completion_tokens", 0) if usage is not None else 0
    return int(prompt or 0), int(completion or 0)


def _text(response: Any) -> str:
    choices = getattr(response, "choices", None) or []
    if not choices:
        return ""
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if content is None:
        return ""
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    return str(content)


# --------------------------------------------------------------------------- the client


class LLMClient:
    """Sends chat completions with bounded concurrency, deadlines, retries, budget and cache.

    ``spent_usd``/``spent_tokens`` start at the given values (a resumed run passes what it spent).
    Spend is checked before each call, so up to ``concurrency`` calls in flight may overshoot it.
    """

    def __init__(
        self,
        settings: LLMSettings,
        recorder: CallRecorder | None = None,
        *,
        spent_usd: float = 0.0,
        spent_tokens: int = 0,
    ) -> None:
        self.settings = settings
        self.recorder: CallRecorder = recorder if recorder is not None else MemoryRecorder()
        self._spent_usd = float(spent_usd)
        self._spent_tokens = int(spent_tokens)
        self._exhausted_reason: str | None = None
        self._closed = False
        self._jitter = random.Random()
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None
        self._module: ModuleType | None = None
        self._import_lock = threading.Lock()
        self._update_exhausted()

    # ---- ensemble

    def pick_model(self, rng: random.Random) -> ModelSpec:
        """A model of the ensemble, chosen with probability proportional to its weight."""
        models = self.settings.models
        if len(models) == 1:
            return models[0]
        return rng.choices(models, weights=[m.weight for m in models])[0]

    async def _litellm(self) -> ModuleType:
        """litellm, imported once in a worker thread (3+ s) so the event loop keeps running.

        Concurrent first calls must not see a half-imported module in ``sys.modules``: every
        caller waits for the one import under a lock.
        """
        if self._module is None:
            self._module = await asyncio.to_thread(self._import_once)
        return self._module

    async def warm_up(self) -> None:
        """Import litellm now (in a thread), e.g. while the seed is being evaluated."""
        await self._litellm()

    def _import_once(self) -> ModuleType:
        with self._import_lock:
            if self._module is None:
                self._module = load_litellm()
            return self._module

    def credential_problems(self) -> list[str]:
        """One line per model whose ``api_key_env`` is not set (cheap: no request, no import)."""
        return [
            f"{m.label}: environment variable {m.api_key_env} is not set"
            for m in self.settings.models
            if m.api_key_env and not os.environ.get(m.api_key_env)
        ]

    # ---- spend

    @property
    def spent_usd(self) -> float:
        return self._spent_usd

    @property
    def spent_tokens(self) -> int:
        return self._spent_tokens

    @property
    def exhausted(self) -> bool:
        return self._exhausted_reason is not None

    @property
    def exhausted_reason(self) -> str | None:
        return self._exhausted_reason

    def _update_exhausted(self) -> None:
        s = self.settings
        if s.budget_usd is not None and self._spent_usd >= s.budget_usd:
            self._exhausted_reason = (
                f"LLM budget of ${s.budget_usd:g} reached (spent ${self._spent_usd:.4f})"
            )
        elif s.budget_tokens is not None and self._spent_tokens >= s.budget_tokens:
            self._exhausted_reason = (
                f"LLM token budget of {s.budget_tokens} reached (used {self._spent_tokens})"
            )

    # ---- calls

    async def complete(
        self,
        messages: list[dict],
        *,
        temperature: float,
        model: ModelSpec,
        sample_index: int = 0,
        purpose: str = "",
        variant_hint: str | None = None,
    ) -> LLMReply:
        """One chat completion (or its cached reply). Raises LLMError / BudgetExhausted."""
        if self._closed:
            raise LLMError("the LLM client is closed", "closed")
        key = cache_key(model.model, messages, temperature, sample_index)
        started = time.monotonic()

        def record(**fields: Any) -> int:
            base: dict[str, Any] = {
                "variant_id": variant_hint,
                "purpose": purpose,
                "model": model.model,
                "messages": messages,
                "reply": None,
                "prompt_tokens": 0,
                "completion_tokens": 0,
                "cost_usd": 0.0,
                "latency_s": time.monotonic() - started,
                "error": None,
                "attempts": 0,
                "cache_key": key,
                "created_at": time.time(),
            }
            base.update(fields)
            return self.recorder.record_call(CallRecord(**base))

        hit = self.recorder.cache_get(key)
        if hit is not None:
            call_id = record(
                outcome="cached",
                reply=hit.text,
                prompt_tokens=hit.prompt_tokens,
                completion_tokens=hit.completion_tokens,
            )
            return LLMReply(
                hit.text, hit.model, hit.prompt_tokens, hit.completion_tokens, 0.0,
                time.monotonic() - started, 0, True, call_id,
            )  # fmt: skip

        if self._exhausted_reason is not None:
            raise BudgetExhausted(self._exhausted_reason)

        kwargs: dict[str, Any] = {
            "model": model.model,
            "messages": messages,
            "temperature": temperature,
            "timeout": self.settings.timeout_s,
            "num_retries": 0,
            "max_retries": 0,
            "drop_params": True,
        }
        if self.settings.max_tokens is not None:
            kwargs["max_tokens"] = self.settings.max_tokens
        if model.api_base:
            kwargs["api_base"] = model.api_base
        if model.api_key_env:
            key_value = os.environ.get(model.api_key_env)
            if not key_value:
                reason = f"{model.label}: environment variable {model.api_key_env} is not set"
                hint = f"export {model.api_key_env}=<your key>"
                call_id = record(outcome="error", error=reason)
                raise LLMError(reason, "auth", hint=hint, call_id=call_id)
            kwargs["api_key"] = key_value
        elif model.api_base:
            kwargs["api_key"] = DUMMY_API_KEY

        litellm = await self._litellm()
        started = time.monotonic()  # the one-off import is not latency
        attempts = 0
        while True:
            attempts += 1
            async with self._slots():
                if self._exhausted_reason is not None:  # reached while we waited for a slot
                    raise BudgetExhausted(self._exhausted_reason)
                try:
                    response = await asyncio.wait_for(
                        litellm.acompletion(**kwargs), self.settings.timeout_s
                    )
                    failure = None
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    failure = _classify(litellm, model, error)
            if failure is None:
                break
            if not failure.retryable or attempts > self.settings.retries:
                reason = self._reason(model, failure, attempts)
                call_id = record(outcome="error", error=reason, attempts=attempts)
                raise LLMError(
                    reason, failure.kind, hint=failure.hint, attempts=attempts, call_id=call_id
                )
            await asyncio.sleep(self._delay(attempts, failure.retry_after))

        text = _text(response)
        prompt_tokens, completion_tokens = _usage(response)
        cost, cost_known = self._cost(litellm, model, response, prompt_tokens, completion_tokens)
        self._spent_usd += cost
        self._spent_tokens += prompt_tokens + completion_tokens
        self._update_exhausted()
        latency = time.monotonic() - started
        call_id = record(
            outcome="ok",
            reply=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            latency_s=latency,
            attempts=attempts,
        )
        self.recorder.cache_put(
            key, CachedReply(text, model.model, prompt_tokens, completion_tokens, cost)
        )
        return LLMReply(
            text, model.model, prompt_tokens, completion_tokens, cost, latency, attempts, False,
            call_id, cost_known,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Refuse further calls. litellm's pooled HTTP clients are shared and closed at exit."""
        self._closed = True

    # ---- internals

    def _slots(self) -> asyncio.Semaphore:
        """The concurrency semaphore of the running event loop."""
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self.settings.concurrency)
            self._semaphore_loop = loop
        return self._semaphore

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Wait before the next attempt: Retry-After if given, else exponential with jitter."""
        s = self.settings
        if retry_after is not None:
            return min(retry_after, s.max_backoff_s)
        base = min(s.backoff_s * 2 ** (attempt - 1), s.max_backoff_s)
        return base * self._jitter.uniform(0.5, 1.0)

    def _reason(self, model: ModelSpec, failure: _Failure, attempts: int) -> str:
        if failure.kind == "timeout":
            detail = f"deadline of {self.settings.timeout_s:g} s exceeded"
        else:
            detail = failure.detail
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return f"{model.label}: {detail}{tries}"

    @staticmethod
    def _cost(
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
            return float(
                litellm.completion_cost(completion_response=response, model=model.model)
            ), True
        except Exception:
            return 0.0, False
