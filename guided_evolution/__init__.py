"""ge: LLM Guided Evolution of source code, with every variant stored as a git commit.

The Python API (``guided_evolution.api``, docs/api.md) is re-exported here: ``ge.run``,
``ge.resume``, ``ge.open_run``, ``ge.Run``... It is imported on first use, so that the `ge`
command and ``import guided_evolution`` stay as quick as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from guided_evolution.api import (
        DoctorResult,
        Event,
        Exported,
        Run,
        Variant,
        VariantInfo,
        doctor,
        init,
        latest_run_dir,
        looks_like_run,
        open_run,
        resume,
        run,
    )

__all__ = [
    "DoctorResult",
    "Event",
    "Exported",
    "Run",
    "Variant",
    "VariantInfo",
    "__version__",
    "doctor",
    "init",
    "latest_run_dir",
    "looks_like_run",
    "open_run",
    "resume",
    "run",
]


def __getattr__(name: str) -> Any:
    """``guided_evolution.run`` and the rest of the API, imported when first asked for."""
    if name in __all__ and name != "__version__":
        from guided_evolution import api

        return getattr(api, name)
    raise AttributeError(f"module 'guided_evolution' has no attribute {name!r}")
