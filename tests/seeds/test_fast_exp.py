"""Tests of the fast_exp seed: its evaluator (accuracy, op count, escapes, held-out grid, check),
its ge.toml, and whole `ge run`s with the offline operators and with a (fake) LLM."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType

import pytest

from guided_evolution.config import load_config
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, copy_seed

np = pytest.importorskip("numpy")

SEED = Path(__file__).resolve().parents[2] / "seeds" / "fast_exp"
SEED_OPS = 17  # reduce 5 (mul, add, floor, mul, sub) + poly 10 + reconstruct 2 (astype, ldexp)

# Cody-Waite reduction (ln2 split so that k*LN2_HI is exact) and a degree-7 Taylor polynomial.
ACCURATE = """
import numpy as np

def fast_exp(x):
    k = np.floor(x * 1.4426950408889634 + 0.5)
    r = x - k * 0.693359375
    r = r - k * -2.12194440e-4
    p = 1.0 / 5040
    for c in (1.0 / 720, 1.0 / 120, 1.0 / 24, 1.0 / 6, 0.5, 1.0, 1.0):
        p = p * r + c
    return np.ldexp(p, k.astype(np.int32))
"""
HORNER5 = """
def fast_exp(x):
    p = 0.008333333
    p = p * x + 0.041666668
    p = p * x + 0.16666667
    p = p * x + 0.5
    p = p * x + 1.0
    p = p * x + 1.0
    return p
"""


def _evaluator_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fast_exp_evaluate", SEED / "evaluate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _candidate(tmp_path: Path, source: str | None = None) -> Path:
    """A copy of the seed, with `source` as approx.py when given."""
    seed = copy_seed(SEED, tmp_path / "seed")
    if source is not None:
        (seed / "approx.py").write_text(textwrap.dedent(source))
    return seed


def _evaluate(seed: Path, *flags: str) -> tuple[subprocess.CompletedProcess[str], dict | None]:
    metrics = seed / "out.json"
    proc = subprocess.run(
        [sys.executable, "evaluate.py", "--metrics", str(metrics), *flags],
        cwd=seed, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return proc, json.loads(metrics.read_text()) if metrics.exists() else None


def _metrics(tmp_path: Path, source: str | None = None) -> dict:
    proc, metrics = _evaluate(_candidate(tmp_path, source))
    assert proc.returncode == 0, proc.stderr
    assert metrics is not None
    return metrics


# -- the evaluator ------------------------------------------------------------------------------


def test_seed_scores_and_is_deterministic(tmp_path: Path) -> None:
    first = _metrics(tmp_path / "a")
    second = _metrics(tmp_path / "b")
    assert first == second
    assert first["ops"] == SEED_OPS
    assert 4.0 < first["accuracy"] < 6.0  # Taylor degree 5, rounding offset 0.3
    assert first["op_counts"] == "add 6, astype 1, floor 1, ldexp 1, multiply 7, subtract 1"


def test_exact_exp_scores_about_seven_digits() -> None:
    ev = _evaluator_module()
    x = ev.validation_grid()
    error, _ = ev.max_relative_error(x, np.exp(x.astype(np.float64)).astype(np.float32))
    assert error <= 2.0**-24 * 1.001  # the float32 rounding of exp: half an ulp
    assert ev.digits(error) > 7.2
    assert ev.digits(0.0) == 12.0  # floored, never infinite


def test_accurate_candidate_scores_high_and_constant_scores_low(tmp_path: Path) -> None:
    accurate = _metrics(tmp_path / "accurate", ACCURATE)
    assert accurate["accuracy"] > 6.5 and accurate["heldout_accuracy"] > 6.5
    assert accurate["ops"] == 3 + 2 + 2 + 14 + 2  # reduce, Cody-Waite, degree 7, reconstruct
    constant = _metrics(tmp_path / "constant", "def fast_exp(x):\n    return 1.0\n")
    assert constant["accuracy"] < -30  # exp(-87) is 1.6e-38: a relative error of 6e37
    assert constant["ops"] == 0


@pytest.mark.parametrize(
    ("body", "ops", "counts"),
    [
        (HORNER5, 10, "add 5, multiply 5"),
        ("def fast_exp(x):\n    return 1.0 / (100.0 - x)\n", 5, "divide 1, subtract 1"),
        ("def fast_exp(x):\n    return 1.0 + x ** 3\n", 3, "add 1, multiply 2"),
        ("import numpy as np\ndef fast_exp(x):\n    return np.where(x > 0, x, 1.0)\n", 2,
         "greater 1, where 1"),
        # a Python float is a float32 constant, also next to an integer array
        ("import numpy as np\ndef fast_exp(x):\n"
         "    return np.ldexp(0.75, np.floor(x * 1.4427).astype(np.int32))\n", 4,
         "astype 1, floor 1, ldexp 1, multiply 1"),
    ],
)  # fmt: skip
def test_op_count_follows_the_weight_table(
    tmp_path: Path, body: str, ops: int, counts: str
) -> None:
    metrics = _metrics(tmp_path, body)
    assert metrics["ops"] == ops
    assert metrics["op_counts"] == counts


ESCAPES = {
    "np.exp": ("import numpy as np\ndef fast_exp(x):\n    return np.exp(x)\n", "np.exp computes"),
    "exp caught": (
        "import numpy as np\ndef fast_exp(x):\n    try:\n        return np.exp(x)\n"
        "    except Exception:\n        return 1.0 + x\n",
        "np.exp computes",
    ),
    "math.exp": ("import math\ndef fast_exp(x):\n    return math.exp(x)\n", "Python float"),
    "loop": ("def fast_exp(x):\n    return [1.0 + v for v in x]\n", "iteration over elements"),
    "if": ("def fast_exp(x):\n    return x if x > 0 else 1.0\n", "truth value"),
    "float64": (
        "import numpy as np\ndef fast_exp(x):\n    return x * np.float64(1.5)\n",
        "float64 intermediate",
    ),
    "pow": ("def fast_exp(x):\n    return 2.718281828 ** x\n", "np.power computes"),
    "polyval": (
        "import numpy as np\ndef fast_exp(x):\n    return np.polyval([0.5, 1.0, 1.0], x)\n",
        "np.polyval is not an allowed operation",
    ),
    "import": ("import os\ndef fast_exp(x):\n    return x\n", "imports os"),
    "introspection": ("def fast_exp(x):\n    return x._values\n", "private attribute"),
}


@pytest.mark.parametrize("name", sorted(ESCAPES))
def test_escaping_candidates_are_rejected_with_a_reason(tmp_path: Path, name: str) -> None:
    source, reason = ESCAPES[name]
    seed = _candidate(tmp_path, source)
    for flags in ((), ("--check",)):
        proc, metrics = _evaluate(seed, *flags)
        assert proc.returncode == 1 and metrics is None
        assert proc.stderr.startswith("fast_exp rejected: ") and reason in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_heldout_metric_comes_from_its_own_grid(tmp_path: Path) -> None:
    # Wrong only at x = -87, a point of the validation grid and (almost surely) not of the
    # random held-out grid: the validation accuracy collapses, the held-out one does not.
    broken = (
        (SEED / "approx.py")
        .read_text()
        .replace("    return r, k\n", "    return np.where(x == -87.0, r + 1.0, r), k\n")
    )
    seed_metrics = _metrics(tmp_path / "seed")
    metrics = _metrics(tmp_path / "broken", broken)
    assert metrics["accuracy"] < 1.0 < seed_metrics["accuracy"]
    assert metrics["heldout_accuracy"] == seed_metrics["heldout_accuracy"]


def test_check_fast_path(tmp_path: Path) -> None:
    proc, metrics = _evaluate(_candidate(tmp_path / "seed"), "--check")
    assert proc.returncode == 0 and metrics is None
    assert re.match(rf"check ok: {SEED_OPS} ops, max relative error \S+", proc.stdout)
    overflow = "def fast_exp(x):\n    return x**16 * x**16\n"  # 88**32 overflows float32
    proc, _ = _evaluate(_candidate(tmp_path / "inf", overflow), "--check")
    assert proc.returncode == 1 and "must be finite" in proc.stderr


# -- the configuration --------------------------------------------------------------------------


def test_config_objectives_and_paper_profile() -> None:
    config = load_config(SEED / "ge.toml")
    assert [(o.name, o.direction) for o in config.selected_objectives] == [
        ("accuracy", "max"),
        ("ops", "min"),
    ]
    held = next(o for o in config.objectives if o.name == "heldout_accuracy")
    assert not held.select and held.direction == "max"
    assert config.llm.offline and config.seed.files == ("approx.py",)
    paper = load_config(SEED / "ge.toml", profile="paper").evolution
    exquisite = load_config(SEED.parent / "exquisitenet_v2" / "ge.toml", profile="paper").evolution
    for key in ("initial_population", "population", "elites", "hall_of_fame", "generations",
                "eot_start_generation", "eot_teachers", "eot_teacher_pool", "parent_tournament"):  # fmt: skip
        assert getattr(paper, key) == getattr(exquisite, key), key


# -- whole runs ---------------------------------------------------------------------------------


def _evaluated(run_dir: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """Variant id -> metrics of the evaluated ones; variant id -> output tail of failed ones."""
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        ok, failed = {}, {}
        for record in index.latest_evaluations().values():
            if record.status == "ok" and record.metrics:
                ok[record.variant_id] = record.metrics
            elif record.status == "failed":
                failed[record.variant_id] = record.output_tail or ""
        seed = next(v.id for v in index.variants() if v.is_seed)
    finally:
        index.close()
    return ok, {"seed": seed, **failed}


def test_offline_run_finishes_with_a_front_and_improves_the_seed(tmp_path: Path) -> None:
    summary = here_json("run", str(SEED), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    config = load_config(SEED / "ge.toml")
    assert summary["finished"] and summary["generation"] == config.evolution.generations
    assert summary["front"] and all("ops" in row["metrics"] for row in summary["front"])
    evaluated, other = _evaluated(tmp_path / "run")
    seed = evaluated.pop(other["seed"])
    assert seed["ops"] == SEED_OPS
    assert any(m["accuracy"] > seed["accuracy"] for m in evaluated.values())
    assert any(m["ops"] < seed["ops"] for m in evaluated.values())


def _poly(degree: int) -> str:
    coefficients = [1.0]
    for n in range(1, degree + 1):
        coefficients.append(coefficients[-1] / n)
    lines = ["def poly(r):", f"    p = {coefficients[-1]!r}"]
    lines += [f"    p = p * r + {c!r}" for c in reversed(coefficients[:-1])]
    return "\n".join([*lines, "    return p"])


class _ChangeDegree:
    """The fake LLM's edit: the polynomial becomes degree 3, degree 7, or calls np.exp, in turn.

    It counts the requests for the polynomial only: counting every request (as ``CodeWriter``'s
    ``n`` does) made which kinds appear depend on the order concurrent requests arrived in, and a
    loaded machine could give no degree-3 child at all."""

    def __init__(self) -> None:
        self._turn = itertools.count()
        self._lock = threading.Lock()

    def __call__(self, code: str, n: int) -> str:
        if not code.lstrip().startswith("def poly("):
            return code
        with self._lock:
            turn = next(self._turn)
        return (_poly(3), _poly(7), "def poly(r):\n    return np.exp(r)")[turn % 3]


def test_llm_run_changes_the_polynomial_degree(tmp_path: Path) -> None:
    seed = copy_seed(SEED, tmp_path / "seed")
    text = (seed / "ge.toml").read_text().replace("generations = 6", "generations = 2")
    text = text.replace("[llm]", "[llm]\ntimeout_s = 20\nretries = 1\nbackoff_s = 0.01", 1)
    (seed / "ge.toml").write_text(text)
    writer = CodeWriter(_ChangeDegree())
    with serve(responder=writer) as server:
        summary = here_json(
            "run", str(seed), "--run-dir", str(tmp_path / "run"), "--model", "openai/fake",
            "--api-base", server.base_url, cwd=tmp_path,
        )  # fmt: skip
    assert summary["finished"] and summary["llm_calls"] > 0 and summary["front"]
    # the seed's prompts/persona_expert.txt replaces the built-in expert persona
    assert any("numerical analysis" in json.dumps(r["messages"]) for r in server.requests)
    evaluated, failed = _evaluated(tmp_path / "run")
    seed_metrics = evaluated[failed.pop("seed")]
    accuracy = seed_metrics["accuracy"]
    degree3 = [m for m in evaluated.values() if m["ops"] == SEED_OPS - 4]
    degree7 = [m for m in evaluated.values() if m["ops"] == SEED_OPS + 4]
    assert degree3 and all(m["accuracy"] < accuracy for m in degree3)
    assert degree7 and all(m["accuracy"] > accuracy for m in degree7)
    assert any("np.exp computes an exponential" in tail for tail in failed.values())
