"""GPU discovery and packing of evaluation slots onto a GPU, without importing torch.

Small networks (ExquisiteNetV2 on 32 px CIFAR-10) leave a big GPU mostly idle, so several
evaluation processes share one. The packing rule is calibrated on a measured saturation curve
(one NVIDIA H200, the seed's fast recipe): aggregate images/s for K concurrent processes.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

# (processes per GPU, aggregate training images/s) measured on one H200, fast recipe, 32 px.
H200_SATURATION: tuple[tuple[int, float], ...] = (
    (1, 31_000.0),
    (4, 118_000.0),
    (8, 168_000.0),
    (16, 187_000.0),
)
NVIDIA_SMI_QUERY = ("--query-gpu=index,memory.free", "--format=csv,noheader,nounits")


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as nvidia-smi reports it."""

    index: str
    free_mb: float


def throughput_at(k: float, curve: Sequence[tuple[int, float]] = H200_SATURATION) -> float:
    """Aggregate throughput of `k` processes: linear between measured points, flat past the last."""
    points = sorted(curve)
    if k <= points[0][0]:
        return points[0][1] * k / points[0][0]
    for (k0, v0), (k1, v1) in itertools.pairwise(points):
        if k <= k1:
            return v0 + (v1 - v0) * (k - k0) / (k1 - k0)
    return points[-1][1]


def saturation_slots(
    curve: Sequence[tuple[int, float]] = H200_SATURATION, fraction: float = 0.9
) -> int:
    """The smallest K whose interpolated throughput reaches `fraction` of the plateau."""
    if not curve:
        raise ValueError("the saturation curve is empty")
    plateau = max(v for _, v in curve)
    last = max(k for k, _ in curve)
    for k in range(1, last + 1):
        if throughput_at(k, curve) >= fraction * plateau:
            return k
    return last


def recommend_slots_per_gpu(
    free_mem_mb: float,
    per_process_mem_mb: float,
    *,
    headroom_mb: float = 1024.0,
    headroom_fraction: float = 0.1,
    curve: Sequence[tuple[int, float]] = H200_SATURATION,
    fraction: float = 0.9,
) -> int:
    """How many evaluation processes to run on one GPU ("auto" slots per GPU).

    The smallest K that reaches `fraction` (90%) of the throughput plateau of `curve`, capped by
    what fits into `free_mem_mb` after keeping max(`headroom_mb`, `headroom_fraction` * free)
    free. With the H200 curve the saturation K is 9 (8 processes give 89.8% of the plateau).
    Returns 0 when not even one process fits; callers should then refuse to start.
    """
    if not (math.isfinite(free_mem_mb) and math.isfinite(per_process_mem_mb)):
        raise ValueError("memory sizes must be finite numbers")
    if free_mem_mb < 0 or per_process_mem_mb <= 0:
        raise ValueError(
            f"need free_mem_mb >= 0 and per_process_mem_mb > 0, got {free_mem_mb}, "
            f"{per_process_mem_mb}"
        )
    usable = free_mem_mb - max(headroom_mb, headroom_fraction * free_mem_mb)
    fitting = max(0, math.floor(usable / per_process_mem_mb))
    return min(saturation_slots(curve, fraction), fitting)


def _parse_visible(value: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES semantics: a comma list; parsing stops at the first invalid entry."""
    devices: list[str] = []
    for raw in value.split(","):
        item = raw.strip()
        if not item or item.startswith("-"):
            break
        devices.append(item)
    return devices


def query_gpus(timeout_s: float = 10.0) -> list[GpuInfo]:
    """GPUs and their free memory from `nvidia-smi`; [] when it is missing or fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    gpus: list[GpuInfo] = []
    for line in out.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0]:
            continue
        try:
            gpus.append(GpuInfo(parts[0], float(parts[1])))
        except ValueError:
            continue
    return gpus


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's indices."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        return _parse_visible(value)
    return [g.index for g in query_gpus()]


# Estimated GPU memory of one fast-recipe ExquisiteNetV2 evaluation (CUDA context, resident
# uint8 CIFAR-10, batch 256 activations); an estimate, not a measurement. `[executor]
# gpu_memory_mb` overrides it.
DEFAULT_PROCESS_MB = 2048.0


def auto_slots_per_gpu(gpus: Sequence[str], per_process_mem_mb: float = DEFAULT_PROCESS_MB) -> int:
    """`slots_per_gpu = "auto"`: the recommendation for the GPU with the least free memory.

    Free memory comes from nvidia-smi (matched on the ids in `gpus`); when it is unknown the
    answer is 1. Never less than 1, so a run always gets a slot (it may then fail with OOM).
    """
    wanted = {str(g) for g in gpus}
    free = [g.free_mb for g in query_gpus() if g.index in wanted]
    if not free:
        return 1
    return max(1, recommend_slots_per_gpu(min(free), per_process_mem_mb))
