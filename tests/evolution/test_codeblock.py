"""Extracting the code block from an LLM reply."""

from __future__ import annotations

import pytest

from guided_evolution.evolution.codeblock import (
    ExtractionError,
    best_blocks,
    code_blocks,
    extract_code,
)

CODE = "def f(x):\n    return x + 1\n"


@pytest.mark.parametrize(
    "reply",
    [
        f"```python\n{CODE}```",
        f"Here is the improved segment:\n\n```python\n{CODE}```\n\nIt adds one.",
        f"```\n{CODE}```",
        f"```py\n{CODE}```",
        f"```python3\n{CODE}```",
        f"```Python title=model.py\n{CODE}```",
        f"~~~python\n{CODE}~~~",
        f"~~~\n{CODE}~~~\n",
        f"```python\r\n{CODE.replace(chr(10), chr(13) + chr(10))}```\r\n",
        f"Sure!\n```python\n{CODE}",  # truncated, but what is there parses
        f"1. the code:\n   ```python\n   {CODE.replace(chr(10), chr(10) + '   ')}```",
        f"````python\n{CODE}````",
    ],
    ids=[
        "plain",
        "prose-around",
        "no-tag",
        "py",
        "python3",
        "tag-with-extras",
        "tilde",
        "tilde-no-tag",
        "crlf",
        "truncated-but-parses",
        "indented-fence",
        "long-fence",
    ],
)
def test_extracts_the_block(reply: str) -> None:
    assert extract_code(reply) == CODE


def test_takes_the_largest_python_block() -> None:
    small = "x = 1\n"
    reply = f"First:\n```python\n{small}```\nThen the whole thing:\n```python\n{CODE}```\n"
    assert extract_code(reply) == CODE
    reply = f"```python\n{CODE}```\nand a tiny one\n```python\n{small}```"
    assert extract_code(reply) == CODE


def test_prefers_python_blocks_over_other_languages() -> None:
    shell = "pip install torch torchvision torchaudio && python train.py --epochs 100\n"
    reply = f"```bash\n{shell}```\n```python\n{CODE}```"
    assert extract_code(reply) == CODE


def test_a_block_tagged_otherwise_that_is_python_code_is_accepted() -> None:
    assert extract_code(f"```text\n{CODE}```") == CODE


def test_keeps_indentation_of_a_method_body() -> None:
    method = "    def forward(self, x):\n        return x\n"
    assert extract_code(f"```python\n{method}```") == method


def test_unfenced_code_is_accepted_when_it_looks_like_code() -> None:
    assert extract_code(CODE) == CODE
    assert extract_code("\n\nimport math\nY = math.pi\n\n") == "import math\nY = math.pi\n"


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", "empty reply"),
        ("   \n\t\n", "empty reply"),
        ("I cannot help with that.", "no code block"),
        ("Sure", "no code block"),  # parses as Python but is not code
        ("```bash\nls -la | grep foo\n```", "no code block"),
        ("```python\n```", "empty code block"),
        ("```python\ndef f(:\n    pass\n```", "syntax error at line 1:"),
        ("```python\nx = 1\ny = (2\n```", "syntax error at line 2:"),
        ("Here:\n```python\ndef f(x):\n    return (x +\n", "truncated reply: no closing fence"),
    ],
)
def test_failures_have_named_reasons(reply: str, reason: str) -> None:
    with pytest.raises(ExtractionError) as info:
        extract_code(reply)
    assert info.value.reason.startswith(reason)
    assert "\n" not in info.value.reason


def test_a_valid_smaller_block_wins_over_a_broken_larger_one() -> None:
    broken = "def g(:\n" + "    pass\n" * 10
    reply = f"```python\n{broken}```\n```python\n{CODE}```"
    assert extract_code(reply) == CODE


@pytest.mark.timeout(20)
def test_a_megabyte_reply_is_handled() -> None:
    body = "".join(f"v{i} = {i} * 2\n" for i in range(60_000))
    reply = "Thinking... " * 2_000 + "\n```python\n" + body + "```\n" + "done " * 2_000
    assert len(reply) > 1_000_000
    assert extract_code(reply) == body
    prose = ("word " * 200 + "\n") * 1_000
    with pytest.raises(ExtractionError, match="no code block"):
        extract_code(prose)
    with pytest.raises(ExtractionError):
        extract_code("```" + " " * 1_000_000 + "`")


DRAFT = "```python\n" + "def draft():\n    return 'thinking out loud, a longer draft than the answer'\n" * 3 + "```"
ANSWER = "```python\ndef answer():\n    return 1\n```"


@pytest.mark.parametrize("tag", ["think", "thinking", "reasoning", "THINK"])
def test_code_inside_a_reasoning_block_is_never_the_answer(tag: str) -> None:
    """Reasoning models served by vLLM/Ollama without a reasoning parser put their thoughts,
    drafts included, in <think>...</think> before the answer: the draft must not win."""
    reply = f"<{tag}>\nLet me draft it.\n{DRAFT}\nok.\n</{tag}>\nHere it is:\n{ANSWER}\n"
    assert extract_code(reply) == "def answer():\n    return 1\n"


def test_a_reply_that_ends_inside_its_reasoning_block_says_so() -> None:
    with pytest.raises(ExtractionError) as err:
        extract_code(f"<think>\nStill drafting\n{DRAFT}\n")
    assert "inside its <think> block" in err.value.reason


def test_a_reasoning_block_with_no_answer_after_it_is_no_code_block() -> None:
    with pytest.raises(ExtractionError, match="no code block"):
        extract_code(f"<think>{DRAFT}</think>\nI could not do it.")


def test_think_tags_inside_the_code_are_kept() -> None:
    code = "PROMPT = '<think>x</think>'\n"
    assert extract_code(f"```python\n{code}```") == code


def test_an_orphan_closing_tag_ends_the_reasoning_and_one_inside_code_stays() -> None:
    reply = f"Okay, the template opened the tag.\n{DRAFT}\n</think>\n\n{ANSWER}"
    assert extract_code(reply) == "def answer():\n    return 1\n"
    code = "END = '</think>'\n"
    assert extract_code(f"```python\n{code}```") == code


# --------------------------------------------------------------------------- ranked blocks

UNIFIED_DIFF = (
    "--- a/m.py\n+++ b/m.py\n@@ -1,2 +1,2 @@\n def f(x):\n-    return x + 1\n+    return x + 2\n"
)


@pytest.mark.parametrize(
    "reply",
    [
        "Lower it:\n```diff\n-    return x + 1\n+    return x + 2\n```",
        f"```\n{UNIFIED_DIFF}```",
        UNIFIED_DIFF,
    ],
    ids=["diff-tag", "untagged-unified-diff", "unfenced-diff"],
)
def test_a_diff_is_named_as_such(reply: str) -> None:
    with pytest.raises(ExtractionError) as info:
        extract_code(reply)
    assert info.value.reason == "the reply is a diff, not the complete new code of the segment"


def test_code_blocks_keeps_every_candidate_in_reply_order() -> None:
    reply = f"```python\n{CODE}```\n```bash\nls\n```\n```python\nprint(f(1))\n```"
    assert [b.code for b in code_blocks(reply)] == [CODE, "print(f(1))\n"]


def test_the_highest_ranked_block_wins_over_a_larger_one() -> None:
    usage = "x = f(1)\ny = f(2)\nprint(x, y, x + y)\n"
    blocks = code_blocks(f"```python\n{CODE}```\n```python\n{usage}```")
    assert best_blocks(blocks) == [usage, CODE]
    assert best_blocks(blocks, rank=lambda code: int("def f" in code)) == [CODE]


def test_a_broken_highest_ranked_block_is_reported_not_replaced_by_a_lower_one() -> None:
    blocks = code_blocks("```python\ndef f(x:\n    return x\n```\n```python\nprint(f(1))\n```")
    with pytest.raises(ExtractionError) as info:
        best_blocks(blocks, rank=lambda code: int("def f" in code))
    assert info.value.reason.startswith("syntax error at line 1")
