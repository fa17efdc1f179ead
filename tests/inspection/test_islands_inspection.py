"""Islands and the mating-preference gene as the user inspects them: `ge status` (text and JSON),
`ge best --island`, `ge lineage` and `ge report`, on real offline runs of fast_exp (one with
`islands = 2`, one without); the gene is written into a copy of a run through the run index.
The runs are made in-process (``run_engine``: the real engine, sandboxed evaluator) and the
commands go through the CLI's entry point in-process (``ge_here``), whose output is the `ge`
process's (tests/test_cli_here.py)."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

import pytest

from guided_evolution.evolution.scoring import Scored, scored
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json
from tests.support.harness import run_engine
from tests.support.seeds import copy_seed

SEED = Path(__file__).resolve().parents[2] / "seeds" / "fast_exp"
OBJECTIVES = [("accuracy", "max"), ("ops", "min")]


def _run(base: Path, extra: str, generations: int) -> Path:
    seed = copy_seed(SEED, base / "fast_exp")
    toml = seed / "ge.toml"
    toml.write_text(toml.read_text().replace("[evolution]\n", f"[evolution]\n{extra}", 1))
    run_dir = base / "run"
    run_engine(seed, run_dir, generations=generations)
    return run_dir


@pytest.fixture(scope="module")
def islands_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fast_exp offline, 2 islands migrating after every generation, self-adaptive mate choice
    (every variant carries the gene), 3 generations."""
    extra = 'islands = { count = 2, migration_interval = 1 }\nmate_choice = { kind = "self_adaptive" }\n'
    return _run(tmp_path_factory.mktemp("islands"), extra, 3)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fast_exp offline without islands or genes (today's runs), 1 generation."""
    return _run(tmp_path_factory.mktemp("plain"), "", 1)


def _text(*args: str, cwd: Path) -> str:
    proc = ge_here(*args, cwd=cwd, env={"COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return " ".join(proc.stdout.split())


def _checkpoints(run: Path) -> list:
    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        last = index.last_generation()
        return [index.get_generation(g) for g in range(last.generation + 1)]


def _stored(run: Path) -> tuple[dict, dict, list[dict]]:
    """(variants by id, latest evaluations, migration events' data) read from the index."""
    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        variants = {v.id: v for v in index.variants()}
        return variants, index.latest_evaluations(), [e.data for e in index.events("migration")]


def test_status_shows_each_island_and_the_last_migration(islands_run: Path) -> None:
    data = here_json("status", str(islands_run), cwd=islands_run.parent)
    view = data["islands"]
    last = _checkpoints(islands_run)[-1]
    _, latest, migrations = _stored(islands_run)
    assert view["count"] == 2 and view["generation"] == last.generation == 3
    assert len(view["per_generation"]) == 4 and migrations
    assert view["last_migration"] == migrations[-1] == view["migrations"][-1]
    for k, row in enumerate(view["latest"]):
        members = last.islands[k]
        assert row["island"] == k and row["population"] == len(members)
        valid = [s for vid in members if (s := scored(vid, latest.get(vid), OBJECTIVES))]
        top = max(valid, key=lambda s: s.metrics["accuracy"])
        assert row["best"]["accuracy"]["value"] == top.metrics["accuracy"]
        assert row["best"]["accuracy"]["id"] in members
        assert row["best"]["ops"]["value"] == min(s.metrics["ops"] for s in valid)
        assert 1 <= row["front"] == len(row["front_members"]) <= row["valid"] == len(valid)
        assert {m["id"] for m in row["front_members"]} <= set(members)
    text = _text("status", str(islands_run), cwd=islands_run.parent)
    row = view["latest"][1]
    assert "islands 2 (generation 3)" in text
    assert f"island 1 population {row['population']} front {row['front']} best accuracy" in text
    assert f"({row['best']['ops']['id']})" in text
    move = migrations[-1]["moves"][0]
    assert f"last migration: generation 3 {move['from']}→{move['to']} " in text


def test_best_island_is_the_front_of_the_variants_that_lived_there(islands_run: Path) -> None:
    variants, latest, _ = _stored(islands_run)
    checkpoints = _checkpoints(islands_run)
    for k in (0, 1):
        data = here_json("best", str(islands_run), "--island", str(k), cwd=islands_run.parent)
        lived = {v for v in variants if variants[v].island == k}
        lived |= {vid for rec in checkpoints for vid in rec.islands[k]}
        ids = [r["id"] for r in data["front"]]
        assert data["island"] == k and ids and set(ids) <= lived
        best = max(
            (s for v in lived if (s := scored(v, latest.get(v), OBJECTIVES))),
            key=lambda s: (s.metrics["accuracy"], -s.metrics["ops"]),
        )
        assert best.id in ids  # nothing on the island dominates its most accurate variant
        # --island filters: exactly the island's own Pareto front, computed here.
        mine = [s for v in lived if (s := scored(v, latest.get(v), OBJECTIVES))]
        assert set(ids) == {a.id for a in mine if not any(_dominates(b, a) for b in mine)}
        text = _text("best", str(islands_run), "--island", str(k), cwd=islands_run.parent)
        assert f"Pareto front on island {k}" in text and ids[0] in text
    for bad in ("2", "-1"):
        proc = ge_here("best", str(islands_run), "--island", bad, cwd=islands_run.parent)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert f"island {bad} does not exist in this run (islands 0–1)" in proc.stderr


def test_lineage_shows_islands_and_marks_migrants(islands_run: Path) -> None:
    variants, _, migrations = _stored(islands_run)
    moved = [
        (vid, m, e["generation"])
        for e in migrations
        for m in e["moves"]
        for vid in m["variants"]
        if variants[vid].island is not None and variants[vid].parents
    ]
    assert moved
    vid, move, gen = moved[0]
    data = here_json("lineage", str(islands_run), vid, cwd=islands_run.parent)
    node = next(n for n in data["nodes"] if n["id"] == vid)
    assert node["island"] == variants[vid].island == move["from"]
    assert {"from": move["from"], "to": move["to"], "generation": gen} in node["migrations"]
    parent = next(n for n in data["nodes"] if n["id"] == variants[vid].parents[0])
    assert parent["island"] == variants[parent["id"]].island  # the lineage crosses islands intact
    text = _text("lineage", str(islands_run), vid, cwd=islands_run.parent)
    assert f"island {node['island']}" in text
    assert f"migrated {move['from']}→{move['to']} at gen {gen}" in text


def test_report_has_a_section_per_island_and_the_migrations(
    islands_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report.html"
    here_json("report", str(islands_run), "-o", str(out), cwd=islands_run.parent)
    page = out.read_text()
    _, _, migrations = _stored(islands_run)
    assert '<section id="islands">' in page and 'href="#islands"' in page
    assert "<h3>island 0</h3>" in page and "<h3>island 1</h3>" in page
    assert 'aria-label="best accuracy per island over generations"' in page
    assert page.count("<td class=num>0 → 1</td>") + page.count("<td class=num>1 → 0</td>") == sum(
        len(e["moves"]) for e in migrations
    )
    assert '<section id="gene">' in page  # the run's variants carry the gene


def _gene_rows(run: Path, genes: dict[str, float]) -> list[tuple[int, int, float, float, float]]:
    """(generation, carriers, median, q1, q3) of each checkpoint's population, computed here."""
    rows = []
    for rec in _checkpoints(run):
        values = [genes[vid] for vid in rec.population if vid in genes]
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
        rows.append((rec.generation, len(values), statistics.median(values), q1, q3))
    return rows


def test_status_follows_the_gene_of_a_self_adaptive_run(islands_run: Path) -> None:
    variants, _, _ = _stored(islands_run)
    genes = {
        v.id: v.mating_preference for v in variants.values() if v.mating_preference is not None
    }
    assert genes
    rows = here_json("status", str(islands_run), cwd=islands_run.parent)["mating_preference"]
    got = [(r["generation"], r["n"], r["median"], r["q1"], r["q3"]) for r in rows]
    assert got == [pytest.approx(row) for row in _gene_rows(islands_run, genes)]
    assert all(r["source"] == "population" for r in rows)
    text = _text("status", str(islands_run), cwd=islands_run.parent)
    assert f"3: {rows[-1]['median']:.3f} [{rows[-1]['q1']:.3f}–{rows[-1]['q3']:.3f}]" in text


def _give_genes(run: Path, copy: Path) -> dict[str, float]:
    """A copy of ``run`` whose variants carry a mating-preference gene: their genes by id."""
    shutil.copytree(run, copy)
    genes = {}
    with RunIndex.open(copy / "index.sqlite") as index:
        for n, v in enumerate(sorted(index.variants(), key=lambda v: v.id)):
            v.mating_preference = round(0.05 * (n % 17) + 0.01 * v.generation, 6)
            genes[v.id] = v.mating_preference
            index.add_variant(v, replace=True)
    return genes


def test_the_gene_per_generation_in_status_and_report(plain_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    genes = _give_genes(plain_run, run)
    rows = here_json("status", str(run), cwd=tmp_path)["mating_preference"]
    checkpoints = _checkpoints(run)
    assert [r["generation"] for r in rows] == [rec.generation for rec in checkpoints] == [0, 1]
    got = [(r["generation"], r["n"], r["median"], r["q1"], r["q3"]) for r in rows]
    assert got == [pytest.approx(row) for row in _gene_rows(run, genes)]
    for r, rec in zip(rows, checkpoints, strict=True):
        values = [genes[vid] for vid in rec.population]
        assert r["source"] == "population" and (r["min"], r["max"]) == (min(values), max(values))
    text = _text("status", str(run), cwd=tmp_path)
    last = rows[-1]
    assert (
        f"mating preference per generation (median [IQR]) 0: {rows[0]['median']:.3f} "
        f"[{rows[0]['q1']:.3f}–{rows[0]['q3']:.3f}] 1: {last['median']:.3f}"
    ) in text
    out = tmp_path / "report.html"
    here_json("report", str(run), "-o", str(out), cwd=tmp_path)
    page = out.read_text()
    assert '<section id="gene">' in page and f"<td class=num>{last['median']:.4f}</td>" in page
    assert '<section id="islands">' not in page  # genes without islands: no islands section


def test_a_run_without_islands_or_genes_shows_none_of_it(plain_run: Path, tmp_path: Path) -> None:
    cwd = plain_run.parent
    data = here_json("status", str(plain_run), cwd=cwd)
    assert data["islands"] is None and data["mating_preference"] == []
    status = _text("status", str(plain_run), cwd=cwd)
    assert "island" not in status and "mating" not in status and "migration" not in status
    front = here_json("best", str(plain_run), cwd=cwd)
    assert "island" not in front
    lineage = here_json("lineage", str(plain_run), front["front"][0]["id"], cwd=cwd)
    assert all("island" not in n and "migrations" not in n for n in lineage["nodes"])
    assert "island" not in _text("lineage", str(plain_run), front["front"][0]["id"], cwd=cwd)
    out = tmp_path / "report.html"
    here_json("report", str(plain_run), "-o", str(out), cwd=cwd)
    page = out.read_text()
    assert "island" not in page.lower() and "mating" not in page.lower()
    proc = ge_here("best", str(plain_run), "--island", "0", cwd=cwd)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "this run has no islands" in proc.stderr and "--island" in proc.stderr


def _dominates(a: Scored, b: Scored) -> bool:
    """``a`` is at least as good as ``b`` on accuracy (max) and ops (min), better on one."""
    x, y = (a.metrics["accuracy"], -a.metrics["ops"]), (b.metrics["accuracy"], -b.metrics["ops"])
    return all(p >= q for p, q in zip(x, y, strict=True)) and x != y


def test_best_island_of_islands_that_never_met_differs_from_the_run_front(tmp_path: Path) -> None:
    run = _run(tmp_path, "islands = { count = 2, migration_size = 0 }\n", 2)  # no migration: apart
    everyone = {r["id"] for r in here_json("best", str(run), cwd=tmp_path)["front"]}
    fronts = [
        {r["id"] for r in here_json("best", str(run), "--island", str(k), cwd=tmp_path)["front"]}
        for k in (0, 1)
    ]
    assert all(front <= everyone | _lived(run, k) for k, front in enumerate(fronts))
    assert any(front != everyone for front in fronts), "--island must filter"


def _lived(run: Path, k: int) -> set[str]:
    variants, _, _ = _stored(run)
    return {v for v in variants if variants[v].island == k} | {
        vid for rec in _checkpoints(run) for vid in rec.islands[k]
    }
