"""Run a command on a simulated machine that lacks Landlock and/or namespaces (stdlib only).

``python tests/support/seccomp.py --deny landlock --deny namespaces -- ge run ...`` installs a
seccomp filter, then execs the command. The filter is inherited by every process the command
starts, so ge, its probes and the evaluated code all see the kernel of such a machine:

* ``landlock``: ``landlock_create_ruleset``/``add_rule``/``restrict_self`` fail with ENOSYS (a
  kernel built without Landlock);
* ``namespaces`` (alias ``unshare``): ``unshare``, ``setns`` and ``clone`` with any ``CLONE_NEW*``
  flag fail with EPERM (a host that forbids new namespaces), ``clone3`` with ENOSYS (its flags
  are behind a pointer, so glibc is sent back to ``clone``, which is checked);
* ``userns``: ``unshare`` and ``clone`` with ``CLONE_NEWUSER`` fail with EPERM (a host that
  forbids unprivileged user namespaces; root still makes the others).

Only x86_64 and aarch64 are supported (``supported()``); syscalls of any other architecture
(x86's 32-bit entry points) fail with ENOSYS. There is no hook in ge's code: the denial happens
at the syscall level, as on the machines it simulates. The instructions and the installation
are ``guided_evolution/evaluation/sandbox/syscall_filter.py``'s (ge's own keyring filter).
"""

from __future__ import annotations

import errno
import os
import platform
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from guided_evolution.evaluation.sandbox.syscall_filter import (
    JEQ_K,
    JSET_K,
    LD_W_ABS,
    OFF_ARCH,
    OFF_ARG0,
    OFF_NR,
    RET_ALLOW,
    RET_ERRNO,
    RET_K,
)
from guided_evolution.evaluation.sandbox.syscall_filter import insn as _insn
from guided_evolution.evaluation.sandbox.syscall_filter import install as _install


@dataclass(frozen=True)
class Arch:
    """One architecture's audit id and the syscall numbers the filter needs."""

    audit: int
    landlock: tuple[int, ...]
    unshare: int
    setns: int
    clone: int
    clone3: int


ARCHES = {
    "x86_64": Arch(0xC000003E, (444, 445, 446), unshare=272, setns=308, clone=56, clone3=435),
    "aarch64": Arch(0xC00000B7, (444, 445, 446), unshare=97, setns=268, clone=220, clone3=435),
}
DENIALS = ("landlock", "namespaces", "userns")
ALIASES = {
    "unshare": "namespaces", "landlock": "landlock", "namespaces": "namespaces", "userns": "userns"
}  # fmt: skip
CLONE_NEW_FLAGS = 0x7E020000  # NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NEWUSER = 0x10000000


def machine() -> str:
    """The kernel's architecture name, e.g. ``x86_64``."""
    return platform.machine()


def supported() -> bool:
    """Whether the filter can be built for this machine (x86_64 or aarch64, little-endian)."""
    return machine() in ARCHES and sys.byteorder == "little"


def deny_argv(*denials: str) -> list[str]:
    """The argv prefix that runs a command with ``denials`` (``landlock``, ``namespaces``)."""
    args = [sys.executable, str(Path(__file__).resolve())]
    for name in denials:
        args += ["--deny", name]
    return [*args, "--"]


def program(arch: Arch, denials: Iterable[str]) -> bytes:
    """The BPF program: arch check, then one ``nr == X -> errno`` test per denied syscall."""
    wanted = {ALIASES[d] for d in denials}
    errors: list[tuple[int, int]] = []  # (syscall, errno) returned without a further check
    if "landlock" in wanted:
        errors += [(nr, errno.ENOSYS) for nr in arch.landlock]
    if "namespaces" in wanted:
        errors += [(arch.unshare, errno.EPERM), (arch.setns, errno.EPERM)]
        errors += [(arch.clone3, errno.ENOSYS)]
    code = [
        _insn(LD_W_ABS, OFF_ARCH),
        _insn(JEQ_K, arch.audit, jt=1),
        _insn(RET_K, RET_ERRNO | errno.ENOSYS),
        _insn(LD_W_ABS, OFF_NR),
    ]
    for nr, err in errors:
        code += [_insn(JEQ_K, nr, jf=1), _insn(RET_K, RET_ERRNO | err)]
    if "namespaces" in wanted:
        code += _flag_test(arch.clone, CLONE_NEW_FLAGS)
    elif "userns" in wanted:  # clone3 hides its flags: glibc falls back to clone
        code += _flag_test(arch.clone3, 0, errno.ENOSYS)
        code += _flag_test(arch.unshare, CLONE_NEWUSER) + _flag_test(arch.clone, CLONE_NEWUSER)
    code.append(_insn(RET_K, RET_ALLOW))
    return b"".join(code)


def _flag_test(nr: int, flags: int, err: int = errno.EPERM) -> list[bytes]:
    """``nr`` with any of ``flags`` in its first argument fails with ``err`` (every call of
    ``nr`` when ``flags`` is 0); the syscall number is loaded again for the next test."""
    if not flags:
        return [_insn(JEQ_K, nr, jf=1), _insn(RET_K, RET_ERRNO | err)]
    return [
        _insn(JEQ_K, nr, jf=4),
        _insn(LD_W_ABS, OFF_ARG0),
        _insn(JSET_K, flags, jf=1),
        _insn(RET_K, RET_ERRNO | err),
        _insn(LD_W_ABS, OFF_NR),
    ]


def install(denials: Iterable[str]) -> None:
    """Install the filter on this process (and everything it will start)."""
    if not supported():
        raise OSError(
            errno.ENOSYS, f"seccomp simulation supports x86_64 and aarch64, not {machine()}"
        )
    # Root may install a filter without no_new_privs; keep it off there, as on the real machine.
    _install(program(ARCHES[machine()], denials), no_new_privs=False)


def main(argv: list[str]) -> int:
    """``--deny NAME`` (repeatable) ``-- COMMAND...``: install the filter, exec the command."""
    denials: list[str] = []
    i = 0
    while i < len(argv) and argv[i] != "--":
        if argv[i] != "--deny" or i + 1 >= len(argv) or argv[i + 1] not in ALIASES:
            print(
                f"usage: seccomp.py [--deny {{{','.join(ALIASES)}}}]... -- COMMAND", file=sys.stderr
            )
            return 2
        denials.append(argv[i + 1])
        i += 2
    command = argv[i + 1 :]
    if not command:
        print("seccomp.py: no command after --", file=sys.stderr)
        return 2
    install(denials)
    os.execvp(command[0], command)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
