"""How long `ge run` takes to report an LLM endpoint that cannot work, and whether it leaves a
run directory.

Cases (the `ge init` seed, OPENAI_API_KEY and OPENAI_BASE_URL unset): ``missing-key``
(``--model gpt-4o-mini``), ``refused`` (``--api-base`` at a local port nothing listens on),
``unknown-host`` (``--api-base http://nonexistent.invalid:8000/v1``), ``unroutable``
(``--model gpt4o-mini``: no provider, no api_base). Each runs ``--repeat`` times; printed: each
wall time and CPU time (ge's process tree: on a busy machine the wall time mostly measures the
wait for a core), exit code and whether the run directory exists afterwards, the last stderr
line, and the medians per case with the load average. ``--source DIR`` runs the ge of another
checkout (e.g. a `git worktree` of an older commit) through PYTHONPATH.

    python benchmarks/missing_key.py
    git worktree add /tmp/ge-before <commit> && python benchmarks/missing_key.py --source /tmp/ge-before
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from guided_evolution import seedinit


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


CASES = {
    "missing-key": ["--model", "gpt-4o-mini"],
    "refused": ["--model", "openai/fake", "--api-base", f"http://127.0.0.1:{_closed_port()}/v1"],
    "unknown-host": ["--model", "openai/fake", "--api-base", "http://nonexistent.invalid:8000/v1"],
    "unroutable": ["--model", "gpt4o-mini"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--source", type=Path, default=None, help="checkout whose ge to run")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="default: all")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["LITELLM_OFFLINE_MODE"] = "true"
    if args.source is not None:
        env["PYTHONPATH"] = str(args.source.resolve())
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        seedinit.write_template(root / "seed")
        for case in args.case or list(CASES):
            medians[case] = _case(root, env, case, args.repeat)
    for case, (wall, cpu) in medians.items():
        print(f"median {case}: {wall:.2f} s wall, {cpu:.2f} s CPU over {args.repeat} runs")
    print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


def _case(root: Path, env: dict[str, str], case: str, repeat: int) -> tuple[float, float]:
    """(median wall, median CPU of ge's process tree) of ``repeat`` runs of one case."""
    times, cpus = [], []
    for i in range(repeat):
        run = root / "run"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "guided_evolution", "run", "seed", "--run-dir", "run",
             *CASES[case], "--json"],
            cwd=root, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        times.append(elapsed)
        cpus.append(cpu)
        left = run.exists()
        print(
            f"{case} run {i + 1}: {elapsed:.2f} s wall, {cpu:.2f} s CPU  exit {proc.returncode}"
            f"  run dir left: {left}"
        )
        shutil.rmtree(run, ignore_errors=True)
    last = proc.stderr.strip().splitlines()
    print(f"{case} message: {last[-1] if last else '-'}")
    return statistics.median(times), statistics.median(cpus)


if __name__ == "__main__":
    main()
