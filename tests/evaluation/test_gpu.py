"""GPU discovery and slot packing (guided_evolution.evaluation.gpu), with a fake nvidia-smi."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guided_evolution.evaluation import gpu


def _fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, output: str, rc: int = 0) -> None:
    exe = tmp_path / "nvidia-smi"
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write({output!r})\nsys.exit({rc})\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))


def test_saturation_point_of_the_h200_curve_is_the_first_k_at_90_percent() -> None:
    # 8 processes give 168k of a 187k plateau (89.8%): one more reaches 90%.
    assert gpu.saturation_slots() == 9
    assert gpu.saturation_slots(fraction=0.6) == 4
    assert gpu.throughput_at(8) == 168_000.0
    assert gpu.throughput_at(32) == 187_000.0


def test_recommendation_is_capped_by_free_memory_with_headroom() -> None:
    assert gpu.recommend_slots_per_gpu(140_000, 2_000) == 9
    # 10 GB free keeps 1 GB headroom: 9 GB / 2 GB = 4 processes.
    assert gpu.recommend_slots_per_gpu(10_000, 2_000) == 4
    # headroom is at least 10% of the free memory: 100 GB free, 12 GB each -> 90 GB / 12 = 7.
    assert gpu.recommend_slots_per_gpu(100_000, 12_000) == 7
    assert gpu.recommend_slots_per_gpu(1_500, 2_000) == 0


@pytest.mark.parametrize(("free", "each"), [(-1.0, 100.0), (1000.0, 0.0), (float("nan"), 1.0)])
def test_recommendation_rejects_impossible_sizes(free: float, each: float) -> None:
    with pytest.raises(ValueError):
        gpu.recommend_slots_per_gpu(free, each)


def test_visible_gpus_follow_cuda_visible_devices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_smi(tmp_path, monkeypatch, "0, 1000\n1, 1000\n")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert gpu.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,0")
    assert gpu.visible_gpus() == ["1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu.visible_gpus() == []


def test_visible_gpus_from_nvidia_smi_or_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _fake_smi(tmp_path, monkeypatch, "0, 81000\n1, 500\nnot a gpu line\n")
    assert gpu.visible_gpus() == ["0", "1"]
    assert gpu.query_gpus() == [gpu.GpuInfo("0", 81000.0), gpu.GpuInfo("1", 500.0)]
    # slots follow the GPU with the least free memory, and never drop below one
    assert gpu.auto_slots_per_gpu(["0"], per_process_mem_mb=8_000) == 9
    assert gpu.auto_slots_per_gpu(["0", "1"]) == 1
    assert gpu.auto_slots_per_gpu(["7"]) == 1
    _fake_smi(tmp_path, monkeypatch, "", rc=9)
    assert gpu.visible_gpus() == []
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert gpu.visible_gpus() == []


def test_gpu_module_does_not_import_torch() -> None:
    code = (
        "import sys; from guided_evolution.evaluation import gpu; gpu.visible_gpus(); "
        "gpu.recommend_slots_per_gpu(1e5, 1e3); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert out.stdout.strip() == "False"


def test_auto_slots_per_gpu_follow_the_configured_gpu_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guided_evolution.config import ResolvedConfig, parse_config
    from guided_evolution.evaluation.factory import plan_slots

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    _fake_smi(tmp_path, monkeypatch, "0, 20000\n1, 30000\n")

    def planned(**executor: object) -> tuple[int, list[str], int | None]:
        cfg = parse_config({
            "objectives": [{"name": "acc", "direction": "max"}],
            "evaluator": {"command": "true"},
            "executor": {"slots": "auto", "gpus": "auto", "slots_per_gpu": "auto", **executor},
        })
        resolved = ResolvedConfig(config=cfg, config_path="ge.toml", seed_dir=".", run_dir="r",
                                  ge_version="0")
        return plan_slots(resolved)

    # 20,000 MB free on the fuller GPU less 10% headroom: 18,000 MB / 2,048 MB = 8.8 -> 8.
    assert planned() == (16, ["0", "1"], 8)
    assert planned(gpu_memory_mb=1000) == (18, ["0", "1"], 9)  # capped at the saturation K
    assert planned(gpu_memory_mb=4096) == (8, ["0", "1"], 4)  # 18,000 / 4,096 = 4.4
    assert planned(gpu_memory_mb=30_000) == (2, ["0", "1"], 1)  # never below one per GPU
