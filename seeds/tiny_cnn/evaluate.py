"""Train and evaluate the tiny_cnn seed in the current directory; write JSON metrics.

Data: 10 classes of synthetic 16x16 grayscale images (5 stripe orientations x 2 stripe widths, a
Gaussian-windowed patch at a random position, phase and contrast, in pixel noise), generated from
a fixed seed: no download. Training: a fixed, short schedule on one CPU thread.

    python evaluate.py [--metrics FILE] [--seed N]   # metrics go to $GE_METRICS (or FILE)
    python evaluate.py --check                       # build, one forward/backward, count params
    python evaluate.py --epochs 1 --limit-train 500  # test-sized: fewer epochs / training images

Metrics: val_accuracy (selects, max), params (selects, min), test_accuracy (reported only),
train_seconds (reported only). Same code and seed give the same accuracies and params. Feedback
($GE_FEEDBACK, when set): validation accuracy per epoch and parameters per module.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA_SEED = 20240714
NUM_CLASSES = 10
SIZE = 16
N_TRAIN, N_VAL, N_TEST = 3000, 1000, 1000
NOISE = 0.7
EPOCHS = 4
BATCH_SIZE = 64


def make_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` images of shape (1, SIZE, SIZE) and their labels."""
    labels = rng.integers(0, NUM_CLASSES, n)
    angle = (labels % 5) * np.pi / 5 + rng.normal(0.0, 0.08, n)
    period = np.where(labels < 5, 6.0, 3.5) * rng.uniform(0.9, 1.1, n)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)

    def col(values: np.ndarray) -> np.ndarray:
        return values[:, None, None]

    cx, cy = col(rng.uniform(4, SIZE - 4, n)), col(rng.uniform(4, SIZE - 4, n))
    sigma = col(rng.uniform(2.5, 4.5, n))
    envelope = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
    phase = col(rng.uniform(0, 2 * np.pi, n))
    along = xx * col(np.cos(angle)) + yy * col(np.sin(angle))
    contrast = col(rng.uniform(0.6, 1.2, n))
    stripes = contrast * envelope * np.cos(2 * np.pi * along / col(period) + phase)
    images = stripes + rng.normal(0.0, NOISE, (n, SIZE, SIZE))
    return images[:, None].astype(np.float32), labels.astype(np.int64)


def make_data() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The train / val / test splits, always the same (fixed DATA_SEED)."""
    rng = np.random.default_rng(DATA_SEED)
    return {
        "train": make_split(N_TRAIN, rng),
        "val": make_split(N_VAL, rng),
        "test": make_split(N_TEST, rng),
    }


def count_params(net) -> int:
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def check(model, torch) -> int:
    """Build the model, run one forward/backward/step on a dummy batch; 0 if all is well."""
    torch.manual_seed(0)
    net = model.Net()
    optimizer = model.get_optimizer(net.parameters())
    batch = torch.randn(4, 1, SIZE, SIZE)
    out = net(batch)
    if tuple(out.shape) != (4, NUM_CLASSES):
        print(
            f"check failed: Net output shape {tuple(out.shape)}, expected (4, {NUM_CLASSES})",
            file=sys.stderr,
        )
        return 1
    loss = torch.nn.functional.cross_entropy(out, torch.arange(4))
    if not torch.isfinite(loss):
        print(f"check failed: loss on a dummy batch is {loss.item()}", file=sys.stderr)
        return 1
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    params = count_params(net)
    if params == 0:
        print("check failed: the network has no trainable parameters", file=sys.stderr)
        return 1
    print(f"check ok: {params} parameters")
    return 0


def accuracy(net, images, labels, torch) -> float:
    net.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), 500):
            logits = net(images[start : start + 500])
            correct += int((logits.argmax(dim=1) == labels[start : start + 500]).sum())
    return correct / len(images)


def train_and_score(
    model,
    torch,
    seed: int,
    curve: list[float] | None = None,
    epochs: int = EPOCHS,
    limit_train: int = N_TRAIN,
) -> dict[str, float]:
    """The metrics; ``curve`` gets the validation accuracy after each epoch (not timed).
    ``epochs`` and ``limit_train`` (the first N training images) shrink a run for tests; the
    validation and test sets stay whole."""
    data = {k: (torch.from_numpy(x), torch.from_numpy(y)) for k, (x, y) in make_data().items()}
    torch.manual_seed(seed)
    net = model.Net()
    optimizer = model.get_optimizer(net.parameters())
    x_train, y_train = (t[:limit_train] for t in data["train"])
    steps = epochs * math.ceil(len(x_train) / BATCH_SIZE)
    # cosine decay of whatever learning rate the optimizer has, to zero at the last step
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    shuffler = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(x_train), generator=shuffler)
        for start in range(0, len(x_train), BATCH_SIZE):
            idx = order[start : start + BATCH_SIZE]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
            schedule.step()
        if curve is not None:  # eval mode, no gradients: training is unchanged
            paused = time.perf_counter()
            curve.append(accuracy(net, *data["val"], torch))
            started += time.perf_counter() - paused
    train_seconds = time.perf_counter() - started
    return {
        "val_accuracy": accuracy(net, *data["val"], torch),
        "params": count_params(net),
        "test_accuracy": accuracy(net, *data["test"], torch),
        "train_seconds": round(train_seconds, 3),
    }


def write_feedback(model, curve: list[float]) -> None:
    """A few lines for the next prompt in $GE_FEEDBACK (ge shows them; nothing without it): the
    validation curve and where the parameters are. Never the test accuracy (held out)."""
    path = os.environ.get("GE_FEEDBACK")
    if not path:
        return
    net = model.Net()
    blocks = [f"{name} {count_params(child)}" for name, child in net.named_children()]
    lines = [
        "val_accuracy after each epoch: " + ", ".join(f"{acc:.3f}" for acc in curve),
        f"parameters per module: {', '.join(blocks) or 'none'} (total {count_params(net)})",
    ]
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="quick build/forward/backward test")
    parser.add_argument("--metrics", default=os.environ.get("GE_METRICS", "metrics.json"))
    parser.add_argument("--seed", type=int, default=0, help="training seed (data are fixed)")
    parser.add_argument("--epochs", type=int, default=EPOCHS, help="for quick tests only")
    parser.add_argument(
        "--limit-train", type=int, default=N_TRAIN, help="the first N training images (tests)"
    )
    args = parser.parse_args()
    if args.epochs < 1 or args.limit_train < 1:
        parser.error("--epochs and --limit-train must be >= 1")

    gc.disable()  # torch's import makes ~1M objects and no garbage worth collecting ...
    try:
        import torch
    finally:  # ... and none of them is ever garbage: later collections (many a training step)
        gc.freeze()  # walk only what came after (they were ~15 % of a short run's CPU)
        gc.enable()
    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # already set in this process
        torch.set_num_interop_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import model

    if args.check:
        return check(model, torch)
    curve: list[float] = []
    metrics = train_and_score(model, torch, args.seed, curve, args.epochs, args.limit_train)
    Path(args.metrics).write_text(json.dumps(metrics), encoding="utf-8")
    write_feedback(model, curve)
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
