"""Every piece of config text a user may copy parses (issue 26 item 4): the ```toml blocks of the
README and docs/, and `ge init`'s template with any of its commented-out tables or keys
uncommented (adding the template's own `[[llm.models]]` once gave a TOML error, because the
template also set `models`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib

from guided_evolution.config import GeConfig, load_config, parse_config

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "guided_evolution" / "templates" / "ge.toml"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BASE = {"objectives": [{"name": "acc", "direction": "max"}], "evaluator": {"command": "python e.py"}}
# a commented-out table header or `key = value` line (not prose: "#   text" is indented)
_COMMENTED = re.compile(r"^# (\[\[?[\w.]+\]\]?\s*(#.*)?|\w+ = \S.*)$")


def _toml_blocks() -> list[tuple[str, str]]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for k, block in enumerate(re.findall(r"^```toml\n(.*?)^```", text, re.S | re.M)):
            out.append((f"{path.name}#{k}", block))
    return out


def _merged(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


@pytest.mark.parametrize(("where", "block"), _toml_blocks(), ids=lambda v: v if "#" in v else "")
def test_every_toml_block_of_the_docs_is_a_valid_config(where: str, block: str) -> None:
    data = tomllib.loads(block)
    whole = "objectives" in data and "evaluator" in data
    assert isinstance(parse_config(data if whole else _merged(BASE, data), where), GeConfig)


def test_the_docs_have_toml_blocks_to_check() -> None:
    assert _toml_blocks(), "no ```toml block found: the extraction broke"


def _commented_runs(lines: list[str]) -> list[tuple[int, int]]:
    """(first, last) line numbers of each run of commented-out config lines (prose between the
    lines of a run, e.g. a continued comment, stays commented)."""
    runs: list[tuple[int, int]] = []
    for i, line in enumerate(lines):
        if not _COMMENTED.match(line):
            continue
        if runs and all(lines[j].startswith("#") for j in range(runs[-1][1] + 1, i)):
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _runs() -> list[tuple[int, int]]:
    return _commented_runs(TEMPLATE.read_text(encoding="utf-8").splitlines())


@pytest.mark.parametrize("run", _runs(), ids=lambda r: f"line{r[0] + 1}")
def test_each_commented_part_of_the_template_works_uncommented(
    run: tuple[int, int], tmp_path: Path
) -> None:
    lines = TEMPLATE.read_text(encoding="utf-8").splitlines()
    first, last = run
    for i in range(first, last + 1):
        if _COMMENTED.match(lines[i]):
            lines[i] = lines[i][2:]
    path = tmp_path / "ge.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    profile = re.match(r"\[profile\.(\w+)\.", lines[first])
    cfg = load_config(path, profile=profile[1] if profile else None)
    if "[[llm.models]]" in lines[first]:
        assert [(m.model, m.weight) for m in cfg.llm.models] == [
            ("gpt-4o-mini", 3.0),
            ("ollama/qwen2.5-coder", 1.0),
        ]
        assert cfg.llm.models[1].api_base == "http://localhost:11434"


def test_the_template_has_the_models_tables_and_runs_offline_as_written() -> None:
    runs = [TEMPLATE.read_text().splitlines()[r[0]] for r in _runs()]
    assert any(line.startswith("# [[llm.models]]") for line in runs)
    assert load_config(TEMPLATE).llm.offline


def test_the_readmes_models_tables_added_to_the_template_load(tmp_path: Path) -> None:
    blocks = [b for _, b in _toml_blocks() if "[[llm.models]]" in b]
    assert blocks, "the README shows no [[llm.models]] table"
    for block in blocks:
        path = tmp_path / "ge.toml"
        path.write_text(TEMPLATE.read_text(encoding="utf-8") + "\n" + block, encoding="utf-8")
        expected = [m["model"] for m in tomllib.loads(block)["llm"]["models"]]
        assert [m.model for m in load_config(path).llm.models] == expected
