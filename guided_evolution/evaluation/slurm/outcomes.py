"""What an ended SLURM job means: the result it wrote, or a failure with SLURM's reason.

A job that SLURM ends (time limit, out of memory, node failure, scancel) is a failed evaluation
with that reason (its feedback, as locally: the reason and the output's last line); without
accounting, the job script's exit file says how it ended. A failure's reason and the end of the
job's output are appended to the variant's log. A job's own feedback comes in its result.json.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from guided_evolution.evaluation.contract import (
    METRICS_MAX_BYTES,
    OUTPUT_TAIL_BYTES,
    EvalRequest,
    EvalResult,
    clean_text,
    failure_feedback,
)
from guided_evolution.evaluation.slurm.commands import JobState
from guided_evolution.evaluation.slurm.job import read_json
from guided_evolution.fsutil import atomic_write, is_within, read_beneath

JOB_OUTPUT_TAIL_BYTES = 8 * 1024

ENDED_BY_SLURM = {
    "TIMEOUT": "hit its time limit ({time_limit})",
    "CANCELLED": "was cancelled (scancel)",
    "OUT_OF_MEMORY": "ran out of memory (SLURM mem = {mem})",
    "NODE_FAIL": "was ended by a node failure",
    "PREEMPTED": "was preempted by SLURM",
    "BOOT_FAIL": "could not start (node boot failure)",
    "DEADLINE": "passed its SLURM deadline",
    "REVOKED": "was revoked by SLURM",
}
"""Terminal states in which SLURM (not the job itself) ended the job, and how to say it."""


def read_result(job_dir: Path, request: EvalRequest, submitted_at: float) -> EvalResult | None:
    """The result the job wrote into ``job_dir``, if any (its metrics file is copied beside it)."""
    data = read_json(job_dir / "result.json")
    if data is None or data.get("status") not in ("ok", "failed"):
        return None
    try:
        result = EvalResult(
            variant_id=request.variant_id,
            status=str(data["status"]),
            metrics={str(k): v for k, v in dict(data.get("metrics") or {}).items()},
            failure_reason=data.get("failure_reason"),
            output_tail=str(data.get("output_tail") or ""),
            stage=str(data.get("stage") or "evaluate"),
            started_at=float(data.get("started_at") or submitted_at),
            duration_s=float(data.get("duration_s") or 0.0),
            gpu=data.get("gpu"),
            feedback=_feedback(data.get("feedback"), request.feedback_max_chars),
        )
    except (TypeError, ValueError, KeyError):
        return None
    spec = read_json(job_dir / "spec.json") or {}
    path = Path(os.path.abspath(str(spec.get("metrics_path") or job_dir)))
    if is_within(path, job_dir / "work") and path != job_dir / "work":
        # The variant wrote it: read it without following a link, as read_metrics does.
        with contextlib.suppress(OSError):
            data = read_beneath(job_dir, path.relative_to(job_dir), METRICS_MAX_BYTES)
            atomic_write(job_dir / "metrics.json", data)
    return result


def log_failure(job_dir: Path, log_path: Path | None, reason: str) -> str:
    """Append ``reason`` and the end of the job's output to the log; the output tail to report."""
    log = Path(log_path) if log_path else None
    job_out = _tail(job_dir / "job.out", JOB_OUTPUT_TAIL_BYTES)
    text = f"\n[ge] {reason}\n"
    if job_out:
        text += f"[ge] end of the job's output ({job_dir / 'job.out'}):\n{job_out}"
    tail = text
    if log is not None:
        with contextlib.suppress(OSError):
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(text)
            tail = _tail(log, OUTPUT_TAIL_BYTES)
    return tail[-OUTPUT_TAIL_BYTES:]


def failed_result(
    request: EvalRequest, reason: str, output_tail: str, submitted_at: float
) -> EvalResult:
    """A failed evaluation of ``request``, counted from the job's submission."""
    return EvalResult(
        variant_id=request.variant_id,
        status="failed",
        metrics={},
        failure_reason=reason,
        output_tail=output_tail,
        stage="evaluate",
        started_at=submitted_at,
        duration_s=max(0.0, time.time() - submitted_at),
        gpu=None,
        feedback=failure_feedback("evaluate", reason, output_tail),
    )


def ended_reason(job_id: str | None, state: JobState, time_limit: str, mem: str | None) -> str:
    """Why SLURM ended the job, from its terminal state."""
    text = ENDED_BY_SLURM.get(state.state, f"ended in state {state.state}")
    text = text.format(time_limit=time_limit, mem=mem or "default")
    reason = f" ({state.reason})" if state.reason and state.reason not in ("None", "") else ""
    return f"SLURM job {job_id} {text}{reason}"


def exit_reason(job_id: str | None, info: dict[str, Any], job_dir: Path, python: str) -> str:
    """How the job script ended without a result, from its exit file."""
    stage = info.get("stage")
    if info.get("signal"):
        return (
            f"SLURM job {job_id} was terminated by {_signal_text(info.get('signal'))} "
            f"during {stage or 'the job'} (time limit, scancel or preemption; "
            "SLURM no longer says which)"
        )
    code = info.get("exit")
    if stage == "setup":
        return (
            f"the setup snippet of SLURM job {job_id} failed (exit code {code}); "
            f"see {job_dir / 'job.out'}"
        )
    return (
        f"ge's launcher in SLURM job {job_id} failed (exit code {code}); see "
        f"{job_dir / 'job.out'} (is ge importable by {python} on the node? "
        "set [executor.slurm] python)"
    )


def _feedback(value: Any, max_chars: int) -> str:
    """The feedback of a job's result.json (read on the node by ``read_feedback``), checked
    again here: text, control characters dropped, at most ``max_chars`` (and the marker)."""
    if not isinstance(value, str):
        return ""
    text = clean_text(value)
    return text if len(text) <= max_chars + 100 else text[:max_chars]


def _tail(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _signal_text(name: Any) -> str:
    return str(name) if name else "a signal"
