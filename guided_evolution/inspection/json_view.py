"""The JSON edge of the inspection views: every view is a dataclass, and `to_json` turns one
(nested views, lists and dicts of them) into the plain data `--json` prints, keys in field order.

A field's metadata may rename its key (`renamed`: ``from`` is a keyword), leave it out while
it is None (`OMITTED_IF_NONE`: a section a flag did not ask for), or put a nested view's keys
in its parent's place (`INLINED`; a None one adds nothing).
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any


def to_json(value: Any) -> Any:
    """``value`` as JSON-able data: dataclasses become dicts (see the module doc)."""
    if is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in fields(value):
            item = getattr(value, f.name)
            if f.metadata.get("inlined"):
                out.update(to_json(item) if item is not None else {})
            elif item is not None or not f.metadata.get("omitted_if_none"):
                out[f.metadata.get("key", f.name)] = to_json(item)
        return out
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_json(v) for v in value)
    return value


def renamed(key: str) -> dict[str, str]:
    """Field metadata: the field is written under another ``key``."""
    return {"key": key}


OMITTED_IF_NONE = {"omitted_if_none": True}  # field metadata: left out while None
INLINED = {"inlined": True}  # field metadata: a nested view's keys in its parent's place


class JsonView:
    """A view that `--json` prints: `to_json` is its JSON, keys in field order."""

    __slots__ = ()  # a view with ``slots=True`` has no per-instance dict (100,000 rows at scale)

    def to_json(self) -> dict[str, Any]:
        """The JSON of this view."""
        data: dict[str, Any] = to_json(self)
        return data
