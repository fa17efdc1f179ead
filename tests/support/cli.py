"""Running the real `ge` entry point from tests, and finding processes a test left behind.

``ge`` / ``run_json`` start `python -m guided_evolution` in a subprocess: use them where the
process is what is tested (a run, its signals, exit codes as a shell sees them, `--help` as
installed). ``ge_here`` / ``here_json`` call the same entry point (``cli.main``: argument
parsing, the command, the one-line errors and exit codes) in this process, with its cwd,
environment, argv and output swapped for the call: no interpreter start-up and imports (~0.45
CPU-s per call), for the read-only commands (status, best, show, log, lineage, report, doctor
without repairs ...) whose output and exit code a test checks.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
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


@contextlib.contextmanager
def _process_state(args: tuple[str, ...], cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """This process's argv, cwd and environment as `python -m guided_evolution ARGS` started in
    ``cwd`` would have them, restored after (click names the program from ``argv[0]`` and
    ``__main__.__package__``: "python -m guided_evolution" in its usage lines)."""
    main = sys.modules["__main__"]
    saved_argv, saved_cwd, saved_env = sys.argv, os.getcwd(), dict(os.environ)
    saved_package = getattr(main, "__package__", None)
    sys.argv = [importlib.util.find_spec("guided_evolution.__main__").origin, *args]  # type: ignore[union-attr]
    main.__package__ = "guided_evolution"
    os.environ.update({"LITELLM_OFFLINE_MODE": "true", **env})
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        main.__package__ = saved_package


def ge_here(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`ge ARGS` through ``cli.main`` in this process, as ``ge`` returns it (exit code, stdout,
    stderr; an uncaught exception is its traceback on stderr and exit code 1, as Python's)."""
    from guided_evolution.cli import main

    out, err, code = io.StringIO(), io.StringIO(), 0
    swapped = (contextlib.redirect_stdout(out), contextlib.redirect_stderr(err))
    with _process_state(args, cwd, env or {}), swapped[0], swapped[1]:
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except Exception:
            traceback.print_exc()
            code = 1
    return subprocess.CompletedProcess(["ge", *args], code, out.getvalue(), err.getvalue())


def here_json(*args: str, cwd: Path, env: dict[str, str] | None = None) -> dict:
    """``run_json`` through ``ge_here``: `ge ... --json` in this process, which must succeed."""
    proc = ge_here(*args, "--json", cwd=cwd, env=env)
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
