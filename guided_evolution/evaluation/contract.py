"""The evaluation contract: what the engine asks for, what it gets back, what every executor offers.

``EvalRequest`` describes one variant to evaluate, ``EvalResult`` its outcome, ``read_metrics``
the metrics-file rules every executor applies, and ``Executor`` the interface of
``local.LocalExecutor`` and ``slurm.SlurmExecutor``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

OUTPUT_TAIL_BYTES = 4 * 1024
"""Bytes of the end of an evaluation's output kept in ``EvalResult.output_tail``."""
METRICS_MAX_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class EvalRequest:
    """One variant to evaluate."""

    variant_id: str
    workdir: Path
    run_dir: Path
    command: str
    check_command: str | None
    timeout_s: float
    check_timeout_s: float
    metrics_path: Path
    log_path: Path | None
    objectives: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalResult:
    """Outcome of one evaluation."""

    variant_id: str
    status: str  # "ok" | "failed"
    metrics: dict[str, float | str]
    failure_reason: str | None
    output_tail: str
    stage: str  # "check" | "evaluate"
    started_at: float
    duration_s: float
    gpu: str | None


class Executor(Protocol):
    """Runs evaluations somewhere (this machine, a SLURM cluster); what the engine relies on."""

    capacity: int
    """How many evaluations may run at once."""
    warnings: list[str]
    """What the user should know: the build-time warnings, then (after ``aclose``) any more."""

    def describe(self) -> dict[str, Any]:
        """Where evaluations run: a one-line ``summary`` plus details (an "executor" event)."""
        ...

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        """Evaluate one variant; waits for free capacity."""
        ...

    async def aclose(self, cancel: bool = True) -> None:
        """Stop; with ``cancel`` also what runs outside ge (cluster jobs)."""
        ...


def read_metrics(
    path: Path, objectives: Sequence[str]
) -> tuple[dict[str, float | str], str | None]:
    """The metrics in ``path`` and the reason they are unusable (None when they are fine).

    Numbers become floats, strings stay strings, anything else is kept as its JSON text. Every
    objective must be present, numeric and finite.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return {}, "no metrics file written"
    except OSError as exc:
        return {}, f"metrics file unreadable: {exc.strerror or exc}"
    if not path.is_file():
        return {}, "metrics path is not a regular file"
    if size > METRICS_MAX_BYTES:
        return {}, f"metrics file too large ({size} bytes)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return {}, f"metrics file is not valid JSON: {str(exc)[:200]}"
    if not isinstance(data, dict):
        return {}, f"metrics file must hold a JSON object, got {type(data).__name__}"
    metrics = {str(key): _metric_value(value) for key, value in data.items()}
    for name in objectives:
        if name not in data:
            return metrics, f"metric '{name}' missing"
        value = data[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # The value is the variant's text: name its type only, never quote it (it may reach a prompt).
            return metrics, f"metric '{name}' is not a number (got {type(value).__name__})"
        number = metrics[name]
        if not isinstance(number, float) or not math.isfinite(number):
            return metrics, f"metric '{name}' is not finite ({number})"
    return metrics, None


def _metric_value(value: Any) -> float | str:
    """One metric as recorded: a float, a string, or the JSON text of anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, str):
        return value
    return json.dumps(value)[:1000]
