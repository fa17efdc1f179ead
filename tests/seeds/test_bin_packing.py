"""Tests of the bin_packing seed: the published figures (best fit, FunSearch's two heuristics),
candidates that try to cheat the evaluator, and an offline `ge run`.

The instances and FunSearch's heuristics come from google-deepmind/funsearch (bin_packing/
bin_packing.ipynb; seeds/bin_packing/README.md says where they are kept and their licences).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from guided_evolution.evaluation.sandbox import landlock
from tests.support.cli import here_json
from tests.support.seeds import copy_seed

np = pytest.importorskip("numpy")

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "seeds" / "bin_packing"
DATA_NAMES = ("or3.json", "weibull5k.json")
BEST_FIT = {"or3_excess": 5.37, "or3_bins": 212.0, "weibull_excess": 3.98, "weibull_bins": 2067.0}
BEST_FIT_HELDOUT = {"heldout_or3_excess": 5.77, "heldout_weibull_excess": 4.08}


def _data() -> Path:
    """The instances the seed ships in its data/."""
    for place in (SEED / "data",):
        if all((place / name).is_file() for name in DATA_NAMES):
            return place
    pytest.skip("FunSearch's instances are not here: seeds/bin_packing/README.md says where")


def _candidate(tmp_path: Path, source: str | None = None) -> Path:
    """A copy of the seed with the instances in its data/, and `source` as heuristic.py."""
    seed = copy_seed(SEED, tmp_path / "seed")
    shutil.rmtree(seed / "data", ignore_errors=True)
    (seed / "data").mkdir()
    for name in DATA_NAMES:
        shutil.copyfile(_data() / name, seed / "data" / name)
    if source is not None:
        (seed / "heuristic.py").write_text("import numpy as np\n\n" + textwrap.dedent(source))
    return seed


def _evaluate(seed: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    metrics = seed / "out.json"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--metrics", str(metrics), *flags],
        cwd=seed, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    return proc, json.loads(metrics.read_text()) if metrics.exists() else None


def _metrics(seed: Path, *flags: str) -> dict:
    proc, metrics = _evaluate(seed, *flags)
    assert proc.returncode == 0, proc.stderr
    assert metrics is not None
    return metrics


def _rounded(metrics: dict) -> dict:
    """The published sets' figures, to two decimals."""
    return {
        k: round(v, 2)
        for k, v in metrics.items()
        if k.endswith(("_excess", "_bins")) and not k.startswith("heldout_")
    }


# -- the published figures ----------------------------------------------------------------------


def test_best_fit_seed_reproduces_the_published_figures(tmp_path: Path) -> None:
    metrics = _metrics(_candidate(tmp_path))
    assert _rounded(metrics) == BEST_FIT
    assert {k: round(metrics[k], 2) for k in BEST_FIT_HELDOUT} == BEST_FIT_HELDOUT
    assert metrics["confinement"] == "confined"


def test_plain_best_fit_scores_as_the_seed(tmp_path: Path) -> None:
    metrics = _metrics(
        _candidate(tmp_path, "def priority(item, bins):\n    return -(bins - item)\n")
    )
    assert _rounded(metrics) == BEST_FIT


@pytest.mark.slow
@pytest.mark.parametrize(
    ("key", "published"), [("or3", {"or3_excess": 3.11}), ("weibull", {"weibull_excess": 0.68})]
)
def test_funsearch_heuristics_reproduce_the_published_figures(
    tmp_path: Path, key: str, published: dict
) -> None:
    heuristics = _data() / "funsearch_heuristics.json"
    if not heuristics.is_file():
        pytest.skip(f"{heuristics} is absent: seeds/bin_packing/README.md says where it comes from")
    source = json.loads(heuristics.read_text())[key]
    metrics = _metrics(_candidate(tmp_path, source), "--sets", key)
    assert {k: v for k, v in _rounded(metrics).items() if k.endswith("_excess")} == published


def test_first_fit_is_worse_than_best_fit_and_a_subset_is_quick(tmp_path: Path) -> None:
    first_fit = "def priority(item, bins):\n    return -np.arange(len(bins))\n"
    metrics = _metrics(_candidate(tmp_path, first_fit), "--sets", "or3")
    assert set(metrics) == {
        "or3_excess", "or3_bins", "heldout_or3_excess", "heldout_or3_bins", "confinement"
    }  # fmt: skip
    assert metrics["or3_excess"] > BEST_FIT["or3_excess"]


# -- candidates that cheat --------------------------------------------------------------------

# Each looks for the instances where a candidate that knows the layout would: the seed's data/
# (by its absolute path, as if leaked), $GE_SEED_DIR, its own directory, the evaluator's working
# directory through /proc, and shared/ above. A read that succeeds stops the evaluation with
# "cheat: read ...", so confinement that fails shows as a failed test, not as a quiet pass.
READ_INSTANCES = """
import os
from pathlib import Path

def _peek():
    places = [Path({data!r}), Path(os.environ.get("GE_SEED_DIR", "/nonexistent")) / "data",
              Path(__file__).resolve().parent / "data", Path(f"/proc/{{os.getppid()}}/cwd/data"),
              Path({root!r}) / "shared" / "bin_packing"]
    for place in places:
        try:
            text = (place / "or3.json").read_text()
        except OSError:
            continue
        raise RuntimeError(f"cheat: read {{len(text)}} bytes of {{place}}")

_peek()

def priority(item, bins):
    return -(bins - item)
"""

# Overwrites the scorer and writes the metrics file, then leaves before packing anything.
PATCH_SCORER = """
import os
from pathlib import Path

for target, text in (({evaluate!r}, "print('{{}}')"), ({metrics!r}, '{{"or3_excess": 0.0}}')):
    try:
        Path(target).write_text(text)
    except OSError:
        pass
os._exit(0)

def priority(item, bins):
    return -(bins - item)
"""

# Patches the worker it runs in: its bins hold 10**9, so every item "fits" in the first bin.
PATCH_MIRROR = """
import sys

worker = sys.modules["__main__"]
real_full = worker.np.full
worker.np.full = lambda n, value, dtype=None: real_full(n, 10**9, dtype)

def priority(item, bins):
    return -np.arange(len(bins))
"""

# Patches the worker's answer: a bin far beyond those the item fits in.
PATCH_ANSWER = """
import sys

sys.modules["__main__"].choose = lambda priority, item, bins: 10**6

def priority(item, bins):
    return -(bins - item)
"""

# Knows the published OR3 instances (as a model that memorised them could write them into its
# code): it plays best fit until the items so far match one instance, then packs the rest by
# first fit decreasing, planned ahead. No confinement can stop this; the held-out set shows it.
MEMORISED = """
KNOWN = {known}
CAPACITY = 150
state = {{}}


def _ffd(rooms, items):
    where = {{}}
    for i in sorted(items, key=lambda i: -items[i]):
        for b, room in enumerate(rooms):
            if room >= items[i]:
                rooms[b] -= items[i]
                where[i] = b
                break
        else:
            rooms.append(CAPACITY - items[i])
            where[i] = len(rooms) - 1
    return where


def _plan():
    full = state["bins"]
    used = [int(b) for b in np.nonzero(full < CAPACITY)[0]]
    seq = state["known"]
    rest = {{i: seq[i] for i in range(state["t"], len(seq))}}
    state["plan"] = _ffd([int(full[b]) for b in used], rest)
    state["actual"] = dict(enumerate(used))


def priority(item, bins):
    if len(bins) == 500 and (bins == CAPACITY).all():
        state.update(bins=np.full(500, CAPACITY), seen=[], t=0, plan=None, known=None)
    state["seen"].append(item)
    if state["known"] is None and len(state["seen"]) >= 6:
        matches = [k for k in KNOWN if k[: len(state["seen"])] == state["seen"]]
        if len(matches) == 1:
            state["known"] = matches[0]
            _plan()
    full = state["bins"]
    valid = np.nonzero(full >= item)[0]
    if state["plan"] is None:
        choice = valid[np.argmin(full[valid] - item)]
    else:
        planned = state["plan"][state["t"]]
        if planned not in state["actual"]:
            taken = set(state["actual"].values())
            empty = [b for b in np.nonzero(full == CAPACITY)[0] if b not in taken]
            state["actual"][planned] = int(empty[0])
        choice = state["actual"][planned]
    full[choice] -= item
    state["t"] += 1
    scores = np.zeros(len(valid))
    scores[int(np.nonzero(valid == choice)[0][0])] = 1.0
    return scores
"""

BROKEN = {
    "nan": ("return np.full(len(bins), np.nan)", "NaN or inf"),
    "inf": ("return np.where(bins == bins.min(), np.inf, 0.0)", "NaN or inf"),
    "too_short": ("return -(bins - item)[:1]", "priority returned shape (1,) for"),
    "too_long": ("return np.concatenate([-(bins - item), [1e9]])", "priority returned shape"),
    "2d": ("return -(bins - item)[:, None]", "priority returned shape"),
    "scalar": ("return 1.0", "priority returned shape ()"),
    "raises": ("raise ValueError('no idea')", "priority raised ValueError: no idea"),
    "not_numbers": ("return ['a'] * len(bins)", "could not convert"),
}


def test_reading_the_instances_is_denied_and_gains_nothing(tmp_path: Path) -> None:
    if landlock.abi_version() == 0:
        pytest.skip("this kernel has no Landlock: the worker cannot confine its reads here")
    seed = _candidate(tmp_path)
    source = READ_INSTANCES.format(data=str(seed / "data"), root=str(ROOT))
    (seed / "heuristic.py").write_text(source)
    metrics = _metrics(seed)
    assert _rounded(metrics) == BEST_FIT  # every read failed: plain best fit


def test_the_cheat_would_read_them_unconfined(tmp_path: Path) -> None:
    """The control: run as a plain module, the same code reads the instances and says so."""
    seed = _candidate(tmp_path)
    source = READ_INSTANCES.format(data=str(seed / "data"), root=str(ROOT))
    (seed / "heuristic.py").write_text(source)
    proc = subprocess.run(
        [sys.executable, "-c", "import heuristic"],
        cwd=seed, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "cheat: read" in proc.stderr
    proc, metrics = _evaluate(seed, "--sets", "or3", "--limit", "1")
    assert proc.returncode == 0 and metrics is not None, proc.stderr


def test_memorised_instances_show_as_a_gap_to_the_heldout_set(tmp_path: Path) -> None:
    """What confinement cannot stop: the published instances written into the code. The
    selecting figure falls far below FunSearch's; the held-out figure stays best fit's."""
    instances = json.loads((_data() / "or3.json").read_text())["instances"]
    source = MEMORISED.format(known=repr([i["items"] for i in instances]))
    metrics = _metrics(_candidate(tmp_path, source), "--sets", "or3", "--limit", "4")
    best_fit = _metrics(_candidate(tmp_path / "best_fit"), "--sets", "or3", "--limit", "4")
    assert metrics["or3_excess"] < 3.11 < best_fit["or3_excess"]
    assert metrics["heldout_or3_excess"] == best_fit["heldout_or3_excess"]


def test_patching_the_scorer_and_writing_the_metrics_fail(tmp_path: Path) -> None:
    seed = _candidate(tmp_path)
    evaluate_before = (seed / "evaluate.py").read_text()
    metrics_path = seed / "out.json"
    source = PATCH_SCORER.format(evaluate=str(seed / "evaluate.py"), metrics=str(metrics_path))
    (seed / "heuristic.py").write_text(source)
    proc, metrics = _evaluate(seed)
    assert proc.returncode == 1
    assert "bin_packing rejected: the candidate's process ended" in proc.stderr
    assert metrics is None and not metrics_path.exists()
    assert (seed / "evaluate.py").read_text() == evaluate_before


def test_patching_the_worker_cannot_overfill_a_bin(tmp_path: Path) -> None:
    """The patched mirror makes the worker answer "the first bin" for every item: this process
    reads that as the first bin with room, so the packing is plain first fit."""
    first_fit = "def priority(item, bins):\n    return -np.arange(len(bins))\n"
    honest = _metrics(_candidate(tmp_path / "honest", first_fit))
    patched = _metrics(_candidate(tmp_path / "patched", PATCH_MIRROR))
    assert _rounded(patched) == _rounded(honest)
    assert patched["or3_excess"] > BEST_FIT["or3_excess"]


def test_patching_the_answer_fails_with_a_reason(tmp_path: Path) -> None:
    proc, metrics = _evaluate(_candidate(tmp_path, PATCH_ANSWER), "--sets", "or3", "--limit", "1")
    assert proc.returncode == 1 and metrics is None
    assert "bin_packing rejected: the worker chose bin 1000000 of the" in proc.stderr


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_priorities_fail_with_a_reason(tmp_path: Path, name: str) -> None:
    body, reason = BROKEN[name]
    seed = _candidate(tmp_path, f"def priority(item, bins):\n    {body}\n")
    proc, metrics = _evaluate(seed, "--sets", "or3", "--limit", "1")
    assert proc.returncode == 1 and metrics is None
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("bin_packing rejected: ") and reason in line, proc.stderr


# -- ge run ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_offline_run_evaluates_every_variant_on_both_sets(tmp_path: Path) -> None:
    """One generation with the offline operators, sandboxed as ge runs it: the seed scores the
    published best-fit figures, every variant has both objectives and the worker was confined."""
    seed = _candidate(tmp_path)
    summary = here_json(
        "run", str(seed), "--run-dir", str(tmp_path / "run"), "--generations", "1",
        "--population", "2", "--initial-population", "2", cwd=tmp_path,
    )  # fmt: skip
    assert summary["finished"] and summary["generation"] == 1
    selecting = [o["name"] for o in summary["objectives"] if o["select"]]
    assert selecting == ["or3_excess", "weibull_excess"]
    assert summary["front"]
    for row in summary["front"]:
        assert row["metrics"]["confinement"] == "confined"
        assert row["metrics"]["or3_excess"] <= 5.3678 or row["metrics"]["weibull_excess"] <= 3.9843
    seeds = [row for row in summary["front"] if row["operator"] == "seed"]
    assert not seeds or _rounded(seeds[0]["metrics"]) == BEST_FIT
