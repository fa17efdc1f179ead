"""Adding an operator is one module, its prompts and one registry line: a toy operator
(``tests/support/toy_operator.py``, its prompt written into the seed's ``prompts/``, registered by
its ``register()``) runs in a real ``ge run`` against the fake OpenAI server, and its children are
committed, evaluated and listed under its name; the plan and the registry agree."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.operators import registry
from guided_evolution.evolution.operators.spec import ALTERNATIVE, SINGLE, OperatorSpec
from guided_evolution.evolution.plan import EOT_BY_BANDIT, Plan, plan_child, plan_generation
from guided_evolution.evolution.scoring import Scored
from tests.support import toy_operator
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, template_seed

REPO = Path(__file__).resolve().parents[2]
# `ge` with the toy registered: the recipe's registry line, then the real entry point.
WITH_TOY = (
    "import sys; from tests.support.toy_operator import register; register(); "
    "from guided_evolution.cli import main; sys.exit(main())"
)
TOY_ASK = "Make the segment"  # the toy prompt's words
OBJ = (("score", "max"), ("size", "min"))


def _ge_with_toy(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", WITH_TOY, *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=240, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two generations of the template seed where every later mutation step is the toy's."""
    tmp = tmp_path_factory.mktemp("toy")
    seed = template_seed(
        tmp / "seed", initial_population=3, population=4, generations=2,
        mutation_probability=1.0, crossover_probability=0.0, eot_probability=0.0,
    )  # fmt: skip
    (seed / "prompts").mkdir(exist_ok=True)
    (seed / "prompts" / "toy.txt").write_text(toy_operator.PROMPT)
    run_dir = tmp / "run"
    with serve(responder=CodeWriter()) as server:
        proc = _ge_with_toy(
            "run", str(seed), "--run-dir", str(run_dir), "--model", "openai/test-model",
            "--api-base", server.base_url, "--json", cwd=tmp,
        )  # fmt: skip
        requests = list(server.requests)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tmp": tmp, "run_dir": run_dir, "summary": json.loads(proc.stdout), "requests": requests}


def _variants(run_dir: Path) -> list[tuple[str, int, str, str, str | None]]:
    with sqlite3.connect(run_dir / "index.sqlite") as conn:
        rows = conn.execute(
            "SELECT id, generation, operator, status, commit_sha FROM variants ORDER BY created_at"
        ).fetchall()
    return [tuple(r) for r in rows]


def test_the_toy_operators_children_are_committed_evaluated_and_listed(toy_run: dict) -> None:
    run_dir, tmp = toy_run["run_dir"], toy_run["tmp"]
    assert toy_run["summary"]["finished"] and toy_run["summary"]["failed"] == 0
    children = [v for v in _variants(run_dir) if v[2] != "seed"]
    toys = [v for v in children if v[2] == toy_operator.NAME]
    assert {v[2] for v in children if v[1] == 0} == {"mutation"}  # generation 0: mutations
    assert toys and {v[1] for v in toys} == {1, 2}
    assert {v[2] for v in children if v[1] > 0} == {toy_operator.NAME}
    assert all(v[3] == "evaluated" and v[4] for v in toys)
    # the commit's trailers and the variant's view, read by plain `ge` (the toy not registered)
    shown = here_json("show", str(run_dir), toys[0][0], cwd=tmp)
    assert shown["operator"] == toy_operator.NAME and shown["prompt_name"] == "toy"
    assert shown["status"] == "evaluated" and shown["commit"] == toys[0][4]
    status = here_json("status", str(run_dir), cwd=tmp)
    rows = {r["operator"]: r for r in status["tokens"]["by_operator"]}
    assert list(rows) == ["mutation", toy_operator.NAME]  # the built-in first: registry order
    asked = [r for r in toy_run["requests"] if TOY_ASK in r["messages"][-1]["content"]]
    assert rows[toy_operator.NAME]["calls"] == len(asked) >= len(toys)
    assert all(0.02 <= r["temperature"] <= 0.35 for r in asked)  # its temperature key: mutation
    # the report's label comes from its spec
    report = _ge_with_toy("report", str(run_dir), "-o", str(tmp / "r.html"), cwd=tmp)
    assert report.returncode == 0, report.stderr[-2000:]
    assert toy_operator.SPEC.label in (tmp / "r.html").read_text()


@pytest.fixture
def toy_registered() -> Iterator[OperatorSpec]:
    toy_operator.register()
    try:
        yield toy_operator.SPEC
    finally:
        registry.unregister(toy_operator.NAME)


def _population(n: int) -> list[Scored]:
    return [Scored(f"v{i}", {"score": 0.5 + i / n, "size": 50.0 + i}) for i in range(n)]


def _all_plans(eot: bool | str, **kw: Any) -> list[Plan]:
    cfg = EvolutionConfig(population=12, elites=3, eot_probability=0.5, **kw)
    seed = Scored("seed", {"score": 0.5, "size": 50.0})
    pop = _population(12)
    out: list[Plan] = []
    for g in range(4):
        out += plan_generation(g, pop, seed, "seed", cfg, OBJ, eot=eot).plans
        out += [p for i in range(12) if (p := plan_child(g, i, pop, seed, "seed", cfg, OBJ, eot=eot))]
    return out


@pytest.mark.parametrize("eot", [True, False, EOT_BY_BANDIT])
def test_every_operator_the_plan_draws_is_registered(eot: bool | str) -> None:
    plans = _all_plans(eot)
    drawn = {s.op for p in plans for s in p.steps}
    names = {s.name for s in registry.specs()}
    assert drawn <= names
    assert {"mutation", "crossover"} <= drawn and ("eot" in drawn) == (eot is True)
    assert all(registry.spec(s.op).role != "repair" for p in plans for s in p.steps)
    assert all(p.llm_calls == sum(2 if s.op == "eot" else 1 for s in p.steps) for p in plans)
    assert set(registry.stored_names()) >= drawn | {"seed", "fix"}


def test_a_registered_alternative_is_drawn_by_the_plan_and_gone_when_removed(
    toy_registered: OperatorSpec,
) -> None:
    assert toy_registered.role == ALTERNATIVE
    drawn = {s.op for p in _all_plans(True, eot_start_generation=9) for s in p.steps}
    assert toy_operator.NAME in drawn and "eot" not in drawn
    assert toy_operator.NAME in registry.stored_names()
    assert registry.report_order()[-1] == toy_operator.NAME
    registry.unregister(toy_operator.NAME)
    assert {s.op for p in _all_plans(True) for s in p.steps} <= {"mutation", "crossover", "eot"}
    toy_operator.register()  # for the fixture's removal


def test_offline_plans_draw_no_alternative(toy_registered: OperatorSpec) -> None:
    drawn = {s.op for p in _all_plans(False) for s in p.steps}
    assert drawn == {"mutation", "crossover"}
    assert {registry.counterpart(op).name for op in drawn} == {
        "offline-mutation",
        "offline-crossover",
    }


def test_the_registry_refuses_a_second_base_or_a_taken_name() -> None:
    with pytest.raises(ValueError, match="already"):
        registry.register(OperatorSpec(name="mutation", role=ALTERNATIVE))
    with pytest.raises(ValueError, match="single operator is mutation"):
        registry.register(OperatorSpec(name="other", role=SINGLE))
    with pytest.raises(ValueError, match="built-in"):
        registry.unregister("eot")
