"""docs/api.md's walk-through and README's "Use ge from Python" are executed as written: every
```python block of them, in order, in one namespace, in an empty directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _section(text: str, heading: str) -> str:
    """The text under ``heading`` down to the next heading of its level or above."""
    level = heading.split()[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) :]
    ends = [m.start() for m in re.finditer(rf"^#{{1,{len(level)}}} ", rest, re.MULTILINE)]
    return rest[: ends[0]] if ends else rest


def _execute(text: str, where: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    blocks = _BLOCK.findall(text)
    assert blocks, "no ```python block"
    monkeypatch.chdir(where)
    namespace: dict[str, Any] = {"__name__": "walkthrough"}
    for number, block in enumerate(blocks, 1):
        exec(compile(block, f"block {number}", "exec"), namespace)  # the docs' own code
    return namespace


def test_the_walk_through_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _section((ROOT / "docs" / "api.md").read_text(encoding="utf-8"), "## A walk-through")
    ns = _execute(text, tmp_path, monkeypatch)
    assert ns["summary"].finished and ns["status"].run_state.state == "finished"
    assert ns["best"].id == ns["run"].front()[0].id
    assert "stopped by `ge stop`" in ns["long"].summary.stop_reason
    assert ns["resumed"].summary.generation == ns["done"] + 1
    top = ns["top"]
    assert (tmp_path / "best_model" / "model.py").read_bytes() == ns["winner"].variant(top.id).files()["model.py"]
    assert (tmp_path / "best.patch").read_text().startswith("diff --git")


def test_the_readme_section_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = _section((ROOT / "README.md").read_text(encoding="utf-8"), "### Use ge from Python")
    ns = _execute(text, tmp_path, monkeypatch)
    assert ns["run"].status.run_state.state == "finished"
    assert (tmp_path / "best" / "model.py").exists()
