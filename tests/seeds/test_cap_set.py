"""Tests of the cap set seed (n = 8): its evaluator's greedy construction and check, the seed's
score, candidates that fail with a reason, candidates that try to cheat (each scores no better
than the honest priorities it carries), and a short offline `ge run`."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import ModuleType

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.seeds import copy_seed

np = pytest.importorskip("numpy")

SEED = Path(__file__).resolve().parents[2] / "seeds" / "cap_set"
SEED_SIZE = 256  # the seed's weighted count of 1s and 2s, like a constant: {0, 1}^8
CAP_9 = [(0, 2, 2), (1, 0, 1), (1, 0, 2), (1, 1, 1), (1, 2, 2), (2, 0, 1), (2, 0, 2), (2, 2, 0),
         (2, 2, 1)]  # fmt: skip  # the largest cap set of Z_3^3
CAP_4 = [(1, 1), (1, 2), (2, 0), (2, 1)]  # the largest of Z_3^2
# The product of caps is a cap: 9 * 9 * 4 = 324 vectors offered first.
PRODUCT = f"""
CAP_9 = {CAP_9!r}
CAP_4 = {CAP_4!r}

def priority(vector, n):
    return float(vector[:3] in CAP_9 and vector[3:6] in CAP_9 and vector[6:] in CAP_4)
"""
CONSTANT = "def priority(vector, n):\n    return 0.0\n"


def _evaluator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("cap_set_evaluate", SEED / "evaluate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _evaluate(
    tmp_path: Path, source: str | None = None, **names: str
) -> tuple[subprocess.CompletedProcess[str], dict | None, str]:
    """Run the seed's evaluator on a copy holding `source` as priority.py (format fields
    {metrics}, {seed_dir} and `names` are filled in); exit, metrics, feedback."""
    seed = copy_seed(SEED, tmp_path / "seed")
    metrics, feedback = tmp_path / "metrics.json", tmp_path / "feedback.txt"
    if source is not None:
        fields = {"metrics": str(metrics), "seed_dir": str(seed), **names}
        (seed / "priority.py").write_text(textwrap.dedent(source).format(**fields))
    env = {**os.environ, "GE_METRICS": str(metrics), "GE_FEEDBACK": str(feedback)}
    proc = subprocess.run(
        [sys.executable, "evaluate.py"], cwd=seed, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    result = json.loads(metrics.read_text()) if metrics.exists() else None
    return proc, result, feedback.read_text() if feedback.exists() else ""


def test_seed_scores_256_and_says_so(tmp_path: Path) -> None:
    proc, metrics, feedback = _evaluate(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert metrics == {"cap_set_size": SEED_SIZE, "distinct_priorities": 17}
    assert "cap set of 256 vectors in dimension 8" in feedback and "512" in feedback


def test_structure_scores_higher_than_the_seed(tmp_path: Path) -> None:
    _, constant, _ = _evaluate(tmp_path / "constant", CONSTANT.replace("{", "{{"))
    assert constant == {"cap_set_size": SEED_SIZE, "distinct_priorities": 1}
    proc, metrics, _ = _evaluate(
        tmp_path / "product", PRODUCT.replace("{", "{{").replace("}", "}}")
    )
    assert proc.returncode == 0, proc.stderr
    assert metrics is not None and metrics["cap_set_size"] >= 9 * 9 * 4 > SEED_SIZE


def _reference_greedy(priorities: list[float], n: int) -> list[tuple[int, ...]]:
    """FunSearch's construction written plainly: every vector by decreasing priority (stable)."""
    vectors = list(itertools.product(range(3), repeat=n))
    order = sorted(range(len(vectors)), key=lambda i: -priorities[i])
    chosen: list[tuple[int, ...]] = []
    for i in order:
        v = vectors[i]
        if not any(
            tuple((-(a + b)) % 3 for a, b in zip(v, w, strict=True)) in set(chosen) for w in chosen
        ):
            chosen.append(v)
    return chosen


def test_greedy_and_check_agree_with_a_plain_reference() -> None:
    evaluator, rng = _evaluator(), random.Random(7)
    vectors = evaluator.all_vectors(4)
    assert [tuple(int(d) for d in v) for v in vectors] == list(
        itertools.product(range(3), repeat=4)
    )
    for _ in range(5):
        priorities = [float(rng.randint(0, 5)) for _ in range(81)]  # many ties
        chosen = evaluator.greedy(np.array(priorities), vectors)
        got = [tuple(int(d) for d in vectors[i]) for i in chosen]
        assert got == _reference_greedy(priorities, 4)
        assert evaluator.is_cap_set(chosen, vectors)
    line = np.array([0, 1, 2])  # (0,0,0,0), (0,0,0,1), (0,0,0,2): a line
    assert not evaluator.is_cap_set(line, vectors)
    assert not evaluator.is_cap_set(np.array([5, 5]), vectors)


INVALID = {
    "nan": ("def priority(vector, n):\n    return float('nan') if vector[0] == 2 else 0.0\n",
            "priority((2, 0, 0, 0, 0, 0, 0, 0), 8) is nan: every priority must be finite"),
    "raises": ("def priority(vector, n):\n    return 1 / (vector[0] - 1)\n",
               "priority raised ZeroDivisionError"),
    "not a number": ("def priority(vector, n):\n    return 'high'\n", "priority raised ValueError"),
    "missing": ("def rank(vector, n):\n    return 0.0\n", "defines no function priority"),
    "syntax": ("def priority(vector, n)\n    return 0.0\n", "priority raised SyntaxError"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(INVALID))
def test_failing_candidates_give_their_reason(tmp_path: Path, name: str) -> None:
    source, reason = INVALID[name]
    proc, metrics, feedback = _evaluate(tmp_path, source.replace("{", "{{").replace("}", "}}"))
    assert proc.returncode == 1 and metrics is None
    assert reason in proc.stderr and reason in feedback


# -- cheats: each carries the seed's own priorities (256), so an honest run scores 256 ---------

HONEST = """
def priority(vector, n):
    return -1.0 * sum(v == 2 for v in vector) - 0.5 * sum(v == 1 for v in vector)
"""
CHEATS = {
    # the evaluator's module imported in the candidate's process and its construction, check
    # and numpy patched there
    "patch the checker": """
        import sys
        import numpy
        sys.path.insert(0, {seed_dir!r})
        import evaluate
        evaluate.greedy = lambda priorities, vectors: numpy.arange(len(vectors))
        evaluate.is_cap_set = lambda chosen, vectors: True
        numpy.argsort = lambda a, kind=None: numpy.arange(len(a))
        numpy.unique = lambda a: a
        """,
    # the evaluator's file rewritten on disk while it runs
    "rewrite the evaluator": """
        from pathlib import Path
        path = Path({seed_dir!r}) / "evaluate.py"
        path.write_text(path.read_text().replace("len(chosen)", "10000"))
        """,
    # the metrics file written by the candidate (it knows the path) with a forged score
    "write the metrics": """
        import json
        open({metrics!r}, "w").write(json.dumps({{"cap_set_size": 9999, "distinct_priorities": 1}}))
        """,
    # a process left behind (out of its session) that writes the metrics after the evaluator
    "leave a writer behind": """
        import json, os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(0.5)
                open({metrics!r}, "w").write(json.dumps({{"cap_set_size": 9999}}))
            os._exit(0)
        """,
    # a forged answer with a score, written to every open descriptor (the result among them)
    "forge the answer": """
        import json, os
        def priority(vector, n):
            return 0.0
        forged = json.dumps({{"priorities": [0.0] * 6561, "cap_set_size": 9999}})
        print(forged)
        for fd in range(3, 16):
            try:
                os.write(fd, forged.encode())
            except OSError:
                pass
        """,
    # the environment searched for the metrics and feedback paths
    "read the environment": """
        import os
        open({leak!r}, "w").write(" ".join(k for k in os.environ if k.startswith("GE_")) + ".")
        """,
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_cheats_score_no_better_than_honest_code(tmp_path: Path, name: str) -> None:
    leak = tmp_path / "leak.txt"
    source = HONEST.replace("{", "{{").replace("}", "}}") + textwrap.dedent(CHEATS[name])
    proc, metrics, feedback = _evaluate(tmp_path, source, leak=str(leak))
    time.sleep(1.0 if name == "leave a writer behind" else 0)
    path = tmp_path / "metrics.json"
    if name == "forge the answer":  # the forged text and the runner's make no valid answer
        assert proc.returncode == 1 and "running priority failed" in proc.stderr
        assert not path.exists()
        return
    assert proc.returncode == 0, proc.stderr
    assert metrics is not None and metrics["cap_set_size"] == SEED_SIZE
    assert json.loads(path.read_text())["cap_set_size"] == SEED_SIZE
    assert "cap set of 256 vectors" in feedback
    if name == "read the environment":
        assert leak.read_text() == "."  # no GE_* variable reached the candidate


def test_offline_run_finishes_with_evaluated_children(tmp_path: Path) -> None:
    summary = here_json(
        "run", str(SEED), "--run-dir", str(tmp_path / "run"), "--generations", "1",
        "--population", "3", "--initial-population", "3", cwd=tmp_path,
    )  # fmt: skip
    assert summary["finished"] and summary["generation"] == 1
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        seed = next(v.id for v in index.variants() if v.is_seed)
        ok = {
            r.variant_id: r.metrics
            for r in index.latest_evaluations().values()
            if r.status == "ok" and r.variant_id != seed
        }
    finally:
        index.close()
    assert ok and all(m["cap_set_size"] >= 1 for m in ok.values())
