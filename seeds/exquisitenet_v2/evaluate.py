"""Evaluate an ExquisiteNetV2 variant on CIFAR-10 (the `ge` evaluator of this seed).

Run in the variant's directory: it imports ``model.py`` from the current directory, trains
``ExquisiteNetV2(10, 3)`` with the optimizer from ``get_optimizer`` and writes a JSON metrics file
(``--metrics`` or ``$GE_METRICS``): val_accuracy (selects), test_accuracy (reported only),
params, train_seconds, images_per_second, epochs, and on CUDA gpu_peak_mb. With ``$GE_FEEDBACK``
set it also writes there the validation accuracy after each epoch and the parameters per block.

Recipes:
  fast         data resident on the device as uint8, augmentation on the device (pad-4 random
               crop, flip), bf16 autocast + channels_last on CUDA, 32 px (or --image-size),
               a fixed short budget (15 epochs) with warm-up and linear decay of the gene's lr.
  ge-original  the GE paper's setup: 224 px, batch 216, per-image CPU transforms (flip, colour
               jitter, translate) in a DataLoader, fp16 AMP on CUDA, ReduceLROnPlateau
               (factor 0.7, patience 4) until the lr falls below 1% of its start (0.001 for the
               seed's 0.1) or --epochs.
On CPU everything runs in float32. Both recipes are deterministic given --seed on CPU (on CUDA
deterministic algorithms are requested, best effort).

Modes: ``--check`` (one forward/backward on a dummy batch, parameter count, output shape) and
``--worker`` (a persistent zygote that forks one child per JSON request read on stdin).
Exit codes: 0 ok, 1 the variant failed, 2 usage error or missing data.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.util
import json
import math
import os
import pickle
import selectors
import sys
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

NUM_CLASSES = 10
IMG_CHANNELS = 3
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SPLIT_SEED = 20_240_714  # fixed: every variant sees the same train/validation split
VAL_FRACTION = 0.2
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
EXIT_FAILED = 1
EXIT_USAGE = 2
FAST_EPOCHS = 15
ORIGINAL_MAX_EPOCHS = 300
ORIGINAL_STOP_FRACTION = 0.01  # stop once the lr is below 1% of its start (0.1 -> 0.001)


class UsageError(Exception):
    """A mistake of the caller (missing data, bad flag): one line on stderr, exit 2."""


class VariantError(Exception):
    """The variant's code is broken (import error, wrong shape, bad optimizer): exit 1."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Cifar:
    """CIFAR-10 as uint8 N x 3 x 32 x 32 arrays and int64 labels, split into train/val/test."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def limited(self, limit_train: int | None) -> Cifar:
        """The same data with at most `limit_train` training images (validation unchanged)."""
        if not limit_train:
            return self
        return replace(self, x_train=self.x_train[:limit_train], y_train=self.y_train[:limit_train])


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
        x = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(labels, dtype=np.int64)
    except (OSError, pickle.UnpicklingError, AttributeError, ValueError, TypeError, EOFError) as err:
        raise UsageError(f"{path} is not a CIFAR-10 python batch file ({err})") from None
    if len(x) != len(y):
        raise UsageError(f"{path}: {len(x)} images but {len(y)} labels")
    return x, y


def load_cifar(data_dir: Path) -> Cifar:
    """Read `cifar-10-batches-py`; the train batches are split 80/20 into train/validation."""
    missing = [n for n in (*TRAIN_FILES, TEST_FILE) if not (data_dir / n).is_file()]
    if missing:
        raise UsageError(
            f"CIFAR-10 not found: {data_dir / missing[0]} is missing; download {CIFAR_URL}, "
            f"extract it and pass the cifar-10-batches-py folder with --data "
            f"(or set GE_DATA), so that it holds data_batch_1..5 and test_batch"
        )
    parts = [_read_batch(data_dir / n) for n in TRAIN_FILES]
    x_all = np.concatenate([p[0] for p in parts])
    y_all = np.concatenate([p[1] for p in parts])
    x_test, y_test = _read_batch(data_dir / TEST_FILE)
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x_all))
    n_val = round(VAL_FRACTION * len(x_all))
    val, train = order[:n_val], order[n_val:]
    return Cifar(x_all[train], y_all[train], x_all[val], y_all[val], x_test, y_test)


# --------------------------------------------------------------------------- options


def build_parser() -> argparse.ArgumentParser:
    """The command line (also used to parse the `args` of a worker request)."""
    p = argparse.ArgumentParser(description="Train and evaluate an ExquisiteNetV2 variant.")
    p.add_argument("--data", default=os.environ.get("GE_DATA", "data/cifar-10-batches-py"),
                   help="the cifar-10-batches-py folder (default: $GE_DATA or %(default)s)")
    p.add_argument("--recipe", choices=("fast", "ge-original"), default="fast")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"fast: {FAST_EPOCHS}; ge-original: at most {ORIGINAL_MAX_EPOCHS}")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--check", action="store_true", help="quick build/forward/backward check")
    p.add_argument("--worker", action="store_true", help="serve JSON requests on stdin")
    p.add_argument("--metrics", default=None, help="metrics JSON path (default: $GE_METRICS)")
    p.add_argument("--image-size", type=int, default=None, help="fast: 32; ge-original: 224")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=None, help="fast: 256; ge-original: 216")
    p.add_argument("--limit-train", type=int, default=None, help="use only N training images")
    p.add_argument("--loader-workers", type=int, default=None,
                   help="ge-original DataLoader workers (default: 8 on CUDA, 0 on CPU)")
    return p


@dataclass(frozen=True)
class Options:
    """Resolved options of one evaluation."""

    recipe: str
    epochs: int
    device: str
    image_size: int
    batch_size: int
    seed: int
    limit_train: int | None
    loader_workers: int | None


def resolve(ns: argparse.Namespace) -> Options:
    """Fill recipe defaults; reject nonsense values."""
    original = ns.recipe == "ge-original"
    for name in ("epochs", "image_size", "batch_size", "limit_train"):
        value = getattr(ns, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return Options(
        recipe=ns.recipe,
        epochs=ns.epochs or (ORIGINAL_MAX_EPOCHS if original else FAST_EPOCHS),
        device=ns.device,
        image_size=ns.image_size or (224 if original else 32),
        batch_size=ns.batch_size or (216 if original else 256),
        seed=ns.seed,
        limit_train=ns.limit_train,
        loader_workers=ns.loader_workers,
    )


# --------------------------------------------------------------------------- the variant


def load_variant(workdir: Path) -> Any:
    """Import `model.py` of `workdir` under a fresh module name."""
    path = workdir / "model.py"
    if not path.is_file():
        raise UsageError(f"no model.py in {workdir}; run the evaluator in the variant's directory")
    sys.path.insert(0, str(workdir))
    name = f"ge_variant_model_{os.getpid()}_{time.monotonic_ns()}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise VariantError(f"importing model.py failed: {type(err).__name__}: {err}") from err
    for attr in ("ExquisiteNetV2", "get_optimizer"):
        if not hasattr(module, attr):
            raise VariantError(f"model.py defines no {attr}; the evaluator needs it")
    return module


def build_model(module: Any) -> Any:
    """`ExquisiteNetV2(10, 3)` from the variant."""
    import torch

    try:
        model = module.ExquisiteNetV2(NUM_CLASSES, IMG_CHANNELS)
    except Exception as err:
        raise VariantError(f"ExquisiteNetV2(10, 3) failed: {type(err).__name__}: {err}") from err
    if not isinstance(model, torch.nn.Module):
        raise VariantError(f"ExquisiteNetV2(10, 3) returned {type(model).__name__}, not nn.Module")
    return model


def make_optimizer(module: Any, model: Any) -> Any:
    """The variant's optimizer gene applied to the model's parameters."""
    import torch

    try:
        opt = module.get_optimizer(list(model.parameters()))
    except Exception as err:
        raise VariantError(f"get_optimizer failed: {type(err).__name__}: {err}") from err
    if not isinstance(opt, torch.optim.Optimizer):
        raise VariantError(
            f"get_optimizer returned {type(opt).__name__}; it must return a torch.optim.Optimizer"
        )
    return opt


def count_params(model: Any) -> int:
    """Trainable and frozen parameters together."""
    return sum(p.numel() for p in model.parameters())


# --------------------------------------------------------------------------- helpers


def preload_torch() -> None:
    """Import torch and what its first optimizer pulls in (torch._dynamo, about 1 s) up front,
    the garbage collector paused meanwhile (~1M objects, no garbage worth collecting), then
    their objects frozen out of its sight: later collections (many a training step) walk only
    what came after. Collections were ~15 % of a test-sized evaluation's CPU."""
    if "torch" in sys.modules:
        return
    gc.disable()
    try:
        import torch

        with contextlib.suppress(ImportError):
            import torch._dynamo  # noqa: F401
    finally:
        gc.freeze()
        gc.enable()


def pick_device(requested: str) -> str:
    """'auto' means CUDA when available."""
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but torch sees no CUDA device")
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return requested


def seed_everything(seed: int, device: str) -> Any:
    """Seed torch; request deterministic kernels on CUDA. Returns a generator on `device`.

    The fast recipe draws its shuffles and augmentations from it on the device itself, so a
    training step never copies host tensors to the GPU (each such copy waits for the GPU).
    """
    import torch

    torch.manual_seed(seed)
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


@functools.lru_cache(maxsize=8)
def _channel_stats(device: Any) -> tuple[Any, Any]:
    """MEAN and STD as 1 x 3 x 1 x 1 tensors on `device`, made once (not copied per batch)."""
    import torch

    def make(values: tuple[float, ...]) -> Any:
        return torch.tensor(values, dtype=torch.float32).view(1, 3, 1, 1).to(device)

    return make(MEAN), make(STD)


def normalize(x: Any) -> Any:
    """uint8 (or [0,1] float) N x 3 x H x W -> normalised float32."""
    import torch

    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    mean, std = _channel_stats(x.device)
    return (x - mean) / std


def autocast(device: str, dtype_name: str) -> Any:
    """bf16/fp16 autocast on CUDA, nothing on CPU (float32 there)."""
    import torch

    if device != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=getattr(torch, dtype_name))


def sync(device: str) -> None:
    """Wait for queued CUDA work, for honest timings."""
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def evaluate_split(model: Any, x: np.ndarray, y: np.ndarray, opts: Options, device: str,
                   amp_dtype: str) -> tuple[float, float]:
    """(accuracy, mean loss) of `model` on uint8 images, resized to the recipe's size."""
    import torch
    from torch.nn import functional as F

    model.eval()
    channels_last = device == "cuda"
    x_all = torch.from_numpy(x).to(device)  # one copy (uint8), not one per chunk
    y_all = torch.from_numpy(y).to(device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, len(x), 500):
            xb = normalize(x_all[start:start + 500])
            if opts.image_size != xb.shape[-1]:
                xb = F.interpolate(xb, size=(opts.image_size, opts.image_size), mode="bilinear",
                                   align_corners=False)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            yb = y_all[start:start + 500]
            with autocast(device, amp_dtype):
                out = model(xb)
            loss_sum += F.cross_entropy(out.float(), yb, reduction="sum").double()
            correct += (out.argmax(1) == yb).sum()
    n = max(len(x), 1)
    return int(correct) / n, float(loss_sum) / n  # the only synchronisation


# --------------------------------------------------------------------------- fast recipe


def augment_on_device(xb: Any, gen: Any, image_size: int) -> Any:
    """Pad-4 random crop and horizontal flip of a uint8 batch on its device; normalised float.

    `gen` is a generator on the batch's device: the random draws never leave the device.
    """
    import torch
    from torch.nn import functional as F

    n, _, h, w = xb.shape
    dev = xb.device
    dy = torch.randint(0, 9, (n,), generator=gen, device=dev)
    dx = torch.randint(0, 9, (n,), generator=gen, device=dev)
    flip = torch.rand(n, generator=gen, device=dev) < 0.5
    x = F.pad(normalize(xb), (4, 4, 4, 4))
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    cols = torch.where(flip[:, None, None, None], cols.flip(-1), cols)
    x = x[torch.arange(n, device=dev)[:, None, None, None],
          torch.arange(3, device=dev)[None, :, None, None], rows, cols]
    if image_size != h:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return x


def fast_lr_factor(step: int, total: int) -> float:
    """Linear warm-up over the first 15% of steps, then linear decay to zero."""
    warm = max(1, round(0.15 * total))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def train_fast(model: Any, opt: Any, data: Cifar, opts: Options, device: str,
               gen: Any, curve: list[float] | None = None) -> dict[str, float]:
    """The fast recipe; returns the metrics other than params. ``curve`` gets the validation
    accuracy after each epoch (evaluated without gradients and left out of the timing)."""
    import torch
    from torch.nn import functional as F

    x_train = torch.from_numpy(data.x_train).to(device)
    y_train = torch.from_numpy(data.y_train).to(device)
    n = len(x_train)
    steps = math.ceil(n / opts.batch_size)
    total = steps * opts.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: fast_lr_factor(s, total))
    channels_last = device == "cuda"
    if channels_last:
        model.to(memory_format=torch.channels_last)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(opts.epochs):
        model.train()
        order = torch.randperm(n, generator=gen, device=device)
        for i in range(steps):
            idx = order[i * opts.batch_size:(i + 1) * opts.batch_size]
            xb = augment_on_device(x_train[idx], gen, opts.image_size)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with autocast(device, "bfloat16"):
                loss = F.cross_entropy(model(xb).float(), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if curve is not None and len(curve) < opts.epochs - 1:  # the last one is the metric
            sync(device)
            paused = time.perf_counter()
            curve.append(evaluate_split(model, data.x_val, data.y_val, opts, device, "bfloat16")[0])
            sync(device)
            t0 += time.perf_counter() - paused
    sync(device)
    seconds = time.perf_counter() - t0
    if not math.isfinite(float(loss.detach())):
        raise VariantError(f"training diverged: the last loss is {float(loss.detach())}")
    val_acc, val_loss = evaluate_split(model, data.x_val, data.y_val, opts, device, "bfloat16")
    test_acc, _ = evaluate_split(model, data.x_test, data.y_test, opts, device, "bfloat16")
    if curve is not None:
        curve.append(val_acc)
    return {"val_accuracy": val_acc, "val_loss": val_loss, "test_accuracy": test_acc,
            "train_seconds": seconds, "images_per_second": n * opts.epochs / seconds,
            "epochs": opts.epochs}


# --------------------------------------------------------------------------- ge-original recipe


class OriginalStyleDataset:
    """Per-image CPU transforms as torchvision would do them (resize, flip, jitter, translate).

    The random draws of image `i` in epoch `e` come from a generator seeded by (seed, e, i), so
    results do not depend on the number of DataLoader workers.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, image_size: int, seed: int) -> None:
        self.x, self.y, self.size, self.seed = x, y, image_size, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch
        from torch.nn import functional as F

        rng = np.random.default_rng((self.seed, self.epoch, int(i)))
        img = torch.from_numpy(self.x[i]).float().div_(255.0)[None]
        img = F.interpolate(img, size=(self.size, self.size), mode="bilinear",
                            align_corners=False)[0]
        if rng.random() < 0.5:
            img = img.flip(-1)
        brightness, contrast, saturation = rng.uniform(0.8, 1.2, size=3)
        img = img * brightness
        gray = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
        img = (img - gray.mean()) * contrast + gray.mean()
        gray = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
        img = ((img - gray) * saturation + gray).clamp_(0.0, 1.0)
        limit = int(0.1 * self.size)
        dy, dx = (int(v) for v in rng.integers(-limit, limit + 1, size=2))
        img = F.pad(img, (limit, limit, limit, limit))
        img = img[:, limit + dy:limit + dy + self.size, limit + dx:limit + dx + self.size]
        return normalize(img[None])[0], int(self.y[i])


def _loader_worker_init(_: int) -> None:
    import torch

    torch.set_num_threads(1)


def train_original(model: Any, opt: Any, data: Cifar, opts: Options, device: str,
                   gen: Any, curve: list[float] | None = None) -> dict[str, float]:
    """The GE paper's recipe; keeps the weights of the best validation epoch (``curve`` gets
    each epoch's validation accuracy)."""
    import torch
    from torch.nn import functional as F

    workers = opts.loader_workers
    if workers is None:
        workers = min(8, os.cpu_count() or 1) if device == "cuda" else 0
    dataset = OriginalStyleDataset(data.x_train, data.y_train, opts.image_size, opts.seed)
    shuffle_gen = torch.Generator()  # the sampler shuffles on the CPU (`gen` may be on the GPU)
    shuffle_gen.manual_seed(opts.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=opts.batch_size, shuffle=True, generator=shuffle_gen,
        num_workers=workers,
        pin_memory=device == "cuda", worker_init_fn=_loader_worker_init if workers else None)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.7, patience=4)
    start_lr = max(g["lr"] for g in opt.param_groups)
    scaler = torch.amp.GradScaler("cuda", enabled=device == "cuda")
    best: tuple[float, dict[str, Any]] | None = None
    seen, epochs_run, train_time = 0, 0, 0.0
    for epoch in range(opts.epochs):
        dataset.epoch = epoch
        model.train()
        sync(device)
        t0 = time.perf_counter()
        for xb, yb in loader:
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            with autocast(device, "float16"):
                loss = F.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            seen += len(xb)
        sync(device)
        train_time += time.perf_counter() - t0
        epochs_run += 1
        if not math.isfinite(float(loss.detach())):
            raise VariantError(f"training diverged in epoch {epoch}: loss {float(loss.detach())}")
        val_acc, val_loss = evaluate_split(model, data.x_val, data.y_val, opts, device, "float16")
        if curve is not None:
            curve.append(val_acc)
        print(f"epoch {epoch}: val_accuracy {val_acc:.4f} val_loss {val_loss:.4f} "
              f"lr {max(g['lr'] for g in opt.param_groups):.5f}", flush=True)
        if best is None or val_acc > best[0]:
            best = (val_acc, {k: v.detach().clone() for k, v in model.state_dict().items()})
        sched.step(val_loss)
        if max(g["lr"] for g in opt.param_groups) < ORIGINAL_STOP_FRACTION * start_lr:
            break
    assert best is not None
    model.load_state_dict(best[1])
    val_acc, val_loss = evaluate_split(model, data.x_val, data.y_val, opts, device, "float16")
    test_acc, _ = evaluate_split(model, data.x_test, data.y_test, opts, device, "float16")
    return {"val_accuracy": val_acc, "val_loss": val_loss, "test_accuracy": test_acc,
            "train_seconds": train_time, "images_per_second": seen / max(train_time, 1e-9),
            "epochs": epochs_run}


# --------------------------------------------------------------------------- entry points


def write_metrics(metrics: dict[str, Any], path: str | None) -> None:
    """Print the metrics and write them atomically to `path` (if any)."""
    text = json.dumps(metrics, sort_keys=True)
    print(text, flush=True)
    if path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, target)


def run_check(workdir: Path, opts: Options, metrics_path: str | None) -> None:
    """Build, one forward/backward/step on a dummy CPU batch, shape check, parameter count."""
    preload_torch()  # library import time is not the variant's: it is left out of check_seconds
    import torch
    from torch.nn import functional as F

    t0 = time.perf_counter()
    torch.manual_seed(opts.seed)
    module = load_variant(workdir)
    model = build_model(module)
    params = count_params(model)
    x = torch.randn(2, IMG_CHANNELS, opts.image_size, opts.image_size)
    try:
        out = model(x)
    except Exception as err:
        raise VariantError(f"forward pass failed: {type(err).__name__}: {err}") from err
    expected = (2, NUM_CLASSES)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != expected:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise VariantError(
            f"ExquisiteNetV2 returned {shape} for a {tuple(x.shape)} batch; expected {expected}"
        )
    opt = make_optimizer(module, model)
    loss = F.cross_entropy(out, torch.tensor([0, 1]))
    try:
        loss.backward()
        opt.step()
    except Exception as err:
        raise VariantError(f"backward/step failed: {type(err).__name__}: {err}") from err
    if not math.isfinite(float(loss.detach())):
        raise VariantError(f"the loss of a dummy batch is {float(loss.detach())}")
    write_metrics({"params": params, "check_seconds": time.perf_counter() - t0}, metrics_path)


def run_evaluation(workdir: Path, data: Cifar, opts: Options, metrics_path: str | None) -> None:
    """Train and evaluate the variant in `workdir`; write its metrics."""
    preload_torch()
    device = pick_device(opts.device)
    gen = seed_everything(opts.seed, device)
    module = load_variant(workdir)
    model = build_model(module).to(device)
    params = count_params(model)
    opt = make_optimizer(module, model)
    data = data.limited(opts.limit_train)
    print(f"recipe {opts.recipe} device {device} epochs {opts.epochs} image {opts.image_size} "
          f"batch {opts.batch_size} train {len(data.x_train)} val {len(data.x_val)} "
          f"test {len(data.x_test)} params {params} optimizer {type(opt).__name__}", flush=True)
    train = train_original if opts.recipe == "ge-original" else train_fast
    curve: list[float] | None = [] if os.environ.get("GE_FEEDBACK") else None
    metrics = train(model, opt, data, opts, device, gen, curve)
    metrics["params"] = params
    if device == "cuda":  # what torch's allocator held at most (the CUDA context comes on top)
        import torch

        metrics["gpu_peak_mb"] = torch.cuda.max_memory_reserved() / 2**20
    write_metrics(metrics, metrics_path)
    write_feedback(model, curve or [])


def write_feedback(model: Any, curve: list[float]) -> None:
    """A few lines for the next prompt in $GE_FEEDBACK (ge shows them; nothing without it): the
    validation curve and the parameters of each top-level block. Never the test accuracy."""
    path = os.environ.get("GE_FEEDBACK")
    if not path:
        return
    blocks = [f"{name} {count_params(child)}" for name, child in model.named_children()]
    lines = [
        "val_accuracy after each epoch: " + ", ".join(f"{acc:.3f}" for acc in curve),
        f"parameters per block: {', '.join(blocks) or 'none'} (total {count_params(model)})",
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- worker (zygote)


def _child(request: dict[str, Any], data: Cifar, parser: argparse.ArgumentParser,
           defaults: list[str]) -> int:
    """Body of a forked evaluation: redirect output, chdir, evaluate. Returns the exit code.

    The flags are the worker's own command line (`defaults`), then the request's `args`.
    """
    log = os.open(request["log_path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    try:
        for key, value in (request.get("env") or {}).items():
            os.environ[str(key)] = str(value)
        os.environ["GE_METRICS"] = request["metrics_path"]
        argv: list[str] = []
        for key, value in (request.get("args") or {}).items():
            flag = "--" + str(key).replace("_", "-")
            if value is True:
                argv.append(flag)
            elif value not in (None, False):
                argv += [flag, str(value)]
        ns = parser.parse_args([*defaults, *argv])
        workdir = Path(request["workdir"]).resolve()
        os.chdir(workdir)
        opts = resolve(ns)
        if ns.check:
            run_check(workdir, opts, request["metrics_path"])
        else:
            run_evaluation(workdir, data, opts, request["metrics_path"])
        return 0
    except SystemExit as err:  # argparse rejected the args
        return err.code if isinstance(err.code, int) else EXIT_USAGE
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BaseException as err:
        traceback.print_exc()
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def _start(line: str, data: Cifar, parser: argparse.ArgumentParser,
           running: dict[int, str], defaults: list[str]) -> None:
    try:
        request = json.loads(line)
        for key in ("variant_id", "workdir", "metrics_path", "log_path"):
            if not isinstance(request.get(key), str):
                raise ValueError(f"the request needs a string {key!r}")
    except ValueError as err:
        _reply({"error": f"bad request: {err}", "line": line[:200]})
        return
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the serving loop
        code = EXIT_FAILED
        try:
            os.setpgid(0, 0)
            code = _child(request, data, parser, defaults)
        finally:
            os._exit(code)
    running[pid] = request["variant_id"]
    _reply({"variant_id": request["variant_id"], "pid": pid})


def _reap(running: dict[int, str], block: bool) -> None:
    while running:
        pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        variant = running.pop(pid, None)
        if variant is None:
            continue
        signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        _reply({"variant_id": variant, "exit_code": code, "signal": signum})


def serve(data: Cifar, defaults: list[str] | None = None) -> None:
    """Read one JSON request per line on stdin, fork a child for each, report starts and ends.

    Request: {"variant_id", "workdir", "metrics_path", "log_path", "args": {flag: value},
    "env": {optional variables set in the child before CUDA starts}}; `args` override the
    `defaults` flags (the worker's own command line less --worker). The parent never
    touches CUDA or runs torch kernels, so forking stays safe; it exits after stdin closes and
    every child has been reported.
    """
    parser = build_parser()
    defaults = list(defaults or [])
    running: dict[int, str] = {}
    fd = sys.stdin.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    buffer = b""
    open_input = True
    while open_input:
        if sel.select(timeout=0.05):
            chunk = os.read(fd, 65536)
            if not chunk:
                open_input = False
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                if raw.strip():
                    _start(raw.decode("utf-8", "replace"), data, parser, running, defaults)
        _reap(running, block=False)
    if buffer.strip():
        _start(buffer.decode("utf-8", "replace"), data, parser, running, defaults)
    _reap(running, block=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    parser = build_parser()
    ns = parser.parse_args(argv)
    metrics_path = ns.metrics or os.environ.get("GE_METRICS")
    try:
        opts = resolve(ns)
        if ns.check:
            run_check(Path.cwd(), opts, metrics_path)
            return 0
        data = load_cifar(Path(ns.data))
        if ns.worker:
            preload_torch()  # imported once here, shared by every forked child

            _reply({"ready": True, "train": len(data.x_train), "pid": os.getpid()})
            raw = list(sys.argv[1:] if argv is None else argv)
            serve(data, [a for a in raw if a not in ("--worker", "--check")])
            return 0
        run_evaluation(Path.cwd(), data, opts, metrics_path)
        return 0
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except VariantError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

