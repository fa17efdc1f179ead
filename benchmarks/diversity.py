"""Do islands, mate choice and novelty rejection help? Measured on fast_exp, offline.

For each configuration and each RNG seed, a real ``ge run`` of ``seeds/fast_exp`` (a copy, with
``--model offline``, the seed's own evaluator in its sandbox) is stopped once ``--evaluations``
variants are evaluated (Ctrl-C; the seed counts), and only those first evaluations (in the order
they were recorded) are scored, so every configuration gets the same evaluation budget:

- ``hv``: hypervolume of the Pareto front of the evaluated variants on (accuracy max, ops min)
  with the fixed reference point (accuracy 0 digits, ops ``OPS_REF``); larger is better;
- ``to_base``: evaluations this run needed to reach the baseline's final hypervolume of the same
  RNG seed (``-`` when it never did within the budget; the baseline itself needs its budget or
  fewer);
- ``near_dup``: evaluated children whose changed segments lie within ``NEAR`` (token edit distance,
  ``evolution/diversity.py``) of an earlier evaluated variant's: evaluations spent on (near)
  repeats; ``vs_base``: this run's ``near_dup`` minus the baseline's of the same RNG seed. Under
  the fixed evaluation budget this difference is what an option saves: every run evaluates
  ``--evaluations`` variants, so a rejected proposal is not a saved evaluation, only a
  different one;
- ``duplicates``: byte-identical children (``duplicate`` events), never evaluated in any
  configuration (the baseline skips them too); ``rejected``: proposals novelty rejection caught
  (``near_duplicate`` events: re-proposed or dropped); both counted up to the generation of the
  last scored evaluation, not what the run proposed after it before Ctrl-C stopped it;
- ``genes``: with self-adaptive mate choice, the median and interquartile range of the
  ``mating_preference`` genes of generation 0 and of the last finished generation's population.
- ``mean_dist``, ``distinct``, ``front``: the diversity measures of the last finished generation
  (mean pairwise code distance, distinct segments summed over positions, its Pareto front size).

Each cell is the median over the seeds with the range in brackets.

    python benchmarks/diversity.py                       # 5 seeds x 6 configurations, 300 evals
    python benchmarks/diversity.py --seeds 2 --evaluations 80 --configs baseline,islands
    python benchmarks/diversity.py --json results.json   # every run's numbers as well
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from guided_evolution.evolution import diversity  # noqa: E402
from guided_evolution.runstore.git_store import GitStore  # noqa: E402
from tests.support.seeds import toml_value  # noqa: E402

SEED_DIR = ROOT / "seeds" / "fast_exp"
OPS_REF = 40.0  # reference point: accuracy 0 digits, 40 weighted operations (the seed: ~4.8, 17)
NEAR = 0.05  # a "near duplicate": changed segments within this token edit distance
SIZES = {"initial_population": 12, "population": 12, "elites": 12, "hall_of_fame": 30}
CONFIGS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "islands": {"islands": {"count": 3, "migration_interval": 4, "migration_size": 1}},
    "dissimilar": {"mate_choice": {"kind": "dissimilar", "strength": 2.0}},
    "self_adaptive": {"mate_choice": {"kind": "self_adaptive", "strength": 2.0}},
    "novelty": {"novelty": {"distance": NEAR, "retries": 1}},
    "novelty_0.02": {"novelty": {"distance": 0.02, "retries": 1}},
}


def make_seed(work: Path, seed: int, options: dict[str, Any]) -> Path:
    """A copy of fast_exp whose [evolution] table has the benchmark's sizes and ``options``."""
    target = work / "seed"
    shutil.copytree(SEED_DIR, target, ignore=shutil.ignore_patterns("runs", "__pycache__"))
    config = target / "ge.toml"
    lines = config.read_text().split("\n")
    at = lines.index("[evolution]") + 1
    end = next(i for i in range(at, len(lines)) if lines[i].startswith("["))
    extra = {**SIZES, "generations": 10_000, "seed": seed, **options}
    table = [ln for ln in lines[at:end] if ln.split("=")[0].strip() not in extra]
    added = [f"{key} = {toml_value(value)}" for key, value in extra.items()]
    config.write_text("\n".join([*lines[:at], *added, *table, *lines[end:]]))
    return target


def evaluated_count(index: Path) -> int:
    """Variants with an evaluation so far (read-only; 0 before the index exists)."""
    if not index.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{index}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute("SELECT count(DISTINCT variant_id) FROM evaluations").fetchone()
            return int(row[0])
    except sqlite3.Error:
        return 0


def run_until(seed_dir: Path, run_dir: Path, budget: int, timeout_s: float) -> float:
    """Start ``ge run`` and stop it (SIGINT, then wait) once ``budget`` variants are evaluated;
    the wall time in seconds."""
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    cmd = [sys.executable, "-m", "guided_evolution", "run", str(seed_dir), "--run-dir",
           str(run_dir), "--model", "offline", "--json"]  # fmt: skip
    start = time.monotonic()
    # SIGINT is ge's Ctrl-C; a background shell job inherits it ignored, so restore it.
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    while proc.poll() is None:
        if evaluated_count(run_dir / "index.sqlite") >= budget:
            proc.send_signal(signal.SIGINT)
            break
        if time.monotonic() - start > timeout_s:
            proc.kill()
            raise SystemExit(f"{run_dir}: no {budget} evaluations within {timeout_s:.0f} s")
        time.sleep(0.2)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise SystemExit(f"{run_dir}: ge run did not stop within 120 s of Ctrl-C") from None
    if proc.returncode not in (0, 130):
        raise SystemExit(f"ge run failed ({proc.returncode}): {err.decode()[-2000:]}")
    return time.monotonic() - start


def hypervolume(points: Sequence[tuple[float, float]]) -> float:
    """Area dominated by (accuracy max, ops min) points, bounded by (0, OPS_REF)."""
    inside = sorted((ops, acc) for acc, ops in points if acc > 0 and ops < OPS_REF)
    area, best_acc = 0.0, 0.0
    for i, (ops, acc) in enumerate(inside):
        best_acc = max(best_acc, acc)
        right = inside[i + 1][0] if i + 1 < len(inside) else OPS_REF
        area += best_acc * (right - ops)
    return area


def _codes(store: GitStore, sha: str) -> dict[str, str]:
    raw = store.read_files(sha)
    files = {p: raw[p].decode("utf-8", "replace") for p in ("approx.py",) if p in raw}
    return diversity.split_segments(files, ["approx.py"], "# --OPTION--")


def analyse(run_dir: Path, budget: int) -> dict[str, Any]:
    """The run's numbers over its first ``budget`` evaluated variants."""
    conn = sqlite3.connect(f"file:{run_dir / 'index.sqlite'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    order: list[str] = []
    metrics: dict[str, dict[str, Any] | None] = {}
    for row in conn.execute("SELECT variant_id, status, metrics FROM evaluations ORDER BY id"):
        vid = row["variant_id"]
        if vid not in metrics and len(order) < budget:
            order.append(vid)
        if vid in metrics or vid in order:
            ok = row["status"] == "ok" and row["metrics"]
            metrics[vid] = json.loads(row["metrics"]) if ok else None
    variants = {r["id"]: r for r in conn.execute("SELECT * FROM variants")}
    hv_curve, points = [], []
    for vid in order:
        m = metrics.get(vid)
        if (
            m
            and isinstance(m.get("accuracy"), (int, float))
            and isinstance(m.get("ops"), (int, float))
        ):
            points.append((float(m["accuracy"]), float(m["ops"])))
        hv_curve.append(hypervolume(points))
    cache = diversity.DistanceCache()
    near, seen = 0, []
    with GitStore.open(run_dir / "repo.git") as store:
        codes = {vid: _codes(store, variants[vid]["commit_sha"]) for vid in order}
        for vid in order:
            parents = json.loads(variants[vid]["parents"])
            mine = codes[vid]
            base = codes.get(parents[0]) if parents else None
            if base is None and parents:
                base = _codes(store, variants[parents[0]]["commit_sha"])
            changed = [k for k in mine if base is not None and mine[k] != base.get(k)]
            if parents and changed and seen:
                found = diversity.nearest(mine, seen, cache, keys=changed, stop_at=NEAR)
                near += found is not None and found[1] <= NEAR
            seen.append(mine)
    genes = _genes(conn, population_of(conn))
    # Proposals up to the last scored generation: ge may propose more before Ctrl-C lands.
    last = max((variants[vid]["generation"] for vid in order), default=0)
    kinds = [r[0] for r in conn.execute(
        "SELECT kind, data FROM events WHERE kind IN ('duplicate', 'near_duplicate')")
        if json.loads(r[1]).get("generation", 0) <= last]  # fmt: skip
    novelty, duplicates = kinds.count("near_duplicate"), kinds.count("duplicate")
    population = population_of(conn)
    with GitStore.open(run_dir / "repo.git") as store:
        members = [_codes(store, variants[v]["commit_sha"]) for v in population if v in variants]
    found = diversity.measure(members, diversity.DistanceCache())
    front = _front_size([p for v in population if (p := _point(metrics.get(v)))])
    conn.close()
    return {
        "evaluations": len(order),
        "hv": hv_curve[-1] if hv_curve else 0.0,
        "hv_curve": hv_curve,
        "near_dup": near,
        "rejected": novelty,
        "duplicates": duplicates,
        **genes,
        "mean_dist": found.mean_distance or 0.0,
        "distinct": sum(found.distinct.values()),
        "front": front,
    }


def population_of(conn: sqlite3.Connection) -> list[str]:
    """The population of the last finished generation."""
    last = conn.execute("SELECT * FROM generations ORDER BY generation DESC LIMIT 1").fetchone()
    return json.loads(last["population"]) if last else []


def _genes(conn: sqlite3.Connection, population: list[str]) -> dict[str, list[float] | None]:
    """Quartiles of the mating-preference genes at generation 0 and in ``population``."""
    rows = conn.execute("SELECT id, generation, mating_preference FROM variants").fetchall()
    start = [r[2] for r in rows if r[1] == 0 and r[2] is not None]
    now = {r[0]: r[2] for r in rows}
    end = [now[v] for v in population if now.get(v) is not None]

    def quartiles(values: list[float]) -> list[float] | None:
        return statistics.quantiles(values, n=4) if len(values) >= 2 else None

    return {"genes_start": quartiles(start), "genes_end": quartiles(end)}


def _point(m: dict[str, Any] | None) -> tuple[float, float] | None:
    if not m or not isinstance(m.get("accuracy"), (int, float)):
        return None
    return float(m["accuracy"]), float(m["ops"])


def _front_size(points: list[tuple[float, float]]) -> int:
    def dominated(p: tuple[float, float]) -> bool:
        return any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in points)

    return len({p for p in points if not dominated(p)})


def to_reach(curve: Sequence[float], target: float) -> int | None:
    """Evaluations until the hypervolume first reaches ``target`` (None: never)."""
    return next((i + 1 for i, hv in enumerate(curve) if hv >= target - 1e-9), None)


def cell(values: Sequence[float | None], digits: int) -> str:
    """Median [min–max] of the known values, and how many are unknown."""
    known = [v for v in values if v is not None]
    if not known:
        return "-"
    text = (
        f"{statistics.median(known):.{digits}f} [{min(known):.{digits}f}–{max(known):.{digits}f}]"
    )
    missing = len(values) - len(known)
    return text + (f" ({missing} never)" if missing else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--evaluations", type=int, default=300)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--timeout-s", type=float, default=900)
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration {unknown}; choose from {', '.join(CONFIGS)}")
    names = ["baseline", *[n for n in names if n != "baseline"]]  # to_base needs the baseline
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="ge-diversity-") as tmp:
        for seed in range(args.seeds):
            for name in names:
                work = Path(tmp) / f"{name}-{seed}"
                work.mkdir()
                seed_dir = make_seed(work, seed, CONFIGS[name])
                wall = run_until(seed_dir, work / "run", args.evaluations, args.timeout_s)
                found = analyse(work / "run", args.evaluations) | {"seed": seed, "wall_s": wall}
                results[name].append(found)
                print(f"{name:>13} seed {seed}: hv {found['hv']:.1f}, near dup "
                      f"{found['near_dup']}, rejected {found['rejected']}, {wall:.0f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
                shutil.rmtree(work, ignore_errors=True)
    base = {r["seed"]: r for r in results["baseline"]}
    for rows in results.values():
        for r in rows:
            r["to_base"] = to_reach(r["hv_curve"], base[r["seed"]]["hv"])
            r["vs_base"] = r["near_dup"] - base[r["seed"]]["near_dup"]
    _print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


def _print_table(results: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> None:
    print(f"fast_exp, --model offline, {args.seeds} seeds x {args.evaluations} evaluations, "
          f"population {SIZES['population']}; median [range]")  # fmt: skip
    head = ("configuration", "hypervolume", "evals to baseline hv", "near-dup evals",
            "near-dup evals - baseline's (same seed)", "duplicates (skipped in every configuration)",
            "novelty rejections", "mean distance", "distinct segments", "front")  # fmt: skip
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name, rows in results.items():

        def col(key: str, digits: int, rows: list[dict[str, Any]] = rows) -> str:
            return cell([r[key] for r in rows], digits)

        print(f"| {name} | {col('hv', 1)} | {col('to_base', 0)} | {col('near_dup', 0)} | "
              f"{col('vs_base', 0)} | {col('duplicates', 0)} | {col('rejected', 0)} | "
              f"{col('mean_dist', 3)} | {col('distinct', 0)} | {col('front', 0)} |")  # fmt: skip
    for name, rows in results.items():
        for when in ("start", "end"):
            found = [r[f"genes_{when}"] for r in rows if r.get(f"genes_{when}")]
            if found:
                median = statistics.median(q[1] for q in found)
                low, high = (
                    statistics.median(q[0] for q in found),
                    statistics.median(q[2] for q in found),
                )
                print(f"{name}: mating_preference genes at the {when}: median {median:.2f}, "
                      f"IQR {low:.2f}-{high:.2f} (medians over {len(found)} seeds)")  # fmt: skip


if __name__ == "__main__":
    main()
