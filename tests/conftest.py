"""Suite-wide settings and fixtures: never let litellm reach the network, keep runs inside tmp dirs.

Fixtures every test file may use:

* ``sandbox``: the strongest sandbox that works here, probed once per session (output capped at
  100 kB); files that test each backend define their own, parametrized ``sandbox``.
* ``template_run``: a finished offline run of the `ge init` seed (one generation), made once per
  session in-process; read it, or ``copy_run`` it before writing into it.
* ``copy_run``: a private copy of a run directory under the test's ``tmp_path``.

With pytest-xdist installed (the `test` extra), the suite runs on every core by default: two
workers more than there are cores (``workers_for``), each test file on one worker (``--dist loadfile``: a file's module fixtures are
made once, and its tests never race each other); the files with a slow test go out first, and
the threat table's rows are spread over the workers (``tests/support/scheduling.py``). ``-n 0`` (or ``-p no:xdist``) runs it in this
process; ``-n N`` picks the workers; ``--pdb`` and ``--trace`` run in this process by themselves.

The harness that runs the engine in-process (fake executor, fake proposer) is
``tests/support/harness.py``; the real CLI is ``tests/support/cli.py``: ``ge`` in a subprocess
where the process is what is tested (signals, kill -9, a second process, a pty), ``ge_here``
through the CLI's entry point in the test's process elsewhere (no start-up, same output).
Where the suite's CPU goes: ``-p tests.support.cpu_per_test``, then ``benchmarks/suite_cpu.py``.
"""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from guided_evolution.__main__ import GC_THRESHOLDS

os.environ.setdefault("LITELLM_OFFLINE_MODE", "true")
# One OpenMP thread per torch/BLAS process (the sandbox lets OMP_NUM_THREADS through to evaluators
# and workers): the suite runs more processes than cores, and torch's default of one thread per
# core spun idle threads, e.g. an ExquisiteNetV2 CPU evaluation took 27 CPU-s instead of 3.3.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The collector's thresholds of `python -m guided_evolution` (guided_evolution/__main__.py): the
# harness's in-process runs collect as the CLI's do, and a worker (torch, litellm, every test
# module imported) no longer walks its whole heap every few hundred thousand allocations.
gc.set_threshold(*GC_THRESHOLDS)

# ge's modules are imported inside the fixtures that need them: collecting a test file imports
# only what that file does.

if TYPE_CHECKING:
    from guided_evolution.evaluation.sandbox.wrap import Sandbox


EXTRA_WORKERS = 2
"""Workers beyond one per core. Part of the suite waits rather than computes (a `ge` child
killed at a drawn moment, an evaluation run into its timeout, SLURM's polls, a served model's
latency, a sleeping variant): with one worker per core, a core idled through those waits (at
654 s, roughly 290 s of them). Since the suite's CPU was cut, a run keeps both cores 97 % busy:
on 2 idle cores 4 workers took 420 s, 3 took 411 s and 6 took 436 s (single runs of
``benchmarks/suite_time.py``; 3 and 4 within their noise)."""


def workers_for(cores: int) -> int:
    """How many xdist workers the suite starts on ``cores`` usable cores."""
    return max(cores, 1) + EXTRA_WORKERS


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``-n workers_for(cores) --dist loadfile`` unless the command line chose (or xdist is not
    installed); ``-n N`` alone is ``--dist loadfile`` too (xdist's own default, ``load``, would
    make a file's module fixtures on every worker that runs one of its tests)."""
    option = config.option
    if not hasattr(option, "numprocesses"):  # no xdist
        return
    if option.usepdb or getattr(option, "trace", False) or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if option.numprocesses is None:
        option.numprocesses = workers_for(len(os.sched_getaffinity(0)))
    if option.dist == "no" and option.numprocesses != 0:
        option.dist = "loadfile"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile ge's package once, before the workers start (a second time costs a stat per
    module). With ``PYTHONDONTWRITEBYTECODE`` set (as on CI machines) nothing else writes the
    ``.pyc`` files of a fresh clone, and each of the suite's hundreds of `ge` processes compiled
    every module it imported again: ~0.1 CPU-s per `ge status`, ~0.2 per `ge run`."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import compileall

    import guided_evolution

    compileall.compile_dir(Path(guided_evolution.__file__).parent, quiet=2)  # read-only: no-op
    if getattr(session.config.option, "numprocesses", 0):
        _rewrite_ahead(session.config)


def _rewrite_ahead(config: pytest.Config) -> None:
    """Write pytest's cache of the assert-rewritten test modules once, before the workers start.

    Every xdist worker collects every test file, and rewriting their asserts was ~70 % of that
    (~2.8 CPU-s a worker): with ``PYTHONDONTWRITEBYTECODE`` set pytest reads this cache but never
    writes it, so each worker of every run rewrote all of them again. The rewrite is pytest's own
    (the worker checks the source hash of each cached file); with another pytest whose internals
    differ, or a read-only tree, nothing is written and the workers rewrite as before."""
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        for source in sorted(Path(__file__).parent.rglob("*.py")):
            if not source.name.startswith("test_") and source.name != "conftest.py":
                continue
            cache = rewrite.get_cache_dir(source)
            pyc = cache / (source.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(source, pyc) is not None:
                continue
            if not rewrite.try_makedirs(cache):
                return
            stamp, code = rewrite._rewrite_test(source, config)
            rewrite._write_pyc(state, code, stamp, pyc)
    except (ImportError, AttributeError, KeyError, TypeError, ValueError, SyntaxError, OSError):
        return


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files with a slow test first (``tests/support/scheduling.py`` says why)."""
    from tests.support.scheduling import slow_files_first

    slow_files_first(items)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadfile`` in the collection's order, the threat table's rows on every worker."""
    if config.option.dist != "loadfile":
        return None
    from tests.support.scheduling import SlowFirstFileScheduling

    return SlowFirstFileScheduling(config, log)


@pytest.fixture(scope="session")
def sandbox() -> Sandbox:
    """The sandbox `ge` would pick here (fail closed: the probe raises where none works)."""
    from guided_evolution.evaluation.sandbox.wrap import Sandbox, SandboxPolicy

    box = Sandbox(SandboxPolicy(output_cap_bytes=100_000))
    box.probe()
    return box


@pytest.fixture(scope="session")
def template_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished offline run of the `ge init` seed, one generation of 4 (read-only: copy it)."""
    from tests.support.harness import run_engine
    from tests.support.seeds import template_seed

    root = tmp_path_factory.mktemp("template_run")
    seed = template_seed(root / "seed", generations=1)
    run_engine(seed, root / "run")
    return root / "run"


@pytest.fixture()
def copy_run(tmp_path: Path) -> Callable[[Path], Path]:
    """``copy_run(run)``: a private copy of ``run`` at ``tmp_path / "run"`` that a test may change."""

    def copy(run: Path) -> Path:
        return Path(shutil.copytree(run, tmp_path / "run"))

    return copy
