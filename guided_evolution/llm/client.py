"""The LLM client: ensemble choice, bounded concurrency, hard per-attempt deadline, retries, spend
and budget, use of the reply cache, and a record of every call.

All providers go through litellm (imported lazily: the import takes seconds). Any litellm model
string works: hosted (``gpt-4o``), ``ollama/...``, ``hosted_vllm/...``, or any OpenAI-compatible
server as ``openai/<name>`` with ``api_base``. litellm's own retries are off (its ``timeout`` is per
attempt); this module retries with exponential backoff and jitter, so a call takes at most
``(retries + 1) * timeout_s`` plus the backoff waits.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from guided_evolution.llm import provider
from guided_evolution.llm.errors import BudgetExhausted, Failure, LLMError, classify
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
"""How long :meth:`LLMClient.warm_up` spends on litellm's first-call setup at most (the import
aside): it takes ~0.2 s per model, a few seconds on a loaded machine."""


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
        self._module: ModuleType | None = None
        self._import_lock = threading.Lock()
        self._update_exhausted()

    # ---- ensemble and setup

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

    async def warm_up(self, *, limit_s: float = WARM_UP_LIMIT_S) -> None:
        """Import litellm (in a thread) and do its first-call setup for every model, e.g. while
        the seed is being evaluated, so that a first attempt's deadline times its request alone.

        The setup sends nothing and records nothing (:func:`provider.warm_up`); it gives up after
        ``limit_s`` seconds, and its failures are ignored: a real call meets them again.
        """
        litellm = await self._litellm()
        try:
            await asyncio.wait_for(self._set_up(litellm), limit_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            pass  # out of time: the first calls do the rest of the setup themselves

    async def _set_up(self, litellm: ModuleType) -> None:
        """litellm's first-call setup for each distinct model of the ensemble, failures ignored."""
        for model in {(m.model, m.api_base): m for m in self.settings.models}.values():
            try:
                await provider.warm_up(litellm, self.settings, model)
            except asyncio.CancelledError:
                raise
            except Exception:
                continue

    def _import_once(self) -> ModuleType:
        with self._import_lock:
            if self._module is None:
                self._module = provider.load_litellm()
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
        kwargs = self._request(call, temperature)
        if top_p is not None:
            kwargs["top_p"] = top_p
        litellm = await self._litellm()
        call.started = time.monotonic()  # the one-off import is not latency
        response, attempts = await self._send(litellm, call, kwargs)
        return self._accept(litellm, call, response, attempts)

    async def aclose(self) -> None:
        """Refuse further calls. litellm's pooled HTTP clients are shared and closed at exit."""
        self._closed = True

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

    def _request(self, call: _Call, temperature: float) -> dict[str, Any]:
        """litellm's arguments for ``call``; a named key variable that is unset fails the call."""
        model = call.model
        api_key = None
        if model.api_key_env:
            api_key = os.environ.get(model.api_key_env)
            if not api_key:
                reason = f"{model.label}: environment variable {model.api_key_env} is not set"
                call_id = self._record(call, "error", error=reason)
                hint = f"export {model.api_key_env}=<your key>"
                raise LLMError(reason, "auth", hint=hint, call_id=call_id)
        return provider.request(self.settings, model, call.messages, temperature, api_key)

    async def _send(
        self, litellm: ModuleType, call: _Call, kwargs: dict[str, Any]
    ) -> tuple[Any, int]:
        """(response, attempts it took): retries retryable failures with backoff; the last
        failure is recorded and raised as LLMError."""
        attempts = 0
        while True:
            attempts += 1
            response, failure = await self._attempt(litellm, call.model, kwargs)
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
        self, litellm: ModuleType, model: ModelSpec, kwargs: dict[str, Any]
    ) -> tuple[Any, Failure | None]:
        """One request in a concurrency slot under the deadline: (response, None) or (None,
        failure). Raises BudgetExhausted when the budget ran out while waiting for the slot."""
        async with self._slots():
            if self._exhausted_reason is not None:  # reached while we waited for a slot
                raise BudgetExhausted(self._exhausted_reason)
            try:
                response = await asyncio.wait_for(
                    litellm.acompletion(**kwargs), self.settings.timeout_s
                )
            except asyncio.CancelledError:
                raise
            except Exception as error:
                return None, classify(litellm, model, error)
        return response, None

    def _accept(self, litellm: ModuleType, call: _Call, response: Any, attempts: int) -> LLMReply:
        """Count the spend of a successful response, record it, cache it and hand it back."""
        text = provider.text(response)
        prompt_tokens, completion_tokens = provider.usage(response)
        cost, cost_known = provider.cost(
            litellm, call.model, response, prompt_tokens, completion_tokens
        )
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
