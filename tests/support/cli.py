"""Running the real `ge` entry point from tests, and finding processes a test left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def ge(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run `python -m guided_evolution ARGS` in a subprocess (litellm kept offline)."""
    full_env = {**os.environ, "LITELLM_OFFLINE_MODE": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "guided_evolution", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_json(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> dict:
    """`ge ... --json` that must succeed; its JSON output."""
    proc = ge(*args, "--json", cwd=cwd, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def processes_with(text: str) -> list[int]:
    """Pids of live processes whose command line contains `text`."""
    found = []
    needle = text.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if needle in fh.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found
