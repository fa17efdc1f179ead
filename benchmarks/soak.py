"""Soak version of the reliability suite: many more kill -9s, several seeds, repeated rounds.

Each round runs tests/reliability with a fresh kill seed and ``--kills`` kills in the crash test
(the run grows with the number of kills, so it does not finish before the kills are spent), and
prints per round: pass/fail, kills survived by moment, doctor problems found and repaired, wall
time. Exit code 1 when any round failed; the failing seed is printed so it can be replayed:

    python benchmarks/soak.py [--rounds 5] [--kills 100] [--seed 1] [--only crash|all]
    GE_KILL_SEED=<seed> GE_KILLS=<kills> python -m pytest tests/reliability/test_crash_safety.py -s
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_round(seed: int, kills: int, only: str) -> tuple[bool, float, str]:
    """(passed, seconds, the 'kills survived' line) of one round."""
    target = "tests/reliability/test_crash_safety.py" if only == "crash" else "tests/reliability"
    env = {
        **os.environ,
        "GE_KILL_SEED": str(seed),
        "GE_KILLS": str(kills),
        "LITELLM_OFFLINE_MODE": "true",
    }
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            target,
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "--timeout",
            "3600",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.monotonic() - started
    found = re.findall(r"^kills survived: .*$", proc.stdout, re.M)
    if proc.returncode != 0:
        sys.stdout.write(proc.stdout[-6000:] + proc.stderr[-3000:])
    return proc.returncode == 0, elapsed, found[-1] if found else "(no kill summary)"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kills", type=int, default=100, help="kill -9s per crash test (>= 6)")
    parser.add_argument(
        "--seed", type=int, default=1, help="first kill seed; round i uses seed + i"
    )
    parser.add_argument("--only", choices=("crash", "all"), default="all")
    args = parser.parse_args()
    failed: list[int] = []
    total = 0.0
    for i in range(args.rounds):
        seed = args.seed + i
        ok, seconds, line = run_round(seed, args.kills, args.only)
        total += seconds
        print(
            f"round {i + 1}/{args.rounds} seed {seed}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s; {line}",
            flush=True,
        )
        if not ok:
            failed.append(seed)
    print(
        f"{args.rounds - len(failed)}/{args.rounds} rounds passed in {total:.0f} s"
        + (f"; failing seeds {failed}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
