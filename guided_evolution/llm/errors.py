"""How a call fails: the errors the client raises, and the classification of the exceptions of
litellm or the openai client into failure kinds (retryable or not, with a one-line reason and, for
auth, which key to set; a prompt too long for the model's context window is named as such)."""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from guided_evolution.errors import GeError
from guided_evolution.llm.settings import ModelSpec

RETRYABLE_KINDS = frozenset({"rate_limit", "server", "timeout", "connection", "malformed"})
"""Error kinds worth another attempt; every other kind fails the call at once."""

FATAL_KINDS = frozenset({"auth", "bad_request", "not_found"})
"""Error kinds that will fail every call the same way: the run should stop and tell the user."""

_CONTEXT = re.compile(
    r"context.{0,20}(length|window)|maximum context|too many tokens|prompt is too long", re.I
)

_MISSING_KEY = re.compile(
    r"missing credentials|api[_ ]?key.{0,40}(must be set|not set|missing)", re.I
)


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
        """True when every further call would fail the same way."""
        return self.kind in FATAL_KINDS


class BudgetExhausted(LLMError):
    """The spend limit (USD or tokens) is reached; no request was sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason, "budget", hint="raise the budget or resume with a larger one")


@dataclass(frozen=True)
class Failure:
    """A classified failed attempt."""

    kind: str
    detail: str
    retry_after: float | None = None
    hint: str | None = None

    @property
    def retryable(self) -> bool:
        """True when another attempt may succeed."""
        return self.kind in RETRYABLE_KINDS


@dataclass(frozen=True)
class ErrorTypes:
    """The exception classes of one client library (litellm or openai: the same names) and how
    to find which key a model lacks. Built with :meth:`of`."""

    timeout: tuple[type, ...]
    rate_limit: tuple[type, ...]
    auth: tuple[type, ...]
    not_found: tuple[type, ...]
    connection: tuple[type, ...]
    context_window: tuple[type, ...]
    api: tuple[type, ...]
    internal: tuple[type, ...]
    provider_keys: Callable[[ModelSpec], list[str]]

    @classmethod
    def of(cls, library: ModuleType, provider_keys: Callable[[ModelSpec], list[str]]) -> ErrorTypes:
        """The classes ``library`` defines (a missing name matches nothing)."""

        def named(*names: str) -> tuple[type, ...]:
            found = (getattr(library, n, None) for n in names)
            return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))

        return cls(
            timeout=(TimeoutError, *named("Timeout", "APITimeoutError")),
            rate_limit=named("RateLimitError"),
            auth=named("AuthenticationError", "PermissionDeniedError"),
            not_found=named("NotFoundError"),
            connection=named("APIConnectionError"),
            context_window=named("ContextWindowExceededError"),
            api=named("APIError", "OpenAIError"),
            internal=named("InternalServerError"),
            provider_keys=provider_keys,
        )


def classify(types: ErrorTypes, spec: ModelSpec, error: BaseException) -> Failure:
    """Turn an exception of a client library into a failure kind and a one-line detail."""
    message = _short(error)
    code = getattr(error, "status_code", None)
    if isinstance(error, types.timeout):
        return Failure("timeout", "")
    if isinstance(error, types.rate_limit) or code == 429:
        return Failure("rate_limit", "HTTP 429 (rate limited)", _retry_after(error))
    if isinstance(error, types.auth) or code in (401, 403) or _MISSING_KEY.search(message):
        hint = _key_hint(types, spec)
        return Failure("auth", f"authentication failed: {hint}")
    if isinstance(error, types.not_found) or code == 404:
        return Failure(
            "not_found",
            f"model or endpoint not found (HTTP 404: {message})",
            hint="check the model name and api_base",
        )
    if isinstance(error, types.connection) or "connection error" in message.lower():
        return Failure("connection", f"connection failed ({message})")
    if isinstance(error, types.context_window) or (code == 400 and _CONTEXT.search(message)):
        return Failure(
            "bad_request",
            f"the prompt exceeds the model's context window (HTTP 400: {message})",
            hint="use a model with a longer context, or a lower llm.max_tokens",
        )
    if isinstance(code, int) and 400 <= code < 500 and code not in (408, 409):
        return Failure(
            "bad_request",
            f"request rejected (HTTP {code}: {message})",
            hint="check model and settings",
        )
    if isinstance(error, json.JSONDecodeError):  # the openai client on a body that is not JSON
        return Failure("malformed", f"invalid response ({message})")
    if isinstance(error, types.api) or isinstance(code, int):
        # A real HTTP error response carries headers; a body litellm could not parse has none.
        real = bool(getattr(getattr(error, "response", None), "headers", None))
        if real or not isinstance(error, types.internal):
            return Failure("server", f"HTTP {code or 500}", _retry_after(error))
        return Failure("malformed", f"invalid response ({message})")
    return Failure("unexpected", f"{type(error).__name__}: {message}")


def _short(error: BaseException, limit: int = 160) -> str:
    """The gist of a litellm error message, on one line."""
    text = " ".join(str(error).split())
    text = text.rsplit("Exception - ", 1)[-1] if "Exception - " in text else text
    text = re.sub(r"^litellm\.\w+: (\w+: )?", "", text)
    text = re.sub(r"^Error code: \d+ - ", "", text)  # the openai client's prefix
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


def _key_hint(types: ErrorTypes, spec: ModelSpec) -> str:
    """Which environment variable to set for ``spec``."""
    if spec.api_key_env:
        return f"set {spec.api_key_env}"
    if spec.api_base:
        return "set api_key_env to the variable that holds this server's key"
    try:
        missing = types.provider_keys(spec)
    except Exception:
        missing = []
    keys = [k for k in missing if "KEY" in k or "TOKEN" in k]
    if keys:
        return "set " + " or ".join(keys)
    return "set the provider's API key, or api_key_env in ge.toml"
