"""Build the executor a run's config asks for (local slots or SLURM), with its sandbox."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import Executor
from guided_evolution.evaluation.gpu import auto_slots_per_gpu, visible_gpus
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.sandbox.cgroups import own_memory_limit
from guided_evolution.evaluation.sandbox.disk_reserve import MB, DiskReserve
from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
from guided_evolution.evaluation.workers.pool import WorkerPool
from guided_evolution.evaluation.workers.preload import ZYGOTE_READS, preload_pool

if TYPE_CHECKING:
    from guided_evolution.config import ResolvedConfig
    from guided_evolution.runstore.rundir import RunPaths


MEMORY_SHARE = 3 / 4
"""``memory_mb = "auto"``: the part of the machine's memory (or of ge's own cgroup limit) that the
slots share; the rest stays with ge, the system and the page cache."""
MEMORY_DEFAULT_MIN_MB = 256
ADDRESS_SPACE_MIN_MB = 4096
"""Without a cgroup, the default RLIMIT_AS of each process is twice the evaluation's share and
at least this: address space is not memory (``import torch`` maps 0.65 GB for 0.2 GB resident;
every thread reserves its stack and a 64 MB malloc arena)."""

Plan = tuple[int, list[str], int | None]


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


def machine_memory_mb() -> tuple[int, str]:
    """The memory evaluations may share: the machine's, or ge's cgroup limit where lower (a
    container, a SLURM job); and which of the two, in words."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = own_memory_limit()
    if limit is not None and limit < total:
        return limit // MB, "ge's cgroup limit"
    return total // MB, "the machine's memory"


def memory_policy(resolved: ResolvedConfig, plan: Plan) -> dict[str, Any]:
    """``memory_mb`` and how it was chosen: ``evaluator.limits.memory_mb``, or for "auto" 3/4 of the
    machine's memory over the slots (and, without a cgroup, an RLIMIT_AS of twice that, at least
    4 GB, none with GPUs: CUDA reserves more address space than any such limit)."""
    setting = resolved.config.evaluator.limits.memory_mb
    if setting != "auto":
        return {"memory_mb": setting or None}
    if resolved.config.executor.kind == "slurm":  # the job's own limit (slurm.mem) applies
        return {"memory_mb": None, "memory_default": "left to SLURM (executor.slurm.mem)"}
    slots, gpus, _ = plan
    total, what = machine_memory_mb()
    share = max(MEMORY_DEFAULT_MIN_MB, int(total * MEMORY_SHARE / slots) // 64 * 64)
    per = f"over {slots} slots" if slots > 1 else "for 1 slot"
    return {
        "memory_mb": share,
        "memory_default": f"ge's default: 3/4 of {what} ({total} MB) {per}",
        "default_address_space_mb": None if gpus else max(2 * share, ADDRESS_SPACE_MIN_MB),
    }


def disk_reserve(resolved: ResolvedConfig) -> DiskReserve | None:
    """The disk reserve of the run directory's file system (``evaluator.limits.disk_reserve_mb``);
    None for SLURM (its jobs run elsewhere) and for 0."""
    if resolved.config.executor.kind == "slurm":
        return None
    return DiskReserve.from_setting(
        Path(resolved.run_dir), resolved.config.evaluator.limits.disk_reserve_mb
    )


def sandbox_policy(
    resolved: ResolvedConfig, plan: Plan | None = None, reserve: DiskReserve | None = None
) -> SandboxPolicy:
    """The sandbox policy of a run's evaluations, from its evaluator config; ``plan`` is
    ``plan_slots``' (computed when not given), ``reserve`` the executor's disk reserve."""
    ev = resolved.config.evaluator
    return SandboxPolicy(
        network=ev.network,
        **memory_policy(resolved, plan if plan is not None else plan_slots(resolved)),
        disk_reserve=reserve.describe() if reserve is not None else "",
        cpu_seconds=ev.limits.cpu_seconds,
        file_size_mb=ev.limits.file_size_mb,
        max_processes=ev.limits.max_processes,
        output_cap_bytes=ev.limits.output_cap_bytes,
        pass_env=ev.pass_env,
        backend=ev.sandbox,
        tmpfs_mb=ev.limits.tmpfs_mb,
        # GE_SEED_DIR: the evaluator may read data kept there. With preload, the worker runs ge's
        # zygote.py (and the landlock.py it loads), which must be readable where ge is installed under a hidden path (a checkout
        # in $HOME or /tmp): these directories hold ge's own evaluation code, nothing secret.
        readable=(
            resolved.seed_dir,
            *(map(str, ZYGOTE_READS) if ev.preload_modules() is not None else ()),
        ),
    )


def check_sandbox(resolved: ResolvedConfig) -> None:
    """Refuse to start (``GeError``) when evaluations could not be isolated on this machine.

    SLURM evaluations are checked on each node instead (a node that cannot isolate fails the
    job); a check stage that runs here is checked here."""
    cfg = resolved.config
    ex = cfg.executor
    local_check = bool(cfg.evaluator.check) and not ex.slurm.check_on_cluster
    reserve = disk_reserve(resolved)
    if ex.kind != "slurm" or local_check:
        # No GPU query for the slot plan here; without one, the policy is the executor's own,
        # so its probe (cached per process and policy) is not repeated when the executor starts.
        queries = ex.gpus == "auto" or (bool(ex.gpus) and ex.slots_per_gpu == "auto")
        plan = (1, [], None) if queries else plan_slots(resolved)
        Sandbox(sandbox_policy(resolved, plan, reserve)).probe()
    free = reserve.free() if reserve is not None else None
    if reserve is not None and free is not None and free < reserve.floor:
        raise GeError(
            f"free space on {reserve.filesystem} is {free // MB} MB, below the disk reserve of "
            f"{reserve.floor // MB} MB that ge keeps free while variants run",
            "free some space there, use another run directory (--run-dir), or lower "
            "evaluator.limits.disk_reserve_mb (0 turns the reserve off)",
        )


def build_executor(resolved: ResolvedConfig, paths: RunPaths) -> Executor:
    """The executor the config asks for; its ``warnings`` say what to show at the start of the
    run (e.g. no network sandbox)."""
    ev = resolved.config.evaluator
    plan = plan_slots(resolved)
    slots, gpus, per_gpu = plan
    reserve = disk_reserve(resolved)
    sandbox = Sandbox(sandbox_policy(resolved, plan, reserve))
    if resolved.config.executor.kind == "slurm":
        # The sandbox is probed on each node (job), not on the submitting machine.
        ignored = ["worker"] * bool(ev.worker) + ["preload"] * bool(ev.preload.modules)
        warnings = [f"evaluator.{k} is ignored by the slurm executor" for k in ignored]
        from guided_evolution.evaluation.slurm.executor import SlurmExecutor  # only for SLURM

        return SlurmExecutor(resolved, paths, sandbox, warnings=warnings)
    info = sandbox.probe()
    warnings = [info.warning] if info.warning else []
    workers = None
    modules = ev.preload_modules()
    if modules is not None:
        workers, more = preload_pool(
            sandbox,
            modules,
            ev.command,
            ev.check,
            start_timeout_s=ev.worker_start_timeout_s,
            recycle_after=ev.preload.recycle_after,
            work_dir=paths.work,
            run_dir=paths.root,
        )
        if bool(ev.preload.modules):  # asked for: say why it is not used
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
    return LocalExecutor(
        slots,
        gpus or None,
        per_gpu,
        sandbox,
        workers=workers,
        warnings=warnings,
        disk_reserve=reserve,
    )
