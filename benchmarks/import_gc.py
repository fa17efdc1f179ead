"""CPU seconds of importing litellm in a fresh process: plainly, and through ge's loader
(``llm.provider.load_litellm``, which pauses the garbage collector during the import), both with
the collector thresholds of `ge` (``guided_evolution.__main__``) and with Python's defaults
(a library user's process).

    python benchmarks/import_gc.py             # 5 runs each, medians
    python benchmarks/import_gc.py --runs 9

Each case is `python -c CODE` with ``LITELLM_OFFLINE_MODE=true``; printed: the median user+system
CPU seconds of the process (``RUSAGE_CHILDREN``) with min and max. The ge package is this
checkout's (first on ``PYTHONPATH``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guided_evolution.__main__ import GC_THRESHOLDS  # noqa: E402

GE_THRESHOLDS = f"import gc; gc.set_threshold(*{GC_THRESHOLDS}); "
CASES = {
    "import litellm (Python's thresholds)": "import litellm",
    "load_litellm() (Python's thresholds)": (
        "from guided_evolution.llm.provider import load_litellm; load_litellm()"
    ),
    "import litellm (ge's thresholds)": GE_THRESHOLDS + "import litellm",
    "load_litellm() (ge's thresholds)": (
        GE_THRESHOLDS + "from guided_evolution.llm.provider import load_litellm; load_litellm()"
    ),
}


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    print(f"median CPU-s of {args.runs} fresh processes (min-max)")
    for label, code in CASES.items():
        times = []
        for _ in range(args.runs):
            before = _cpu()
            subprocess.run([sys.executable, "-c", code], env=env, check=True)
            times.append(_cpu() - before)
        print(f"  {label:40s} {statistics.median(times):5.2f} ({min(times):.2f}-{max(times):.2f})")


if __name__ == "__main__":
    main()
