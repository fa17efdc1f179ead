"""Evaluate the bin_packing seed in the current directory; write JSON metrics.

FunSearch's online bin packing (Romera-Paredes et al., Nature 2024): each item of an instance goes,
in order, into the open bin its `priority` scores highest among those it fits in (every instance
starts with as many empty bins as items). The score of a set is FunSearch's "excess": the
average number of bins used over the average L1 lower bound (ceil(sum of items / capacity)),
minus one, in percent.

    python evaluate.py [--metrics FILE]   # metrics go to $GE_METRICS (or FILE)
    python evaluate.py --sets or3 --limit 2   # a quick look: some sets, their first instances

The candidate never runs here. This process loads the instances, then starts worker.py with a
copy of heuristic.py in an empty temporary directory (worker.py confines itself with Landlock
before importing the candidate). It sends one item at a time, and the next only after the
answer: which of the bins the item fits in gets it (the worker checks the candidate's priorities
and takes the highest). This process keeps the bins, puts the item only into a bin with room
for it, and computes the score. The instances are sent in a random order.

Metrics: or3_excess and weibull_excess (both select, min: %); or3_bins, weibull_bins (the
average bins used), heldout_or3_excess and heldout_weibull_excess (the same on fresh instances
drawn from each set's distribution with a fixed seed: a candidate tuned to, or knowing, the
published instances shows as a gap), their _bins, and confinement (reported only). A candidate that breaks the contract (wrong
length, NaN or inf, an exception, too slow) fails with one line saying why.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SETS = {"or3": "or3.json", "weibull": "weibull5k.json"}
DEADLINE_S = 50  # ge's timeout is 60 s (ge.toml); the seed takes about a second
HEADER = struct.Struct("<cqq")
COUNT = struct.Struct("<q")
HELDOUT_SEED = 20231214
HELDOUT_OR3 = 4  # instances of 500 items
HELDOUT_WEIBULL_ITEMS = 2500  # one instance


class Rejected(Exception):
    """The candidate broke the contract; the message says how."""


def data_dir(here: Path, given: str | None) -> Path:
    """`given`, else the first of $GE_SEED_DIR/data and data/ beside this file that holds both
    sets (the seed ships them in data/)."""
    if given:
        places = [Path(given)]
    else:
        seed = os.environ.get("GE_SEED_DIR")
        places = [Path(seed) / "data"] if seed else []
        places += [here / "data"]
    for place in places:
        if all((place / name).is_file() for name in SETS.values()):
            return place
    files = " and ".join(SETS.values())
    raise SystemExit(
        f"bin_packing: {files} not found in {places[0]}: copy them there from seeds/bin_packing/data/ "
        "of the ge repository (or pass --data DIR)"
    )


def load_sets(directory: Path, keys: list[str], limit: int) -> dict[str, list]:
    """The named sets' instances, the first `limit` of each (0: all): (capacity, int64 items)."""
    sets = {}
    for key in keys:
        raw = json.loads((directory / SETS[key]).read_text(encoding="utf-8"))["instances"]
        chosen = raw[:limit] if limit > 0 else raw
        sets[key] = [(int(i["capacity"]), np.asarray(i["items"], np.int64)) for i in chosen]
        if any(items.max() > c or items.min() < 1 for c, items in sets[key]):
            raise SystemExit(f"bin_packing: {SETS[key]} has an item outside [1, capacity]")
    return sets


def heldout_sets(keys: list[str]) -> dict[str, list]:
    """Fresh instances from the named sets' distributions (fixed RNG seed): OR3's items are
    uniform integers in [20, 100] (capacity 150), Weibull 5k's Weibull(3, 45) rounded to [1, 100]
    (capacity 100). A candidate that knows the published instances gains nothing here."""
    rng = np.random.default_rng(HELDOUT_SEED)
    made = {
        "or3": [(150, rng.integers(20, 101, 500)) for _ in range(HELDOUT_OR3)],
        "weibull": [(100, np.clip(np.round(45 * rng.weibull(3.0, HELDOUT_WEIBULL_ITEMS)), 1, 100))],
    }
    return {f"heldout_{k}": [(c, items.astype(np.int64)) for c, items in made[k]] for k in keys}


def l1_bound(capacity: int, items: np.ndarray) -> int:
    """The L1 lower bound on the number of bins: ceil(sum / capacity)."""
    return -(-int(items.sum()) // capacity)


class Candidate:
    """The worker process and the pipe protocol (worker.py's docstring)."""

    def __init__(self, here: Path) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bin_packing_"))
        for name in ("worker.py", "heuristic.py"):
            shutil.copyfile(here / name, self.tmp / name)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.tmp)}
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed by close)
        self.process = subprocess.Popen(
            [sys.executable, "-I", str(self.tmp / "worker.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            cwd=self.tmp,
            env=env,
        )
        self.out, self.inp = self.process.stdout.fileno(), self.process.stdin.fileno()
        self.buffer = b""
        self.confinement = self.read(self.read_count()).decode()

    def read(self, size: int) -> bytes:
        """Exactly `size` bytes of the worker's answers (the alarm set by `main` bounds it)."""
        while len(self.buffer) < size:
            chunk = os.read(self.out, max(size - len(self.buffer), 1 << 16))
            if not chunk:
                raise Rejected(f"the candidate's process ended: {self.error()}")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def read_count(self) -> int:
        return COUNT.unpack(self.read(COUNT.size))[0]

    def send(self, kind: bytes, a: int, b: int) -> None:
        try:
            os.write(self.inp, HEADER.pack(kind, a, b))
        except BrokenPipeError:
            raise Rejected(f"the candidate's process ended: {self.error()}") from None

    def error(self) -> str:
        self.process.kill()
        status = self.process.wait()
        self.stderr.seek(0)
        lines = self.stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1][:300] if lines else f"exit status {status}"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()
        self.stderr.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def pack(candidate: Candidate, capacity: int, items: np.ndarray) -> int:
    """Pack `items` online with the candidate's priorities; the number of bins used.

    Bins from `touched` on were never used: all of them fit any item (no item exceeds the
    capacity: `load_sets`), so only the first `touched` are compared."""
    bins = np.full(items.size, capacity, np.int64)
    candidate.send(b"S", capacity, items.size)
    last, touched = -1, 0
    for item in items.tolist():
        candidate.send(b"I", item, last)
        fits = np.flatnonzero(bins[:touched] >= item)
        count = fits.size + items.size - touched
        answer = candidate.read_count()
        if answer < 0:
            raise Rejected(candidate.read(-answer).decode(errors="replace"))
        if answer >= count:
            raise Rejected(f"the worker chose bin {answer} of the {count} the item fits in")
        last = int(fits[answer]) if answer < fits.size else touched + answer - fits.size
        bins[last] -= item
        touched = max(touched, last + 1)
    return int((bins != capacity).sum())


def score(candidate: Candidate, sets: dict) -> dict:
    """Every instance, in a random order; each set's excess (%) and average bins."""
    jobs = [(key, index) for key, instances in sets.items() for index in range(len(instances))]
    random.SystemRandom().shuffle(jobs)
    used: dict[str, dict[int, int]] = {key: {} for key in sets}
    for key, index in jobs:
        used[key][index] = pack(candidate, *sets[key][index])
    metrics: dict = {}
    for key, instances in sets.items():
        bins = float(np.mean(list(used[key].values())))
        bound = float(np.mean([l1_bound(c, items) for c, items in instances]))
        metrics[f"{key}_excess"] = round(100 * (bins - bound) / bound, 4)
        metrics[f"{key}_bins"] = bins
    metrics["confinement"] = candidate.confinement
    return metrics


def too_slow(signum: int, frame: object) -> None:
    """SIGALRM: the candidate used up the evaluation's time."""
    raise Rejected(f"too slow: the evaluation took more than {DEADLINE_S} s")


def write_feedback(lines: list[str]) -> None:
    """The lines for the next prompt in $GE_FEEDBACK (nothing without it)."""
    if os.environ.get("GE_FEEDBACK"):
        Path(os.environ["GE_FEEDBACK"]).write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metrics", default=os.environ.get("GE_METRICS", "metrics.json"))
    parser.add_argument("--data", help="the directory of or3.json and weibull5k.json")
    parser.add_argument("--sets", nargs="+", choices=sorted(SETS), default=list(SETS))
    parser.add_argument(
        "--limit", type=int, default=0, help="the first N instances of each set (a quick look)"
    )
    args = parser.parse_args()
    here = Path(__file__).resolve().parent
    sets = load_sets(data_dir(here, args.data), args.sets, args.limit)
    sets.update(heldout_sets(args.sets))
    metrics_path = Path(args.metrics).resolve()
    candidate = Candidate(here)
    signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(DEADLINE_S)
    try:
        metrics = score(candidate, sets)
    except Rejected as exc:
        print(f"bin_packing rejected: {exc}", file=sys.stderr)
        write_feedback([f"bin_packing rejected: {exc}"])
        return 1
    finally:
        signal.alarm(0)
        candidate.close()
    metrics_path.write_text(json.dumps(metrics), encoding="utf-8")
    names = {"or3": "OR3", "weibull": "Weibull 5k"}
    write_feedback(
        [
            f"{names[k]}: {metrics[k + '_bins']:.2f} bins on average, "
            f"{metrics[k + '_excess']:.2f} % above the L1 lower bound"
            for k in args.sets  # the held-out sets never reach a prompt
        ]
    )
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
