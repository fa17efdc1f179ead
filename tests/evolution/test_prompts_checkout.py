"""The built-in prompts come from the checkout whose package is imported (issue 24's suite
timer ran a clone on PYTHONPATH that read the prompts of the editable install's tree)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import guided_evolution

ROOT = Path(guided_evolution.__file__).resolve().parent.parent


def test_a_checkout_on_pythonpath_reads_its_own_prompts(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(ROOT / "guided_evolution", clone / "guided_evolution",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copytree(ROOT / "prompts", clone / "prompts")
    shutil.copy(ROOT / "pyproject.toml", clone / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(clone)}
    out = subprocess.run(
        [sys.executable, "-c",
         "from guided_evolution.evolution.prompts import builtin_dir; print(builtin_dir())"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(out) == (clone / "prompts").resolve()
