"""A generator of small CIFAR-10-format data sets (`cifar-10-batches-py` pickles) for tests.

Images are class-dependent colour patterns plus noise, so a network can learn something from a
few hundred of them; nothing is downloaded.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


def _images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[int]]:
    labels = rng.integers(0, 10, size=n)
    yy, xx = np.mgrid[0:32, 0:32]
    images = np.empty((n, 3, 32, 32), dtype=np.uint8)
    for k, label in enumerate(labels):
        base = np.stack(
            [
                128 + 100 * np.sin((xx * (1 + label % 3) + yy * (label // 3)) / 5.0 + c)
                for c in range(3)
            ]
        )
        noisy = base + rng.normal(0, 30, size=base.shape)
        images[k] = np.clip(noisy, 0, 255).astype(np.uint8)
    return images.reshape(n, 3072), [int(v) for v in labels]


def write_cifar(directory: Path, n_train: int = 200, n_test: int = 50, seed: int = 0) -> Path:
    """Write data_batch_1..5 (n_train images in all) and test_batch into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per_batch = np.array_split(np.arange(n_train), len(TRAIN_FILES))
    for name, idx in zip(TRAIN_FILES, per_batch, strict=True):
        data, labels = _images(rng, len(idx))
        _dump(directory / name, data, labels)
    data, labels = _images(rng, n_test)
    _dump(directory / TEST_FILE, data, labels)
    return directory


def _dump(path: Path, data: np.ndarray, labels: list[int]) -> None:
    with path.open("wb") as fh:
        pickle.dump({b"batch_label": path.name.encode(), b"data": data, b"labels": labels}, fh)
