"""`ge serve` as a user sees it in headless Chromium (issue 28 item 2's figures):

    python benchmarks/serve_page.py --cache /tmp/ge-scale          # both parts
    python benchmarks/serve_page.py --cache /tmp/ge-scale --no-live  # first paint only

1. **First paint** of a 10,000-variant run (built and cached by ``benchmarks/scale.py --cache
   DIR``): a fresh ``python -m guided_evolution.serve RUN --port 0`` per repeat, then the page
   opened in Chromium; the page's own clock (``performance.now()`` from the navigation to the
   frame after its first drawing: state, front plot with every point, curves, failures,
   isolation) and the server's CPU for that first answer. Cold: the server's first request
   (it reads the whole run); warm: the page opened again on the same server.
2. **Live update**: a live offline run of the template seed (each evaluation sleeps
   ``--delay`` s) served, its page open; this script reads the index read-only every 5 ms and
   notes when the k-th valid variant is recorded, and the page's count of points every 20 ms;
   the delay between the two, per variant, is printed as median, 90th percentile and maximum.

Medians of ``--repeat`` runs; the machine's load average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.cdp import Browser, chromium  # noqa: E402
from tests.support.seeds import template_seed  # noqa: E402

FOOTER = "document.getElementById('ge-status').dataset"
ENV = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "PYTHONPATH": str(ROOT)}


def _serve(run: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "guided_evolution.serve", str(run), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    line = proc.stdout.readline() if proc.stdout else ""
    if " at http://" not in line:
        raise SystemExit(f"ge serve did not start: {line}{proc.stderr.read() if proc.stderr else ''}")
    return proc, line.split(" at ", 1)[1].split(" ", 1)[0]


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a live process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _paint(b: Browser, url: str) -> float:
    b.navigate("about:blank")
    b.wait_for("document.readyState === 'complete' && location.href === 'about:blank'")
    b.navigate(url)
    value, _ = b.wait_for(f"{FOOTER}.paint && Number({FOOTER}.paint)", timeout=120, every=0.01)
    return float(value) / 1000


def first_paint(b: Browser, run: Path, repeat: int) -> None:
    cold, warm, cpu = [], [], []
    for _ in range(repeat):
        proc, url = _serve(run)
        try:
            before = _cpu(proc.pid)
            page = url.rstrip("/") + "/run/" + run.name
            cold.append(_paint(b, page))
            cpu.append(_cpu(proc.pid) - before)
            warm.append(_paint(b, page))
            points = b.eval(f"{FOOTER}.points")
        finally:
            proc.terminate()
            proc.wait()
    print(f"first paint, {points} points ({run}):")
    print(f"  cold server  {statistics.median(cold):.3f} s median of {repeat} ({', '.join(f'{x:.2f}' for x in cold)})")
    print(f"  warm server  {statistics.median(warm):.3f} s median ({', '.join(f'{x:.2f}' for x in warm)})")
    print(f"  server CPU for the cold answer  {statistics.median(cpu):.3f} s median")


def _slow_seed(directory: Path, delay: float, generations: int) -> Path:
    seed = template_seed(directory, generations=generations, population=8, initial_population=8)
    evaluate = seed / "evaluate.py"
    evaluate.write_text(
        evaluate.read_text().replace(
            'if __name__ == "__main__":',
            f'if __name__ == "__main__":\n    if "--check" not in sys.argv:\n        import time\n        time.sleep({delay})',
        )
    )
    return seed


class IndexWatch(threading.Thread):
    """Notes the time the run's k-th variant with an ok evaluation was recorded (5 ms polls)."""

    def __init__(self, index: Path) -> None:
        super().__init__(daemon=True)
        self.index, self.times, self.stop = index, [], threading.Event()

    def run(self) -> None:
        conn = sqlite3.connect(self.index.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            while not self.stop.is_set():
                n = conn.execute("SELECT count(DISTINCT variant_id) FROM evaluations WHERE status = 'ok'").fetchone()[0]
                now = time.monotonic()
                while len(self.times) < n:
                    self.times.append(now)
                time.sleep(0.005)
        finally:
            conn.close()


def live_update(b: Browser, delay: float, generations: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="ge-serve-live-"))
    try:
        seed, run = _slow_seed(work / "seed", delay, generations), work / "run"
        ge = subprocess.Popen([sys.executable, "-m", "guided_evolution", "run", str(seed), "--run-dir", str(run)],
                              cwd=work, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        while not (run / "index.sqlite").exists():
            time.sleep(0.01)
        watch = IndexWatch(run / "index.sqlite")
        watch.start()
        proc, url = _serve(run)
        seen: list[float] = []
        try:
            b.navigate(url.rstrip("/") + "/run/run")
            finished = 0.0
            while ge.poll() is None or len(seen) < len(watch.times):
                finished = finished or (time.monotonic() if ge.poll() is not None else 0.0)
                n = int(b.eval(f"(() => {{ try {{ return Number({FOOTER}.points || 0); }} catch (e) {{ return 0; }} }})()"))
                now = time.monotonic()
                while len(seen) < n:
                    seen.append(now)
                if ge.poll() is not None and time.monotonic() - finished > 30:
                    break
                time.sleep(0.02)
        finally:
            watch.stop.set()
            proc.terminate()
            proc.wait()
            ge.wait()
        opened = seen[0] if seen else 0.0
        lags = [p - r for r, p in zip(watch.times, seen, strict=False) if r > opened]
        print(f"live update ({len(lags)} variants recorded after the page was open; evaluations {delay} s):")
        q = statistics.quantiles(lags, n=10)[-1] if len(lags) > 1 else lags[0]
        print(f"  recorded → on the page  median {statistics.median(lags):.2f} s, 90th pct {q:.2f} s, max {max(lags):.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ge-scale"), help="benchmarks/scale.py's --cache")
    parser.add_argument("--size", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds per evaluation of the live run")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args()
    binary = chromium()
    if binary is None:
        raise SystemExit("no Chromium here (/usr/bin/chromium, or GE_CHROMIUM=PATH)")
    run = args.cache / f"n{args.size}" / "run"
    if not (run / "index.sqlite").exists():
        raise SystemExit(f"no cached run at {run}: build it with `python benchmarks/scale.py --cache {args.cache} --sizes {args.size} --build-only`")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with Browser(binary) as b:
        first_paint(b, run, args.repeat)
        if not args.no_live:
            live_update(b, args.delay, args.generations)
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
