"""The LLM client: ensemble choice, bounded concurrency, hard per-attempt deadline, retries, spend
and budget, use of the reply cache, and a record of every call.

Any litellm model string works. OpenAI and OpenAI-compatible endpoints (``gpt-4o``,
``openai/<name>`` or ``hosted_vllm/<name>`` with ``api_base``...) are sent with the openai client
(:mod:`.direct`, ~0.4 s to import); every other provider (``anthropic/...``, ``ollama/...``...)
with litellm (:mod:`.provider`, seconds and ~200 MB to import, so only when a model needs it).
Either library is imported in a worker thread, by :meth:`LLMClient.warm_up` while the seed is
evaluated. Their own retries are off (their timeout is per attempt); this module retries with
exponential backoff and jitter, so a call takes at most ``(retries + 1) * timeout_s`` plus the
backoff waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from guided_evolution.llm import direct, provider
from guided_evolution.llm.errors import BudgetExhausted, Failure, LLMError
from guided_evolution.llm.records import (
    CachedReply,
    CallRecord,
    CallRecorder,
    LLMReply,
    MemoryRecorder,
    cache_key,
)
from guided_evolution.llm.settings import LLMSettings, ModelSpec

WARM_UP_LIMIT_S = 15.0
"""How long :meth:`LLMClient.warm_up` spends on the first-call setup at most (the imports aside):
it takes ~0.2 s per model, a few seconds on a loaded machine."""

OPENAI, LITELLM = "openai", "litellm"


class Backend(Protocol):
    """What sends one attempt: :class:`direct.OpenAIBackend` or :class:`provider.LiteLLMBackend`."""

    def request(
        self,
        settings: LLMSettings,
        model: ModelSpec,
        messages: list[dict],
        temperature: float,
        api_key: str | None,
        top_p: float | None = None,
    ) -> dict[str, Any]: ...

    async def send(self, kwargs: dict[str, Any]) -> Any: ...

    def classify(self, model: ModelSpec, error: BaseException) -> Failure: ...

    def cost(
        self, model: ModelSpec, response: Any, prompt_tokens: int, completion_tokens: int
    ) -> tuple[float, bool]: ...

    async def warm_up(self, settings: LLMSettings, model: ModelSpec) -> None: ...

    async def aclose(self) -> None: ...


def _load(kind: str) -> Backend:
    """The backend ``kind``, its library imported (seconds: call it in a thread)."""
    if kind == OPENAI:
        return direct.OpenAIBackend(direct.load_openai())
    return provider.LiteLLMBackend(provider.load_litellm())


def import_in_background(settings: LLMSettings) -> threading.Thread:
    """Start importing the client libraries of ``settings``' models in a daemon thread, now,
    and for the openai client do its first-call setup there too (``Backend.warm_up``: a
    request answered in memory by a client of its own, closed after; nothing sent).

    ``ge run`` calls it once the preflight passed, so that the import (about 1 s for the openai
    client, seconds for litellm) and the setup's lazy imports overlap the seed's evaluation
    instead of delaying the first generation. Nothing else changes: ``LLMClient`` imports the
    libraries and sets up as before and finds the work done (or waits for this import to
    finish, under Python's import lock); a failure here is met there again, with its error.
    """
    kinds = {OPENAI if direct.uses_openai(m) else LITELLM for m in settings.models}
    if LITELLM in kinds:
        provider.offline_env()  # on this thread: the environment never changes under another

    def load() -> None:
        for kind in sorted(kinds):
            try:
                backend = _load(kind)
            except Exception:  # LLMClient's own import reports it
                continue
            if kind == OPENAI:  # litellm may keep clients bound to this thread's event loop
                models = [m for m in settings.models if direct.uses_openai(m)]
                with contextlib.suppress(Exception):
                    asyncio.run(_set_up_each(backend, settings, models))

    thread = threading.Thread(target=load, name="ge-llm-import", daemon=True)
    thread.start()
    return thread


async def _set_up_each(backend: Backend, settings: LLMSettings, models: list[ModelSpec]) -> None:
    """``backend``'s first-call setup for each distinct model, within ``WARM_UP_LIMIT_S``."""
    distinct = {(m.model, m.api_base): m for m in models}.values()

    async def each() -> None:
        for model in distinct:
            with contextlib.suppress(Exception):
                await backend.warm_up(settings, model)

    await asyncio.wait_for(each(), WARM_UP_LIMIT_S)


@dataclass
class _Call:
    """One :meth:`LLMClient.complete` in progress: what its record says about it."""

    model: ModelSpec
    messages: list[dict]
    key: str
    purpose: str
    variant_id: str | None
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        """Seconds since ``started``."""
        return time.monotonic() - self.started


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
        self._backends: dict[str, Backend] = {}
        self._import_lock = threading.Lock()
        self._update_exhausted()

    # ---- ensemble and setup

    def pick_model(self, rng: random.Random, chosen: str | None = None) -> ModelSpec:
        """A model of the ensemble, chosen with probability proportional to its weight, or the
        first named ``chosen`` (a bandit's choice; no draw from ``rng`` then)."""
        models = self.settings.models
        if chosen is not None:
            return next((m for m in models if m.model == chosen), models[0])
        if len(models) == 1:
            return models[0]
        return rng.choices(models, weights=[m.weight for m in models])[0]

    async def _backend(self, model: ModelSpec) -> Backend:
        """The backend of ``model``, its library imported once in a worker thread (seconds) so
        the event loop keeps running.

        Concurrent first calls must not see a half-imported module in ``sys.modules``: every
        caller waits for the one import under a lock.
        """
        kind = OPENAI if direct.uses_openai(model) else LITELLM
        backend = self._backends.get(kind)
        if backend is None:
            backend = await asyncio.to_thread(self._import_once, kind)
        return backend

    def _import_once(self, kind: str) -> Backend:
        with self._import_lock:
            if kind not in self._backends:
                self._backends[kind] = _load(kind)
            return self._backends[kind]

    async def warm_up(self, *, limit_s: float = WARM_UP_LIMIT_S) -> None:
        """Import the libraries the models need (in a thread) and do their first-call setup for
        every model, e.g. while the seed is being evaluated, so that a first attempt's deadline
        times its request alone.

        The setup sends nothing and records nothing; it gives up after ``limit_s`` seconds, and
        its failures are ignored: a real call meets them again.
        """
        models = list({(m.model, m.api_base, m.client): m for m in self.settings.models}.values())
        pairs = [(m, await self._backend(m)) for m in models]
        try:
            await asyncio.wait_for(self._set_up(pairs), limit_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            pass  # out of time: the first calls do the rest of the setup themselves

    async def _set_up(self, pairs: list[tuple[ModelSpec, Backend]]) -> None:
        """The first-call setup of each distinct model of the ensemble, failures ignored."""
        for model, backend in pairs:
            try:
                await backend.warm_up(self.settings, model)
            except asyncio.CancelledError:
                raise
            except Exception:
                continue

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
        """USD spent so far (a resumed run's earlier spend included)."""
        return self._spent_usd

    @property
    def spent_tokens(self) -> int:
        """Tokens (prompt and completion) used so far."""
        return self._spent_tokens

    @property
    def exhausted(self) -> bool:
        """True once the USD or token budget is reached."""
        return self._exhausted_reason is not None

    @property
    def exhausted_reason(self) -> str | None:
        """Why the budget is exhausted, or None."""
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
        top_p: float | None = None,
    ) -> LLMReply:
        """One chat completion (or its cached reply). Raises LLMError / BudgetExhausted.

        ``top_p`` is sent only when given (None: the provider's default). A cached reply is
        served even when the budget is exhausted; a budget stop sends nothing and records
        nothing; every other outcome is recorded once.
        """
        if self._closed:
            raise LLMError("the LLM client is closed", "closed")
        # A top_p is part of what was asked (the key without one is the one earlier runs used).
        keyed = model.model if top_p is None else f"{model.model} top_p={top_p!r}"
        key = cache_key(keyed, messages, temperature, sample_index)
        call = _Call(model, messages, key, purpose, variant_hint)
        hit = self._from_cache(call)
        if hit is not None:
            return hit
        if self._exhausted_reason is not None:
            raise BudgetExhausted(self._exhausted_reason)
        api_key = self._api_key(call)
        backend = await self._backend(model)
        call.started = time.monotonic()  # the one-off import is not latency
        kwargs = backend.request(self.settings, model, messages, temperature, api_key, top_p)
        response, attempts = await self._send(backend, call, kwargs)
        return self._accept(backend, call, response, attempts)

    async def aclose(self) -> None:
        """Refuse further calls and close the HTTP clients (litellm's are shared: closed at
        exit)."""
        self._closed = True
        for backend in list(self._backends.values()):
            await backend.aclose()

    def _from_cache(self, call: _Call) -> LLMReply | None:
        """The cached reply for ``call`` (recorded as 'cached', costing nothing), or None."""
        hit = self.recorder.cache_get(call.key)
        if hit is None:
            return None
        call_id = self._record(
            call,
            "cached",
            reply=hit.text,
            prompt_tokens=hit.prompt_tokens,
            completion_tokens=hit.completion_tokens,
        )
        return LLMReply(
            hit.text, hit.model, hit.prompt_tokens, hit.completion_tokens, 0.0,
            call.elapsed(), 0, True, call_id,
        )  # fmt: skip

    def _api_key(self, call: _Call) -> str | None:
        """The configured key of ``call``'s model (None: none configured); a named key variable
        that is unset fails the call."""
        model = call.model
        api_key = None
        if model.api_key_env:
            api_key = os.environ.get(model.api_key_env)
            if not api_key:
                reason = f"{model.label}: environment variable {model.api_key_env} is not set"
                call_id = self._record(call, "error", error=reason)
                hint = f"export {model.api_key_env}=<your key>"
                raise LLMError(reason, "auth", hint=hint, call_id=call_id)
        return api_key

    async def _send(self, backend: Backend, call: _Call, kwargs: dict[str, Any]) -> tuple[Any, int]:
        """(response, attempts it took): retries retryable failures with backoff; the last
        failure is recorded and raised as LLMError."""
        attempts = 0
        while True:
            attempts += 1
            response, failure = await self._attempt(backend, call.model, kwargs)
            if failure is None:
                return response, attempts
            if not failure.retryable or attempts > self.settings.retries:
                reason = self._reason(call.model, failure, attempts)
                call_id = self._record(call, "error", error=reason, attempts=attempts)
                raise LLMError(
                    reason, failure.kind, hint=failure.hint, attempts=attempts, call_id=call_id
                )
            await asyncio.sleep(self._delay(attempts, failure.retry_after))

    async def _attempt(
        self, backend: Backend, model: ModelSpec, kwargs: dict[str, Any]
    ) -> tuple[Any, Failure | None]:
        """One request in a concurrency slot under the deadline: (response, None) or (None,
        failure). Raises BudgetExhausted when the budget ran out while waiting for the slot."""
        async with self._slots():
            if self._exhausted_reason is not None:  # reached while we waited for a slot
                raise BudgetExhausted(self._exhausted_reason)
            try:
                response = await asyncio.wait_for(backend.send(kwargs), self.settings.timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                return None, backend.classify(model, error)
        return response, None

    def _accept(self, backend: Backend, call: _Call, response: Any, attempts: int) -> LLMReply:
        """Count the spend of a successful response, record it, cache it and hand it back."""
        text = direct.text(response)
        prompt_tokens, completion_tokens = direct.usage(response)
        cost, cost_known = backend.cost(call.model, response, prompt_tokens, completion_tokens)
        self._spent_usd += cost
        self._spent_tokens += prompt_tokens + completion_tokens
        self._update_exhausted()
        latency = call.elapsed()
        call_id = self._record(
            call,
            "ok",
            reply=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=cost,
            latency_s=latency,
            attempts=attempts,
        )
        self.recorder.cache_put(
            call.key, CachedReply(text, call.model.model, prompt_tokens, completion_tokens, cost)
        )
        return LLMReply(
            text, call.model.model, prompt_tokens, completion_tokens, cost, latency, attempts,
            False, call_id, cost_known,
        )  # fmt: skip

    def _record(self, call: _Call, outcome: str, **fields: Any) -> int:
        """Record ``call`` with ``outcome``; fields not given are those of a call without a reply
        (no tokens, no cost, no attempt, latency until now)."""
        fields = {"latency_s": call.elapsed(), "attempts": 0, **fields}
        record = CallRecord(
            call.purpose,
            call.model.model,
            call.messages,
            outcome=outcome,
            cache_key=call.key,
            variant_id=call.variant_id,
            **fields,
        )
        return self.recorder.record_call(record)

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

    def _reason(self, model: ModelSpec, failure: Failure, attempts: int) -> str:
        """The one-line reason of a failed call."""
        if failure.kind == "timeout":
            detail = f"deadline of {self.settings.timeout_s:g} s exceeded"
        else:
            detail = failure.detail
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return f"{model.label}: {detail}{tries}"
