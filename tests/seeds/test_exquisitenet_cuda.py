"""The ExquisiteNetV2 evaluator on a CUDA GPU: skipped where torch sees none (CI, this laptop).

Run on a GPU box with `python -m pytest -q tests/seeds/test_exquisitenet_cuda.py` (about a minute);
`benchmarks/gpu_session.sh` runs it before the throughput benchmark. Needs torch and numpy
only (not ge's own dependencies), so it also runs in a bare PyTorch image.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.cifar import write_cifar

NO_GPU = "no CUDA device: the GPU paths are tested on a GPU box"
# Without a GPU driver's device (NVIDIA, or ROCm's /dev/kfd, WSL's /dev/dxg) no torch sees a GPU:
# skipped without importing torch (~1.5 CPU-s in every test process that collects this file).
GPU_DRIVERS = ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/kfd", "/dev/dxg")
if not any(Path(p).exists() for p in GPU_DRIVERS):
    pytest.skip(NO_GPU, allow_module_level=True)
torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip(NO_GPU, allow_module_level=True)

SEED_DIR = Path(__file__).resolve().parents[2] / "seeds" / "exquisitenet_v2"
EVALUATE = SEED_DIR / "evaluate.py"
TIMING_KEYS = {"train_seconds", "images_per_second"}
FORWARD = "        x = self.DFSEB1(self.FCT(x))"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cifar(tmp_path_factory.mktemp("cifar") / "cifar-10-batches-py", 2_000, 500, seed=3)


def _variant(root: Path, name: str, forward: str = FORWARD) -> Path:
    directory = root / name
    directory.mkdir()
    text = (SEED_DIR / "model.py").read_text(encoding="utf-8")
    assert text.count(FORWARD) == 1
    (directory / "model.py").write_text(text.replace(FORWARD, forward), encoding="utf-8")
    return directory


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GE_METRICS"}


def _cold(variant: Path, data: Path, *flags: str) -> dict[str, Any]:
    metrics = variant / f"metrics-{len(list(variant.glob('metrics-*')))}.json"
    proc = subprocess.run(
        [sys.executable, str(EVALUATE), "--data", str(data), "--device", "cuda",
         "--metrics", str(metrics), *flags],
        cwd=variant, capture_output=True, text=True, timeout=600, env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(metrics.read_text())


def _without_timings(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k not in TIMING_KEYS | {"gpu_peak_mb"}}


def test_fast_recipe_on_cuda_is_deterministic(data_dir: Path, tmp_path: Path) -> None:
    variant = _variant(tmp_path, "seed")
    first = _cold(variant, data_dir, "--epochs", "2")
    second = _cold(variant, data_dir, "--epochs", "2")
    assert first["params"] == 518_230
    assert 0.0 <= first["val_accuracy"] <= 1.0 and first["images_per_second"] > 0
    # `[executor] gpu_memory_mb = 2048` (the seed's ge.toml) must hold one evaluation with its
    # CUDA context (about 0.5 GB), or "auto" packs too many per GPU.
    assert 0 < first["gpu_peak_mb"] < 1500, first["gpu_peak_mb"]
    assert _without_timings(first) == _without_timings(second)


def test_fast_recipe_at_a_larger_size_and_the_original_recipe_run_on_cuda(
    data_dir: Path, tmp_path: Path
) -> None:
    variant = _variant(tmp_path, "seed")
    fast64 = _cold(variant, data_dir, "--epochs", "1", "--image-size", "64")
    assert fast64["params"] == 518_230 and fast64["epochs"] == 1
    original = _cold(variant, data_dir, "--recipe", "ge-original", "--epochs", "2",
                     "--limit-train", "432", "--loader-workers", "2")
    assert original["epochs"] == 2 and 0.0 <= original["val_accuracy"] <= 1.0


def test_worker_on_cuda_matches_cold_runs_and_isolates_an_out_of_memory_child(
    data_dir: Path, tmp_path: Path
) -> None:
    """The worker never initialises CUDA itself, so forked children can; a child that runs out
    of GPU memory fails alone while a sibling trains at the same time."""
    seed = _variant(tmp_path, "seed")
    oom = _variant(tmp_path, "oom", FORWARD.replace("x = ", "torch.empty(1 << 45, device=x.device)\n        x = ", 1))
    cold = _cold(seed, data_dir, "--epochs", "1", "--seed", "4")
    worker = subprocess.Popen(
        [sys.executable, str(EVALUATE), "--worker", "--data", str(data_dir), "--device", "cuda",
         "--epochs", "1", "--seed", "4"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=_env(), cwd=tmp_path,
    )
    assert worker.stdin is not None and worker.stdout is not None
    try:
        assert json.loads(worker.stdout.readline())["ready"] is True
        requests = {
            name: {"variant_id": name, "workdir": str(path), "args": {},
                   "metrics_path": str(tmp_path / f"{name}.json"),
                   "log_path": str(tmp_path / f"{name}.log")}
            for name, path in (("a", seed), ("oom", oom), ("b", seed))
        }
        for request in requests.values():  # all three at once
            worker.stdin.write(json.dumps(request) + "\n")
        worker.stdin.flush()
        ended: dict[str, dict[str, Any]] = {}
        while len(ended) < len(requests):
            message = json.loads(worker.stdout.readline())
            if "exit_code" in message:
                ended[message["variant_id"]] = message
        worker.stdin.close()
        assert worker.wait(timeout=120) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    assert ended["a"]["exit_code"] == ended["b"]["exit_code"] == 0, (tmp_path / "a.log").read_text()[-2000:]
    assert ended["oom"]["exit_code"] == 1
    assert "out of memory" in (tmp_path / "oom.log").read_text().lower()
    warm = json.loads((tmp_path / "a.json").read_text())
    assert _without_timings(warm) == _without_timings(cold)
    assert _without_timings(json.loads((tmp_path / "b.json").read_text())) == _without_timings(cold)


def test_check_runs_on_cpu_even_on_a_gpu_box(tmp_path: Path) -> None:
    variant = _variant(tmp_path, "seed")
    proc = subprocess.run(
        [sys.executable, str(EVALUATE), "--check", "--metrics", str(tmp_path / "check.json")],
        cwd=variant, capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "check.json").read_text())["params"] == 518_230
