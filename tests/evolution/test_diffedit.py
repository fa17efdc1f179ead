"""Diff edits: SEARCH/REPLACE replies applied to real seed segments, exactly or tolerantly,
rejected with a named reason otherwise; the diff prompts render and teach the parsed syntax."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from guided_evolution.evolution import diffedit
from guided_evolution.evolution.diffedit import (
    DiffBlock,
    DiffError,
    apply_diff,
    edit_block,
    parse_blocks,
    wants_diff,
)
from guided_evolution.evolution.operators import fence, file_context
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome, Segment, context_view, parse_genome
from guided_evolution.evolution.splice import splice

SEEDS = Path(__file__).resolve().parents[2] / "seeds"


def seed_genome(name: str) -> Genome:
    text = (SEEDS / name / "model.py").read_text(encoding="utf-8")
    return parse_genome({"model.py": text}, ["model.py"])


def largest(genome: Genome) -> Segment:
    return max(genome.segments, key=lambda s: len(s.code))


@pytest.fixture(scope="module")
def net() -> Segment:
    """ExquisiteNetV2's largest segment: the network class (26 lines)."""
    seg = largest(seed_genome("exquisitenet_v2"))
    assert seg.name == "ExquisiteNetV2"
    return seg


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


# --------------------------------------------------------------------------- applied exactly


def test_several_fenced_blocks_with_prose_are_applied_in_order(net: Segment) -> None:
    reply = (
        "I widen the last stage and use a lighter dropout.\n\n```python\n"
        + block(
            "        self.ME5 = ME(192, 384)\n",
            "        self.ME5 = ME(192, 512)\n",
        )
        + "```\n\nThe following layers must agree with the new width:\n\n```\n"
        + block(
            "        self.DFSEB5 = DFSEBV2(384, 3, True)\n        self.DW = DW(384, 3)\n",
            "        self.DFSEB5 = DFSEBV2(512, 3, True)\n        self.DW = DW(512, 3)\n",
        )
        + block(
            "        self.drop = nn.Dropout(0.5)\n        self.fc = nn.Linear(384, class_num)\n",
            "        self.drop = nn.Dropout(0.3)\n        self.fc = nn.Linear(512, class_num)\n",
        )
        + "```\nThat is all."
    )
    result = apply_diff(reply, net.code)
    expected = (
        net.code.replace("ME(192, 384)", "ME(192, 512)")
        .replace("DFSEBV2(384", "DFSEBV2(512")
        .replace("DW(384", "DW(512")
        .replace("Dropout(0.5)", "Dropout(0.3)")
        .replace("Linear(384", "Linear(512")
    )
    assert result.code == expected
    assert (result.blocks, result.tolerant) == (3, ())


def test_crlf_reply_without_final_newline(net: Segment) -> None:
    reply = block("        x = self.DW(x)\n", "        x = F.relu(self.DW(x))\n").rstrip("\n")
    result = apply_diff(reply.replace("\n", "\r\n"), net.code)
    assert result.code == net.code.replace("x = self.DW(x)", "x = F.relu(self.DW(x))")
    assert result.code.endswith("\n") and "\r" not in result.code


def test_sections_fenced_inside_the_block_lose_their_fences(net: Segment) -> None:
    reply = (
        "<<<<<<< SEARCH\n```python\n        self.drop = nn.Dropout(0.5)\n```\n=======\n"
        "```python\n        self.drop = nn.Dropout(0.25)\n```\n>>>>>>> REPLACE\n"
    )
    assert apply_diff(reply, net.code).code == net.code.replace("0.5", "0.25")


def test_deletion_and_insertion_blocks(net: Segment) -> None:
    reply = block("        self.drop = nn.Dropout(0.5)\n", "") + block(
        "        return self.fc(self.drop(x))\n",
        "        x = x * 2.0\n        return self.fc(x)\n",
    )
    code = apply_diff(reply, net.code).code
    assert "Dropout" not in code and code.endswith(
        "        x = x * 2.0\n        return self.fc(x)\n"
    )


def test_later_blocks_see_earlier_edits(net: Segment) -> None:
    reply = block("        x = self.DW(x)\n", "        x = self.DW(x)\n        x = self.DW2(x)\n")
    reply += block("        x = self.DW2(x)\n", "        x = self.DW2(x) + x\n")
    assert "        x = self.DW2(x) + x\n" in apply_diff(reply, net.code).code


def test_reasoning_drafts_are_not_applied(net: Segment) -> None:
    draft = block("        x = self.DW(x)\n", "        x = DRAFT(x)\n")
    final = block("        x = self.DW(x)\n", "        x = FINAL(x)\n")
    code = apply_diff(f"<think>\n{draft}</think>\n{final}", net.code).code
    assert "FINAL" in code and "DRAFT" not in code


# --------------------------------------------------------------------------- tolerant fallback


def test_indentation_drift_is_found_and_the_replacement_reindented(net: Segment) -> None:
    reply = block(  # the model dropped the method body's indentation and left trailing spaces
        "x = self.DW(x)   \nx = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)\n",
        "x = self.DW(x)\nif self.training:\n    x = x + 0.01 * torch.randn_like(x)\n"
        "x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)\n",
    )
    result = apply_diff(reply, net.code)
    assert result.tolerant == (1,)
    assert (
        "        x = self.DW(x)\n        if self.training:\n"
        "            x = x + 0.01 * torch.randn_like(x)\n"
        "        x = torch.flatten(" in result.code
    )
    files = splice(seed_genome("exquisitenet_v2"), "model.py#8", result.code)
    assert "x + 0.01 * torch.randn_like(x)" in files["model.py"]


def test_over_indented_search_and_blank_edges(tmp_path: Path) -> None:
    genome = seed_genome("tiny_cnn")
    seg = genome.segment("model.py#1")  # ConvBlock
    reply = block(
        "\n            self.bn = nn.BatchNorm2d(c_out)\n\n",
        "\n            self.bn = nn.GroupNorm(4, c_out)\n\n",
    )
    result = apply_diff(reply, seg.code)
    assert result.tolerant == (1,)
    assert result.code == seg.code.replace("nn.BatchNorm2d(c_out)", "nn.GroupNorm(4, c_out)")


# --------------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("reply", "reason", "number"),
    [
        ("I would lower the dropout to 0.3.", diffedit.REASON_NO_BLOCKS, None),
        ("```python\nclass ExquisiteNetV2: ...\n```", diffedit.REASON_NO_BLOCKS, None),
        (block("        self.fc = nn.Linear(999, class_num)\n", "x\n"), "not found", 1),
        (block("\n   \n", "        pass\n"), diffedit.REASON_EMPTY_SEARCH, 1),
        (block("# --OPTION--\nclass ExquisiteNetV2(nn.Module):\n", "x\n"), "outside", 1),
        (block("    # -- NOTE --\n", "\n"), diffedit.REASON_OUTSIDE, 1),
        (block("        x = self.DW(x)\n", "y\n") + "<<<<<<< SEARCH\n        x\n", "truncated", 2),
        ("<<<<<<< SEARCH\n        x = self.DW(x)\n>>>>>>> REPLACE\n", "malformed", 1),
        ("=======\nx\n>>>>>>> REPLACE\n", diffedit.REASON_MALFORMED, 1),
        (block("        x = self.DW(x)\n", "a\n=======\nb\n"), "malformed", 1),
        ("<think>\n" + block("        x = self.DW(x)\n", "y\n"), diffedit.REASON_UNFINISHED, None),
    ],
)
def test_bad_replies_are_rejected_with_a_named_reason(
    net: Segment, reply: str, reason: str, number: int | None
) -> None:
    with pytest.raises(DiffError) as info:
        apply_diff(reply, net.code)
    assert reason in info.value.reason and info.value.reason.startswith("diff: ")
    assert info.value.block == number
    assert "\n" not in str(info.value)


def test_ambiguous_search_after_an_earlier_block(net: Segment) -> None:
    reply = block("        x = self.DW(x)\n", "        x = self.DW(x)\n        x = self.DW(x)\n")
    reply += block("        x = self.DW(x)\n", "        x = self.DW(x) * 0.5\n")
    with pytest.raises(DiffError) as info:
        apply_diff(reply, net.code)
    assert (info.value.reason, info.value.block) == (diffedit.REASON_AMBIGUOUS, 2)
    assert "2 places" in info.value.detail


def test_tolerant_ambiguity_is_rejected_too() -> None:
    code = "def f(a):\n    if a:\n        return a\n    return a\n"
    with pytest.raises(DiffError, match="several times") as info:
        apply_diff(block("return a\n", "return -a\n"), code)
    assert info.value.block == 1


def test_search_in_the_frozen_rest_of_the_file_is_outside(net: Segment) -> None:
    genome = seed_genome("exquisitenet_v2")
    outside = context_view(genome, "model.py#8")
    reply = block("class DW(nn.Module):\n", "class DW(nn.Module):  # changed\n")
    with pytest.raises(DiffError) as info:
        apply_diff(reply, net.code, outside=outside)
    assert info.value.reason == diffedit.REASON_OUTSIDE
    with pytest.raises(DiffError) as info:  # without the context it is simply not found
        apply_diff(reply, net.code)
    assert info.value.reason == diffedit.REASON_NOT_FOUND


def test_editing_a_note_line_is_outside(net: Segment) -> None:
    """The notes are shown to the model but kept out of the segment's code: they are frozen."""
    note = next(line for line in net.notes.splitlines() if "ceil_mode pooling" in line)
    with pytest.raises(DiffError) as info:
        apply_diff(block(note + "\n", "\n"), net.code, outside=net.notes)
    assert (info.value.reason, info.value.block) == (diffedit.REASON_OUTSIDE, 1)


# --------------------------------------------------------------------------- generated blocks


@pytest.mark.parametrize(("seed_name", "trials"), [("exquisitenet_v2", 300), ("tiny_cnn", 300)])
def test_random_edits_round_trip_through_a_generated_block(seed_name: str, trials: int) -> None:
    """Replace a random line range of a real segment by random lines (some copied from the
    segment, so searches must grow to stay unique): the generated block, rendered in a randomly
    dressed reply, gives back exactly the edited text."""
    rng = random.Random(17)
    segments = seed_genome(seed_name).segments
    words = ["x", "= self.conv(x)", "return x", "pass", "y = 2", "# note", ")", ""]
    for _ in range(trials):
        old = rng.choice(segments).code
        lines = old.splitlines(keepends=True)
        i = rng.randrange(len(lines))
        j = rng.randrange(i, min(len(lines), i + 4) + 1)
        new_lines = [
            rng.choice(lines) if rng.random() < 0.4 else " " * rng.choice((0, 4, 8)) + w + "\n"
            for w in rng.choices(words, k=rng.randrange(0, 4))
        ]
        new = "".join(lines[:i] + new_lines + lines[j:])
        if new == old:
            continue
        reply = edit_block(old, new, context=rng.randrange(3)).render()
        if rng.random() < 0.5:
            reply = f"Here is the edit.\n```python\n{reply}```\nDone."
        if rng.random() < 0.3:
            reply = reply.replace("\n", "\r\n")
        result = apply_diff(reply, old)
        assert result.code == new and result.tolerant == (), (old, new, reply)


def test_edit_block_is_minimal_and_unique(net: Segment) -> None:
    new = net.code.replace("nn.Dropout(0.5)", "nn.Dropout(0.2)")
    assert edit_block(net.code, new) == DiffBlock(
        "        self.drop = nn.Dropout(0.5)\n", "        self.drop = nn.Dropout(0.2)\n"
    )
    with pytest.raises(ValueError):
        edit_block(net.code, net.code)


# --------------------------------------------------------------------------- mode and prompts


def test_wants_diff_by_mode_and_size(net: Segment) -> None:
    assert not wants_diff(net.code, "never", 0)
    assert wants_diff("x = 1\n", "always", 10_000)
    assert wants_diff(net.code, "auto", len(net.code))
    assert not wants_diff(net.code, "auto", len(net.code) + 1)
    with pytest.raises(ValueError, match="sometimes"):
        wants_diff(net.code, "sometimes", 0)


def segment_values(genome: Genome, seg: Segment) -> dict[str, str]:
    return {
        "segment": seg.name,
        "key": seg.key,
        "file": seg.file,
        "code": fence(seg.code),
        "notes": seg.notes or "(none)",
        "context": fence(file_context(genome, seg)),
        "failure_reason": fence("RuntimeError: shape mismatch", "text"),
        "output_tail": fence("Traceback ...", "text"),
        "feedback": "",  # the evaluator's feedback block: empty when there is none
    }


@pytest.mark.parametrize("name", ["mutation_diff", "fix_diff"])
def test_diff_prompts_teach_the_syntax_the_parser_reads(name: str) -> None:
    lib = PromptLibrary.load()
    genome = seed_genome("exquisitenet_v2")
    seg = largest(genome)
    values = segment_values(genome, seg)
    messages = lib.render(name, **{k: values[k] for k in lib.placeholders(name)})
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[-1]["content"]
    assert seg.code.strip() in user and "{{" not in user
    assert "Return the complete new segment" not in user
    example = re.search(r"^<<<<<<< SEARCH\n.*?^>>>>>>> REPLACE$", user, re.M | re.S)
    assert example is not None
    [parsed] = parse_blocks(example.group(0))
    assert parsed.search.strip() and parsed.replace.strip()
