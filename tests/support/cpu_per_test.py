"""A pytest plugin that records each test's CPU time, for finding where the suite's CPU goes.

Off by default; turn it on with ``-p tests.support.cpu_per_test`` and name a directory::

    GE_CPU_PER_TEST_DIR=/tmp/cpu python -m pytest -q -p no:cacheprovider \\
        -p tests.support.cpu_per_test tests/...
    python benchmarks/suite_cpu.py /tmp/cpu --top 40

Each process that runs tests (this one, or each xdist worker) appends one JSON line per test to
``DIR/cpu-<pid>.jsonl``: the test's id, its file, and the user+system CPU seconds that the
process and the children it waited for used during the test's whole protocol (setup, call,
teardown: a module fixture's cost lands on the file's first test), the process's own share of
it (``self_s``: work done in-process and by its threads), with its wall seconds and
when it started (epoch seconds: each worker's timeline, e.g. what runs in the suite's tail). A
``ge`` subprocess counts once it is waited for, i.e. within the test that started it; threads of
the worker (the fake LLM server) count for the test during which they ran.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Generator
from pathlib import Path

import pytest

ENV = "GE_CPU_PER_TEST_DIR"


def _cpu_s() -> tuple[float, float]:
    """(this process's own CPU seconds, those of the children it waited for)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None]:
    """Time ``item``'s setup, call and teardown; append its line to the directory's JSONL."""
    out = os.environ.get(ENV)
    (own0, kids0), wall0, started = _cpu_s(), time.perf_counter(), time.time()
    yield
    if not out:
        return
    own1, kids1 = _cpu_s()
    row = {
        "test": item.nodeid,
        "file": item.nodeid.split("::", 1)[0],
        "cpu_s": round(own1 + kids1 - own0 - kids0, 3),
        "self_s": round(own1 - own0, 3),  # the worker's own share (in-process work, threads)
        "wall_s": round(time.perf_counter() - wall0, 3),
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        "started": round(started, 3),  # epoch seconds: the suite's timeline per worker
    }
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    with (path / f"cpu-{os.getpid()}.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
