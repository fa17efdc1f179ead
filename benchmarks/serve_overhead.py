"""Does watching a run slow it? (issue 28 item 2: at most 2 % under heavy load)

    python benchmarks/serve_overhead.py                  # 3 pairs, ~30 s runs
    python benchmarks/serve_overhead.py --pairs 5 --work 0.3

The same offline run of the template seed (fixed seed: the same children), whose evaluator burns
``--work`` s of CPU per child, with ``--slots`` = the CPU count (every core busy: heavy load), is
timed alone and watched: ``python -m guided_evolution.serve RUN`` plus headless Chromium with
the run's page open (it polls every second and redraws what changed) from the moment the run
directory exists. Pairs alternate their order (alone first, then watched first) so a drift of
the machine's load falls on both. Printed: each mode's median wall time of ``ge run``, the
slowdown of the medians, and the CPU the watchers used (server, browser) as a share of the
machine's CPU over the watched runs, the bound of their slowdown on a saturated machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.cdp import Browser, chromium  # noqa: E402
from tests.support.seeds import template_seed  # noqa: E402

ENV = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "PYTHONPATH": str(ROOT)}
BURN = """
    if "--check" not in sys.argv:
        import time
        end = time.process_time() + {work}
        while time.process_time() < end:
            pass
"""


def _seed(directory: Path, work: float, generations: int, slots: int) -> Path:
    seed = template_seed(directory, generations=generations, population=8, initial_population=8)
    evaluate = seed / "evaluate.py"
    marker = 'if __name__ == "__main__":'
    evaluate.write_text(evaluate.read_text().replace(marker, marker + BURN.format(work=work)))
    toml = seed / "ge.toml"
    toml.write_text(toml.read_text().replace("slots = 2", f"slots = {slots}"))
    return seed


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _waited_cpu(proc: subprocess.Popen[str]) -> float:
    """Wait for ``proc``; its CPU seconds (and its reaped children's)."""
    _pid, _status, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return usage.ru_utime + usage.ru_stime


def one_run(seed: Path, work: Path, watched: bool, binary: str) -> tuple[float, float, float]:
    """(wall of ge run, CPU of ge serve, CPU of Chromium) for one run."""
    run = work / f"run-{time.monotonic_ns()}"
    start_cpu = _children_cpu()
    start = time.monotonic()
    ge = subprocess.Popen([sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir", str(run)],
                          cwd=work, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    serve = browser = None
    if watched:
        while not (run / "index.sqlite").exists() and ge.poll() is None:
            time.sleep(0.01)
        serve = subprocess.Popen([sys.executable, "-m", "guided_evolution.serve", str(run), "--port", "0"],
                                 env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
        url = serve.stdout.readline().split(" at ", 1)[1].split(" ", 1)[0] if serve.stdout else ""
        browser = Browser(binary)
        browser.navigate(url.rstrip("/") + "/run/" + run.name)
    ge_cpu = _waited_cpu(ge)
    wall = time.monotonic() - start
    serve_cpu = chrome_cpu = 0.0
    if serve is not None and browser is not None:
        time.sleep(1.5)  # the page sees the end of the run
        browser.close()
        serve.terminate()
        serve_cpu = _waited_cpu(serve)
        chrome_cpu = _children_cpu() - start_cpu - ge_cpu - serve_cpu
    shutil.rmtree(run, ignore_errors=True)
    return wall, serve_cpu, chrome_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--work", type=float, default=0.25, help="CPU seconds per evaluation")
    parser.add_argument("--generations", type=int, default=12)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    binary = chromium()
    if binary is None:
        raise SystemExit("no Chromium here (/usr/bin/chromium, or GE_CHROMIUM=PATH)")
    work = Path(tempfile.mkdtemp(prefix="ge-serve-overhead-"))
    try:
        seed = _seed(work / "seed", args.work, args.generations, args.slots)
        alone, watched, serve_cpu, chrome_cpu = [], [], [], []
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; slots {args.slots}")
        for i in range(args.pairs):
            for mode in ((False, True) if i % 2 == 0 else (True, False)):
                wall, s_cpu, c_cpu = one_run(seed, work, mode, binary)
                (watched if mode else alone).append(wall)
                if mode:
                    serve_cpu.append(s_cpu)
                    chrome_cpu.append(c_cpu)
                print(f"  pair {i + 1}: {'watched' if mode else 'alone  '} {wall:.2f} s", flush=True)
        a, w = statistics.median(alone), statistics.median(watched)
        print(f"ge run alone    {a:.2f} s median of {args.pairs}")
        print(f"ge run watched  {w:.2f} s median of {args.pairs}  (slowdown {100 * (w / a - 1):+.1f} %)")
        share = (sum(serve_cpu) + sum(chrome_cpu)) / (sum(watched) * (os.cpu_count() or 1))
        print(f"watchers' CPU per watched run: ge serve {statistics.median(serve_cpu):.2f} s, "
              f"Chromium {statistics.median(chrome_cpu):.2f} s median; {100 * share:.1f} % of the machine's CPU")  # fmt: skip
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
