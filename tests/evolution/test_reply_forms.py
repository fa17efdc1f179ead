"""Replies in the forms real models write (recorded in tests/data/replies/) become the child a
user expects: a whole-file echo gives its changed segment, an example block never replaces it."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.evolution.codeblock import extract_code
from guided_evolution.evolution.operators import (
    Child,
    Rejected,
    child_from_reply,
    fence,
    mutation_request,
)
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import (
    CONTEXT_PLACEHOLDER,
    Genome,
    differing_segments,
    kept_names,
    parse_genome,
)
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.openai_server import Action, reply, serve
from tests.support.seeds import bump_first_integer, template_seed

REPLIES = Path(__file__).resolve().parents[1] / "data" / "replies"
SEEDS = Path(__file__).resolve().parents[2] / "seeds"
TINY_SGD = "    return torch.optim.SGD(params, lr=0.05, momentum=0.9)\n"
EXQ_SGD = (
    "    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)\n"
)


def seed_genome(name: str) -> Genome:
    """A seed of the repository as the engine parses it (kept names from evaluate.py)."""
    files = {p.name: p.read_text() for p in sorted((SEEDS / name).glob("*.py"))}
    return parse_genome(files, ["model.py"], kept=kept_names(files, ["model.py"]))


def recorded(name: str) -> str:
    """A recorded reply, byte for byte (CRLF kept)."""
    return (REPLIES / name).read_bytes().decode("utf-8")


@pytest.fixture(scope="module")
def lib() -> PromptLibrary:
    return PromptLibrary.load()


def child(lib: PromptLibrary, g: Genome, segment: str, text: str) -> Child:
    """The child of a mutation of the segment named `segment` whose reply is `text`."""
    key = next(s.key for s in g.segments if s.name == segment)
    req = mutation_request(
        lib,
        g,
        "parent",
        random.Random(0),
        temperature_range=(0.5, 0.5),
        personas=["expert"],
        segment_key=key,
    )
    return child_from_reply(req, g, text)


def rejection(lib: PromptLibrary, g: Genome, segment: str, text: str) -> str:
    with pytest.raises(Rejected) as info:
        child(lib, g, segment, text)
    assert info.value.reason and "\n" not in info.value.reason
    return info.value.reason


def model(g: Genome, *edits: tuple[str, str]) -> str:
    """The parent's model.py with each (old, new) text replaced exactly once."""
    text = g.files["model.py"]
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


# --------------------------------------------------------------------------- whole-file replies


def test_whole_file_echo_with_markers_gives_the_changed_segment_only(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    text = recorded("tiny_cnn_whole_file_markers.txt")
    made = child(lib, g, "get_optimizer", text)
    new = "    return torch.optim.AdamW(params, lr=0.003, weight_decay=1e-4)\n"
    # the reply's blank lines, trailing blanks and dropped NOTE do not reach the child
    assert made.files["model.py"] == model(g, (TINY_SGD, new))
    assert made.files["evaluate.py"] == g.files["evaluate.py"]


def test_whole_file_without_markers_keeps_the_header_as_it_was(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    made = child(lib, g, "ConvBlock", recorded("tiny_cnn_whole_file_no_markers.txt"))
    assert made.files["model.py"] == model(
        g, ("kernel_size=3, padding=1", "kernel_size=5, padding=2")
    )


def test_whole_file_with_crlf_line_endings(lib: PromptLibrary) -> None:
    g = seed_genome("exquisitenet_v2")
    text = recorded("exquisitenet_whole_file_crlf.txt")
    assert "\r\n" in text  # the recording really has CRLF line endings
    made = child(lib, g, "DW", text)
    assert made.files["model.py"] == model(
        g, ("return F.hardswish(self.dw(x))", "return F.silu(self.dw(x))")
    )


def test_changed_imports_of_the_frozen_header_do_not_leak(lib: PromptLibrary) -> None:
    g = seed_genome("exquisitenet_v2")
    made = child(lib, g, "get_optimizer", recorded("exquisitenet_header_changed.txt"))
    new = EXQ_SGD.replace("lr=0.1", "lr=0.08").replace("1e-4", "5e-5")
    assert made.files["model.py"] == model(g, (EXQ_SGD, new))
    assert "import math" not in made.files["model.py"]


def test_several_segments_changed_gives_the_requested_one(lib: PromptLibrary) -> None:
    g = seed_genome("exquisitenet_v2")
    made = child(lib, g, "DFSEBV2", recorded("exquisitenet_several_segments.txt"))
    expected = model(g, ("self.dw2(F.hardswish(self.bn2", "self.dw2(F.silu(self.bn2"))
    # the change to SE_LN is not taken; DFSEBV2 keeps its NOTE (splice re-attaches it after its
    # anchor line, so only the blank line around it may move)
    got = parse_genome(made.files, ["model.py"])
    want = parse_genome({**g.files, "model.py": expected}, ["model.py"])
    assert [(s.code, s.notes) for s in got.segments] == [(s.code, s.notes) for s in want.segments]
    assert "eps=1e-3" not in made.files["model.py"]


def test_two_segments_without_markers_give_the_requested_one(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    made = child(lib, g, "Net", recorded("tiny_cnn_two_segments_no_markers.txt"))
    assert made.files["model.py"] == model(g, ("x = x.mean(dim=(2, 3))", "x = x.amax(dim=(2, 3))"))


def test_only_another_segment_changed_is_rejected_with_its_name(lib: PromptLibrary) -> None:
    g = seed_genome("exquisitenet_v2")
    reason = rejection(lib, g, "FCT", recorded("exquisitenet_other_segment_changed.txt"))
    assert (
        reason
        == "the reply changes EVE (model.py#5) but not the requested segment FCT (model.py#4)"
    )


def test_only_the_header_changed_is_rejected(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    echo = g.files["model.py"].replace("import torch\n", "import torch\nimport math\n")
    reason = rejection(lib, g, "Net", f"Here:\n{fence(echo)}\n")
    assert reason == "the reply changes only code outside the segments, not Net (model.py#2)"


def test_an_unchanged_echo_of_the_file_leaves_the_segment_unchanged(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    reason = rejection(lib, g, "ConvBlock", f"It is fine as it is:\n{fence(g.files['model.py'])}")
    assert reason == "the reply leaves the segment unchanged"


def test_a_draft_in_the_reasoning_is_ignored_and_the_echo_after_it_used(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    made = child(lib, g, "ConvBlock", recorded("tiny_cnn_think_whole_file.txt"))
    assert made.files["model.py"] == model(g, ("padding=1)", "padding=1, bias=False)"))


# --------------------------------------------------------------------------- several blocks


def test_a_larger_example_usage_block_never_replaces_the_segment(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    text = recorded("tiny_cnn_example_usage.txt")
    assert "from model import" in extract_code(text)  # the largest block is the example
    made = child(lib, g, "get_optimizer", text)
    new = "    return torch.optim.Adam(params, lr=0.002, betas=(0.9, 0.99))\n"
    assert made.files["model.py"] == model(g, (TINY_SGD, new))


def test_a_test_block_after_the_segment_is_not_taken(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    made = child(lib, g, "Net", recorded("tiny_cnn_segment_and_test.txt"))
    assert made.files["model.py"] == model(
        g,
        ("ConvBlock(1, 8)", "ConvBlock(1, 16)"),
        ("ConvBlock(8, 16)", "ConvBlock(16, 32)"),
        ("nn.Linear(16, num_classes)", "nn.Linear(32, num_classes)"),
    )  # the segment's NOTE stays, no test function arrives
    assert "def test_" not in made.files["model.py"]


def test_a_bash_block_after_the_segment_is_not_taken(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    made = child(lib, g, "get_optimizer", recorded("tiny_cnn_python_then_bash.txt"))
    new = "    return torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True)\n"
    assert made.files["model.py"] == model(g, (TINY_SGD, new))


def test_an_example_alone_that_drops_a_kept_name_is_rejected(lib: PromptLibrary) -> None:
    g = seed_genome("tiny_cnn")
    reason = rejection(lib, g, "get_optimizer", recorded("tiny_cnn_example_only.txt"))
    assert reason == (
        "the reply's code imports get_optimizer instead of defining it (an example or a test, "
        "not the segment); evaluate.py uses it"
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("tiny_cnn_diff.txt", "the reply is a diff, not the complete new code of the segment"),
        ("tiny_cnn_prose_only.txt", "no code block"),
    ],
)
def test_replies_without_the_new_segment_have_named_reasons(
    lib: PromptLibrary, name: str, reason: str
) -> None:
    assert rejection(lib, seed_genome("tiny_cnn"), "get_optimizer", recorded(name)) == reason


# --------------------------------------------------------------------------- a real run


_FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.S)


class WholeFileEcho:
    """A fake LLM that answers with the whole file, markers and all, one segment changed (and an
    import added to the frozen header, which must not reach the child)."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, request: dict[str, Any]) -> Action:
        user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
        self.n += 1
        if "Do not write any code" in user:
            return reply("Smaller steps helped.")
        blocks = _FENCE.findall(user)
        context = next((b for b in blocks if CONTEXT_PLACEHOLDER in b), None)
        if not blocks or context is None:
            return reply("I cannot help with that.")
        code = bump_first_integer(blocks[0], self.n).rstrip("\n") + f"\n# revision {self.n}"
        lines = [code if x.strip() == CONTEXT_PLACEHOLDER else x for x in context.split("\n")]
        whole = "import os\n" + "\n".join(lines).rstrip("\n")
        return reply(f"Here is the complete updated file:\n\n```python\n{whole}\n```\n")


def test_a_run_whose_model_echoes_the_whole_file_makes_children(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1, crossover_probability=0.0)
    with serve(responder=WholeFileEcho()) as server:
        summary = here_json(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            "openai/echo",
            "--api-base",
            server.base_url,
            cwd=tmp_path,
        )
    assert summary["finished"]
    assert summary["children"] >= 4, summary  # before whole-file replies were matched: none
    made = [v for v in index_variants(tmp_path / "run") if v.operator != "seed" and v.commit_sha]
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        reasons = [str(e.data.get("reason", "")) for e in index.events("proposal_rejected")]
    finally:
        index.close()
    assert not any("marker" in r for r in reasons), reasons
    commits = {v.id: v.commit_sha for v in index_variants(tmp_path / "run")}
    with GitStore.open(tmp_path / "run" / "repo.git") as store:

        def genome_of(sha: str) -> Genome:
            return parse_genome(
                {"model.py": store.read_files(sha)["model.py"].decode()}, ["model.py"]
            )

        for v in made:
            child_genome, parent = genome_of(v.commit_sha), genome_of(commits[v.parents[0]])
            assert "import os" not in child_genome.files["model.py"]  # the seed's frozen header
            assert differing_segments(parent, child_genome) == [v.segment]


def index_variants(run_dir: Path) -> list[Any]:
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        return index.variants()
    finally:
        index.close()
