"""``[evaluator.preload]``: one forking worker per slot (``zygote.py``) for any Python evaluator.

The evaluator's commands must be plain Python invocations, ``python SCRIPT [ARGS]`` or
``python -m MODULE [ARGS]``. The slot's worker runs ``zygote.py`` with that interpreter, imports
the ``preload`` modules once, and runs each stage in a fork that is the init of pid, mount and ipc
namespaces of its own, the evaluator its pid 2 (see ``zygote.py``); the ``workers.WorkerPool``
protocol and fallback apply, and a timed-out stage is killed through the worker (``{"signal":
N}`` to its init, which takes the namespace with it).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.evaluation.sandbox import landlock
from guided_evolution.evaluation.sandbox.confine_backend import DEVICES
from guided_evolution.evaluation.sandbox.uids import TOKEN_VAR
from guided_evolution.evaluation.sandbox.wrap import Sandbox, run_to_end
from guided_evolution.evaluation.workers.pool import WorkerPool
from guided_evolution.fsutil import remove_tree

ZYGOTE = Path(__file__).with_name("zygote.py")
# what the zygote loads by path, beside the package: its stage boxes apply Landlock with it
ZYGOTE_READS = (ZYGOTE.parent, ZYGOTE.parent.parent / "sandbox")
_SHELL = set("|&;<>()$`\\*?[]#~\n")


@dataclass(frozen=True)
class PythonCommand:
    """A command ``INTERPRETER ARGS`` where ARGS is ``SCRIPT ...`` or ``-m MODULE ...``."""

    interpreter: str
    args: tuple[str, ...]


def python_command(command: str) -> PythonCommand | None:
    """The command as a plain Python invocation, or None when it is anything else."""
    if any(c in _SHELL for c in command.replace("'", "").replace('"', "")):
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if len(words) < 2 or not os.path.basename(words[0]).startswith("python"):
        return None
    if words[1] == "-m":
        return PythonCommand(words[0], tuple(words[1:])) if len(words) > 2 else None
    if words[1].startswith("-"):
        return None
    return PythonCommand(words[0], tuple(words[1:]))


def preload_pool(
    sandbox: Sandbox,
    preload: tuple[str, ...],
    command: str,
    check: str | None,
    *,
    start_timeout_s: float,
    recycle_after: int,
    work_dir: Path,
    run_dir: Path,
) -> tuple[WorkerPool | None, list[str]]:
    """The pool of zygote workers for ``preload`` (or None) and the warnings to show.
    ``work_dir``, ``run_dir``: where the slots' directories will be (the run's ``work``)."""
    evaluate = python_command(command)
    if evaluate is None:
        return None, [f"evaluator.preload is not used: {command!r} is not `python SCRIPT ...`"]
    info = sandbox.probe()
    confined = info.backend != "none"
    own_mounts = info.backend == "bwrap" or bool(info.mode and info.mode.namespaces)
    unboxable = _unboxable(confined, own_mounts)
    if unboxable is not None:
        return None, [f"evaluator.preload is not used: {unboxable}"]
    checked = python_command(check) if check else None
    if checked is not None and checked.interpreter != evaluate.interpreter:
        checked = None
    stages = ("check", "evaluate") if checked is not None else ("evaluate",)
    spec = _zygote_spec(sandbox, preload, evaluate, checked, confined, own_mounts)
    # Once per process: a new run's seed (in its temporary directory) and its run need it once.
    problem = sandbox.check_once(
        ("preload", evaluate.interpreter, json.dumps(spec), str(run_dir.parent)),
        lambda: verify_boxes(sandbox, evaluate.interpreter, spec, start_timeout_s, work_dir, run_dir),
    )
    if problem is not None:
        return None, [
            f"evaluator.preload is not used: {problem}; every stage starts a fresh process"
        ]
    worker = shlex.join(["exec", evaluate.interpreter, str(ZYGOTE), json.dumps(spec)])
    pool = WorkerPool(
        worker,
        sandbox,
        start_timeout_s=start_timeout_s,
        stages=stages,
        recycle_after=recycle_after,
        copy_variant=False,
        boxed=True,
    )
    return pool, []


def _unboxable(confined: bool, own_mounts: bool) -> str | None:
    """Why the sandbox here cannot box forked evaluations off (None: it can)."""
    if confined and landlock.abi_version() <= 0:
        return (
            "without Landlock the forked evaluations could not be confined; every stage starts a "
            "fresh process"
        )
    if confined and not own_mounts:
        return (
            "without namespaces a forked evaluation cannot be boxed off from its worker and the "
            "other evaluations; every stage starts a fresh process"
        )
    return None


def _zygote_spec(
    sandbox: Sandbox,
    preload: tuple[str, ...],
    evaluate: PythonCommand,
    checked: PythonCommand | None,
    confined: bool,
    own_mounts: bool,
) -> dict[str, object]:
    """The zygote's argument: what it preloads, the stages' arguments (``checked``: the check
    stage runs on it too) and how it boxes each fork."""
    devices = [*DEVICES, *(str(p) for p in sorted(Path("/dev").glob("nvidia*")))]
    tmpfs_mb = sandbox.policy.tmpfs_mb
    return {
        "preload": list(preload),
        "evaluate": list(evaluate.args),
        "check": list(checked.args) if checked is not None else None,
        "landlock": confined,
        "deny_tcp": not sandbox.policy.network,
        "devices": [d for d in devices if os.path.exists(d)],
        "keep_env": ["PATH", TOKEN_VAR],
        "private_tmp": own_mounts,
        "tmpfs_bytes": tmpfs_mb * 1024 * 1024 if tmpfs_mb else None,
    }


def verify_boxes(
    sandbox: Sandbox,
    interpreter: str,
    spec: dict[str, object],
    timeout_s: float,
    work_dir: Path,
    run_dir: Path,
) -> str | None:
    """Start a worker once, as a slot would (its directory beside theirs, the run hidden), with
    nothing preloaded: it boxes two trial forks before it says ready (``zygote._trial``). None
    when that held, else why not."""
    slot = work_dir / ".ge-preload-probe"
    remove_tree(slot)
    slot.mkdir(parents=True)
    trial = shlex.join(["exec", interpreter, str(ZYGOTE), json.dumps({**spec, "preload": []})])
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    try:
        wrapped = sandbox.wrap(["/bin/sh", "-c", trial], slot, env, [], [run_dir], own_userns=True)
        result = run_to_end(wrapped, slot, timeout_s=min(timeout_s, 60.0))
    except (OSError, subprocess.SubprocessError) as exc:
        return f"its worker could not start ({exc})"
    finally:
        sandbox.cleanup(slot)
        remove_tree(slot)
    if result.returncode == 0 and b'"ready": true' in result.stdout:
        return None
    lines = result.stderr.decode(errors="replace").strip().splitlines()
    return (lines[-1] if lines else f"its worker exited with code {result.returncode}")[:300]
