"""What a call leaves behind: the reply handed to the caller, the record of every call, the cached
reply, the recorder protocol that stores both (the run index implements it), and the cache key."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


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
    """One LLM call, or a reply served from the cache. ``outcome`` is 'ok', 'error' or 'cached'.
    ``id`` is filled in by a recorder that wants to (the SQLite index does)."""

    purpose: str
    model: str
    messages: list[dict[str, Any]]
    reply: str | None = None
    outcome: str = "ok"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    error: str | None = None
    attempts: int = 1
    cache_key: str | None = None
    variant_id: str | None = None
    created_at: float = field(default_factory=time.time)  # unix time
    id: int | None = None


@dataclass(frozen=True)
class CachedReply:
    """What the cache keeps of a reply, so a resumed run never pays twice for the same prompt."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class CallRecorder(Protocol):
    """Where calls are recorded and replies cached (the SQLite run index implements it)."""

    def record_call(self, record: CallRecord) -> int:
        """Store ``record``; return its call id."""
        ...

    def cache_get(self, key: str) -> CachedReply | None:
        """The reply cached under ``key``, or None."""
        ...

    def cache_put(self, key: str, reply: CachedReply) -> None:
        """Cache ``reply`` under ``key`` (replacing an older one)."""
        ...


@dataclass
class MemoryRecorder:
    """A :class:`CallRecorder` in memory, for tests and for runs without an index."""

    calls: list[CallRecord] = field(default_factory=list)
    cache: dict[str, CachedReply] = field(default_factory=dict)

    def record_call(self, record: CallRecord) -> int:
        """Keep ``record``; its 1-based position is its id."""
        self.calls.append(record)
        return len(self.calls)

    def cache_get(self, key: str) -> CachedReply | None:
        """The reply cached under ``key``, or None."""
        return self.cache.get(key)

    def cache_put(self, key: str, reply: CachedReply) -> None:
        """Cache ``reply`` under ``key``."""
        self.cache[key] = reply


PLANS_PER_GENERATION = 1_000_000  # sample_index: generation, then the plan, then the call
CALLS_PER_PLAN = 1000


def sample_index(generation: int, plan: int, call: int) -> int:
    """The reply-cache key's sample index of a child's ``call``-th LLM call (0 = its first) for
    plan ``plan`` of ``generation``: the same request of another child is another cache entry.
    Stored keys of earlier runs depend on these numbers: never change them."""
    return generation * PLANS_PER_GENERATION + plan * CALLS_PER_PLAN + call


def cache_key(
    model: str, messages: list[dict[str, Any]], temperature: float, sample_index: int
) -> str:
    """The reply-cache key: sha256 over the model string, messages, temperature and sample index."""
    payload = json.dumps(
        [model, messages, round(temperature, 6), sample_index], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode()).hexdigest()
