"""Replies in the forms real models write (recorded in tests/data/replies/) become the child a
user expects: a whole-file echo gives its changed segment, an example block never replaces it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from guided_evolution.evolution.segments import CONTEXT_PLACEHOLDER
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import run_json
from tests.support.openai_server import Action, reply, serve
from tests.support.seeds import bump_first_integer, template_seed

_FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.S)


class WholeFileEcho:
    """A fake LLM that answers with the whole file, markers and all, one segment changed."""

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
        lines = [
            code if line.strip() == CONTEXT_PLACEHOLDER else line for line in context.split("\n")
        ]
        whole = "\n".join(lines).rstrip("\n")
        return reply(f"Here is the complete updated file:\n\n```python\n{whole}\n```\n")


def test_a_run_whose_model_echoes_the_whole_file_makes_children(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1, crossover_probability=0.0)
    with serve(responder=WholeFileEcho()) as server:
        summary = run_json(
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
    assert summary["children"] >= 4, summary
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        made = [v for v in index.variants() if v.operator != "seed"]
    finally:
        index.close()
    assert made and all(v.operator in ("mutation", "crossover", "eot", "fix") for v in made)
