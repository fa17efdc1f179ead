"""Does watching a run slow it? (issue 28 item 2: at most 2 % under heavy load)

    python benchmarks/serve_overhead.py                  # 3 pairs of ~30 s runs
    python benchmarks/serve_overhead.py --pairs 5 --work 0.3

The same offline run of the template seed (fixed seed: the same children), whose evaluator burns
``--work`` s of CPU per child, with ``--slots`` = the CPU count (every core busy: heavy load), is
timed alone and watched. ``python -m guided_evolution.serve RUNS_DIR`` and headless Chromium are
started once, before the runs (as a user's server and browser would be); a watched run's page is
opened as soon as its directory exists (it polls every second and redraws what changed), an
alone run's browser shows about:blank. Pairs alternate their order (alone first, then watched
first) so that a drift of the machine's load falls on both. Printed: each mode's median wall
time of ``ge run`` and their ratio, and the CPU the server and the browser used per second of
run, watching and idle (/proc: the process and all its descendants). On a saturated machine the
CPU that watching adds above idle, as a share of the machine's CPU, bounds the run's slowdown;
on a machine shared with other work the wall times vary more than that.
"""

from __future__ import annotations

import argparse
import os
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


def tree_cpu(root: int) -> float:
    """CPU seconds of a live process, its live descendants and the children it reaped (/proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stats[int(entry)] = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            f = stats[pid]
            total += (int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])) / tick
        todo.extend(children.get(pid, []))
    return total


def one_run(seed: Path, runs: Path, browser: Browser, url: str, serve_pid: int, watched: bool) -> tuple[float, float, float]:
    """(wall of ge run, CPU of ge serve, CPU of Chromium during it) for one run; alone, the
    browser shows about:blank and the server waits (their idle cost)."""
    run = runs / f"run-{time.monotonic_ns()}"
    before = (tree_cpu(serve_pid), tree_cpu(browser.proc.pid))
    start = time.monotonic()
    ge = subprocess.Popen([sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir", str(run)],
                          cwd=runs.parent, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    if watched:
        while not (run / "config.json").exists() and ge.poll() is None:
            time.sleep(0.01)
        browser.navigate(url + "run/" + run.name)
    ge.wait()
    wall = time.monotonic() - start
    cpu = (tree_cpu(serve_pid) - before[0], tree_cpu(browser.proc.pid) - before[1])
    if watched:
        time.sleep(1.5)  # the page sees the end of the run
        browser.navigate("about:blank")
    shutil.rmtree(run, ignore_errors=True)
    return wall, *cpu


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
    runs = work / "runs"
    runs.mkdir()
    serve = subprocess.Popen([sys.executable, "-m", "guided_evolution.serve", str(runs), "--port", "0"],
                             env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)  # fmt: skip
    try:
        line = serve.stdout.readline() if serve.stdout else ""
        url = line.split(" at ", 1)[1].split(" ", 1)[0]
        with Browser(binary) as browser:
            started = (tree_cpu(serve.pid), tree_cpu(browser.proc.pid))
            seed = _seed(work / "seed", args.work, args.generations, args.slots)
            walls: dict[bool, list[float]] = {False: [], True: []}
            rates: dict[bool, list[tuple[float, float]]] = {False: [], True: []}  # CPU s per s
            print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; slots {args.slots}")
            print(f"started before the runs: ge serve {started[0]:.2f} s CPU, Chromium {started[1]:.2f} s CPU")
            for i in range(args.pairs):
                for watched in ((False, True) if i % 2 == 0 else (True, False)):
                    wall, s_cpu, c_cpu = one_run(seed, runs, browser, url, serve.pid, watched)
                    walls[watched].append(wall)
                    rates[watched].append((s_cpu / wall, c_cpu / wall))
                    print(f"  pair {i + 1}: {'watched' if watched else 'alone  '} {wall:.2f} s"
                          f"  (ge serve {s_cpu:.2f} s CPU, Chromium {c_cpu:.2f} s CPU)", flush=True)  # fmt: skip
        a, w = statistics.median(walls[False]), statistics.median(walls[True])
        print(f"ge run alone    {a:.2f} s median of {args.pairs}")
        print(f"ge run watched  {w:.2f} s median of {args.pairs}  (slowdown of the medians {100 * (w / a - 1):+.1f} %)")
        cores = os.cpu_count() or 1
        for name, k in (("ge serve", 0), ("Chromium", 1)):
            busy, idle = (statistics.median(r[k] for r in rates[m]) for m in (True, False))
            print(f"{name}: {100 * busy:.2f} % of a CPU while watching, {100 * idle:.2f} % idle (about:blank)")
        extra = sum(statistics.median(r[k] for r in rates[True]) - statistics.median(r[k] for r in rates[False]) for k in (0, 1))
        print(f"watching costs {100 * extra / cores:.2f} % of the machine's CPU (medians, above idle):"
              " on a saturated machine, the bound of the run's slowdown")  # fmt: skip
        print(f"load average {os.getloadavg()[0]:.1f}")
    finally:
        serve.terminate()
        serve.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
