"""The sbatch script of one SLURM evaluation, its job name and the time limit it asks for.

The script records how it ended in ``exit.json`` (exit code or signal, and the stage: ``setup``
or ``evaluate``) from its traps, runs the ``[executor.slurm] setup`` snippet, then
``job.job_main`` with ``[executor.slurm] python`` (default: the interpreter that runs ge).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING

from guided_evolution.errors import GeError

if TYPE_CHECKING:
    from guided_evolution.config import SlurmConfig


def parse_time_limit(text: str) -> float | None:
    """Seconds of a SLURM time limit (``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``).

    None for ``UNLIMITED`` / ``INFINITE``; GeError for anything else SLURM would reject.
    """
    value = text.strip()
    if value.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value)
    if not match:
        raise GeError(
            f"executor.slurm.time_limit = {text!r} is not a SLURM time",
            'use "MM", "HH:MM:SS" or "D-HH:MM:SS", e.g. "01:00:00"',
        )
    days, first, second, third = match.groups()
    numbers = [int(first)] + [int(x) for x in (second, third) if x is not None]
    if days is not None:
        hours, minutes, seconds = ([*numbers, 0, 0])[:3]
        return float(((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds)
    if len(numbers) == 1:
        return float(numbers[0] * 60)
    if len(numbers) == 2:
        return float(numbers[0] * 60 + numbers[1])
    return float((numbers[0] * 60 + numbers[1]) * 60 + numbers[2])


def job_name(run_name: str, variant_id: str) -> str:
    """The SLURM job name of one evaluation: ``ge-<run>-<variant>`` (safe characters only)."""
    run = re.sub(r"[^A-Za-z0-9._-]", "_", run_name)[:80]
    return f"ge-{run}-{variant_id}"


def job_script(c: SlurmConfig, job_dir: Path, variant_id: str, run_name: str, python: str) -> str:
    """The sbatch script of one evaluation: options, exit-status traps, setup, ``job_main``."""
    opts = [f"--time={c.time_limit}", f"--cpus-per-task={c.cpus_per_task}"]
    if c.partition:
        opts.append(f"--partition={c.partition}")
    if c.gres:
        opts.append(f"--gres={c.gres}")
    if c.gpus:
        opts.append(f"--gpus={c.gpus}")
    if c.mem:
        opts.append(f"--mem={c.mem}")
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in opts)]
    for extra in c.extra_sbatch:
        text = extra.strip()
        lines.append(text if text.startswith("#SBATCH") else f"#SBATCH {text}")
    q = shlex.quote
    # The directory that contains the `guided_evolution` package: appended to the job's sys.path
    # so that `python` of the setup snippet finds this ge even where it is not installed.
    package_parent = str(Path(__file__).resolve().parents[3])
    launcher = (
        "import sys; sys.path.append(sys.argv.pop(1)); "
        "from guided_evolution.evaluation.slurm.job import job_main; "
        "sys.exit(job_main(sys.argv[1:]))"
    )
    lines += [
        f"# ge: evaluation of variant {variant_id} of run {run_name}",
        f"_ge_dir={q(str(job_dir))}",
        "_ge_stage=setup",
        "_ge_child=",
        "_ge_status() {",
        '  printf \'{"exit": %s, "signal": %s, "stage": "%s", "job_id": "%s"}\\n\' '
        '"$1" "$2" "$_ge_stage" "${SLURM_JOB_ID:-}" > "$_ge_dir/.exit.json.tmp" '
        '&& mv -f "$_ge_dir/.exit.json.tmp" "$_ge_dir/exit.json"',
        "}",
        "_ge_signalled() {",
        "  trap - EXIT TERM INT HUP",
        '  [ -n "$_ge_child" ] && kill -TERM "$_ge_child" 2>/dev/null',
        '  _ge_status null "\\"$1\\""',
        '  exit "$2"',
        "}",
        "trap '_ge_status $? null' EXIT",
        "trap '_ge_signalled SIGTERM 143' TERM",
        "trap '_ge_signalled SIGINT 130' INT",
        "trap '_ge_signalled SIGHUP 129' HUP",
        f'echo "[ge] SLURM job ${{SLURM_JOB_ID:-?}} on $(hostname): variant {variant_id}"',
        "# --- setup ([executor.slurm] setup)",
        *(c.setup.splitlines() if c.setup.strip() else [":"]),
        "_ge_rc=$?",
        "# --- evaluation",
        'if [ "$_ge_rc" -ne 0 ]; then',
        '  echo "[ge] setup failed with exit code $_ge_rc" >&2',
        '  exit "$_ge_rc"',
        "fi",
        "_ge_stage=evaluate",
        f"{q(python)} -c {q(launcher)} {q(package_parent)} {q(str(job_dir / 'spec.json'))} &",
        "_ge_child=$!",
        'wait "$_ge_child"',
        "exit $?",
    ]
    return "\n".join(lines) + "\n"
