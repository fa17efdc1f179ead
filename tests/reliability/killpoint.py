"""Run `ge` and SIGKILL it at the N-th call of one storage operation (test launcher).

Usage: ``python -m tests.reliability.killpoint POINT N ge-args...`` where POINT is one of
``ref`` (a commit's objects are written, its branch ref is not), ``variant`` (before the index row
of a new commit), ``evaluation`` (inside the transaction that records a result, after the row is
inserted, before COMMIT) or ``note`` (the index has results, git's notes are not written yet).
The kill is a real ``kill -9`` of this process, at the exact moment named.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from collections.abc import Callable
from typing import Any


def _arm(owner: type, name: str, after: bool, nth: int, when: Callable[..., bool]) -> None:
    original = getattr(owner, name)
    seen = [0]

    def hooked(*args: Any, **kwargs: Any) -> Any:
        hit = when(*args, **kwargs)
        if hit:
            seen[0] += 1
        if hit and seen[0] == nth and not after:
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if hit and seen[0] == nth and after:
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(owner, name, hooked)


def main() -> None:
    point, nth, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    from guided_evolution.runstore.git_store import GitStore
    from guided_evolution.runstore.run_index import RunIndex

    if point == "ref":
        _arm(GitStore, "_write_ref", False, nth, lambda self, ref, sha: "/v/" in ref)
    elif point == "variant":
        _arm(
            RunIndex,
            "add_variant",
            False,
            nth,
            lambda self, rec, replace=False: rec.generation > 0 or rec.operator != "seed",
        )
    elif point == "evaluation":
        _arm(RunIndex, "add_evaluation", True, nth, lambda self, rec: True)
    elif point == "note":
        _arm(GitStore, "set_notes", False, nth, lambda self, notes, timestamp=None: bool(notes))
    else:
        raise SystemExit(f"unknown kill point {point!r}")
    sys.argv = ["ge", *args]
    runpy.run_module("guided_evolution", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
