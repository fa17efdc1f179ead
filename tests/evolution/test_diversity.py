"""The code distance and diversity measures (`evolution/diversity.py`), and diversity per
generation in `ge status` (JSON and text) and `ge report`, on a real offline run of fast_exp."""

from __future__ import annotations

import html
import itertools
import random
import shutil
import sqlite3
from pathlib import Path

import pytest

from guided_evolution.evolution import diversity
from guided_evolution.evolution.segments import parse_genome
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json
from tests.support.seeds import copy_seed

SEED = Path(__file__).resolve().parents[2] / "seeds" / "fast_exp"
EXQUISITE = Path(__file__).resolve().parents[2] / "seeds" / "exquisitenet_v2" / "model.py"

CODE = """
def poly(x):
    p = 0.008333333
    p = p * x + 0.041666668
    p = p * x + 0.16666667
    return p * x + 1.0
"""


def _levenshtein(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


# --------------------------------------------------------------------------- the distance


def test_edit_distance_is_levenshtein() -> None:
    rng = random.Random(3)
    for _ in range(400):
        a = [rng.randrange(5) for _ in range(rng.randrange(0, 90))]
        b = [rng.randrange(5) for _ in range(rng.randrange(0, 90))]
        assert diversity.edit_distance(a, b) == _levenshtein(a, b)


def test_identical_code_is_at_distance_zero_and_comments_and_layout_are_ignored() -> None:
    assert diversity.code_distance(CODE, CODE) == 0.0
    noisy = (
        "def poly(x):  # a polynomial\n"
        "\n"
        "        # Horner\n"
        "        p = 0.008333333\n"
        "        p = (p * x\n"
        "             + 0.041666668)\n"
        "        p = p * x + 0.16666667\n"
        "        return p * x + 1.0\n"
    )
    n = len(diversity.tokens(CODE))
    assert diversity.code_distance(CODE, noisy) == pytest.approx(2 / (n + 2))  # the brackets
    plain = noisy.replace("(p * x\n             + 0.041666668)", "p * x + 0.041666668")
    assert diversity.tokens(plain) == diversity.tokens(CODE)
    assert diversity.tokens("a = 1; b = 2\n") == diversity.tokens("a = 1\nb = 2\n")
    indented = "    " + CODE.strip().replace("\n", "\n    ") + "\n"
    assert diversity.code_distance(CODE, indented) == 0.0
    inside = "if x:\n    a = 1\n    b = 2\n"  # a statement moved into the block counts
    assert 0.0 < diversity.code_distance(inside, "if x:\n    a = 1\nb = 2\n") < 0.3


def test_distance_is_symmetric_bounded_small_for_one_token_and_large_for_a_rewrite() -> None:
    one_token = CODE.replace("0.16666667", "0.1666")
    rewrite = "import numpy as np\n\ndef poly(x):\n    return np.exp(x) - np.sin(x) / 3\n"
    n = len(diversity.tokens(CODE))
    assert diversity.code_distance(CODE, one_token) == pytest.approx(1 / n)
    assert diversity.code_distance(CODE, rewrite) > 0.6
    segments = parse_genome({"model.py": EXQUISITE.read_text()}, ["model.py"]).segments
    codes = [CODE, one_token, rewrite, "", "x = (\n"] + [s.code for s in segments]
    for a, b in itertools.product(codes, repeat=2):
        d = diversity.code_distance(a, b)
        assert 0.0 <= d <= 1.0 and d == diversity.code_distance(b, a)
        assert (d == 0.0) == (diversity.tokens(a) == diversity.tokens(b))


def test_variant_distance_is_the_mean_over_positions_and_nearest_finds_the_closest() -> None:
    one_token = CODE.replace("0.16666667", "0.1666")
    n = len(diversity.tokens(CODE))
    a = {"f.py#0": CODE, "f.py#1": "x = 1\n"}
    b = {"f.py#0": one_token, "f.py#1": "x = 1\n"}
    c = {"f.py#0": "y = 2\n", "f.py#1": "x = 1\n"}
    assert diversity.per_position(a, b) == {"f.py#0": pytest.approx(1 / n), "f.py#1": 0.0}
    assert diversity.distance(a, b) == pytest.approx(1 / n / 2)
    assert diversity.distance(a, {"f.py#0": CODE}) == 0.5  # a position one lacks: distance 1
    assert diversity.nearest(a, [c, b, a]) == (2, 0.0)
    assert diversity.nearest(a, [c, b]) == (1, pytest.approx(1 / n / 2))
    assert diversity.nearest(a, [c, b], keys=["f.py#1"]) == (0, 0.0)  # the first of the ties
    assert diversity.nearest(a, []) is None


@pytest.mark.parametrize(
    "path",
    [
        EXQUISITE,
        SEED / "approx.py",
        Path(__file__).resolve().parents[2] / "seeds/tiny_cnn/model.py",
    ],
)
def test_splitting_at_markers_gives_the_genome_segments_tokens(path: Path) -> None:
    text = path.read_text()  # each seed has NOTE blocks inside segments
    assert "# -- NOTE --" in text
    genome = parse_genome({"m.py": text}, ["m.py"])
    split = diversity.split_segments({"m.py": text}, ["m.py"], genome.marker)
    full = diversity.segment_codes(genome)
    assert split.keys() == full.keys() and len(full) > 1
    assert all(diversity.tokens(split[k]) == diversity.tokens(full[k]) for k in full)


# --------------------------------------------------------------------------- population measures


def test_measures_of_a_hand_built_population() -> None:
    one_token = CODE.replace("0.16666667", "0.1666")
    commented = "# same code\n" + CODE
    population = [
        {"f.py#0": CODE, "f.py#1": "x = 1\n"},
        {"f.py#0": commented, "f.py#1": "x = 1\n"},
        {"f.py#0": one_token, "f.py#1": "x = 2\n"},
    ]
    found = diversity.measure(population)
    assert found.size == 3 and found.distinct == {"f.py#0": 2, "f.py#1": 2}
    pairs = [diversity.distance(a, b) for a, b in itertools.combinations(population, 2)]
    assert found.mean_distance == pytest.approx(sum(pairs) / 3) and not found.sampled
    assert diversity.measure(population[:1]).mean_distance is None

    many = [{f"m.py#{i}": "x = 1\n" for i in (10, 2, 0)}]
    assert list(diversity.distinct_segments(many)) == ["m.py#0", "m.py#2", "m.py#10"]
    cache = diversity.DistanceCache()
    assert diversity.measure(population * 3, cache).distinct == found.distinct
    assert cache.computed == 2  # CODE vs one_token, "x = 1" vs "x = 2"; the rest are equal
    small = diversity.DistanceCache(max_pairs=1)  # the cache starts over: the same answers
    assert diversity.measure(population * 3, small).mean_distance == pytest.approx(
        diversity.measure(population * 3).mean_distance
    )


def test_a_large_population_is_measured_on_a_fixed_sample_of_pairs() -> None:
    rng = random.Random(5)
    population = [{"f.py#0": f"x = {rng.randrange(10**6)}\ny = {i % 7}\n"} for i in range(80)]
    exact, sampled = diversity.mean_pairwise_distance(population, exact_up_to=100)
    estimate, was_sampled = diversity.mean_pairwise_distance(population)
    assert not sampled and was_sampled
    assert estimate == diversity.mean_pairwise_distance(population)[0]  # deterministic
    assert estimate is not None and exact is not None and abs(estimate - exact) < 0.05


# --------------------------------------------------------------------------- through the CLI


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("diversity")
    seed = copy_seed(SEED, base / "fast_exp")
    run_dir = base / "run"
    here_json(
        "run",
        str(seed),
        "--model",
        "offline",
        "--generations",
        "2",
        "--run-dir",
        str(run_dir),
        cwd=base,
    )
    return run_dir


def _expected(run_dir: Path, generation: int) -> tuple[int, dict[str, int], float | None]:
    """Population size, distinct segments and mean distance, read here from git and the index."""
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        rec = index.get_generation(generation)
        assert rec is not None
        commits = [index.get_variant(v).commit_sha for v in rec.population]
    finally:
        index.close()
    members = []
    with GitStore.open(run_dir / "repo.git") as store:
        for sha in commits:
            text = store.read_files(sha)["approx.py"].decode()
            members.append(
                diversity.segment_codes(parse_genome({"approx.py": text}, ["approx.py"]))
            )
    found = diversity.measure(members)
    return len(members), found.distinct, found.mean_distance


def test_status_has_one_diversity_row_per_generation(run: Path) -> None:
    rows = here_json("status", str(run), cwd=run.parent)["diversity"]
    assert [r["generation"] for r in rows] == [0, 1, 2]
    for r in rows:
        size, distinct, mean = _expected(run, r["generation"])
        assert r["population"] == size and r["distinct"] == distinct
        assert r["mean_distance"] == pytest.approx(mean) and 0.0 < r["mean_distance"] < 1.0
        assert 1 <= r["front"] <= r["valid"] <= r["population"] and not r["distance_sampled"]
        assert all(1 <= n <= size for n in distinct.values()) and max(distinct.values()) > 1
    proc = ge_here("status", str(run), cwd=run.parent)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())  # rich wraps long lines
    last = rows[-1]
    distinct = "/".join(map(str, last["distinct"].values()))
    assert (
        f"diversity (generation 2) population {last['population']} front {last['front']} "
        f"distinct segments {distinct} mean distance {last['mean_distance']:.3f}"
    ) in text
    trend = " ".join(f"{r['generation']}: {r['mean_distance']:.3f}" for r in rows)
    assert f"mean distance per generation {trend}" in text


def test_report_has_the_diversity_table(run: Path, tmp_path: Path) -> None:
    rows = here_json("status", str(run), cwd=run.parent)["diversity"]
    out = tmp_path / "report.html"
    proc = ge_here("report", str(run), "-o", str(out), cwd=run.parent)
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    section = page[page.index("<h3 id=diversity>") :]
    for n, key in enumerate(rows[0]["distinct"]):  # one file: each position headed #index
        assert f'<th class=num title="{html.escape(key)}">#{n}</th>' in section
    for r in rows:
        head = [r["generation"], r["population"], r["valid"], r["front"]]
        mean = f"{r['mean_distance']:.3f}</span></div></td>"
        cells = "".join(f"<td class=num>{c}</td>" for c in r["distinct"].values())
        assert "<tr>" + "".join(f"<td class=num>{c}</td>" for c in head) + "<td>" in section
        assert f"{mean}{cells}</tr>" in section


def test_a_run_without_a_finished_generation_has_no_diversity_rows(
    run: Path, tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(run, tmp_path / "run"))
    with sqlite3.connect(copy / "index.sqlite") as conn:  # as in generation 0, before its end
        conn.execute("DELETE FROM generations")
    assert here_json("status", str(copy), cwd=tmp_path)["diversity"] == []
    proc = ge_here("status", str(copy), cwd=tmp_path)
    assert proc.returncode == 0 and "diversity" not in proc.stdout, proc.stderr
    proc = ge_here("report", str(copy), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "r.html").read_text()
    assert "<h3 id=diversity>diversity per generation</h3><p class=note>No finished" in page
