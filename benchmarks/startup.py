"""Start-up and memory of `ge`: medians over several runs of

  (0) the CPU seconds (user + sys) of `ge --help`, the inspection commands (`ge status` and
      `ge status --json`, `ge show`, `ge best`, `ge log`, `ge doctor`) on a small finished run,
      a tiny offline `ge run` (`--generations 0 --initial-population 2`, with `--no-sandbox`
      and with the default sandbox) and `ge resume` of the finished run (it says so). Column
      "waited": ``getrusage(RUSAGE_CHILDREN)`` around each run, i.e. ge and the processes that
      were waited for; it misses the sandbox's processes that ge does not reap itself (a
      sandboxed run's evaluations: ~0.4 s of its ~1.1 s). Column "tree", where ``perf`` works:
      ``perf stat -e task-clock``, whose counters every descendant inherits, reaped or not.
      The tree's ``.pyc`` files are refreshed first (``compileall``): with
      PYTHONDONTWRITEBYTECODE set, a stale one is compiled again at every start;
  (a) `ge --help`, wall seconds;
  (b) `ge run` of the tiny seed against the fake OpenAI-compatible server: seconds from the
      subprocess's start to the first LLM request arriving at the server, and to the run's end;
  (c) ge's peak RSS (VmHWM of the ge process itself, sampled from /proc every 10 ms, so the
      evaluator processes it starts are not counted) for that run and for an offline run.

    python benchmarks/startup.py                        # this checkout, 5 runs each
    python benchmarks/startup.py --cpu-only --runs 9    # only (0)
    python benchmarks/startup.py --tree /tmp/ge-before  # another checkout (e.g. a git worktree)

The tree is put first on PYTHONPATH of the measured `python -m guided_evolution`; the fake server
and the seed come from this checkout's tests/support.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.openai_server import Action, serve  # noqa: E402
from tests.support.seeds import CodeWriter, template_seed  # noqa: E402


def _env(tree: Path) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "LITELLM_OFFLINE_MODE": "true"}


def _peak_kib(pid: int) -> int:
    """VmHWM of ``pid`` in KiB (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _watched(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float, int]:
    """Run ``args``: (start monotonic, end monotonic, peak RSS of the process in MiB)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out: dict[str, str] = {}
    reader = threading.Thread(
        target=lambda: out.update(zip(("stdout", "stderr"), proc.communicate(), strict=True)),
        daemon=True,
    )
    reader.start()
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _peak_kib(proc.pid))
        time.sleep(0.01)
    reader.join()
    end = time.monotonic()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.get('stderr', '')[-2000:]}")
    return start, end, peak // 1024


def _help(tree: Path, work: Path) -> float:
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "guided_evolution", "--help"],
        cwd=work, env=_env(tree), capture_output=True, check=True,
    )  # fmt: skip
    return time.monotonic() - start


def _run(tree: Path, work: Path, n: int, model: list[str]) -> dict[str, float]:
    """One `ge run` of the tiny seed; with ``model`` = [] an offline run."""
    seed = template_seed(work / f"seed{n}")
    args = [sys.executable, "-m", "guided_evolution", "run", str(seed)]
    args += ["--run-dir", str(work / f"run{n}"), "--json"]
    if not model:
        start, end, peak = _watched(args, work, _env(tree))
        return {"wall_s": end - start, "peak_mib": peak}
    writer = CodeWriter()
    first: list[float] = []

    def respond(request: dict[str, Any]) -> Action:
        if not first:
            first.append(time.monotonic())
        return writer(request)

    with serve(responder=respond) as server:
        args += ["--model", model[0], "--api-base", server.base_url]
        start, end, peak = _watched(args, work, _env(tree))
    return {"first_request_s": first[0] - start, "wall_s": end - start, "peak_mib": peak}


def _cpu_s(args: list[str], cwd: Path, env: dict[str, str], perf: bool = False) -> float:
    """CPU seconds of ``args``: ge and every process it waited for, or with ``perf`` the
    whole tree (perf's task-clock; its own process not counted)."""
    with tempfile.NamedTemporaryFile("r", suffix=".perf") as out:
        prefix = ["perf", "stat", "-x,", "-e", "task-clock", "-o", out.name, "--"] if perf else []
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run([*prefix, *args], cwd=cwd, env=env, capture_output=True, text=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-2000:]}")
        if perf:
            line = next(x for x in out.read().splitlines() if "task-clock" in x)
            return float(line.split(",")[0]) / 1000  # msec
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _perf_works() -> bool:
    if shutil.which("perf") is None:
        return False
    probe = ["perf", "stat", "-x,", "-e", "task-clock", "--", "true"]
    return subprocess.run(probe, capture_output=True).returncode == 0


TINY = ["--generations", "0", "--initial-population", "2", "--json"]
CPU_COMMANDS = {
    "ge --help": ["--help"],
    "ge status": ["status", "RUN"],
    "ge status --json": ["status", "RUN", "--json"],
    "ge show": ["show", "RUN", "seed"],
    "ge best": ["best", "RUN"],
    "ge log": ["log", "RUN"],
    "ge doctor": ["doctor", "RUN"],
    "ge run tiny --no-sandbox": ["run", "demo", "--no-sandbox", *TINY],
    "ge run tiny (sandbox)": ["run", "demo", *TINY],
    "ge resume (finished run)": ["resume", "RUN"],
}


def _cpu_table(tree: Path, work: Path, runs: int) -> dict[str, tuple[float, float]]:
    """Median CPU seconds (waited, tree) of each of ``CPU_COMMANDS`` (RUN: a finished tiny run
    of `ge init`'s seed; each `ge run` makes a run of its own), the runs of the commands
    interleaved (a load that comes and goes hits each alike)."""
    compileall.compile_dir(tree / "guided_evolution", quiet=1)
    env, ge, perf = _env(tree), [sys.executable, "-m", "guided_evolution"], _perf_works()
    _cpu_s([*ge, "init", "demo"], work, env)
    _cpu_s([*ge, "run", "demo", "--run-dir", "finished", "--no-sandbox", *TINY], work, env)
    found: dict[str, list[tuple[float, float]]] = {name: [] for name in CPU_COMMANDS}
    for _ in range(runs):
        for name, words in CPU_COMMANDS.items():
            args = [*ge, *(str(work / "finished") if w == "RUN" else w for w in words)]
            tree = _cpu_s(args, work, env, perf=True) if perf else float("nan")
            found[name].append((_cpu_s(args, work, env), tree))
    return {
        name: (statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows))
        for name, rows in found.items()
    }


def _median(rows: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout to measure")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--model", default="openai/bench-model")
    parser.add_argument("--cpu-only", action="store_true", help="only the CPU seconds (0)")
    opts = parser.parse_args()
    tree = opts.tree.resolve()
    with tempfile.TemporaryDirectory(prefix="ge-startup-") as tmp:
        cpu = _cpu_table(tree, Path(tmp), opts.runs)
    print(f"tree: {tree}  runs: {opts.runs} (medians)")
    print(f"{'CPU seconds':<43}{'waited':>7} {'tree':>6}")
    for name, (waited, whole) in cpu.items():
        print(f"{name:<43}{waited:7.3f} {whole:6.3f}")
    if opts.cpu_only:
        return
    with tempfile.TemporaryDirectory(prefix="ge-startup-") as tmp:
        work = Path(tmp)
        helps = [_help(tree, work) for _ in range(opts.runs)]
        online = [_run(tree, work, i, [opts.model]) for i in range(opts.runs)]
        offline = [_run(tree, work, 100 + i, []) for i in range(opts.runs)]
    print(f"ge --help                                  {statistics.median(helps):6.2f} s")
    print(f"ge run (OpenAI-compatible) first request   {_median(online, 'first_request_s'):6.2f} s")
    print(f"ge run (OpenAI-compatible) wall            {_median(online, 'wall_s'):6.2f} s")
    print(f"ge run (OpenAI-compatible) peak RSS        {_median(online, 'peak_mib'):6.0f} MiB")
    print(f"ge run (offline) wall                      {_median(offline, 'wall_s'):6.2f} s")
    print(f"ge run (offline) peak RSS                  {_median(offline, 'peak_mib'):6.0f} MiB")


if __name__ == "__main__":
    main()
