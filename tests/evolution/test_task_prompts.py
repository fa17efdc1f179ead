"""Prompts that fit any task and state the goal (issue 27 item 1).

Every operator prompt names the run's task (``[seed] task``, or TASK.md beside ge.toml) and the
selecting objectives with their direction and the parents' and seed's values, never a
``select = false`` metric; the built-in wording is task-neutral, and the ML seeds keep their
wording through their own prompt overrides.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from guided_evolution.cli import app
from guided_evolution.config import load_config
from guided_evolution.errors import ConfigError
from guided_evolution.evolution.heldout import WITHHELD_LINE
from guided_evolution.evolution.operators import mutation_request, novelty_request, registry
from guided_evolution.evolution.operators.common import objectives_of, objectives_text
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import parse_genome
from guided_evolution.inspection.run_data import open_run_index
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, write_config

ROOT = Path(__file__).resolve().parents[2]
BEFORE = Path(__file__).parent / "data" / "prompts_before_issue27.json"
ML_WORDS = re.compile(
    r"tensor|neural|machine.learning|deep.learning|hyperparameter|\blayers?\b|training", re.I
)
TASK = "Compute the square root of a positive float x, as exactly as possible, with little code."


def _operator_prompts() -> list[str]:
    return sorted({name for spec in registry.specs() for name in spec.prompts})


def _renders(lib: PromptLibrary, values: dict[str, str]) -> dict[str, list[dict[str, str]]]:
    """Every operator prompt rendered whole and (where it has rules) as edit blocks."""
    out = {}
    for name in _operator_prompts():
        out[name] = lib.render(name, **values)
        diffed = lib.with_part("rules", "diff_rules").render(name, **values)
        if diffed != out[name]:
            out[f"{name}+diff"] = diffed
    return out


# --------------------------------------------------------------------------- the wording


@pytest.mark.parametrize("seed", ["tiny_cnn", "exquisitenet_v2"])
def test_the_ml_seeds_prompts_are_as_before_but_for_the_goal(seed: str, tmp_path: Path) -> None:
    """Byte for byte the prompts of before issue 27, once the one new goal paragraph (task and
    objectives; the objectives alone in EoT's apply turn) is taken out."""
    old_dir = tmp_path / "before"
    old_dir.mkdir()
    for name, text in json.loads(BEFORE.read_text(encoding="utf-8")).items():
        (old_dir / f"{name}.txt").write_text(text, encoding="utf-8")
    old = PromptLibrary.load([old_dir])
    new = PromptLibrary.load([ROOT / "seeds" / seed / "prompts"]).with_values(
        task="<task>", objectives="<objectives>"
    )
    values = {k: f"<{k}>" for name in _operator_prompts() for k in new.placeholders(name)}
    goal = new.render("goal")[0]["content"]
    assert goal.startswith("The program's task:\n<task>") and goal.endswith("<objectives>")
    before, after = _renders(old, values), _renders(new, values)
    assert before.keys() == after.keys()
    for name, messages in after.items():
        stripped = [
            {**m, "content": m["content"].replace(f"\n\n{goal}\n\n", "\n\n", 1)
             .replace("\n\n<objectives>\n\n", "\n\n", 1)}
            for m in messages
        ]  # fmt: skip
        assert stripped == before[name], name
        if name != "novelty":  # a follow-up turn: the goal is in the conversation's first turn
            assert "<objectives>" in json.dumps(messages), name
            assert "<task>" in json.dumps(messages) or name.startswith("eot_apply"), name
    assert "shapes of the tensors" in after["mutate_tune_concise"][-1]["content"]


def test_the_built_in_prompts_are_task_neutral() -> None:
    lib = PromptLibrary.load()
    values = {k: "x" for name in _operator_prompts() for k in lib.placeholders(name)}
    for name, messages in _renders(lib, values).items():
        text = "\n".join(m["content"] for m in messages)
        assert not ML_WORDS.search(text), (name, ML_WORDS.search(text))


def test_the_objectives_show_selecting_metrics_only_with_their_direction() -> None:
    directions = {"digits": "max", "size": "min"}
    parent = {"digits": 7.25, "size": 31, "holdout": 0.987654, "extra": 5.5}
    seed = {"digits": 3.5, "size": 40.0, "holdout": 0.5}
    text = objectives_of(directions, {"p": parent, "s": seed}.get, [("this version", "p")], "s")
    assert text.splitlines()[1:] == [
        "- digits (maximise: higher is better): this version 7.25; the original program 3.5",
        "- size (minimise: lower is better): this version 31; the original program 40",
    ]
    assert "holdout" not in text and "0.98" not in text and "5.5" not in text
    same = objectives_of(directions, {"s": seed}.get, [("this version", "s")], "s")
    assert "this version (the original program) 3.5" in same
    assert "not measured" in objectives_text(directions, [("a failed one", None)])


# --------------------------------------------------------------------------- the task


def test_ge_init_writes_a_task_that_reaches_the_config_without_its_comments(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["init", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    task_md = tmp_path / "s" / "TASK.md"
    assert "<!--" in task_md.read_text()
    task = load_config(tmp_path / "s" / "ge.toml").seed.task
    assert task and task.startswith("Predict y from a number x") and "<!--" not in task
    assert not ML_WORDS.search(task)
    config = tmp_path / "s" / "ge.toml"
    config.write_text(config.read_text().replace("[seed]\n", f'[seed]\ntask = "{TASK}"\n', 1))
    assert load_config(config).seed.task == TASK  # ge.toml's task wins over TASK.md
    task_md.write_text("x" * 9000)
    config.write_text(config.read_text().replace(f'task = "{TASK}"\n', ""))
    with pytest.raises(ConfigError, match=r"TASK\.md has 9000 characters"):
        load_config(config)


# --------------------------------------------------------------------------- a run

MODEL = '''"""Square roots by Newton's iteration."""


# --OPTION--
def initial_guess(x):
    return x / 2 + 0.5


# --OPTION--
def root(x, steps=4):
    guess = initial_guess(x)
    for _ in range(steps):
        guess = 0.5 * (guess + x / guess)
    return guess
'''
EVALUATE = """import ast, json, math, os, re, sys
from pathlib import Path

text = Path("model.py").read_text()
revisions = re.findall(r"# revision (\\d+)", text)
if revisions and int(revisions[-1]) % 4 == 1:
    print("planted failure", file=sys.stderr)
    sys.exit(1)
sys.path.insert(0, os.getcwd())
import model
if "--check" in sys.argv:
    sys.exit(0)
xs = [0.5 + 37.3 * i for i in range(50)]
worst = max(abs(model.root(x) - math.sqrt(x)) / math.sqrt(x) for x in xs)
digits = 16.0 if worst == 0 else min(16.0, -math.log10(worst))
metrics = {"digits": digits, "size": len(list(ast.walk(ast.parse(text)))), "holdout_digits": 7.654321}
Path(os.environ["GE_METRICS"]).write_text(json.dumps(metrics))
"""
OBJECTIVES = [
    {"name": "digits", "direction": "max"},
    {"name": "size", "direction": "min"},
    {"name": "holdout_digits", "direction": "max", "select": False},
]


def _sqrt_seed(directory: Path, **sections: Any) -> Path:
    directory.mkdir()
    (directory / "model.py").write_text(MODEL)
    (directory / "evaluate.py").write_text(EVALUATE)
    # the task from TASK.md; its line naming the held-out metric is withheld like evaluator text
    (directory / "TASK.md").write_text(
        f"<!-- a note -->\n{TASK}\nHoldout_digits is only reported.\n"
    )
    evolution = {
        "initial_population": 4, "population": 4, "elites": 2, "hall_of_fame": 10,
        "generations": 3, "seed": 3, "crossover_probability": 0.6, "eot_probability": 0.5,
        "eot_start_generation": 1, "fix_attempts": 1, **sections,
    }  # fmt: skip
    write_config(
        directory / "ge.toml",
        {
            "seed": {"files": ["model.py"]},
            "llm": {"models": ["offline"], "timeout_s": 10, "retries": 1, "backoff_s": 0.01},
            "evolution": evolution,
            "evaluator": {"command": "python evaluate.py", "check": "python evaluate.py --check"},
            "executor": {"slots": 2, "gpus": []},
        },
        OBJECTIVES,
    )
    return directory


def _kind(messages: list[dict[str, str]]) -> str:
    users = [m["content"] for m in messages if m["role"] == "user"]
    if "Now put that lesson to work" in users[-1]:
        return "eot_apply"
    if "Do not write any code" in users[-1]:
        return "eot_reason"
    if "made the program fail" in users[-1]:
        return "fix"
    if "Merge them into a single version" in users[-1]:
        return "crossover"
    return "mutation" if len(users) == 1 else "novelty"


def _shown(text: str) -> list[tuple[str, str, str]]:
    """(objective, label, value) of every objective line with values in ``text``."""
    out = []
    for line in re.findall(r"^- (\w+) \((?:max|min)imise: [^)]*\): (.*)$", text, re.M):
        name, cells = line
        for cell in cells.split("; "):
            missing = cell.endswith(" not measured")
            who, _, value = cell.rpartition(" not " if missing else " ")
            out.append((name, who, "not measured" if missing else value))
    return out


def _recorded(run_dir: Path) -> tuple[dict[str, set[str]], dict[str, Any]]:
    """Every recorded value of each objective (as prompts print them) and the seed's metrics."""
    values: dict[str, set[str]] = {}
    seed: dict[str, Any] = {}
    with open_run_index(run_dir) as (index, _resolved, _paths):
        for variant in index.variants():
            evaluation = index.latest_evaluation(variant.id)
            metrics = evaluation.metrics if evaluation and evaluation.metrics else {}
            for name, value in metrics.items():
                values.setdefault(name, set()).add(f"{value:.6g}")
            if variant.operator == "seed":
                seed = dict(metrics)
    return values, seed


EDIT_BLOCKS = {"diff": {"mode": "always"}}


@pytest.mark.parametrize("sections", [{}, EDIT_BLOCKS], ids=["whole", "diff"])
def test_every_prompt_of_a_run_states_the_task_and_the_objectives(
    tmp_path: Path, sections: dict[str, Any]
) -> None:
    seed = _sqrt_seed(tmp_path / "sqrt", **sections)
    with serve(responder=CodeWriter()) as server:
        summary = here_json(
            "run", str(seed), "--run-dir", str(tmp_path / "run"), "--model", "openai/test-model",
            "--api-base", server.base_url, cwd=tmp_path,
        )  # fmt: skip
        requests: list[dict[str, Any]] = list(server.requests)
    assert summary["finished"]
    recorded, seed_metrics = _recorded(tmp_path / "run")
    kinds: dict[str, int] = {}
    for request in requests:
        kind = _kind(request["messages"])
        kinds[kind] = kinds.get(kind, 0) + 1
        ours = "\n".join(m["content"] for m in request["messages"] if m["role"] != "assistant")
        assert TASK in ours, kind
        assert "digits (maximise: higher is better)" in ours, kind
        assert "size (minimise: lower is better)" in ours, kind
        assert not ML_WORDS.search(ours), (kind, ML_WORDS.search(ours))
        assert "holdout" not in json.dumps(request["messages"]).lower(), kind
        assert WITHHELD_LINE in ours and "a note" not in ours, kind
        assert "7.654" not in json.dumps(request["messages"]), kind
        last = [m["content"] for m in request["messages"] if m["role"] == "user"][-1]
        shown = _shown(last)
        if kind == "novelty":
            continue  # a follow-up turn: the objectives are in the conversation's first turn
        assert shown or kind == "eot_reason", kind  # EoT's first turn: values under "Measured"
        for name, who, value in shown:
            assert value in recorded[name] or value == "not measured", (kind, name, who, value)
            if "original program" in who:
                assert value == f"{seed_metrics[name]:.6g}", (kind, name, who, value)
        labels = {who for _, who, _ in shown}
        if kind == "crossover":
            assert {"the first version", "the second version"} <= {w.split(" (")[0] for w in labels}
        if kind == "fix":
            assert any(w.startswith("the version it was changed from") for w in labels), labels
    assert {"mutation", "crossover", "eot_reason", "eot_apply", "fix"} <= kinds.keys(), kinds
    if sections:  # the edit-block variants of the prompts were asked
        assert any("<<<<<<< SEARCH" in json.dumps(r["messages"]) for r in requests)


def test_a_novelty_re_proposal_keeps_the_goal_of_its_conversation() -> None:
    """The re-proposal continues the conversation: the task and the objectives stay in it."""
    lib = PromptLibrary.load().with_values(task=TASK)
    genome = parse_genome({"model.py": MODEL}, ["model.py"])
    objectives = objectives_text({"digits": "max"}, [("this version", {"digits": 2.5})])
    first = mutation_request(
        lib, genome, "p", random.Random(1), temperature_range=(0.1, 0.2),
        personas=["concise"], objectives=objectives,
    )  # fmt: skip
    again = novelty_request(lib, first, "```python\ndef root(x):\n    return x\n```", genome,
                            "d", "def root(x):\n    return x\n", 0.01)  # fmt: skip
    assert again.messages[: len(first.messages)] == first.messages
    text = json.dumps(again.messages)
    assert TASK in text and "digits (maximise: higher is better): this version 2.5" in text
