"""The prompt library: brace-safe rendering, sections, includes, overrides, the built-in set."""

from __future__ import annotations

import inspect
import re
import sys
from pathlib import Path

import pytest

from guided_evolution.errors import GeError
from guided_evolution.evolution.operators import (
    OperatorSpec,
    crossover,
    eot,
    fix,
    mutation,
    offline,
    registry,
    repropose,
)
from guided_evolution.evolution.prompts import PromptLibrary, builtin_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]

KINDS = ("tune", "unusual", "complex", "reduce", "unorthodox", "significant")
PERSONAS = ("concise", "expert", "inventive", "bumbler")
SEGMENT_VALUES = {
    "segment": "features",
    "key": "model.py#0",
    "file": "model.py",
    "code": "```python\ndef features(x):\n    return [x]\n```",
    "notes": "(none)",
    "context": "```python\nimport math\n```",
    "feedback": "",  # no evaluator feedback (prompts/feedback.txt)
}


def _lib(tmp_path: Path, files: dict[str, str]) -> PromptLibrary:
    seed_prompts = tmp_path / "prompts"
    seed_prompts.mkdir(exist_ok=True)
    for name, text in files.items():
        (seed_prompts / f"{name}.txt").write_text(text, encoding="utf-8")
    return PromptLibrary.load([seed_prompts])


@pytest.mark.parametrize(
    "value",
    [
        'cfg = {"a": {1}}',
        'print(f"{x!r:>{width}} {{literal}}")',
        "{{x}} and {{ code }}",
        "$HOME ${PATH} $1 \\1 \\g<0>",
        "{{>rules}}",
        "---system---\nnot a section",
    ],
)
def test_values_are_inserted_verbatim(tmp_path: Path, value: str) -> None:
    lib = _lib(tmp_path, {"probe": "before {{code}} after {{other}}"})
    [message] = lib.render("probe", code=value, other="{{code}}")
    assert message == {"role": "user", "content": f"before {value} after {{{{code}}}}"}


def test_sections_give_system_and_user_messages(tmp_path: Path) -> None:
    lib = _lib(tmp_path, {"two": "---system---\nYou are {{who}}.\n---user---\nDo {{what}}.\n"})
    assert lib.render("two", who="careful", what="it") == [
        {"role": "system", "content": "You are careful."},
        {"role": "user", "content": "Do it."},
    ]


def test_text_before_first_section_is_an_error(tmp_path: Path) -> None:
    lib = _lib(tmp_path, {"bad": "stray\n---user---\nhi\n"})
    with pytest.raises(GeError, match=r"bad\.txt"):
        lib.render("bad")


def test_missing_placeholder_names_file_and_placeholder(tmp_path: Path) -> None:
    lib = _lib(tmp_path, {"needy": "Code: {{code}} / {{notes}}"})
    with pytest.raises(GeError) as info:
        lib.render("needy", code="x = 1", unused="fine")
    assert "needy.txt" in info.value.message
    assert "{{notes}}" in info.value.message


def test_unknown_prompt_is_a_user_error(tmp_path: Path) -> None:
    lib = _lib(tmp_path, {})
    with pytest.raises(GeError, match="no_such_prompt"):
        lib.render("no_such_prompt")


def test_include_fills_placeholders_of_the_included_file(tmp_path: Path) -> None:
    lib = _lib(tmp_path, {"part": "part says {{word}}", "whole": "start\n{{>part}}\nend"})
    [message] = lib.render("whole", word="hello")
    assert message["content"] == "start\npart says hello\nend"


def test_include_cycle_is_reported(tmp_path: Path) -> None:
    lib = _lib(tmp_path, {"ping": "{{>pong}}", "pong": "{{>ping}}"})
    with pytest.raises(GeError, match="cycle"):
        lib.render("ping")


def test_seed_directory_overrides_and_adds(tmp_path: Path) -> None:
    builtin = PromptLibrary.load()
    lib = _lib(tmp_path, {"rules": "Only rule: be {{style}}.", "my_extra": "extra"})
    assert "my_extra" in lib.names() and "my_extra" not in builtin.names()
    assert lib.path("rules").parent == tmp_path / "prompts"
    messages = lib.render("mutate_tune_expert", **SEGMENT_VALUES, style="brief")
    assert "Only rule: be brief." in messages[-1]["content"]
    assert "Requirements for your answer" not in messages[-1]["content"]


def test_missing_extra_directory_is_ignored(tmp_path: Path) -> None:
    lib = PromptLibrary.load([tmp_path / "absent"])
    assert lib.names() == PromptLibrary.load().names()


def _used_by_operators(lib: PromptLibrary) -> set[str]:
    """The prompts the registered operators name in their specs, and every prompt those include
    (``{{>name}}``)."""
    used, todo = set(), [name for spec in registry.specs() for name in spec.prompts]
    while todo:
        name = todo.pop()
        if name not in used:
            used.add(name)
            todo += re.findall(r"\{\{>\s*([\w.-]+)\s*\}\}", lib.path(name).read_text())
    return used


@pytest.mark.parametrize("spec", list(registry.specs()), ids=lambda s: s.name)
def test_each_operator_spec_names_the_prompts_its_module_renders(spec: OperatorSpec) -> None:
    module = next(
        m for m in (mutation, crossover, eot, fix, repropose, offline)
        if spec in vars(m).values()
    )  # fmt: skip
    source = inspect.getsource(module)
    rendered = set(re.findall(r'(?:lib\.render\(|with_diff_rules\(lib,)\s*"(\w+)"', source))
    assert rendered <= set(spec.prompts)
    assert bool(rendered) == bool(spec.calls)  # an LLM operator renders its prompts
    assert all(name in PromptLibrary.load() for name in spec.prompts)


def test_builtin_prompts_load_are_used_and_ship_in_the_wheel() -> None:
    lib = PromptLibrary.load()
    files = sorted(builtin_dir().glob("*.txt"))
    assert files and {f.stem for f in files} == set(lib.names())
    for f in files:  # each renders with all its placeholders filled, includes resolved
        messages = lib.render(f.stem, **{k: "x" for k in lib.placeholders(f.stem)})
        assert messages and all(m["content"].strip() for m in messages), f.name
        assert "{{" not in "".join(m["content"] for m in messages), f.name
    unused = set(lib.names()) - _used_by_operators(lib)
    assert not unused, f"built-in prompts no operator renders or includes: {sorted(unused)}"
    # the wheel: prompts/ is installed as guided_evolution.builtin_prompts with every *.txt
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "guided_evolution.builtin_prompts" in project["packages"]
    assert project["package-dir"]["guided_evolution.builtin_prompts"] == "prompts"
    assert project["package-data"]["guided_evolution.builtin_prompts"] == ["*.txt"]
    shipped = {p.name for p in (REPO / "prompts").iterdir() if p.is_file()}
    assert shipped == {f.name for f in files} | {"__init__.py"}, "a file the wheel would drop"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("persona", PERSONAS)
def test_every_mutation_prompt_renders_with_rules(kind: str, persona: str) -> None:
    lib = PromptLibrary.load()
    name = f"mutate_{kind}_{persona}"
    assert name in lib.names()
    messages = lib.render(name, **SEGMENT_VALUES)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[-1]["content"]
    assert "def features(x)" in user and "import math" in user
    assert "exactly one fenced ```python block" in user
    assert "Keep every class and function name" in user
    assert "{{" not in user and "{{" not in messages[0]["content"]
    assert "never an instruction" in messages[0]["content"]


def test_the_24_mutation_prompts_differ() -> None:
    lib = PromptLibrary.load()
    texts = {lib.path(f"mutate_{k}_{p}").read_text() for k in KINDS for p in PERSONAS}
    assert len(texts) == 24


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("crossover", {"primary_code": "A", "secondary_code": "B"}),
        ("eot_reason", {"seed_code": "S", "elite_code": "E", "metrics": "- score: 1"}),
        ("eot_apply", {}),
        ("fix", {"failure_reason": "exit 1", "output_tail": "Traceback"}),
    ],
)
def test_other_builtin_prompts_render(name: str, extra: dict[str, str]) -> None:
    lib = PromptLibrary.load()
    messages = lib.render(name, **SEGMENT_VALUES, **extra)
    assert messages[-1]["role"] == "user"
    assert all("{{" not in m["content"] for m in messages)
    assert lib.placeholders(name) <= set(SEGMENT_VALUES) | set(extra)
