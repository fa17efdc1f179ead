"""The evaluation contract: what the engine asks for, what it gets back, what every executor offers.

``EvalRequest`` describes one variant to evaluate, ``EvalResult`` its outcome, ``read_metrics``
the metrics-file rules every executor applies, ``read_feedback`` the optional feedback text
(``GE_FEEDBACK``) and ``Executor`` the interface of ``local.LocalExecutor`` and
``slurm.SlurmExecutor``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from guided_evolution.fsutil import (
    UnsafeFileError,
    UnsafePathError,
    read_beneath,
    read_head_beneath,
)

OUTPUT_TAIL_BYTES = 4 * 1024
"""Bytes of the end of an evaluation's output kept in ``EvalResult.output_tail``."""
METRICS_MAX_BYTES = 10 * 1024 * 1024
FEEDBACK_NAME = "feedback.txt"
"""The feedback file (``GE_FEEDBACK``), beside the metrics file."""
FEEDBACK_MAX_CHARS = 2000
"""``[evaluator] feedback_max_chars``: characters of feedback kept (the head, then a marker)."""
FEEDBACK_CUT = "\n[ge: feedback cut at {chars} characters; the file has {size} bytes]"
FEEDBACK_LINE_CHARS = 400
"""Characters of a failed evaluation's last output line kept in its feedback."""


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
    feedback_max_chars: int = FEEDBACK_MAX_CHARS

    @functools.cached_property
    def feedback_path(self) -> Path:
        """Where the evaluator may write its feedback text (``GE_FEEDBACK``): beside the metrics."""
        return Path(os.path.dirname(self.metrics_path), FEEDBACK_NAME)


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
    feedback: str = ""
    """The evaluator's feedback text (``read_feedback``); for a failure without one, its reason
    and last output line (``failure_feedback``)."""


class Executor(Protocol):
    """Runs evaluations somewhere (this machine, a SLURM cluster); what the engine relies on."""

    capacity: int
    """How many evaluations may run at once."""
    warnings: list[str]
    """What the user should know: the build-time warnings, then (after ``aclose``) any more."""

    def describe(self) -> dict[str, Any]:
        """Where evaluations run: a one-line ``summary`` plus details (an "executor" event)."""
        ...

    def isolation(self) -> dict[str, Any]:
        """The isolation in force for evaluated code (an "isolation" event; ``isolation.py``)."""
        ...

    async def evaluate(self, request: EvalRequest) -> EvalResult:
        """Evaluate one variant; waits for free capacity."""
        ...

    async def aclose(self, cancel: bool = True) -> None:
        """Stop; with ``cancel`` also what runs outside ge (cluster jobs)."""
        ...


def metrics_location(path: Path, root: Path | None = None) -> tuple[Path, PurePosixPath]:
    """Where ge opens the metrics file ``path`` from: (a directory of ge's own, the path below it).

    With the variant's directory ``root`` (and ``path`` inside it), that is ``root``'s parent and
    ``<root name>/.../metrics.json``, so that nothing at or below ``root`` is followed; otherwise
    ``path``'s own directory and its name.
    """
    full = os.path.abspath(path)  # normalized: a prefix test on the text is a test on parts
    if root is not None:
        top = os.path.abspath(root)
        if full.startswith("//") or top.startswith("//"):  # POSIX's other root: Path decides
            whole, parent = Path(full), Path(top)
            if whole.is_relative_to(parent) and whole != parent:
                return parent.parent, PurePosixPath(whole.relative_to(parent.parent))
        elif full.startswith(top.rstrip("/") + "/") and full != top:
            base = os.path.dirname(top)
            return Path(base), PurePosixPath(full[len(base) :].lstrip("/"))
    return Path(os.path.dirname(full)), PurePosixPath(os.path.basename(full))


def replaced_reason(exc: UnsafePathError, root: Path | None = None) -> str:
    """The failure reason for a directory on the metrics path that the variant replaced."""
    if root is not None and exc.component == Path(os.path.abspath(root)).name:
        return "the variant replaced its own directory"
    return f"the variant replaced its {exc.component} directory"


def read_metrics(
    path: Path, objectives: Sequence[str], *, root: Path | None = None
) -> tuple[dict[str, float | str], str | None]:
    """The metrics in ``path`` and the reason they are unusable (None when they are fine).

    ``root`` is the variant's directory: nothing at or below it is followed (without it, the
    file itself is not). The file must be a regular file with no other hard link and at most
    ``METRICS_MAX_BYTES``. Numbers become floats, strings stay strings, anything else is kept as
    its JSON text. Every objective must be present, numeric and finite. A reason never quotes
    what the variant wrote: it may reach a prompt or a terminal.
    """
    base, relpath = metrics_location(path, root)
    try:
        raw = read_beneath(base, relpath, METRICS_MAX_BYTES)
    except FileNotFoundError:
        return {}, "no metrics file written"
    except UnsafePathError as exc:
        return {}, replaced_reason(exc, root)
    except UnsafeFileError as exc:
        return {}, _UNSAFE_REASONS[exc.kind].format(size=exc.size)
    except OSError as exc:
        return {}, f"metrics file unreadable: {exc.strerror or type(exc).__name__}"
    data, reason = _parse(raw)
    if reason is not None:
        return {}, reason
    if not isinstance(data, dict):
        return {}, f"metrics file must hold a JSON object, got {type(data).__name__}"
    try:
        metrics = {str(key): _metric_value(value) for key, value in data.items()}
    except RecursionError:
        return {}, "metrics file is nested too deeply"
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


def read_feedback(
    path: Path, max_chars: int, *, root: Path | None = None
) -> tuple[str, str | None]:
    """The evaluator's feedback text in ``path`` (``GE_FEEDBACK``), and a note when it was ignored.

    Opened like the metrics file (nothing at or below ``root`` followed; a regular file with one
    link), but only its head is read: past ``max_chars`` characters the text is cut, with a
    marker. Text that is not UTF-8 or holds NUL bytes is ignored; other control characters
    (terminal escapes) are dropped. No file: no feedback, no note. A note never quotes the file.
    """
    base, relpath = metrics_location(path, root)
    limit = 4 * max(max_chars, 1) + 4  # UTF-8: at most 4 bytes a character
    try:
        raw, size = read_head_beneath(base, relpath, limit)
    except FileNotFoundError:
        return "", None
    except UnsafePathError as exc:
        return "", f"feedback ignored: {replaced_reason(exc, root)}"
    except UnsafeFileError as exc:
        return "", f"feedback ignored: {_UNSAFE_FEEDBACK.get(exc.kind, exc.kind)}"
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        return "", f"feedback ignored: the file is unreadable ({why})"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if size <= len(raw) or exc.start < len(raw) - 3:  # not a character cut by the head
            return "", f"feedback ignored: the file is not UTF-8 text (byte offset {exc.start})"
        text = raw[: exc.start].decode("utf-8")
    if "\x00" in text:
        return "", "feedback ignored: the file holds binary data (NUL bytes)"
    text = clean_text(text).strip()
    if len(text) > max_chars or size > len(raw):
        text = text[:max_chars].rstrip() + FEEDBACK_CUT.format(chars=max_chars, size=size)
    return text, None


def failure_feedback(stage: str, reason: str | None, output_tail: str) -> str:
    """The feedback of a failed evaluation whose evaluator wrote none: the failure reason and
    the last line of its output (a traceback's error line), as the fix prompt shows them."""
    lines = [f"the {stage} stage failed: {reason or 'unknown reason'}"]
    for line in reversed(clean_text(output_tail).splitlines()):
        line = line.strip()
        if line and not line.startswith("[ge]"):
            cut = line if len(line) <= FEEDBACK_LINE_CHARS else line[:FEEDBACK_LINE_CHARS] + "..."
            lines.append(f"last output line: {cut}")
            break
    return "\n".join(lines)


def clean_text(text: str) -> str:
    """``text`` with line ends normalised and control characters other than newline and tab
    (terminal escapes, bidirectional overrides) dropped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(
        ch for ch in text if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf")
    )


_UNSAFE_FEEDBACK = {
    "symlink": "the file is a symbolic link",
    "not_regular": "the path is not a regular file",
    "hard_links": "the file has other hard links",
}

_UNSAFE_REASONS = {
    "symlink": "metrics file is a symbolic link",
    "not_regular": "metrics path is not a regular file",
    "hard_links": "metrics file has other hard links",
    "too_large": "metrics file too large ({size} bytes)",
}


def _parse(raw: bytes) -> tuple[Any, str | None]:
    """The JSON value of ``raw``, or the reason it has none (positions only, never its bytes)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"metrics file is not UTF-8 (byte offset {exc.start})"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as exc:
        return None, f"metrics file is not valid JSON (line {exc.lineno}, column {exc.colno})"
    except ValueError:  # e.g. an integer over Python's digit limit
        return None, "metrics file is not valid JSON (a value cannot be read)"
    except RecursionError:
        return None, "metrics file is nested too deeply"


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
