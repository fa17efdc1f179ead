"""Per-token prices from litellm's price table, read without importing litellm.

litellm ships its price table as JSON inside its package; importing litellm to read it costs
seconds and ~200 MB, so :class:`PriceTable` finds the file through the import system's metadata
(no module is executed), reads only the entries it is asked for, and keeps them for the process.
A missing package, file or entry is an unknown price, never an error.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PRICE_FILE = "model_prices_and_context_window_backup.json"
"""litellm's bundled price table, in the top folder of the installed ``litellm`` package."""


@dataclass(frozen=True)
class Price:
    """USD per token: input, output, and input read from the provider's prompt cache."""

    input: float
    output: float
    cache_read: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """What a call with these token counts costs (cached prompt tokens at their price)."""
        cached = min(max(cached_tokens, 0), prompt_tokens) if self.cache_read is not None else 0
        return (
            (prompt_tokens - cached) * self.input
            + cached * (self.cache_read or 0.0)
            + completion_tokens * self.output
        )


def price_file() -> Path | None:
    """Where litellm's price table is installed, found without importing litellm; None if not."""
    try:
        spec = importlib.util.find_spec("litellm")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / PRICE_FILE
        if path.is_file():
            return path
    return None


@dataclass
class PriceTable:
    """The prices of the models asked for, read from ``path`` (default: :func:`price_file`) once
    each. ``provider`` keeps only entries litellm files under that provider (None: any)."""

    path: Path | None = None
    provider: str | None = "openai"
    _found: dict[str, Price | None] = field(default_factory=dict)

    def price(self, *names: str) -> Price | None:
        """The price of the first of ``names`` the table knows, or None."""
        missing = [n for n in names if n and n not in self._found]
        if missing:
            self._found.update(self._read(missing))
        for name in names:
            if name and self._found.get(name) is not None:
                return self._found[name]
        return None

    def _read(self, names: list[str]) -> dict[str, Price | None]:
        """The entries of ``names`` (None where absent or unreadable), the file read once."""
        path = self.path or price_file()
        try:
            text = path.read_text(encoding="utf-8") if path else ""
        except OSError:
            text = ""
        if text and not text.startswith('{\n    "'):  # not laid out as litellm writes it
            return self._parsed(text, names)
        return {name: self._entry(text, name) for name in names}

    def _parsed(self, text: str, names: list[str]) -> dict[str, Price | None]:
        """The entries of ``names`` from the whole file parsed (slower, any layout)."""
        try:
            table = json.loads(text)
        except ValueError:
            table = {}
        table = table if isinstance(table, dict) else {}
        return {name: _price(table.get(name), self.provider) for name in names}

    def _entry(self, text: str, name: str) -> Price | None:
        """Parse only the object of key ``name`` (the file is one JSON object of model keys)."""
        key = json.dumps(name) + ":"
        start = text.find(key)
        while start != -1 and not _is_top_key(text, start):
            start = text.find(key, start + 1)
        if start == -1:
            return None
        try:
            entry, _ = json.JSONDecoder().raw_decode(text, text.index("{", start + len(key)))
        except ValueError:
            return None
        return _price(entry, self.provider)


def _is_top_key(text: str, start: int) -> bool:
    """True when the key at ``start`` is a model key (one level deep, as litellm writes the file:
    4-space indented), not a field of an entry."""
    line_start = text.rfind("\n", 0, start) + 1
    return text[line_start:start] == "    "


def _price(entry: Any, provider: str | None) -> Price | None:
    """The price of one table entry, or None without per-token prices (or another provider)."""
    if not isinstance(entry, dict):
        return None
    if provider is not None and entry.get("litellm_provider") != provider:
        return None
    prices = [entry.get(k) for k in ("input_cost_per_token", "output_cost_per_token")]
    if not all(isinstance(p, (int, float)) for p in prices):
        return None
    cache_read = entry.get("cache_read_input_token_cost")
    return Price(
        float(prices[0]),
        float(prices[1]),
        float(cache_read) if isinstance(cache_read, (int, float)) else None,
    )
