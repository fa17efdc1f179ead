"""The bandits over models and over (operator, persona) arms: the pure module, the plan, and real
runs against the fake OpenAI server where one model's replies (or EoT's) improve the score and the
others' make it worse. The runs are in-process (tests/support/harness.py), their variants scored
by ``counter_score``, exactly what the counter seed's evaluate.py writes; the views are read
through the `ge` CLI."""

from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.bandit import ArmStats, Pull, choose, per_dollar, tally
from guided_evolution.evolution.plan import EOT_BY_BANDIT, Step, plan_generation
from guided_evolution.evolution.scoring import Scored
from tests.support.cli import ge_here, here_json
from tests.support.harness import FakeExecutor, resume_engine, run_engine, size_score
from tests.support.openai_server import Action, reply, serve
from tests.support.seeds import template_seed

_VALUE = re.compile(r"VALUE = (-?\d+)")
_FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.S)
_TAG = re.compile(r"\n_REPLY = '[0-9a-f]+'")


def _tagged(code: str, digest: str) -> str:
    """The code with a statement naming its reply (in place of an earlier one), so that children
    whose VALUE repeats are still distinct programs (ge merges children that differ only in
    comments)."""
    return _TAG.sub("", code.rstrip()) + f"\n_REPLY = '{digest[:8]}'"


# --------------------------------------------------------------------------- the pure module


def _picks(algorithm: str, arms: list[ArmStats], n: int = 400, seed: int = 0) -> Counter[str]:
    return Counter(choose(algorithm, arms, random.Random(f"{seed}:{i}")) for i in range(n))


@pytest.mark.parametrize("algorithm", ["thompson", "ucb1"])
def test_the_better_arm_is_chosen_more_often_after_rewards(algorithm: str) -> None:
    weights = {"a": 1.0, "b": 1.0}
    pulls = [Pull("a", 1.0)] * 6 + [Pull("a", 0.0)] * 4 + [Pull("b", 0.0)] * 9 + [Pull("b", 1.0)]
    picks = _picks(algorithm, tally(weights, pulls))
    assert picks["a"] > 0.8 * sum(picks.values())
    before = _picks(algorithm, tally(weights, []))
    if algorithm == "thompson":  # with no rewards yet, equal priors split the choices
        assert 120 < before["a"] < 280


def test_priors_follow_the_configured_weights() -> None:
    arms = tally({"heavy": 3.0, "light": 1.0}, [])
    assert [a.prior_mean for a in arms] == [0.5, pytest.approx(1 / 6)]
    picks = _picks("thompson", arms)
    assert picks["heavy"] > 2 * picks["light"]
    assert choose("ucb1", arms, random.Random(0)) == "heavy"  # unpulled, heaviest first


def test_choices_are_a_function_of_the_state_and_the_rng() -> None:
    arms = tally({"a": 1.0, "b": 2.0, "c": 1.0}, [Pull("a", 1.0), Pull("b", 0.0), Pull("c", 1.0)])
    first = [choose("thompson", arms, random.Random(f"ge:1:{i}")) for i in range(50)]
    again = [choose("thompson", arms, random.Random(f"ge:1:{i}")) for i in range(50)]
    assert first == again and len(set(first)) > 1


def test_per_dollar_rewards_favour_the_cheaper_arm() -> None:
    pulls = [Pull("dear", 1.0, cost=4.0)] * 5 + [Pull("cheap", 1.0, cost=1.0)] * 5
    plain = {a.arm: a.rewards for a in tally({"dear": 1, "cheap": 1}, pulls)}
    scaled = {a.arm: a.rewards for a in tally({"dear": 1, "cheap": 1}, per_dollar(pulls))}
    assert plain["dear"] == plain["cheap"] == 5
    assert scaled["cheap"] == 5 and scaled["dear"] < 5
    picks = _picks("thompson", tally({"dear": 1, "cheap": 1}, per_dollar(pulls * 4)))
    assert picks["cheap"] > picks["dear"]


# --------------------------------------------------------------------------- real runs


def counter_seed(directory: Path, api_base: str, bandit: str, **evolution: Any) -> Path:
    """A seed whose one segment holds ``VALUE``; the score is VALUE (maximised); two models."""
    seed = template_seed(directory, **evolution)
    (seed / "model.py").write_text('"""A counter."""\n\n\n# --OPTION--\nVALUE = 10\n')
    (seed / "evaluate.py").write_text(
        "import json, os, re\nfrom pathlib import Path\n"
        "v = int(re.search(r'VALUE = (-?\\d+)', Path('model.py').read_text()).group(1))\n"
        "Path(os.environ.get('GE_METRICS', 'metrics.json')).write_text(json.dumps({'score': v}))\n"
    )
    text = (seed / "ge.toml").read_text()
    text = re.sub(r'models = \["offline"\]', (
        'models = [{ model = "openai/good", weight = 1 }, { model = "openai/bad", weight = 1 }]\n'
        f'api_base = "{api_base}"\nbandit = {{ kind = "{bandit}" }}'
    ), text)  # fmt: skip
    text = text.replace('check = "python evaluate.py --check"\n', "")
    text = text.split("[[objectives]]")[0] + '[[objectives]]\nname = "score"\ndirection = "max"\n'
    (seed / "ge.toml").write_text(text)
    return seed


def counter_score(files: dict[str, str]) -> dict[str, float | str] | str:
    """What ``counter_seed``'s evaluate.py writes: the score is VALUE (a float, as read back)."""
    found = _VALUE.search(files["model.py"])
    return {"score": float(found.group(1))} if found else "no VALUE in model.py"


def _engine(seed: Path, run_dir: Path) -> dict[str, Any]:
    """`ge run SEED --run-dir RUN_DIR` in-process, the variants scored by ``counter_score``."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", "sk-test")
        return run_engine(seed, run_dir, executor=FakeExecutor(counter_score).factory)


def two_models(request: dict[str, Any]) -> Action:
    """openai/good raises VALUE, openai/bad lowers it, by 1-3 drawn from a hash of the request
    (so that children differ, and the same request always gets the same reply)."""
    user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    if "Do not write any code" in user:
        return reply("Larger values helped: the score is the value.")
    blocks = _FENCE.findall(user)
    if not blocks:
        return reply("I cannot help with that.")
    key = json.dumps([request["messages"], request.get("temperature"), request["model"]])
    digest = hashlib.sha256(key.encode()).hexdigest()
    step = (1 + int(digest, 16) % 3) * (1 if request["model"] == "good" else -1)
    code = _VALUE.sub(lambda m: f"VALUE = {int(m.group(1)) + step}", blocks[0])
    return reply(f"Here it is.\n\n```python\n{_tagged(code, digest)}\n```\n", 120, 80)


def _models_by_generation(run_dir: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(run_dir / "index.sqlite") as conn:
        rows = conn.execute("SELECT generation, model FROM variants WHERE model != ''").fetchall()
    return [(int(g), str(m)) for g, m in rows]


def _good_share_late(run_dir: Path) -> float:
    late = [m for g, m in _models_by_generation(run_dir) if g >= 2]
    return sum(m == "openai/good" for m in late) / len(late)


def _run(tmp_path: Path, name: str, bandit: str) -> Path:
    run_dir = tmp_path / f"run-{name}"
    with serve(responder=two_models) as server:
        seed = counter_seed(
            tmp_path / f"seed-{name}", server.base_url, bandit,
            generations=4, initial_population=6, population=6, elites=3, eot_probability=0.0,
        )  # fmt: skip
        _engine(seed, run_dir)
    return run_dir


def test_the_bandit_favours_the_model_whose_children_improve(tmp_path: Path) -> None:
    fixed = _run(tmp_path, "off", "off")
    adaptive = _run(tmp_path, "on", "thompson")
    assert _good_share_late(adaptive) > _good_share_late(fixed) + 0.15
    assert _good_share_late(adaptive) >= 0.75

    status = here_json("status", str(adaptive), cwd=tmp_path)
    arms = {a["arm"]: a for a in status["bandit"]["models"]}
    assert status["bandit"]["algorithm"] == "thompson"
    assert arms["openai/good"]["improvements"] > 0 and arms["openai/bad"]["improvements"] == 0
    assert arms["openai/good"]["pulls"] > arms["openai/bad"]["pulls"]
    modes = {(r["operator"], r["mode"]) for r in status["tokens"]["by_operator"]}
    assert ("mutation", "whole") in modes and status["tokens"]["tokens_per_valid_child"] > 0
    log = here_json("log", str(adaptive), "--bandit", cwd=tmp_path)
    assert [s["generation"] for s in log["bandit"]["generations"]] == [0, 1, 2, 3, 4]
    assert "bandit_rejected" not in {
        e["kind"] for e in here_json("log", str(fixed), cwd=tmp_path)["events"]
    }
    with sqlite3.connect(fixed / "index.sqlite") as conn:
        assert not conn.execute("SELECT 1 FROM events WHERE kind = 'bandit'").fetchall()
        personas = conn.execute("SELECT DISTINCT persona FROM variants WHERE persona != ''")
        assert len(personas.fetchall()) > 1, "off: every persona is drawn, as before"


def test_a_resumed_run_makes_the_same_choices(tmp_path: Path) -> None:
    """The last generation is undone (as a kill before its checkpoint leaves it) together with its
    stored bandit state: the resume recomputes the state from the index and asks the same models
    for the same children, so every reply comes from the cache."""
    run_dir = _run(tmp_path, "resume", "thompson")
    before = sorted(_models_by_generation(run_dir))
    stored = _resume_after_undoing_the_last_generation(run_dir, tmp_path, two_models, "model")
    assert len(stored) == 5
    assert sorted(_models_by_generation(run_dir)) == before


def test_the_offline_operators_are_arms(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=3, initial_population=6, population=6)
    text = (seed / "ge.toml").read_text().replace("[llm]\n", '[llm]\nbandit = { kind = "ucb1" }\n')
    (seed / "ge.toml").write_text(text)
    run_engine(seed, tmp_path / "run", executor=FakeExecutor(size_score).factory)
    status = here_json("status", str(tmp_path / "run"), cwd=tmp_path)
    arms = {a["arm"]: a for a in status["bandit"]["personas"]}
    assert set(arms) == {"nudge", "swap", "statement"}
    assert sum(a["pulls"] for a in arms.values()) >= 6
    text_status = ge_here("status", str(tmp_path / "run"), cwd=tmp_path).stdout
    assert "edit class (offline) (bandit ucb1): nudge" in " ".join(text_status.split())


def test_an_unknown_bandit_is_one_clear_line(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    text = (seed / "ge.toml").read_text().replace("[llm]\n", '[llm]\nbandit = { kind = "greedy" }\n')
    (seed / "ge.toml").write_text(text)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode != 0 and "bandit" in proc.stderr and "Traceback" not in proc.stderr


def test_steady_mode_draws_from_a_stored_state_per_virtual_generation(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with serve(responder=two_models) as server:
        seed = counter_seed(
            tmp_path / "seed", server.base_url, "thompson", mode="steady",
            generations=4, initial_population=6, population=6, elites=3, eot_probability=0.0,
        )  # fmt: skip
        summary = _engine(seed, run_dir)
    assert summary["finished"]
    states = here_json("log", str(run_dir), "--bandit", cwd=tmp_path)["bandit"]["generations"]
    assert sorted(s["generation"] for s in states) == [0, 1, 2, 3, 4]
    assert _good_share_late(run_dir) >= 0.75


# --------------------------------------------------------------------------- operator x persona


def test_with_the_bandit_a_mutation_step_where_eot_is_possible_carries_its_teacher() -> None:
    """The plan leaves the choice of EoT to the bandit (no coin), only where EoT is possible; with
    the bandit off (``eot=True``) it is the coin's plan, as before."""
    objectives = [("score", "max")]
    pop = [Scored(f"v{i}", {"score": float(i)}) for i in range(8)]
    seed = Scored("seed", {"score": -1.0})
    evo = EvolutionConfig(population=8, elites=3, mutation_probability=1.0, eot_probability=0.5,
                          crossover_probability=0.0, eot_start_generation=2)  # fmt: skip
    late = plan_generation(3, pop, seed, "seed", evo, objectives, eot=EOT_BY_BANDIT).plans
    assert late and all(p.steps[-1].op == "mutation" for p in late)
    assert all(p.steps[-1].other in {"v7", "v6", "v5"} for p in late), "teachers: the elites"
    early = plan_generation(1, pop, seed, "seed", evo, objectives, eot=EOT_BY_BANDIT).plans
    assert all(p.steps[-1] == Step("mutation") for p in early), "before eot_start_generation"
    coin = plan_generation(3, pop, seed, "seed", evo, objectives, eot=True).plans
    assert {p.steps[-1].op for p in coin} == {"mutation", "eot"}
    assert all(s.other is None for p in coin for s in p.steps if s.op == "mutation")
    no_eot = evo.model_copy(update={"eot_probability": 0.0})
    off = plan_generation(3, pop, seed, "seed", no_eot, objectives, eot=EOT_BY_BANDIT).plans
    assert all(p.steps[-1] == Step("mutation") for p in off), "eot_probability = 0: no EoT arm"


def eot_helps(request: dict[str, Any]) -> Action:
    """EoT's apply turn (the conversation holds the model's reasoning) raises VALUE by 1-3; any
    other request (mutation, crossover) lowers it by 1-3."""
    user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    if "Do not write any code" in user:
        return reply("Larger values helped: the score is the value.")
    blocks = _FENCE.findall(user)
    if not blocks:
        return reply("I cannot help with that.")
    key = json.dumps([request["messages"], request.get("temperature")])
    digest = hashlib.sha256(key.encode()).hexdigest()
    sign = 1 if any(m["role"] == "assistant" for m in request["messages"]) else -1
    step = (1 + int(digest, 16) % 3) * sign
    code = _VALUE.sub(lambda m: f"VALUE = {int(m.group(1)) + step}", blocks[0])
    return reply(f"Here it is.\n\n```python\n{_tagged(code, digest)}\n```\n", 120, 80)


def _eot_run(
    tmp_path: Path, name: str, bandit: str, serial: bool = False, **evolution: Any
) -> Path:
    """A run of the EoT-helps seed; ``serial``: one slot and one LLM call at a time, so that
    the steady mode's draws (taken as places free) come in one order on every machine."""
    run_dir = tmp_path / f"run-{name}"
    with serve(responder=eot_helps) as server:
        seed = counter_seed(
            tmp_path / f"seed-{name}", server.base_url, bandit,
            generations=4, initial_population=8, population=8, elites=3, eot_probability=0.25,
            eot_teachers="spea2_top", crossover_probability=0.0, **evolution,
        )  # fmt: skip
        text = (seed / "ge.toml").read_text()
        text = text.replace(", { model = \"openai/bad\", weight = 1 }", "")  # one model
        if serial:
            text = text.replace("slots = 2", "slots = 1").replace(
                f'bandit = {{ kind = "{bandit}" }}', f'bandit = {{ kind = "{bandit}" }}\nconcurrency = 1'
            )
        (seed / "ge.toml").write_text(text)
        summary = _engine(seed, run_dir)
    assert summary["finished"]
    return run_dir


def _arms_by_generation(run_dir: Path) -> list[tuple[int, str]]:
    """(generation, operator arm) of every child with a mutation step, in id order."""
    with sqlite3.connect(run_dir / "index.sqlite") as conn:
        rows = conn.execute(
            "SELECT generation, persona, eot_reflection FROM variants WHERE generation > 0 "
            "ORDER BY id"
        ).fetchall()
    return [(int(g), "eot/-" if r else f"mutation/{p}") for g, p, r in rows if p or r]


def _eot_share_late(run_dir: Path) -> float:
    late = [a for g, a in _arms_by_generation(run_dir) if g >= 2]
    return sum(a == "eot/-" for a in late) / len(late)


def test_the_bandit_chooses_eot_where_eot_children_improve(tmp_path: Path) -> None:
    fixed = _eot_run(tmp_path, "off", "off")
    adaptive = _eot_run(tmp_path, "on", "thompson")
    assert _eot_share_late(adaptive) > _eot_share_late(fixed) + 0.25
    assert _eot_share_late(adaptive) >= 0.6

    status = here_json("status", str(adaptive), cwd=tmp_path)
    arms = {a["arm"]: a for a in status["bandit"]["personas"]}
    assert set(arms) == {f"mutation/{p}" for p in EvolutionConfig().personas} | {"eot/-"}
    assert arms["eot/-"]["improvements"] > 0 and arms["eot/-"]["rate"] == 1.0
    assert all(a["improvements"] == 0 for n, a in arms.items() if n != "eot/-")
    states = here_json("log", str(adaptive), "--bandit", cwd=tmp_path)["bandit"]["generations"]
    assert "eot/-" in {a["arm"] for a in states[-1]["personas"]}
    assert "eot/-" in " ".join(ge_here("status", str(adaptive), cwd=tmp_path).stdout.split())


def test_a_resumed_run_makes_the_same_operator_choices(tmp_path: Path) -> None:
    """As for the models: the last generation and its stored state are undone; the resume draws
    the same (operator, persona) arms, so every reply comes from the cache."""
    run_dir = _eot_run(tmp_path, "resume", "thompson")
    before = sorted(_arms_by_generation(run_dir))
    assert any(a == "eot/-" for g, a in before if g == 4)
    _resume_after_undoing_the_last_generation(run_dir, tmp_path, eot_helps, "arm")
    assert sorted(_arms_by_generation(run_dir)) == before


def test_steady_mode_stores_the_teacher_the_bandit_may_choose_eot_with(tmp_path: Path) -> None:
    # Serial: the share then does not depend on the machine's load (it went 0.58-0.7 with two
    # slots, as completion order decides which children each draw sees).
    run_dir = _eot_run(tmp_path, "steady", "thompson", serial=True, mode="steady")
    assert _eot_share_late(run_dir) >= 0.6
    with sqlite3.connect(run_dir / "index.sqlite") as conn:
        rows = conn.execute("SELECT data FROM events WHERE kind = 'child_planned'").fetchall()
    steps = [s for r in rows for s in json.loads(r[0])["steps"]]
    assert any(op == "mutation" and other for op, other in steps)
    assert not any(op == "eot" for op, _ in steps), "the bandit, not the coin, chooses EoT"


def _resume_after_undoing_the_last_generation(
    run_dir: Path, tmp_path: Path, responder: Any, what: str
) -> list[Any]:
    """Undo generation 4 and its stored bandit state (as a kill before its checkpoint leaves
    them), resume, and check that every reply came from the cache (the same ``what`` for each
    child) and that the bandit states recomputed equal the ones stored; those are returned."""
    with sqlite3.connect(run_dir / "index.sqlite") as conn:
        conn.execute("DELETE FROM generations WHERE generation = 4")
        conn.execute("DELETE FROM meta WHERE key = 'finished'")
        stored = conn.execute("SELECT data FROM events WHERE kind = 'bandit'").fetchall()
        conn.execute(
            "DELETE FROM events WHERE kind = 'bandit' AND data LIKE '%\"generation\": 4,%'"
        )
    with serve(responder=responder) as server, pytest.MonkeyPatch.context() as env:
        env.setenv("OPENAI_API_KEY", "sk-test")
        summary = resume_engine(run_dir, executor=FakeExecutor(counter_score).factory)
        assert len(server.requests) == 0, f"the same {what} was chosen for the same child"
    assert summary["finished"]
    with sqlite3.connect(run_dir / "index.sqlite") as conn:
        again = conn.execute("SELECT data FROM events WHERE kind = 'bandit'").fetchall()
    assert [json.loads(r[0]) for r in again] == [json.loads(r[0]) for r in stored]
    return stored
