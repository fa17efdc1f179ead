"""Tests of the circle packing seed (26 circles in the unit square): the seed's score, a better
honest packing, the validity check with its tolerance and reasons, candidates that try to cheat
(each scores no better than honest code: here, rejected or scored on its real circles), and a
short offline `ge run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.seeds import copy_seed

pytest.importorskip("numpy")

SEED = Path(__file__).resolve().parents[2] / "seeds" / "circle_packing"
SEED_SUM = 2.5  # rows of 5, 5, 6, 5, 5 circles: 20 of radius 0.1, 6 of radius 1/12
# A 5 x 5 grid of circles of radius 0.1 touching each other and the walls, and a 26th circle in
# the gap at (0.2, 0.2): radius 0.1 * (sqrt(2) - 1). `inflate` is added to the 26th radius.
GRID = """
import math

def pack(n):
    circles = [(0.1 + 0.2 * i, 0.1 + 0.2 * j, 0.1) for i in range(5) for j in range(5)]
    return circles + [(0.2, 0.2, 0.1 * (math.sqrt(2) - 1) + {inflate})]
"""
GRID_SUM = 2.5 + 0.1 * (2**0.5 - 1)


def _evaluate(
    tmp_path: Path, source: str | None = None, **fields: object
) -> tuple[subprocess.CompletedProcess[str], dict | None, str]:
    """Run the seed's evaluator on a copy holding `source` as packing.py (format fields
    {metrics}, {seed_dir} and `fields` are filled in); exit, metrics, feedback."""
    seed = copy_seed(SEED, tmp_path / "seed")
    metrics, feedback = tmp_path / "metrics.json", tmp_path / "feedback.txt"
    if source is not None:
        names = {"metrics": str(metrics), "seed_dir": str(seed), **fields}
        (seed / "packing.py").write_text(textwrap.dedent(source).format(**names))
    env = {**os.environ, "GE_METRICS": str(metrics), "GE_FEEDBACK": str(feedback)}
    proc = subprocess.run(
        [sys.executable, "evaluate.py"], cwd=seed, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    result = json.loads(metrics.read_text()) if metrics.exists() else None
    return proc, result, feedback.read_text() if feedback.exists() else ""


def test_seed_scores_and_says_so(tmp_path: Path) -> None:
    proc, metrics, feedback = _evaluate(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert metrics is not None and metrics["sum_radii"] == pytest.approx(SEED_SUM, abs=1e-12)
    assert "valid packing of 26 circles: sum of radii 2.500000" in feedback


def test_a_touching_grid_is_valid_and_scores_higher(tmp_path: Path) -> None:
    proc, metrics, feedback = _evaluate(tmp_path, GRID, inflate=0.0)
    assert proc.returncode == 0, proc.stderr
    assert metrics is not None and metrics["sum_radii"] == pytest.approx(GRID_SUM, abs=1e-12)
    assert metrics["wall_contacts"] == 16 and metrics["pair_contacts"] == 40 + 4
    assert "16 circles touch a wall" in feedback


@pytest.mark.parametrize(("inflate", "valid"), [(5e-10, True), (2e-9, False)])
def test_overlap_tolerance_is_1e_9(tmp_path: Path, inflate: float, valid: bool) -> None:
    proc, metrics, feedback = _evaluate(tmp_path, GRID, inflate=inflate)
    assert (proc.returncode == 0) is valid and (metrics is not None) is valid
    if not valid:
        assert "circles 6 and 25 overlap by 2e-09" in feedback or "overlap by 2e-09" in feedback


def _source(body: str) -> str:
    return "import math\n\ndef pack(n):\n" + textwrap.indent(textwrap.dedent(body), "    ")


# fmt: off
INVALID = {
    "overlap": (_source("return [(0.5, 0.5, 0.1)] * 2 + [(0.01 * i + 0.001, 0.001, 0.0) "
                        "for i in range(24)]"), "circles 0 and 1 overlap by 0.2"),
    "outside": (_source("return [(0.95, 0.5, 0.1)] + [(0.01 * i + 0.001, 0.001, 0.0) "
                        "for i in range(25)]"), "circle 0 (x=0.95, y=0.5, r=0.1) leaves the unit "
                        "square by 0.05"),
    "count": (_source("return [(0.5, 0.5, 0.1)] * 25"), "pack(26) returned 25 circles: exactly 26"),
    "nan": (_source("return [(0.5, 0.5, math.nan)] + [(0.1, 0.1, 0.0)] * 25"),
            "circle 0 is [0.5, 0.5, nan]: every value must be finite"),
    "negative": (_source("return [(0.5, 0.5, 0.1)] + [(0.1, 0.1, -0.5)] * 25"),
                 "circle 1 has a negative radius -0.5"),
    "shape": (_source("return [(0.5, 0.5)] * 26"), "each circle must be three numbers (x, y, r)"),
    "raises": (_source("return 1 / 0"), "pack(26) raised ZeroDivisionError"),
    "missing": ("def place(n):\n    return []\n", "packing.py defines no function pack(n)"),
}
# fmt: on


@pytest.mark.parametrize("name", sorted(INVALID))
def test_invalid_packings_fail_with_their_reason(tmp_path: Path, name: str) -> None:
    source, reason = INVALID[name]
    proc, metrics, feedback = _evaluate(tmp_path, source.replace("{", "{{").replace("}", "}}"))
    assert proc.returncode == 1 and metrics is None
    assert reason in proc.stderr and f"invalid packing: {reason}" in feedback.replace("\n", " ")


# -- cheats: each returns 26 copies of a circle of radius 0.5 (sum 13, overlapping) or the seed's
# own circles, and tries to make the evaluator score more ---------------------------------------

OVERLAPPING = "def pack(n):\n    return [(0.5, 0.5, 0.5)] * n\n"
CHEATS = {
    # the evaluator imported in the candidate's process, its check, tolerance and numpy patched
    "patch the checker": """
        import sys
        import numpy
        sys.path.insert(0, {seed_dir!r})
        import evaluate
        evaluate.check = lambda array: None
        evaluate.TOLERANCE = 100.0
        numpy.sqrt = lambda a: a * 0 + 10.0
        """,
    # the evaluator's file rewritten on disk while it runs
    "rewrite the evaluator": """
        from pathlib import Path
        path = Path({seed_dir!r}) / "evaluate.py"
        path.write_text(path.read_text().replace("TOLERANCE = 1e-9", "TOLERANCE = 100.0"))
        """,
    # the metrics file written by the candidate (it knows the path) with a forged score
    "write the metrics": """
        import json
        open({metrics!r}, "w").write(json.dumps({{"sum_radii": 13.0}}))
        """,
    # a process left behind (out of its session) that writes the metrics after the evaluator
    "leave a writer behind": """
        import json, os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(0.5)
                open({metrics!r}, "w").write(json.dumps({{"sum_radii": 13.0}}))
            os._exit(0)
        """,
    # a forged answer and score on stdout and on every open descriptor, then a quick exit
    "forge the answer": """
        import json, os
        def pack(n):
            forged = json.dumps({{"circles": [[0.5, 0.5, 0.5]] * n, "sum_radii": 13.0}})
            print(forged)
            for fd in range(3, 16):
                try:
                    os.write(fd, forged.encode())
                except OSError:
                    pass
            os._exit(0)
        """,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CHEATS))
@pytest.mark.parametrize("circles", ["overlapping", "seed"])
def test_cheats_score_no_better_than_honest_code(tmp_path: Path, name: str, circles: str) -> None:
    own = OVERLAPPING if circles == "overlapping" else (SEED / "packing.py").read_text()
    source = own.replace("{", "{{").replace("}", "}}") + textwrap.dedent(CHEATS[name])
    proc, metrics, _ = _evaluate(tmp_path, source)
    time.sleep(1.0 if name == "leave a writer behind" else 0)
    path = tmp_path / "metrics.json"
    if circles == "overlapping" or name == "forge the answer":
        assert proc.returncode == 1 and not path.exists(), proc.stdout
        assert "invalid packing" in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    # the score of the circles sent (patching numpy in its own process costs the candidate)
    assert metrics is not None and metrics == json.loads(proc.stdout)
    assert metrics["sum_radii"] <= SEED_SUM + 1e-12


def test_the_candidate_sees_no_ge_variable(tmp_path: Path) -> None:
    leak = tmp_path / "leak.txt"
    source = (SEED / "packing.py").read_text().replace("{", "{{").replace("}", "}}") + (
        "\nimport os\nopen({leak!r}, 'w').write(' '.join(k for k in os.environ if "
        "k.startswith('GE_')) + '.')\n"
    )
    proc, metrics, _ = _evaluate(tmp_path, source, leak=str(leak))
    assert proc.returncode == 0 and metrics is not None, proc.stderr
    assert leak.read_text() == "."


def test_offline_run_finishes_with_evaluated_children(tmp_path: Path) -> None:
    summary = here_json(
        "run", str(SEED), "--run-dir", str(tmp_path / "run"), "--generations", "1",
        "--population", "4", "--initial-population", "4", cwd=tmp_path,
    )  # fmt: skip
    assert summary["finished"] and summary["generation"] == 1
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        seed = next(v.id for v in index.variants() if v.is_seed)
        records = [r for r in index.latest_evaluations().values() if r.variant_id != seed]
    finally:
        index.close()
    ok = [r.metrics for r in records if r.status == "ok"]
    assert ok and all(0 <= m["sum_radii"] < 2.7 for m in ok)
    assert all("invalid packing" in (r.output_tail or "") for r in records if r.status == "failed")
