"""Build the executor a run's config asks for (local slots or SLURM), with its sandbox."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from guided_evolution.evaluation.contract import Executor
from guided_evolution.evaluation.gpu import auto_slots_per_gpu, visible_gpus
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.preload import ZYGOTE, preload_pool
from guided_evolution.evaluation.sandbox import Sandbox, SandboxPolicy
from guided_evolution.evaluation.slurm import SlurmExecutor
from guided_evolution.evaluation.workers import WorkerPool

if TYPE_CHECKING:
    from guided_evolution.config import ResolvedConfig
    from guided_evolution.runstore.rundir import RunPaths


def _gpus(setting: Any) -> list[str]:
    if setting == "auto":
        return visible_gpus()
    return [str(g) for g in setting]


def plan_slots(resolved: ResolvedConfig) -> tuple[int, list[str], int | None]:
    """(slots, GPU ids, slots per GPU) from the executor config, resolving every "auto"."""
    ex = resolved.config.executor
    gpus = _gpus(ex.gpus)
    per_gpu: int | None
    if ex.slots_per_gpu == "auto":
        per_gpu = auto_slots_per_gpu(gpus, ex.gpu_memory_mb) if gpus else None
    else:
        per_gpu = ex.slots_per_gpu
    if ex.slots == "auto":
        slots = len(gpus) * (per_gpu or 1) if gpus else max(1, os.cpu_count() or 1)
    else:
        slots = ex.slots
    if gpus and per_gpu is not None:
        slots = min(slots, len(gpus) * per_gpu) if ex.slots == "auto" else slots
    return slots, gpus, per_gpu


def sandbox_policy(resolved: ResolvedConfig) -> SandboxPolicy:
    """The sandbox policy of a run's evaluations, from its evaluator config."""
    ev = resolved.config.evaluator
    return SandboxPolicy(
        network=ev.network,
        memory_mb=ev.memory_mb,
        cpu_seconds=ev.cpu_seconds,
        file_size_mb=ev.file_size_mb,
        max_processes=ev.max_processes,
        output_cap_bytes=ev.output_cap_bytes,
        pass_env=ev.pass_env,
        backend=ev.sandbox,
        tmpfs_mb=ev.tmpfs_mb,
        # GE_SEED_DIR: the evaluator may read data kept there. With preload, the worker runs ge's
        # zygote.py, which must be readable where ge is installed under a hidden path (a checkout
        # in $HOME or /tmp): its directory holds ge's own evaluation code, nothing secret.
        readable=(resolved.seed_dir, *([str(ZYGOTE.parent)] if ev.preload else [])),
    )


def check_sandbox(resolved: ResolvedConfig) -> None:
    """Refuse to start (``GeError``) when evaluations could not be isolated on this machine.

    SLURM evaluations are checked on each node instead (a node that cannot isolate fails the
    job); a check stage that runs here is checked here."""
    cfg = resolved.config
    local_check = bool(cfg.evaluator.check) and not cfg.executor.slurm.check_on_cluster
    if cfg.executor.kind != "slurm" or local_check:
        Sandbox(sandbox_policy(resolved)).probe()


def build_executor(resolved: ResolvedConfig, paths: RunPaths) -> Executor:
    """The executor the config asks for; its ``warnings`` say what to show at the start of the
    run (e.g. no network sandbox)."""
    ev = resolved.config.evaluator
    sandbox = Sandbox(sandbox_policy(resolved))
    slots, gpus, per_gpu = plan_slots(resolved)
    if resolved.config.executor.kind == "slurm":
        # The sandbox is probed on each node (slurm_job), not on the submitting machine.
        ignored = [k for k in ("worker", "preload") if getattr(ev, k)]
        warnings = [f"evaluator.{k} is ignored by the slurm executor" for k in ignored]
        return SlurmExecutor(resolved, paths, sandbox, warnings=warnings)
    info = sandbox.probe()
    warnings = [info.warning] if info.warning else []
    workers = None
    if ev.preload:
        workers, more = preload_pool(
            sandbox,
            ev.preload,
            ev.command,
            ev.check,
            start_timeout_s=ev.worker_start_timeout_s,
            recycle_after=ev.preload_recycle_after,
        )
        warnings += more
    elif ev.worker:
        stages = ("check", "evaluate") if ev.worker_check and ev.check else ("evaluate",)
        workers = WorkerPool(
            ev.worker, sandbox, start_timeout_s=ev.worker_start_timeout_s, stages=stages
        )
        warnings.append(
            "evaluator.worker: one persistent worker per slot; the variants a slot evaluates "
            "share its sandbox (uid, /tmp, HOME) and can influence each other"
        )
    return LocalExecutor(slots, gpus or None, per_gpu, sandbox, workers=workers, warnings=warnings)
