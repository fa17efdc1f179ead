"""Training throughput of the ExquisiteNetV2 seed under the paper's pipeline and the fast recipe.

Synthetic CIFAR-shaped data (nothing is downloaded). Prints:
  1. training images/s: the original pipeline (224 px, per-image CPU transforms in a DataLoader
     with 8 workers, fp16 AMP), GPU-resident uint8 data with on-device augmentation in bf16 +
     channels_last at 224 px and at 32 px, and K concurrent 32 px processes (aggregate);
  2. cold (new process) vs warm (`evaluator.worker`) wall time of one evaluation, through ge's
     LocalExecutor (sandboxed, as in a run) when ge is importable, and the same for the
     cascade's check stage (`evaluator.check` vs `evaluator.worker_check`);
  3. evaluations per hour at equal epochs, fast recipe packed K per GPU vs the original.

  python benchmarks/exquisitenet_throughput.py                  # CUDA: the full comparison
  python benchmarks/exquisitenet_throughput.py --device cpu --quick   # small sizes, ~1-2 min
  python benchmarks/exquisitenet_throughput.py --cold-warm-only       # just item 2
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SEED_DIR = ROOT / "seeds" / "exquisitenet_v2"
TRAIN_IMAGES = 40_000  # CIFAR-10 train split after the 20% validation hold-out


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    batch_224: int
    batch_32: int
    steps_224: int
    steps_32: int
    loader_workers: int
    procs: tuple[int, ...]
    cold_warm_train: int
    cold_warm_repeats: int
    epochs: int


FULL = Sizes(216, 256, 30, 200, 8, (1, 4, 8, 16), TRAIN_IMAGES, 3, 15)
"""Cold vs warm trains one 40,000-image epoch, as in the issue's start-up measurement."""


def quick_sizes() -> Sizes:
    """Small sizes for a CPU smoke run."""
    cores = os.cpu_count() or 1
    return Sizes(8, 64, 3, 8, min(8, cores), (2,), 200, 2, 15)


def _import(name: str, path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _evaluate() -> Any:
    return _import("exquisitenet_evaluate", SEED_DIR / "evaluate.py")


def _model(device: str) -> tuple[Any, Any]:
    module = _import("exquisitenet_model", SEED_DIR / "model.py")
    model = module.ExquisiteNetV2(10, 3).to(device)
    return model, module.get_optimizer(list(model.parameters()))


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _step(model: Any, opt: Any, scaler: Any, xb: Any, yb: Any, device: str, dtype: str) -> None:
    import torch
    from torch.nn import functional as F

    ctx = torch.autocast("cuda", dtype=getattr(torch, dtype)) if device == "cuda" else None
    if ctx is None:
        loss = F.cross_entropy(model(xb), yb)
    else:
        with ctx:
            loss = F.cross_entropy(model(xb).float(), yb)
    opt.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    else:
        loss.backward()
        opt.step()


class PilDataset:
    """The original GE train script's input pipeline: torchvision transforms on PIL images.

    Only where torchvision imports (a GPU box); ge's own code never needs it.
    """

    def __init__(self, x: Any, y: Any, transforms: Any) -> None:
        from PIL import Image

        self.images = [Image.fromarray(img.transpose(1, 2, 0)) for img in x]
        self.y, self.transforms = y, transforms

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        return self.transforms(self.images[i]), int(self.y[i])


def torchvision_transforms() -> Any:
    """Resize to 224, flip, colour jitter, translate, to tensor, normalise; None without
    torchvision (it does not import beside the CPU wheel of the test machines)."""
    try:
        from torchvision import transforms as T
    except Exception:  # ImportError, or a broken install raising anything else
        return None
    ev = _evaluate()
    return T.Compose([
        T.Resize(224), T.RandomHorizontalFlip(), T.ColorJitter(0.2, 0.2, 0.2),
        T.RandomAffine(0, translate=(0.1, 0.1)), T.ToTensor(), T.Normalize(ev.MEAN, ev.STD),
    ])


def original_pipeline(device: str, sizes: Sizes, pil_transforms: Any = None) -> float:
    """224 px, per-image CPU transforms in a DataLoader, fp16 AMP: training images/s.

    The transforms are evaluate.py's (torch ops on tensors), or with `pil_transforms` the
    original script's torchvision ones on PIL images.
    """
    import numpy as np
    import torch

    ev = _evaluate()
    n = sizes.batch_224 * (sizes.steps_224 + 1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    if pil_transforms is not None:
        dataset: Any = PilDataset(x, y, pil_transforms)
    else:
        dataset = ev.OriginalStyleDataset(x, y, 224, seed=0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=sizes.batch_224, shuffle=True, num_workers=sizes.loader_workers,
        pin_memory=device == "cuda", worker_init_fn=ev._loader_worker_init, drop_last=True)
    model, opt = _model(device)
    model.train()
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" else None
    seen, start = 0, 0.0
    for i, (xb, yb) in enumerate(loader):
        _step(model, opt, scaler, xb.to(device, non_blocking=True),
              yb.to(device, non_blocking=True), device, "float16")
        if i == 0:  # the first batch pays for worker start-up and kernel selection
            _sync(device)
            start = time.perf_counter()
        else:
            seen += len(xb)
    _sync(device)
    return seen / (time.perf_counter() - start)


def resident(device: str, image_size: int, batch: int, steps: int) -> float:
    """GPU-resident uint8 data, on-device crop/flip, bf16 + channels_last: training images/s."""
    import torch

    ev = _evaluate()
    gen = torch.Generator(device=device)  # as in the fast recipe: draws stay on the device
    gen.manual_seed(0)
    n = batch * 4
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen, device=device)
    y = torch.randint(0, 10, (n,), generator=gen, device=device)
    model, opt = _model(device)
    model.train()
    if device == "cuda":
        model.to(memory_format=torch.channels_last)
    start = 0.0
    for i in range(steps + 1):
        idx = torch.randint(0, n, (batch,), generator=gen, device=device)
        xb = ev.augment_on_device(x[idx], gen, image_size)
        if device == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        _step(model, opt, None, xb, y[idx], device, "bfloat16")
        if i == 0:
            _sync(device)
            start = time.perf_counter()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def concurrent(device: str, procs: int, sizes: Sizes) -> float:
    """Aggregate images/s of `procs` processes training at 32 px at the same time."""
    threads = max(1, (os.cpu_count() or 1) // procs)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--device", device,
           "--steps", str(sizes.steps_32), "--batch", str(sizes.batch_32),
           "--threads", str(threads)]
    children = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for _ in range(procs)]
    for child in children:  # every child has built its model and data before any starts
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    rates = [float(json.loads(c.communicate(timeout=1800)[0])["images_per_second"])
             for c in children]
    return sum(rates)


def child_main(args: argparse.Namespace) -> None:
    """One of the concurrent processes: wait for "go", then report its own images/s."""
    import torch

    torch.set_num_threads(args.threads)
    resident(args.device, 32, args.batch, 1)  # warm-up: model, kernels, CUDA context
    print("ready", flush=True)
    sys.stdin.readline()
    rate = resident(args.device, 32, args.batch, args.steps)
    print(json.dumps({"images_per_second": rate}), flush=True)


def _variant_dir(run: Path, vid: str, data: Path) -> Path:
    """A variant directory of the seed for the executor, as a run would export it.

    The data lives in the variant's tree (hard links): the sandbox's /tmp is private.
    """
    workdir = run / "work" / vid
    (workdir / "data").mkdir(parents=True)
    (workdir / ".ge").mkdir()
    for name in ("evaluate.py", "model.py"):
        (workdir / name).write_text((SEED_DIR / name).read_text())
    for item in data.iterdir():
        os.link(item, workdir / "data" / item.name)
    return workdir


async def _durations(executor: Any, requests: list[Any]) -> list[float]:
    """Wall seconds of each evaluation, one after another; closes the executor."""
    times = []
    try:
        for request in requests:
            result = await executor.evaluate(request)
            if result.status != "ok":
                raise RuntimeError(f"{request.variant_id} failed: {result.failure_reason}\n"
                                   f"{result.output_tail}")
            times.append(result.duration_s)
    finally:
        await executor.aclose()
    return times


def cold_vs_warm(device: str, sizes: Sizes) -> tuple[float, float, str]:
    """Median wall seconds of one 1-epoch evaluation, cold vs warm, and how it was measured.

    Through ge's LocalExecutor when it can be imported: cold = `evaluator.command` (a new
    sandboxed process per evaluation), warm = `evaluator.worker` (the slot's persistent worker;
    its start-up, paid by the first evaluation, is printed separately). Otherwise evaluate.py
    is driven directly (a new process vs `--worker` requests).
    """
    sys.path.insert(0, str(ROOT))
    try:
        from guided_evolution.evaluation.local import LocalExecutor  # noqa: F401
    except ImportError:
        cold, warm = _cold_vs_warm_direct(device, sizes)
        return cold, warm, "evaluate.py driven directly (ge not importable)"
    return _cold_vs_warm_executor(device, sizes)


def _cold_vs_warm_executor(device: str, sizes: Sizes) -> tuple[float, float, str]:
    import asyncio
    import shlex

    from guided_evolution.evaluation.contract import EvalRequest
    from guided_evolution.evaluation.local import LocalExecutor
    from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
    from guided_evolution.evaluation.workers.pool import WorkerPool
    from tests.support.cifar import write_cifar

    flags = f"--data data --epochs 1 --device {device} --seed 0"
    python = shlex.quote(sys.executable)
    sandbox = Sandbox(SandboxPolicy())
    backend = sandbox.probe().backend
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_cifar(tmp / "cifar-10-batches-py", sizes.cold_warm_train, 100)
        run = tmp / "run"

        def request(vid: str) -> EvalRequest:
            workdir = _variant_dir(run, vid, data)
            return EvalRequest(
                variant_id=vid, workdir=workdir, run_dir=run,
                command=f"{python} evaluate.py {flags}", check_command=None,
                timeout_s=3600.0, check_timeout_s=60.0,
                metrics_path=workdir / ".ge" / "metrics.json", log_path=None,
                objectives=("val_accuracy",),
            )

        async def measure(workers: WorkerPool | None, prefix: str) -> list[float]:
            # The executor sets CUDA_VISIBLE_DEVICES from its GPU list ("" without one).
            gpus = ["0"] if device == "cuda" else None
            executor = LocalExecutor(1, gpus, None, sandbox, workers=workers)
            count = sizes.cold_warm_repeats + (1 if workers else 0)
            return await _durations(executor, [request(f"{prefix}{i}") for i in range(count)])

        cold = asyncio.run(measure(None, "cold"))
        pool = WorkerPool(f"{python} evaluate.py --worker {flags}", sandbox)
        warm = asyncio.run(measure(pool, "warm"))
        if pool.stats()[0].starts != 1 or pool.warnings:
            raise RuntimeError(f"the worker did not serve every evaluation: {pool.warnings}")
    print(f"through ge's LocalExecutor (sandbox: {backend}), per evaluation: cold "
          + ", ".join(f"{t:.2f}" for t in cold) + " s; warm: first (worker start-up) "
          + f"{warm[0]:.2f} s, then " + ", ".join(f"{t:.2f}" for t in warm[1:]) + " s")
    return statistics.median(cold), statistics.median(warm[1:]), f"ge executor, {backend}"


def check_cold_vs_warm(repeats: int = 5) -> tuple[float, float, float] | None:
    """Median wall seconds of the cascade's check stage (`evaluate.py --check`) per variant.

    Through ge's LocalExecutor: cold = `evaluator.check` as a new sandboxed process, warm =
    `evaluator.worker_check` (a forked child of the slot's warm worker). Each evaluation is the
    check plus a no-op evaluate stage, measured alone too. None when ge is not importable.
    """
    import asyncio
    import shlex

    sys.path.insert(0, str(ROOT))
    try:
        from guided_evolution.evaluation.contract import EvalRequest
        from guided_evolution.evaluation.local import LocalExecutor
        from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy
        from guided_evolution.evaluation.workers.pool import WorkerPool
        from tests.support.cifar import write_cifar
    except ImportError:
        return None
    python = shlex.quote(sys.executable)
    noop = "printf '{\"params\": 1}' > \"$GE_METRICS\""
    sandbox = Sandbox(SandboxPolicy())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_cifar(tmp / "cifar-10-batches-py", 100, 20)
        run = tmp / "run"

        def request(vid: str, check: bool) -> EvalRequest:
            workdir = _variant_dir(run, vid, data)
            return EvalRequest(
                variant_id=vid, workdir=workdir, run_dir=run, command=noop,
                check_command=f"{python} evaluate.py --check" if check else None,
                timeout_s=600.0, check_timeout_s=600.0,
                metrics_path=workdir / ".ge" / "metrics.json", log_path=None,
                objectives=("params",),
            )

        async def measure(workers: WorkerPool | None, prefix: str, check: bool) -> list[float]:
            executor = LocalExecutor(1, None, None, sandbox, workers=workers)
            count = repeats + (1 if workers else 0)
            return await _durations(executor, [request(f"{prefix}{i}", check) for i in range(count)])

        noop_only = asyncio.run(measure(None, "noop", False))
        cold = asyncio.run(measure(None, "cold", True))
        pool = WorkerPool(f"{python} evaluate.py --worker --data data --device cpu", sandbox,
                          stages=("check",))
        warm = asyncio.run(measure(pool, "warm", True))[1:]  # the first one starts the worker
        if pool.stats()[0].starts != 1 or pool.warnings or pool.stats()[0].checks != repeats + 1:
            raise RuntimeError(f"the worker did not serve every check: {pool.warnings}")
    return statistics.median(cold), statistics.median(warm), statistics.median(noop_only)


def check_line() -> None:
    """Measure and print the check stage, cold vs in the warm worker."""
    figures = check_cold_vs_warm()
    if figures is None:
        print("check stage: ge is not importable, skipped")
        return
    cold, warm, noop = figures
    print(f"cascade check stage + a no-op evaluate stage, per variant (median of 5, ge executor):"
          f" cold `evaluator.check` {cold:.2f} s, in the warm worker (`worker_check`) "
          f"{warm:.2f} s; the no-op evaluate stage alone {noop:.3f} s")


def _cold_vs_warm_direct(device: str, sizes: Sizes) -> tuple[float, float]:
    sys.path.insert(0, str(ROOT))
    from tests.support.cifar import write_cifar

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = write_cifar(tmp / "cifar-10-batches-py", sizes.cold_warm_train, 100)
        variant = tmp / "variant"
        variant.mkdir()
        (variant / "model.py").write_text((SEED_DIR / "model.py").read_text())
        flags = ["--epochs", "1", "--device", device]
        evaluate = str(SEED_DIR / "evaluate.py")
        cold = []
        for _ in range(sizes.cold_warm_repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, evaluate, "--data", str(data), *flags,
                            "--metrics", str(tmp / "cold.json")],
                           cwd=variant, check=True, capture_output=True)
            cold.append(time.perf_counter() - start)
        worker = subprocess.Popen([sys.executable, evaluate, "--worker", "--data", str(data)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert worker.stdin is not None and worker.stdout is not None
        worker.stdout.readline()  # ready: torch imported and data loaded once
        warm = []
        for i in range(sizes.cold_warm_repeats):
            request = {"variant_id": f"v{i}", "workdir": str(variant),
                       "metrics_path": str(tmp / f"warm{i}.json"),
                       "log_path": str(tmp / f"warm{i}.log"),
                       "args": {"epochs": 1, "device": device}}
            start = time.perf_counter()
            worker.stdin.write(json.dumps(request) + "\n")
            worker.stdin.flush()
            worker.stdout.readline()
            ended = json.loads(worker.stdout.readline())
            warm.append(time.perf_counter() - start)
            if ended["exit_code"] != 0:
                raise RuntimeError(f"worker evaluation failed: {ended}")
        worker.stdin.close()
        worker.wait(timeout=120)
    return statistics.median(cold), statistics.median(warm)


def cold_vs_warm_line(device: str, sizes: Sizes) -> tuple[float, float]:
    """Measure and print cold vs warm; returns the medians (s)."""
    cold, warm, how = cold_vs_warm(device, sizes)
    print(f"one 1-epoch evaluation on {sizes.cold_warm_train} train images (median of "
          f"{sizes.cold_warm_repeats}, {how}): cold {cold:.2f} s, warm worker {warm:.2f} s "
          f"({cold / warm:.1f}x)")
    return cold, warm


def main() -> None:
    """Run every measurement and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quick", action="store_true", help="small sizes (CPU smoke run)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--cold-warm-only", action="store_true",
                        help="only the cold vs warm (worker) evaluation comparison")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    sizes = quick_sizes() if args.quick else FULL
    name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU ({os.cpu_count()} cores)"
    print(f"ExquisiteNetV2 throughput on {name}, torch {torch.__version__}")
    if args.quick:
        print(f"QUICK MODE: tiny sizes (batch {sizes.batch_224}/{sizes.batch_32}, "
              f"{sizes.steps_224}/{sizes.steps_32} timed steps, {sizes.loader_workers} loader "
              f"workers, {sizes.cold_warm_train} train images); a smoke test, not a result")
    if device == "cpu":
        print("CPU: float32 everywhere (no AMP, no channels_last); GPU-resident rows run on CPU")
    if args.cold_warm_only:
        print()
        cold_vs_warm_line(device, sizes)
        check_line()
        return
    rows: list[tuple[str, float]] = []
    t_orig = original_pipeline(device, sizes)
    rows.append((f"original: 224 px, CPU transforms, {sizes.loader_workers} workers, fp16 AMP",
                 t_orig))
    pil = torchvision_transforms()
    if pil is not None:  # the original script's own pipeline, where torchvision is installed
        try:
            rows.append(("original: same with torchvision PIL transforms",
                         original_pipeline(device, sizes, pil)))
        except Exception as exc:  # an optional row: report it, keep the rest of the run
            print(f"torchvision PIL row skipped: {type(exc).__name__}: {exc}")
    rows.append(("resident: 224 px, on-device aug, bf16, channels_last",
                 resident(device, 224, sizes.batch_224, sizes.steps_224)))
    t_32 = resident(device, 32, sizes.batch_32, sizes.steps_32)
    rows.append(("resident: 32 px, on-device aug, bf16, channels_last", t_32))
    packed: dict[int, float] = {}
    for k in sizes.procs:
        packed[k] = t_32 if k == 1 else concurrent(device, k, sizes)
        rows.append((f"resident: 32 px, {k} concurrent processes (aggregate)", packed[k]))
    print()
    print(f"{'pipeline':<62} {'img/s':>10} {'x orig':>7}")
    for label, rate in rows:
        print(f"{label:<62} {rate:>10.1f} {rate / t_orig:>7.2f}")

    print()
    cold, warm = cold_vs_warm_line(device, sizes)
    check_line()

    k_best = max(packed, key=lambda k: packed[k])
    epoch_imgs = TRAIN_IMAGES * sizes.epochs
    t_eval_orig = cold + epoch_imgs / t_orig
    t_eval_fast = warm + epoch_imgs / (packed[k_best] / k_best)
    per_hour_orig = 3600 / t_eval_orig
    per_hour_fast = k_best * 3600 / t_eval_fast
    print()
    print(f"evaluations/hour at {sizes.epochs} epochs x {TRAIN_IMAGES} images, one device: "
          f"original (224 px, cold start) {per_hour_orig:.2f}, fast (32 px, {k_best} warm "
          f"processes) {per_hour_fast:.2f}, ratio {per_hour_fast / per_hour_orig:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "device": name, "quick": args.quick, "rows": rows, "cold_s": cold, "warm_s": warm,
            "evals_per_hour": {"original": per_hour_orig, "fast": per_hour_fast},
        }, indent=2))


if __name__ == "__main__":
    main()
