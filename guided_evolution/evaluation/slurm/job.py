"""The job side of the SLURM executor: what runs inside one sbatch job, on the node.

The job script (``slurm.SlurmExecutor``) runs the setup snippet, then ``job_main`` with the
interpreter that runs ge: it reads the job's spec.json, probes the sandbox there and evaluates
through a one-slot ``LocalExecutor``, so the check → evaluate cascade, the sandbox wrapper, the
output cap, the metrics contract and the feedback file (``GE_FEEDBACK``) are the same as locally.
It writes result.json (the ``EvalResult`` with its feedback, fsynced: the submitter reads it over
a shared file system).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import FEEDBACK_MAX_CHARS, EvalRequest, EvalResult
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.fsutil import atomic_write, is_within


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def request_from_spec(spec: dict[str, Any]) -> EvalRequest | None:
    """The request a job's spec.json describes, or None when the spec is malformed."""
    try:
        return EvalRequest(
            variant_id=str(spec["variant_id"]),
            workdir=Path(spec["workdir"]),
            run_dir=Path(spec["run_dir"]),
            command=str(spec["command"]),
            check_command=spec.get("check_command"),
            timeout_s=float(spec["timeout_s"]),
            check_timeout_s=float(spec["check_timeout_s"]),
            metrics_path=Path(spec["metrics_path"]),
            log_path=Path(spec["log_path"]) if spec.get("log_path") else None,
            objectives=tuple(str(o) for o in spec.get("objectives", ())),
            env={str(k): str(v) for k, v in dict(spec.get("env") or {}).items()},
            feedback_max_chars=int(spec.get("feedback_max_chars") or FEEDBACK_MAX_CHARS),
        )
    except (KeyError, TypeError, ValueError):
        return None


def spec_of(
    request: EvalRequest, job_dir: Path, policy: SandboxPolicy, *, check: bool
) -> dict[str, Any]:
    """The spec.json of ``request`` once its tree is in ``job_dir/work`` (``request_from_spec``
    reads it back on the node); ``check``: the check stage runs there too."""
    source = Path(os.path.abspath(request.workdir))
    work = job_dir / "work"
    metrics = Path(os.path.abspath(request.metrics_path))
    if is_within(metrics, source):
        metrics = work / metrics.relative_to(source)
    return {
        "variant_id": request.variant_id,
        "workdir": str(work),
        "run_dir": str(Path(os.path.abspath(request.run_dir))),
        "command": request.command,
        "check_command": request.check_command if check else None,
        "timeout_s": request.timeout_s,
        "check_timeout_s": request.check_timeout_s,
        "metrics_path": str(metrics),
        "log_path": str(os.path.abspath(request.log_path)) if request.log_path else None,
        "objectives": list(request.objectives),
        "env": dict(request.env),
        "feedback_max_chars": request.feedback_max_chars,
        "policy": {**asdict(policy), "pass_env": list(policy.pass_env)},
        "result_path": str(job_dir / "result.json"),
    }


def job_main(argv: Sequence[str]) -> int:
    """Entry point inside the SLURM job: evaluate the variant described by ``argv[0]`` (spec.json).

    Writes result.json (the EvalResult) and exits 0; exits non-zero, without a result, when the
    spec is unreadable or the job is terminated (SLURM's reason then tells ge what happened).
    """
    if len(argv) != 1:
        print("usage: job_main SPEC.json", file=sys.stderr)
        return 2
    spec = read_json(Path(argv[0]))
    request = request_from_spec(spec) if spec else None
    if spec is None or request is None:
        print(f"[ge] unreadable job spec {argv[0]}", file=sys.stderr)
        return 3
    return asyncio.run(_run_job(spec, request))


async def _run_job(spec: dict[str, Any], request: EvalRequest) -> int:
    policy_data = dict(spec.get("policy") or {})
    for key, value in policy_data.items():  # JSON gave lists; the policy is frozen (hashable)
        if isinstance(value, list):
            policy_data[key] = tuple(value)
    started = time.time()
    try:
        sandbox = Sandbox(SandboxPolicy(**policy_data))
        info = sandbox.probe()
    except (GeError, TypeError) as exc:
        message = exc.one_line() if isinstance(exc, GeError) else str(exc)
        _write_result(
            spec,
            _node_failure(request, f"sandbox on node {socket.gethostname()}: {message}", started),
        )
        return 0
    if info.warning:
        print(f"[ge] on {socket.gethostname()}: {info.warning}", file=sys.stderr, flush=True)
    # The sandbox puts ge's interpreter first on PATH unless PATH already names it: name it last,
    # so that the interpreter the setup snippet activated stays the evaluator's `python`.
    py_dir = os.path.dirname(sys.executable)
    path_parts = os.environ.get("PATH", os.defpath).split(os.pathsep)
    if py_dir and py_dir not in path_parts:
        os.environ["PATH"] = os.pathsep.join([*path_parts, py_dir])
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES") or None
    executor = LocalExecutor(1, [gpu] if gpu else None, None, sandbox)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        if task is not None:
            loop.add_signal_handler(sig, task.cancel)
    try:
        result = await executor.evaluate(request)
    except asyncio.CancelledError:
        await executor.aclose()
        print("[ge] terminated; evaluation stopped", file=sys.stderr, flush=True)
        return 143
    except GeError as exc:
        result = _node_failure(request, exc.one_line(), started)
    _write_result(spec, result)
    await executor.aclose()  # leftovers and the evaluation's cgroup, if any
    return 0


def _node_failure(request: EvalRequest, reason: str, started: float) -> EvalResult:
    return EvalResult(
        variant_id=request.variant_id,
        status="failed",
        metrics={},
        failure_reason=reason,
        output_tail="",
        stage="evaluate",
        started_at=started,
        duration_s=time.time() - started,
        gpu=None,
    )


def _write_result(spec: dict[str, Any], result: EvalResult) -> None:
    data = asdict(result)
    data["host"] = socket.gethostname()
    path = Path(spec["result_path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data), fsync=True)


if __name__ == "__main__":
    sys.exit(job_main(sys.argv[1:]))
