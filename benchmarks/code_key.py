"""What recognising comment-only duplicates costs: ``recorder.code_key`` (the token stream of a
child's Python files without comments and spacing) once per new child, and once per variant when
a process first commits (a resumed run reads its earlier variants).

    python benchmarks/code_key.py

On the seeds' evolvable files; median CPU ms per call (process time: other load does not count).
"""

from __future__ import annotations

import statistics
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from guided_evolution.engine.recorder import code_key

SEEDS = Path(__file__).resolve().parent.parent / "seeds"
FILES = ["exquisitenet_v2/model.py", "tiny_cnn/model.py", "fast_exp/approx.py"]


def main() -> None:
    for name in FILES:
        path = SEEDS / name
        if not path.exists():
            continue
        files = {"m.py": path.read_text(encoding="utf-8")}
        times = timeit.repeat(lambda f=files: code_key(f, ["m.py"]), number=20, repeat=7, timer=time.process_time)
        ms = 1000 * statistics.median(times) / 20
        print(f"{name:28} {len(files['m.py']):6} chars  code_key {ms:6.2f} CPU ms (median)")


if __name__ == "__main__":
    main()
