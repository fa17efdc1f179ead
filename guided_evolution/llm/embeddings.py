"""Embedding vectors of code through litellm's embedding API (``[evolution]
[evolution.novelty] embedding_model``), cached per text for the run. litellm is imported on the first
request only (:func:`guided_evolution.llm.provider.load_litellm`, offline cost map)."""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guided_evolution.llm.direct import DUMMY_API_KEY

BATCH = 64  # texts per request


class EmbeddingError(Exception):
    """The embedding model could not be asked; ``reason`` is one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _vector(item: Any) -> list[float]:
    """One ``data`` item's vector (a list of floats, or base64 of little-endian float32)."""
    value = item.get("embedding") if isinstance(item, dict) else getattr(item, "embedding", None)
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if not isinstance(value, (list, tuple)) or not value:
        raise EmbeddingError("the embedding response has no vector")
    return [float(x) for x in value]


@dataclass
class EmbeddingClient:
    """Vectors of texts from one embedding model (an ``api_base`` and key variable as the run's
    models have), remembered per text."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    timeout_s: float = 60.0
    vectors: dict[str, list[float]] = field(default_factory=dict)
    requests: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one batch at a time: none twice

    def _kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"model": self.model, "timeout": self.timeout_s}
        if self.api_base:
            kwargs["api_base"] = self.api_base
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            kwargs["api_key"] = key
        elif self.api_base:
            kwargs["api_key"] = DUMMY_API_KEY
        return kwargs

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """The texts' vectors, in order; EmbeddingError when the model cannot give them."""
        async with self.lock:
            await self._fetch(texts)
        return [self.vectors[t] for t in texts]

    async def _fetch(self, texts: Sequence[str]) -> None:
        missing = list(dict.fromkeys(t for t in texts if t not in self.vectors))
        if missing:
            from guided_evolution.llm.provider import load_litellm

            litellm = load_litellm()
            for start in range(0, len(missing), BATCH):
                batch = missing[start : start + BATCH]
                self.requests += 1
                try:
                    response = await litellm.aembedding(input=batch, **self._kwargs())
                    data = response.get("data") if isinstance(response, dict) else response.data
                    got = [_vector(item) for item in data or []]
                except EmbeddingError:
                    raise
                except Exception as err:  # litellm's and the provider's errors alike
                    line = " ".join(str(err).split())[:300]
                    raise EmbeddingError(f"{type(err).__name__}: {line}") from None
                if len(got) != len(batch):
                    raise EmbeddingError(f"{len(got)} vectors for {len(batch)} texts")
                self.vectors.update(zip(batch, got, strict=True))
