"""Islands (`[evolution] islands = K`) through `ge run` on seeds/fast_exp with the offline
operators: each child lives on the island of its plan, migration sends each island's NSGA-II best
to its destination (ring or random, never itself), a migrant keeps its lineage, and runs are the
same run with the same seed, also when killed right before a migration generation's checkpoint
and resumed."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.seeds import copy_seed, evolution_lines

pytest.importorskip("numpy")
pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "seeds" / "fast_exp"
K = 3
OBJECTIVES = (("accuracy", 1.0), ("ops", -1.0))  # fast_exp's selecting objectives (max, min)
# Killed right before generation 2's checkpoint: its children are committed and evaluated.
KILL_BEFORE_CHECKPOINT = """
import os, runpy, signal, sys
from guided_evolution.runstore.run_index import RunIndex
save = RunIndex.save_generation
def hooked(self, rec):
    if rec.generation == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return save(self, rec)
RunIndex.save_generation = hooked
sys.argv = ["ge", *sys.argv[1:]]
runpy.run_module("guided_evolution", run_name="__main__", alter_sys=True)
"""


def _seed(tmp_path: Path, name: str, **evolution: Any) -> Path:
    """fast_exp with small island settings in its [evolution] table."""
    seed = copy_seed(SEED, tmp_path / name)
    settings = {
        "initial_population": 6,
        "population": 6,
        "elites": 3,
        "hall_of_fame": 20,
        "generations": 4,
        "seed": 0,
        "islands": K,
        "migration_interval": 2,
        "migration_size": 1,
        **evolution,
    }
    toml = (seed / "ge.toml").read_text()
    start = toml.index("[evolution]\n")
    end = toml.index("\n[", start)
    table = "[evolution]\n" + "".join(f"{line}\n" for line in evolution_lines(settings))
    (seed / "ge.toml").write_text(toml[:start] + table + toml[end:])
    return seed




def _run(seed: Path, run_dir: Path) -> Path:
    assert here_json("run", str(seed), "--run-dir", str(run_dir), cwd=seed.parent)["finished"]
    return run_dir


def _state(run_dir: Path) -> dict[str, Any]:
    """What two identical runs share: variants (with island and parents), checkpoints (with
    islands), evaluations and migration events."""
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        variants = sorted(
            (v.id, v.generation, v.operator, tuple(v.parents), v.island) for v in index.variants()
        )
        metrics = {vid: (e.status, e.metrics) for vid, e in index.latest_evaluations().items()}
        gens = {}
        for g in range(5):
            rec = index.get_generation(g)
            assert rec is not None, f"generation {g} has no checkpoint"
            gens[g] = (rec.population, rec.elites, rec.hall_of_fame, rec.islands)
        moves = [e.data for e in index.events("migration")]
        return {"variants": variants, "metrics": metrics, "generations": gens, "moves": moves}
    finally:
        index.close()


def _git(run_dir: Path, *args: str) -> str:
    git = ["git", "--git-dir", str(run_dir / "repo.git"), *args]
    return subprocess.run(git, capture_output=True, text=True, check=True).stdout


def _nsga2_best(ids: list[str], metrics: dict[str, Any], n: int) -> list[str]:
    """The ``n`` best of ``ids`` by Pareto rank, then crowding distance, then order; computed
    here from the index's metrics, independently of ge's selection code."""
    valid = [
        i for i in ids
        if metrics[i][0] == "ok" and all(math.isfinite(metrics[i][1][o]) for o, _ in OBJECTIVES)
    ]  # fmt: skip
    value = {i: tuple(w * metrics[i][1][o] for o, w in OBJECTIVES) for i in valid}

    def dominates(a: str, b: str) -> bool:
        pairs = list(zip(value[a], value[b], strict=True))
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    rank, crowd, left, r = {}, dict.fromkeys(valid, 0.0), list(valid), 0
    while left:
        front = [a for a in left if not any(dominates(b, a) for b in left)]
        for m in range(len(OBJECTIVES)):
            ordered = sorted(front, key=lambda i: value[i][m])
            span = value[ordered[-1]][m] - value[ordered[0]][m]
            crowd[ordered[0]] = crowd[ordered[-1]] = math.inf
            for j in range(1, len(ordered) - 1):
                if span > 0:
                    gap = value[ordered[j + 1]][m] - value[ordered[j - 1]][m]
                    crowd[ordered[j]] += gap / span
        rank.update(dict.fromkeys(front, r))
        left, r = [a for a in left if a not in front], r + 1
    return sorted(valid, key=lambda i: (rank[i], -crowd[i], valid.index(i)))[:n]


def test_children_stay_on_their_island_and_the_best_migrate_along_the_ring(
    tmp_path: Path,
) -> None:
    # No elites: an island's population after a generation is its children (and its arrivals).
    run_dir = _run(_seed(tmp_path, "seed", elites=0), tmp_path / "run")
    state = _state(run_dir)
    seed_id = next(v[0] for v in state["variants"] if v[2] == "seed")
    born = {v[0]: v for v in state["variants"]}
    events = {e["generation"]: e["moves"] for e in state["moves"]}
    assert sorted(events) == [2, 4], "migration after generations 2 and 4 only"
    adopted = 0
    for g, (population, _, _, islands) in state["generations"].items():
        assert len(islands) == K
        children = {
            k: [v[0] for v in state["variants"] if v[1] == g and v[4] == k and v[2] != "seed"]
            for k in range(K)
        }
        assert sum(map(len, children.values())) <= 6 and any(children.values())
        arrivals = {m["to"]: m["variants"] for m in events.get(g, [])}
        for k in range(K):
            head = [seed_id] if g == 0 else []
            came = arrivals.get(k, [])
            assert sorted(islands[k]) == sorted(head + children[k] + came), (g, k)
            assert islands[k][len(islands[k]) - len(came) :] == came, "migrants join at the end"
        assert sorted(population) == sorted({v for members in islands for v in members})
        for move in events.get(g, []):  # ring: k -> k + 1; the source's best of its children
            assert move["to"] == (move["from"] + 1) % K
            source = [v for v in islands[move["from"]] if v in children[move["from"]]]
            assert move["variants"] == _nsga2_best(source, state["metrics"], 1)
            (migrant,) = move["variants"]
            assert born[migrant][4] == move["from"] and born[migrant][1] == g
            # Its lineage is unchanged: its commit, trailers and parents are those of its birth.
            log = _git(run_dir, "log", "-1", "--format=%P%n%B", f"v/{g}/{migrant}")
            assert f"Ge-Island: {move['from']}" in log
            assert f"Ge-Parents: {', '.join(born[migrant][3])}" in log
            first = born[migrant][3][0]
            ref = "seed" if first == seed_id else f"v/{born[first][1]}/{first}"
            assert log.split()[0] == _git(run_dir, "rev-parse", ref).strip()
            adopted += sum(
                v[1] == g + 1 and v[4] == move["to"] and migrant in v[3] for v in state["variants"]
            )
    assert adopted, "children of a destination island had a migrant as a parent"
    for vid, gen, op, _, island in state["variants"]:
        if op != "seed":
            log = _git(run_dir, "log", "-1", "--format=%B", f"v/{gen}/{vid}")
            assert f"Ge-Island: {island}\n" in log + "\n"


def _killed_then_resumed(seed: Path, run_dir: Path) -> Path:
    """`ge run` SIGKILLed right before generation 2's checkpoint (its children are evaluated, its
    migration not recorded), then `ge resume` to the end."""
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "PYTHONPATH": str(ROOT)}
    args = ["run", str(seed), "--run-dir", str(run_dir), "--json"]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE_CHECKPOINT, *args],
        cwd=seed.parent, env=env, capture_output=True, text=True, timeout=200, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        assert index.last_generation().generation == 1  # type: ignore[union-attr]
        assert not index.events("migration")
        children = [v for v in index.variants(generation=2)]
        assert children and all(index.latest_evaluation(v.id) for v in children)
    finally:
        index.close()
    assert here_json("resume", str(run_dir), cwd=seed.parent)["finished"]
    return run_dir


@pytest.mark.slow  # ~13 s: two runs and a killed, resumed one, all evaluated for real
def test_random_topology_runs_are_the_same_run_also_when_killed_before_a_migration(
    tmp_path: Path,
) -> None:
    seed = _seed(tmp_path, "seed", migration_topology="random", seed=3)
    alpha = _state(_run(seed, tmp_path / "alpha"))
    moves = [m for event in alpha["moves"] for m in event["moves"]]
    assert [e["generation"] for e in alpha["moves"]] == [2, 4] and len(moves) == 2 * K
    assert all(m["from"] != m["to"] for m in moves), "no island sends to itself"
    for event in alpha["moves"]:
        islands = alpha["generations"][event["generation"]][3]
        for m in event["moves"]:
            assert set(m["variants"]) <= set(islands[m["to"]]) & set(islands[m["from"]])
    assert _state(_run(seed, tmp_path / "beta")) == alpha
    assert _state(_killed_then_resumed(seed, tmp_path / "resumed")) == alpha

