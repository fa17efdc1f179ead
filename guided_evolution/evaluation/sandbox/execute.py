"""How a command is started for the bwrap and none backends: prlimit(1), the uid switch and the
cgroup join as argv prefixes (so that the parent can vfork), or a preexec hook where needed.

(ge's own sandbox does all of this inside ``confine.py``.)
"""

from __future__ import annotations

import os
import resource
import sys
from collections.abc import Callable, Sequence

from guided_evolution.evaluation.sandbox.confine_backend import RLimits

JOIN_CGROUPS = (
    "/bin/sh",
    "-c",
    'while [ "$1" != -- ]; do echo 0 > "$1" || exit 125; shift; done; shift; exec "$@"',
    "ge-join-cgroups",
)
"""Prefix of a command that first moves itself into the evaluation's cgroups (their procs files,
then ``--``); it runs as ge's user, before bwrap or the uid switch."""


def prlimit_argv(prlimit: str, limits: RLimits) -> list[str]:
    """``prlimit --...=N --`` applying ``limits``."""
    args = [prlimit, "--core=0"]
    for option, value in (
        ("--as", limits.memory_bytes),
        ("--cpu", limits.cpu_seconds),
        ("--fsize", limits.file_bytes),
        ("--nproc", limits.processes),
    ):
        if value is not None:
            args.append(f"{option}={value}")
    return [*args, "--"]


def drop_privileges_argv(setpriv: str | None, uid: int | None) -> list[str]:
    """The prefix that runs a command as the dedicated ``uid`` with no capabilities."""
    if uid is None:
        return []
    if setpriv:
        return [
            setpriv,
            f"--reuid={uid}",
            f"--regid={uid}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]
    code = (
        "import os,sys;os.setgroups([]);os.setgid(int(sys.argv[1]));"
        "os.setuid(int(sys.argv[1]));os.execvp(sys.argv[2],sys.argv[2:])"
    )
    return [sys.executable, "-I", "-c", code, str(uid)]


def preexec_hook(limits: RLimits, uid: int | None, joins: Sequence[str] = ()) -> Callable[[], None]:
    """A ``preexec_fn``: join the cgroups, set the rlimits, then switch to ``uid``."""
    values: list[tuple[int, int]] = []
    for kind, value in (
        (resource.RLIMIT_AS, limits.memory_bytes),
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_FSIZE, limits.file_bytes),
        (resource.RLIMIT_NPROC, limits.processes),
        (resource.RLIMIT_CORE, 0),
    ):
        if value is not None:
            values.append((kind, value))

    def preexec() -> None:
        for procs in joins:  # the evaluation's cgroups, before the uid switch
            with open(procs, "w") as fh:
                fh.write("0")
        for kind, value in values:
            _soft, hard = resource.getrlimit(kind)
            if hard != resource.RLIM_INFINITY:
                value = min(value, hard)
            resource.setrlimit(kind, (value, value))
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)

    return preexec
