"""The candidate's process: confined, it answers priorities for one item at a time.

evaluate.py copies this file and the candidate's heuristic.py into an empty temporary
directory and starts it there. Before importing the candidate, the process confines itself
with Landlock (when the kernel has it; the status is its first message): it may read Python's
installation, the system libraries and the temporary directory only, and write only there, so
the instance files, the seed and run directories and the evaluator's metrics file are out of
its reach (/proc included). It then serves requests on stdin:

    b"S" + capacity (int64) + number of bins (int64)   a new instance: every bin empty
    b"I" + item (int64) + last bin chosen (int64)      place the last item, then score this one

and answers each item with the position (int64) of its bin among those the item fits in: the
highest of the candidate's priorities, once they are checked (one finite number per bin); or,
when they fail the check, minus the length of a one-line reason, then the reason. The bins kept
here are a mirror for the candidate; evaluate.py keeps its own, places the item only in a bin
with room for it, and counts the bins. A candidate that patches this file's code in its process
can only choose another bin the item fits in, as honest code could.
"""

import os
import struct
import sys

import numpy as np

HEADER = struct.Struct("<cqq")


# Landlock (Documentation/userspace-api/landlock.rst): the ABI-1 filesystem rights, syscalls of the
# generic table (x86_64, aarch64), one path-beneath rule per directory.
READ_RIGHTS = 1 << 0 | 1 << 2 | 1 << 3  # execute, read file, read dir
ALL_RIGHTS = (1 << 13) - 1
SYS_CREATE, SYS_ADD_RULE, SYS_RESTRICT, PR_SET_NO_NEW_PRIVS = 444, 445, 446, 38


def confine(directory: str) -> str:
    """Landlock: read Python's installation and system libraries, read and write `directory`."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    handled = ctypes.c_uint64(ALL_RIGHTS)
    ruleset = libc.syscall(SYS_CREATE, ctypes.byref(handled), 8, 0)
    if ruleset < 0:
        return f"unconfined: Landlock is unavailable ({os.strerror(ctypes.get_errno())})"
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    grants = [(p, READ_RIGHTS) for p in (*sorted(roots), "/usr", "/lib", "/lib64")]
    for path, rights in [*grants, (directory, ALL_RIGHTS)]:
        if not os.path.isdir(path):
            continue
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = struct.pack("<Qi", rights, fd)  # struct landlock_path_beneath_attr (packed)
        added = libc.syscall(SYS_ADD_RULE, ruleset, 1, ctypes.c_char_p(rule), 0)
        os.close(fd)
        if added < 0:
            return f"unconfined: landlock_add_rule {path}: {os.strerror(ctypes.get_errno())}"
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) or libc.syscall(SYS_RESTRICT, ruleset, 0):
        return f"unconfined: landlock_restrict_self: {os.strerror(ctypes.get_errno())}"
    os.close(ruleset)
    return "confined"


ANSWERS = os.dup(1)  # the answers' pipe; fd 1 goes to stderr, so a print cannot garble them
os.dup2(2, 1)


def read_exact(size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = os.read(0, size - len(data))
        if not chunk:
            raise SystemExit(0)
        data += chunk
    return data


def write_all(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(ANSWERS, view) :]


def choose(priority, item: int, bins: np.ndarray) -> int | str:
    """The index of the highest priority (the first on a tie), or why there is none."""
    try:
        scores = np.asarray(priority(item, bins), dtype=np.float64)
    except Exception as exc:  # the candidate's own error, reported as the reason
        return f"priority raised {type(exc).__name__}: {exc}"[:300]
    if scores.shape != bins.shape:
        return f"priority returned shape {scores.shape} for {bins.size} bins"
    if not np.isfinite(scores).all():
        return "priority returned NaN or inf"
    return int(np.argmax(scores))


def serve(priority) -> None:
    """Answer items until stdin closes; bins from `touched` on are unused (every item fits)."""
    bins = np.zeros(0, dtype=np.int64)
    last = touched = 0
    while True:
        kind, a, b = HEADER.unpack(read_exact(HEADER.size))
        if kind == b"S":
            bins, touched = np.full(b, a, dtype=np.int64), 0
            continue
        if b >= 0:
            bins[b] -= last
            touched = max(touched, b + 1)
        last = a
        head = bins[:touched]
        answer = choose(priority, a, np.concatenate((head[head >= a], bins[touched:])))
        if isinstance(answer, str):
            text = answer.encode(errors="replace")
            write_all(struct.pack("<q", -len(text)) + text)
        else:
            write_all(struct.pack("<q", answer))


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    status = confine(here)
    write_all(struct.pack("<q", len(status)) + status.encode())
    sys.path[:] = [here, *[p for p in sys.path if p and os.path.abspath(p) != here]]
    import heuristic

    serve(heuristic.priority)


if __name__ == "__main__":
    main()
