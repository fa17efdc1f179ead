"""Diff edits in the operators ([evolution] edit_mode): the request asks for SEARCH/REPLACE blocks,
the reply's blocks become the child, a block that cannot be applied is a named rejection, and a
`ge run` against the fake OpenAI server evolves through diffs."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.evolution.diffedit import (
    REASON_AMBIGUOUS,
    REASON_NO_BLOCKS,
    REASON_NOT_FOUND,
    REASON_OUTSIDE,
    DiffBlock,
    edit_block,
)
from guided_evolution.evolution.operators import (
    Child,
    OperatorRequest,
    Rejected,
    child_from_reply,
    eot_apply_request,
    eot_reason_request,
    fix_request,
    mutation_request,
)
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome, differing_segments, parse_genome
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json
from tests.support.openai_server import Action, reply, serve
from tests.support.seeds import bump_first_integer, template_seed

SEARCH = "<<<<<<< SEARCH"
WHOLE_RULE = "exactly one fenced ```python block"
MODEL = '''"""Header."""

import math


# --OPTION--
def features(x):
    scale = 2
    return [1.0, x * scale, math.sqrt(abs(x))]


# --OPTION--
def fit(xs, ys, steps=200, lr=0.05):
    weights = [0.0, 0.0, 0.0]
    for _ in range(steps):
        weights = [w + lr for w in weights]
    return weights
'''


@pytest.fixture(scope="module")
def lib() -> PromptLibrary:
    return PromptLibrary.load()


@pytest.fixture
def genome() -> Genome:
    return parse_genome({"model.py": MODEL}, ["model.py"])


def key_of(g: Genome, name: str) -> str:
    return next(s.key for s in g.segments if s.name == name)


def mutate(
    lib: PromptLibrary, g: Genome, mode: str, segment: str = "fit", **kw: Any
) -> OperatorRequest:
    return mutation_request(
        lib,
        g,
        "parent",
        random.Random(3),
        temperature_range=(0.1, 0.3),
        personas=["expert", "inventive"],
        segment_key=key_of(g, segment),
        edit_mode=mode,
        **kw,
    )


def blocks(*pairs: tuple[str, str]) -> str:
    """A reply with prose around SEARCH/REPLACE blocks (one per (search, replace) pair)."""
    text = "".join(DiffBlock(s, r).render() + "\n" for s, r in pairs)
    return f"I change the loop.\n\n{text}That should help."


def rejection(req: OperatorRequest, g: Genome, text: str) -> str:
    with pytest.raises(Rejected) as info:
        child_from_reply(req, g, text)
    assert "\n" not in info.value.reason
    return info.value.reason


# --------------------------------------------------------------------------- requests


def test_always_asks_the_same_task_for_search_replace_blocks(
    lib: PromptLibrary, genome: Genome
) -> None:
    whole, diff = mutate(lib, genome, "never"), mutate(lib, genome, "always")
    assert (whole.edit, diff.edit) == ("whole", "diff")
    # the same draws: segment, task x persona, temperature (runs stay reproducible)
    assert (diff.segment, diff.prompt_name, diff.persona, diff.temperature) == (
        whole.segment,
        whole.prompt_name,
        whole.persona,
        whole.temperature,
    )
    user, plain = diff.messages[-1]["content"], whole.messages[-1]["content"]
    assert SEARCH in user and ">>>>>>> REPLACE" in user and WHOLE_RULE not in user
    assert "for _ in range(steps):" in user  # the segment itself
    assert SEARCH not in plain and WHOLE_RULE in plain
    task = plain.split("The segment to change is")[0]
    assert task.strip() and user.startswith(task)  # the task and persona words are the same
    assert diff.messages[0] == whole.messages[0]


def test_auto_asks_for_blocks_from_diff_min_chars_on(lib: PromptLibrary, genome: Genome) -> None:
    size = len(genome.segment(key_of(genome, "fit")).code)
    assert mutate(lib, genome, "auto", diff_min_chars=size).edit == "diff"
    assert mutate(lib, genome, "auto", diff_min_chars=size + 1).edit == "whole"
    small = mutate(lib, genome, "auto", segment="features", diff_min_chars=size)
    assert small.edit == "whole" and WHOLE_RULE in small.messages[-1]["content"]  # lib unchanged


def test_a_seed_prompt_without_the_rules_falls_back_to_mutation_diff(
    tmp_path: Path, genome: Genome
) -> None:
    (tmp_path / "mutate_tune_expert.txt").write_text("Tune {{segment}}:\n\n{{code}}\n")
    lib = PromptLibrary.load([tmp_path])
    req = mutation_request(
        lib,
        genome,
        "p",
        random.Random(0),
        temperature_range=(0.1, 0.1),
        personas=["expert"],
        kinds=["tune"],
        edit_mode="always",
    )
    user = req.messages[-1]["content"]
    assert (req.edit, req.prompt_name) == ("diff", "mutation_diff")
    assert SEARCH in user and "Tune " not in user
    assert user.startswith("Improve this segment")


def test_fix_and_eot_apply_ask_for_blocks(lib: PromptLibrary, genome: Genome) -> None:
    key = key_of(genome, "fit")
    fix = fix_request(
        lib,
        genome,
        "v1",
        key,
        "exit 1",
        "Traceback",
        random.Random(0),
        temperature_range=(0.1, 0.1),
        edit_mode="always",
    )
    assert (fix.edit, fix.prompt_name) == ("diff", "fix_diff")
    assert SEARCH in fix.messages[-1]["content"] and "Traceback" in fix.messages[-1]["content"]
    never = fix_request(
        lib,
        genome,
        "v1",
        key,
        "exit 1",
        "Traceback",
        random.Random(0),
        temperature_range=(0.1, 0.1),
    )
    assert (never.edit, never.prompt_name) == ("whole", "fix")
    elite = parse_genome({"model.py": MODEL.replace("scale = 2", "scale = 3")}, ["model.py"])
    reason = eot_reason_request(
        lib,
        elite,
        "e",
        {"score": 1.0},
        genome,
        {"score": 0.5},
        random.Random(0),
        temperature_range=(0.1, 0.1),
    )
    assert reason is not None
    apply = eot_apply_request(
        lib,
        reason,
        "Scaling helped.",
        genome,
        "p",
        random.Random(0),
        temperature_range=(0.1, 0.1),
        edit_mode="always",
    )
    assert apply.edit == "diff" and SEARCH in apply.messages[-1]["content"]


# --------------------------------------------------------------------------- replies


def test_a_diff_reply_becomes_the_child_with_only_those_lines_changed(
    lib: PromptLibrary, genome: Genome
) -> None:
    req = mutate(lib, genome, "always")
    text = blocks(
        ("def fit(xs, ys, steps=200, lr=0.05):\n", "def fit(xs, ys, steps=300, lr=0.05):\n"),
        ("  weights = [w + lr for w in weights]\n", "  weights = [w + 2 * lr for w in weights]\n"),
    )
    made: Child = child_from_reply(req, genome, text)
    expected = MODEL.replace("steps=200", "steps=300").replace("w + lr", "w + 2 * lr")
    assert made.files == {"model.py": expected}  # the 2nd block matched ignoring indentation
    assert made.segment == req.segment and made.parents == ("parent",)
    assert "2 edit blocks, 1 matched ignoring whitespace" in made.description


def test_search_text_that_cannot_be_applied_is_a_named_rejection(
    lib: PromptLibrary, genome: Genome
) -> None:
    req = mutate(lib, genome, "always")
    missing = blocks(
        ("    return weights\n", "    return weights\n"), ("    steps = 5\n", "    steps = 6\n")
    )
    assert rejection(req, genome, missing) == f"{REASON_NOT_FOUND} (block 2)"
    header = blocks(("import math\n", "import cmath\n"))
    assert rejection(req, genome, header) == f"{REASON_OUTSIDE} (block 1)"
    ambiguous = blocks(("steps\n", "n\n"))  # not a whole line: not found
    assert rejection(req, genome, ambiguous).startswith(REASON_NOT_FOUND)
    twice = parse_genome(
        {
            "model.py": MODEL.replace(
                "    return weights", "    x = 1\n    x = 1\n    return weights"
            )
        },
        ["model.py"],
    )
    req2 = mutate(lib, twice, "always")
    assert (
        rejection(req2, twice, blocks(("    x = 1\n", "    x = 2\n")))
        == f"{REASON_AMBIGUOUS} (block 1)"
    )
    assert rejection(req, genome, "Sorry, no idea.") == REASON_NO_BLOCKS


def test_a_whole_segment_sent_instead_of_blocks_is_still_a_child(
    lib: PromptLibrary, genome: Genome
) -> None:
    req = mutate(lib, genome, "always")
    seg = genome.segment(req.segment)
    new = seg.code.replace("steps=200", "steps=250")
    made = child_from_reply(req, genome, f"Here it is:\n\n```python\n{new}```\n")
    assert made.files["model.py"] == MODEL.replace("steps=200", "steps=250")
    assert "edit block" not in made.description


# --------------------------------------------------------------------------- a real run

_FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.S)


class DiffWriter:
    """A fake LLM that answers every code request with one SEARCH/REPLACE block built from the
    prompt's segment (its first integer raised, else a comment added to its last line)."""

    def __init__(self) -> None:
        self.n = 0
        self.asked_for_blocks: list[bool] = []

    def __call__(self, request: dict[str, Any]) -> Action:
        user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
        self.n += 1
        if "Do not write any code" in user:
            return reply("Smaller steps helped.")
        self.asked_for_blocks.append(SEARCH in user)
        code = _FENCE.findall(user)[0]
        new = bump_first_integer(code, self.n)
        if new == code:
            new = code.rstrip("\n") + f"  # revision {self.n}\n"
        return reply(f"One change:\n\n{edit_block(code, new).render()}\n", 900, 60)


def test_a_run_with_edit_mode_always_evolves_through_diffs(tmp_path: Path) -> None:
    seed = template_seed(
        tmp_path / "seed", generations=1, crossover_probability=0.0, edit_mode="always"
    )
    writer = DiffWriter()
    with serve(responder=writer) as server:
        summary = here_json(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            "openai/diff",
            "--api-base",
            server.base_url,
            cwd=tmp_path,
        )
    assert summary["finished"] and summary["children"] >= 6, summary
    assert writer.asked_for_blocks and all(writer.asked_for_blocks)
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        variants = index.variants()
        reasons = [str(e.data.get("reason", "")) for e in index.events("proposal_rejected")]
    finally:
        index.close()
    assert not any(r.startswith("diff:") for r in reasons), reasons
    commits = {v.id: v.commit_sha for v in variants}
    made = [v for v in variants if v.operator != "seed" and v.commit_sha]
    with GitStore.open(tmp_path / "run" / "repo.git") as store:

        def genome_of(sha: str) -> Genome:
            return parse_genome(
                {"model.py": store.read_files(sha)["model.py"].decode()}, ["model.py"]
            )

        for v in made:  # one commit per child, the requested segment changed, the mode recorded
            assert differing_segments(
                genome_of(commits[v.parents[0]]), genome_of(v.commit_sha)
            ) == [v.segment]
            message = store.commit_message(v.commit_sha)
            assert "[1 edit block]" in message and "Ge-" in message, message


def test_a_bad_edit_mode_is_one_line_from_ge_run(tmp_path: Path) -> None:
    for key, value, words in (
        ("edit_mode", "sometimes", ("diff.mode", "never", "always", "auto")),
        ("diff_min_chars", -1, ("diff.min_chars",)),
    ):
        seed = template_seed(tmp_path / f"seed-{key}", **{key: value})
        proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / f"run-{key}"), cwd=tmp_path)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and lines[0].startswith("error: ")
        assert all(w in lines[0] for w in words), lines[0]
        assert not (tmp_path / f"run-{key}").exists()
