"""Kernel keyrings out of reach of evaluated code: a new session keyring and a seccomp filter.

The kernel keeps keys (Kerberos ``KEYRING:`` caches, ``pam_keyinit`` session keys, fscrypt and
ecryptfs keys, anything ``keyctl add`` stored) in keyrings that namespaces, a uid switch and
Landlock leave reachable: a process keeps the session keyring it was started with, and the
user keyring of its uid. ``deny_keyrings`` cuts both for the calling process and everything it
execs or forks:

1. ``join_session_keyring``: ``keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)``, a new, empty,
   anonymous session keyring (the inherited one is no longer "possessed", so its keys no longer
   show in ``/proc/keys`` either);
2. ``install(keyring_filter())``: a seccomp filter that fails ``add_key``, ``request_key`` and
   ``keyctl`` with EPERM (the answer of Docker's default profile), for the native architecture
   and its 32-bit compat entry points (i386 on x86_64, arm on aarch64); on x86_64 every x32
   system call (``nr >= 0x40000000``) fails with ENOSYS, as on the many kernels built without
   x32. A filter cannot be removed, so no later code in the process tree can undo it.

Where no filter is built (a machine other than x86_64 and aarch64, or a kernel without seccomp),
only step 1 holds and the report says so. A fork inherits both the filter and its parent's
session keyring: a preloading worker confined this way covers its forks (they share its new,
empty session keyring, and none of them can add to it or join another), so forks need no call.

Stdlib only, and nothing runs at import: ``confine.py`` imports this file as a top-level module
under ``python -I -S`` (as it does ``landlock.py``), and ``zygote.py`` can load it by its path.
The same program, as bytes, is what bwrap takes with ``--seccomp FD``. ``tests/support/
seccomp.py`` (which simulates machines without Landlock or namespaces) builds its filters with
``insn`` and ``install`` from here.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import sys

PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
RET_ALLOW, RET_ERRNO = 0x7FFF0000, 0x00050000
LD_W_ABS, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # struct seccomp_data (args[0]'s low word: little-endian)
X32_SYSCALL_BIT = 0x40000000
KEYCTL_JOIN_SESSION_KEYRING = 1

AUDIT_ARCH = {
    "x86_64": 0xC000003E,
    "i386": 0x40000003,
    "aarch64": 0xC00000B7,
    "arm": 0x40000028,
}
KEYRING_SYSCALLS = {
    # add_key, request_key, keyctl (arch/*/entry/syscalls, include/uapi/asm-generic/unistd.h)
    "x86_64": (248, 249, 250),
    "i386": (286, 287, 288),
    "aarch64": (217, 218, 219),
    "arm": (309, 310, 311),
}
COMPAT = {"x86_64": "i386", "aarch64": "arm"}
"""The 32-bit entry points a process of each supported machine can also use."""
KEYCTL = {
    **{name: numbers[2] for name, numbers in KEYRING_SYSCALLS.items()},
    "i686": 288,
    "armv7l": 311,
    "armv8l": 311,
    "riscv64": 219,  # the generic table
    "loongarch64": 219,
    "ppc64le": 271,
    "ppc64": 271,
    "s390x": 280,
}
"""keyctl's number by process ABI, for the join alone: where no filter is built, a new session
keyring still leaves the inherited one out of reach (not the user keyring)."""


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def machine() -> str:
    """The kernel's architecture name, e.g. ``x86_64`` (``platform`` would cost a few ms)."""
    return os.uname().machine


def supported(name: str | None = None) -> bool:
    """Whether a keyring filter can be built for this machine (x86_64 or aarch64)."""
    return (name or machine()) in COMPAT and sys.byteorder == "little"


def insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    """One classic BPF instruction (``struct sock_filter``)."""
    return struct.pack("=HBBI", code, jt, jf, k)


def _deny(numbers: tuple[int, ...], err: int) -> list[bytes]:
    """After a load of the syscall number: ``nr in numbers -> errno``, else allow."""
    code: list[bytes] = []
    for nr in numbers:
        code += [insn(JEQ_K, nr, jf=1), insn(RET_K, RET_ERRNO | err)]
    return [*code, insn(RET_K, RET_ALLOW)]


def keyring_filter(name: str | None = None) -> bytes | None:
    """The BPF program that denies the keyring syscalls on machine ``name`` (default: this one);
    None where the machine is not supported."""
    name = name or machine()
    if not supported(name):
        return None
    compat = COMPAT[name]
    native_block = [insn(LD_W_ABS, OFF_NR)]
    if name == "x86_64":
        native_block += [insn(JGE_K, X32_SYSCALL_BIT, jf=1), insn(RET_K, RET_ERRNO | errno.ENOSYS)]
    native_block += _deny(KEYRING_SYSCALLS[name], errno.EPERM)
    compat_block = [insn(LD_W_ABS, OFF_NR), *_deny(KEYRING_SYSCALLS[compat], errno.EPERM)]
    head = [
        insn(LD_W_ABS, OFF_ARCH),
        insn(JEQ_K, AUDIT_ARCH[name], jt=2),  # to native_block, past the next two
        insn(JEQ_K, AUDIT_ARCH[compat], jt=1 + len(native_block)),  # to compat_block
        insn(RET_K, RET_ERRNO | errno.ENOSYS),  # an architecture this kernel cannot run
    ]
    return b"".join(head + native_block + compat_block)


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.prctl.restype = ctypes.c_int
    libc.prctl.argtypes = (ctypes.c_int,) + (ctypes.c_ulong,) * 4
    return libc


def install(program: bytes, *, no_new_privs: bool = True) -> None:
    """Install ``program`` on the calling thread (single-threaded process: on the process) and
    everything it will start. ``no_new_privs``: set it first (needed without CAP_SYS_ADMIN);
    False: try without it and set it only where the kernel insists. Raises OSError."""
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = SockFprog(len(program) // 8, ctypes.cast(buf, ctypes.c_void_p))
    libc = _libc()
    for nnp in (True,) if no_new_privs else (False, True):
        if nnp and libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) == 0:
            return
        if ctypes.get_errno() != errno.EACCES:
            break
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def process_abi() -> str:
    """The system-call ABI of this process: the machine's, or its 32-bit one for a 32-bit
    interpreter on a 64-bit kernel (i386 on x86_64, arm on aarch64)."""
    name = machine()
    return COMPAT[name] if name in COMPAT and ctypes.sizeof(ctypes.c_void_p) == 4 else name


def join_session_keyring() -> None:
    """Join a new, empty, anonymous session keyring. Raises OSError (ENOSYS: a kernel without
    keyrings or an ABI whose keyctl number is not known here; EPERM: keyctl already denied, e.g.
    by a container's seccomp profile)."""
    keyctl = KEYCTL.get(process_abi())
    if keyctl is None:
        raise OSError(errno.ENOSYS, f"keyctl's number on {process_abi()} is not known here")
    libc = _libc()
    result = libc.syscall(
        ctypes.c_long(keyctl), ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), ctypes.c_void_p(None)
    )
    if result < 0:
        raise OSError(ctypes.get_errno(), "keyctl(KEYCTL_JOIN_SESSION_KEYRING)")


def deny_keyrings() -> str:
    """Both steps on the calling process; what held, in words for ``confine --report``:

    * ``keyrings denied``: the filter is in (with a new session keyring, unless keyctl was
      already denied from outside, which leaves no key reachable either);
    * ``keyrings: new session keyring only (...)``: no filter here (an unsupported machine, a
      kernel without seccomp), so the user keyring of the uid stays reachable;
    * ``keyrings OPEN (...)``: neither step worked.

    Never raises: the caller reports what held and ge's isolation event says it."""
    try:
        join_session_keyring()
        joined = None
    except OSError as exc:
        joined = f"{exc.strerror or exc}"
    program = keyring_filter()
    if program is None:
        problem = f"no seccomp filter for {machine()}"
    else:
        try:
            install(program)
            return "keyrings denied"
        except OSError as exc:
            problem = f"seccomp: {os.strerror(exc.errno) if exc.errno else exc}"
    if joined is None:
        return f"keyrings: new session keyring only ({problem})"
    return f"keyrings OPEN (session keyring: {joined}; {problem})"
