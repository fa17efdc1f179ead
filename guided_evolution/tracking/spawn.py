"""The engine's side of tracking: start the follower process for a run, stop it at the end.

Standard library only (``mlflow`` is imported by the follower, never by the engine). The
follower runs in a process of its own, in a session of its own and at a lower priority: it reads
the run's index read-only, so a slow or failing tracking server never slows or stops evolution.
Its warnings come back as lines on its stdout and are printed as ge's ``warning:`` lines; it
stops when its stdin closes (``ge`` finished, or died), after one last look at the run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.config import ResolvedConfig
from guided_evolution.fsutil import atomic_write

STATE_FILE = "tracking.json"  # in the run directory: the tracking URI resolved at the first start
FINAL_WAIT_S = 30.0  # at the end of a run, time given to the follower's last look
INSTALL = "pip install mlflow-skinny"
_KEY = re.compile(r"[0-9a-f]{32}")


def resolve_uri(uri: str, cwd: Path) -> str:
    """``uri`` with a relative file or SQLite path made absolute (against ``cwd``)."""
    if uri.startswith("file:") and not uri.startswith("file://"):
        path = Path(uri.removeprefix("file:"))
        return uri if path.is_absolute() else (cwd / path).resolve().as_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str((cwd / uri.removeprefix("sqlite:///")).resolve())
    if "://" not in uri and not uri.startswith(("file:", "databricks")):  # a plain path
        return (cwd / uri).resolve().as_uri()
    return uri


@dataclass(frozen=True)
class TrackingState:
    """Where a run is tracked and the key its MLflow runs carry (tag ``ge.run``)."""

    uri: str
    key: str


def tracking_state(run_dir: Path, resolved: ResolvedConfig, *, save: bool) -> TrackingState | None:
    """The run's MLflow URI as resolved when it was first tracked, and its key (``STATE_FILE``):
    a ``ge resume`` from another directory logs to the same store, and two runs of one seed (a
    sweep) never share MLflow runs. None when tracking is off."""
    configured = resolved.config.tracking.mlflow
    if configured is None:
        return None
    state = run_dir / STATE_FILE
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        found = json.loads(state.read_text(encoding="utf-8"))
        uri, key = found.get("resolved"), found.get("key")
        if found.get("configured") == configured and isinstance(uri, str) and _KEY.fullmatch(key):
            return TrackingState(uri, key)
    fresh = TrackingState(resolve_uri(configured, Path.cwd()), secrets.token_hex(16))
    if save:
        text = json.dumps({"configured": configured, "resolved": fresh.uri, "key": fresh.key})
        atomic_write(state, text + "\n")
    return fresh


def follower_env(uri: str) -> dict[str, str]:
    """The follower's environment: MLflow's file store allowed where the user asked for it (MLflow
    3 refuses it otherwise), and a down server given up on in seconds rather than minutes."""
    env = dict(os.environ)
    if uri.startswith("file:"):
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    env.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    env.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    return env


class Follower:
    """The follower process of one run, and the thread that prints its warnings."""

    def __init__(self, proc: subprocess.Popen[bytes], warn: Callable[[str], None]) -> None:
        self.proc = proc
        self.warn = warn
        self.reader = threading.Thread(target=self._read, name="ge-tracking", daemon=True)
        self.reader.start()

    @classmethod
    def start(cls, run_dir: Path, uri: str, warn: Callable[[str], None]) -> Follower:
        command = [sys.executable, "-m", "guided_evolution.tracking.follower", str(run_dir)]
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=follower_env(uri),
            start_new_session=True,  # Ctrl-C in the terminal is ge's; the follower ends on EOF
        )
        return cls(proc, warn)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                self.warn(line[:500])

    def stop(self, wait_s: float) -> None:
        """Close its stdin (it takes one last look and exits); wait up to ``wait_s`` for that."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if wait_s <= 0:
            return
        try:
            code = self.proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            self.warn(
                f"MLflow tracking is still logging (process {self.proc.pid}); it goes on in the "
                "background and exits when it is done"
            )
            return
        self.reader.join(5.0)
        if code < 0:
            self.warn(f"MLflow tracking was stopped by signal {-code}; the run was not all logged")


@contextlib.contextmanager
def follow(run_dir: Path, resolved: ResolvedConfig, warn: Callable[[str], None]) -> Iterator[None]:
    """Around the engine's loop: the run followed by MLflow tracking where ``[tracking] mlflow``
    is set. Never raises for tracking: a problem is one warning, and the run goes on."""
    follower = None
    try:
        state = tracking_state(run_dir, resolved, save=True)
        if state is not None and importlib.util.find_spec("mlflow") is None:
            warn(
                f"[tracking] mlflow is set but MLflow is not installed, so this run is not "
                f"tracked: `{INSTALL}`, then `python -m guided_evolution.tracking.follower "
                f"{run_dir} --once` logs it"
            )
        elif state is not None:
            follower = Follower.start(run_dir, state.uri, warn)
    except Exception as err:  # tracking never stops a run
        warn(f"MLflow tracking could not start ({type(err).__name__}: {err}); the run goes on")
    done = False
    try:
        yield
        done = True
    finally:
        if follower is not None:
            follower.stop(FINAL_WAIT_S if done else 0.0)
