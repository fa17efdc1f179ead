"""Where ge opens a variant's metrics file from, computed on the path's text: the same answer as
the Path-based way it replaced, for every shape of path and variant directory."""

from __future__ import annotations

import itertools
import os
from pathlib import Path, PurePosixPath

from guided_evolution.evaluation.contract import metrics_location


def _by_paths(path: Path, root: Path | None) -> tuple[Path, PurePosixPath]:
    """The earlier metrics_location (Path objects, ``is_relative_to``)."""
    full = Path(os.path.abspath(path))
    if root is not None:
        top = Path(os.path.abspath(root))
        if full.is_relative_to(top) and full != top:
            return top.parent, PurePosixPath(full.relative_to(top.parent))
    return full.parent, PurePosixPath(full.name)


PATHS = [
    "/run/work/v1/metrics.json",
    "/run/work/v1/out/deep/metrics.json",
    "/run/work/v1",
    "/run/work/v1/",
    "/run/work/v10/metrics.json",
    "/run/work/v1/../v2/metrics.json",
    "/run/work/./v1//metrics.json",
    "/run/io/metrics.json",
    "/metrics.json",
    "/",
    "//run/work/v1/metrics.json",
    "relative/metrics.json",
    "v1/metrics.json",
    "metrics.json",
]
ROOTS = [None, "/run/work/v1", "/run/work/v1/", "/run/work/v", "/", "//run/work/v1", "v1", "."]


def test_metrics_location_answers_as_the_path_based_way() -> None:
    for path, root in itertools.product(PATHS, ROOTS):
        got = metrics_location(Path(path), None if root is None else Path(root))
        assert got == _by_paths(Path(path), None if root is None else Path(root)), (path, root)
