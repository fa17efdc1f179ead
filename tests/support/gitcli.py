"""git's own command line on a run's repository, beside ge's GitStore (what git itself reads)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """``git --git-dir REPO ARGS``'s stdout (fails on a non-zero exit); no ``GIT_*`` variable of
    the caller's environment reaches it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    out = subprocess.run(
        ["git", "--git-dir", str(repo), *args], capture_output=True, check=True, env=env
    )
    return out.stdout.decode()
