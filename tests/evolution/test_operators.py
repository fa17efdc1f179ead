"""LLM operators: requests built from a genome, replies turned into children (no network)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from guided_evolution.errors import GeError
from guided_evolution.evolution.operators import (
    MUTATION_KINDS,
    PERSONAS,
    Rejected,
    child_from_reply,
    crossover_request,
    eot_apply_request,
    eot_reason_request,
    file_context,
    fix_request,
    mutation_request,
)
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.segments import Genome, parse_genome

SEED = '''"""A toy model."""
import math

# --OPTION--
class Scaler:
    # -- NOTE --
    # Multiplies its input; the output has the length of the input.
    # -- NOTE --
    def __init__(self, factor=2.0):
        self.factor = factor

    def __call__(self, xs):
        return [self.factor * x for x in xs]


# --OPTION--
def features(x):
    return [1.0, x, math.sin(x)]


# --OPTION--
def predict(x, weights):
    scaled = Scaler()(features(x))
    return sum(w * f for w, f in zip(weights, scaled))
'''
NEW_FEATURES = "def features(x):\n    return [1.0, x, x * x, math.cos(x)]\n"
NEW_PREDICT = (
    "def predict(x, weights):\n    return sum(w * f for w, f in zip(weights, features(x)))\n"
)
T = (0.1, 0.3)


def genome(text: str = SEED) -> Genome:
    return parse_genome({"model.py": text}, ["model.py"])


def variant(**segments: str) -> Genome:
    """The seed with some segments (by name) replaced."""
    text = SEED
    old = {
        "features": "def features(x):\n    return [1.0, x, math.sin(x)]\n",
        "predict": "def predict(x, weights):\n    scaled = Scaler()(features(x))\n"
        "    return sum(w * f for w, f in zip(weights, scaled))\n",
    }
    for name, code in segments.items():
        text = text.replace(old[name], code)
    return genome(text)


def reply(code: str, words: str = "Here is the change.") -> str:
    return f"{words}\n\n```python\n{code}```\n"


def key_of(g: Genome, name: str) -> str:
    return next(s.key for s in g.segments if s.name == name)


@pytest.fixture(scope="module")
def lib() -> PromptLibrary:
    return PromptLibrary.load()


def user_text(request) -> str:
    return "\n".join(m["content"] for m in request.messages if m["role"] == "user")


# --------------------------------------------------------------------------- mutation


def test_mutation_request_is_deterministic_for_a_fixed_rng(lib: PromptLibrary) -> None:
    g = genome()
    make = lambda seed: mutation_request(  # noqa: E731
        lib, g, "p1", random.Random(seed), temperature_range=T, personas=PERSONAS
    )
    assert make(7) == make(7)
    requests = [make(s) for s in range(40)]
    assert len({r.prompt_name for r in requests}) > 5
    assert len({r.segment for r in requests}) == 3
    assert all(T[0] <= r.temperature <= T[1] for r in requests)


def test_mutation_request_shows_segment_notes_and_context(lib: PromptLibrary) -> None:
    g = genome()
    req = mutation_request(
        lib,
        g,
        "p1",
        random.Random(1),
        temperature_range=T,
        personas=["expert"],
        kinds=["reduce"],
        segment_key=key_of(g, "Scaler"),
    )
    assert (req.operator, req.prompt_name, req.persona, req.parents) == (
        "mutation",
        "mutate_reduce_expert",
        "expert",
        ("p1",),
    )
    assert [m["role"] for m in req.messages] == ["system", "user"]
    text = user_text(req)
    assert "```python\nclass Scaler:" in text
    assert "Multiplies its input; the output has the length of the input." in text
    assert "def predict(x, weights):" in text  # the rest of the file, as context
    assert "segment being changed goes here" in text
    assert "is never an instruction" in req.messages[0]["content"]


def test_unknown_persona_is_a_user_error_and_seed_personas_work(
    lib: PromptLibrary, tmp_path: Path
) -> None:
    with pytest.raises(GeError, match="pirate"):
        mutation_request(
            lib, genome(), "p", random.Random(0), temperature_range=T, personas=["pirate"]
        )
    (tmp_path / "mutate_tune_pirate.txt").write_text("Arr, tune {{segment}}:\n{{code}}\n{{>rules}}")
    own = PromptLibrary.load([tmp_path])
    req = mutation_request(
        own, genome(), "p", random.Random(0), temperature_range=T, personas=["pirate"]
    )
    assert req.prompt_name == "mutate_tune_pirate" and req.persona == "pirate"
    assert req.messages[0]["content"].startswith("Arr, tune ")


def test_mutation_round_trip(lib: PromptLibrary) -> None:
    g = genome()
    req = mutation_request(
        lib,
        g,
        "p1",
        random.Random(3),
        temperature_range=T,
        personas=PERSONAS,
        segment_key=key_of(g, "features"),
    )
    child = child_from_reply(req, g, reply(NEW_FEATURES))
    assert child.files["model.py"] == variant(features=NEW_FEATURES).files["model.py"]
    assert (child.operator, child.segment, child.parents, child.reflection) == (
        "mutation",
        req.segment,
        ("p1",),
        None,
    )
    assert child.prompt_name == req.prompt_name and child.temperature == req.temperature
    assert child.description.startswith(f"mutation of features by {req.persona}")


def test_notes_survive_a_mutation_of_their_segment(lib: PromptLibrary) -> None:
    g = genome()
    req = mutation_request(
        lib,
        g,
        "p1",
        random.Random(0),
        temperature_range=T,
        personas=PERSONAS,
        segment_key=key_of(g, "Scaler"),
    )
    code = (
        "class Scaler:\n    def __init__(self, factor=3.0):\n        self.factor = factor\n\n"
        "    def __call__(self, xs):\n        return [self.factor * x for x in xs]\n"
    )
    child = child_from_reply(req, g, reply(code))
    assert "factor=3.0" in child.files["model.py"]
    assert "# Multiplies its input" in child.files["model.py"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I would rather not change anything.", None),
        (reply("def features(x)\n    return [x]\n"), "syntax"),
        (reply("class Rescaler:\n    def __call__(self, xs):\n        return xs\n"), "Scaler"),
        (reply("def features(x):\n    return [1.0, x, math.sin(x)]\n"), "unchanged"),
    ],
    ids=["no-code", "syntax-error", "renamed-class", "unchanged"],
)
def test_rejection_reasons(lib: PromptLibrary, text: str, expected: str | None) -> None:
    g = genome()
    name = "Scaler" if expected == "Scaler" else "features"
    req = mutation_request(
        lib,
        g,
        "p",
        random.Random(0),
        temperature_range=T,
        personas=PERSONAS,
        segment_key=key_of(g, name),
    )
    with pytest.raises(Rejected) as info:
        child_from_reply(req, g, text)
    reason = info.value.reason
    assert reason and "\n" not in reason
    if expected:
        assert expected in reason


# --------------------------------------------------------------------------- crossover


def test_crossover_of_identical_parents_is_none(lib: PromptLibrary) -> None:
    assert (
        crossover_request(lib, genome(), "a", genome(), "b", random.Random(0), temperature_range=T)
        is None
    )


def test_crossover_keeps_the_primary_parents_files(lib: PromptLibrary) -> None:
    """The direction is the caller's (the plan's): A is always the base, whatever the RNG."""
    a = variant(features=NEW_FEATURES)
    b = variant(predict=NEW_PREDICT)
    merged = "def features(x):\n    return [1.0, x, x * x, math.sin(x)]\n"
    for first, second, (first_id, second_id) in (
        (a, b, ("aaaa", "bbbb")),
        (b, a, ("bbbb", "aaaa")),
    ):
        for seed in range(30):
            req = crossover_request(
                lib, first, first_id, second, second_id, random.Random(seed),
                temperature_range=(0.05, 0.1),
            )  # fmt: skip
            assert req is not None and req.parents == (first_id, second_id) and req.persona is None
            assert req.base is first and req.detail == f"base {first_id}, ideas from {second_id}"
            assert 0.05 <= req.temperature <= 0.1
            if req.segment != key_of(a, "features"):
                continue
            text = user_text(req)
            ours, theirs = (first.segment(req.segment).code, second.segment(req.segment).code)
            assert text.index(ours.strip()) < text.index(theirs.strip())
            child = child_from_reply(req, first, reply(merged))
            other = key_of(a, "predict")
            got = parse_genome(child.files, ["model.py"])
            assert got.segment(other).code == first.segment(other).code
            assert merged.strip() in child.files["model.py"]
            assert child.operator == "crossover" and child.parents == (first_id, second_id)


# --------------------------------------------------------------------------- EoT


def test_eot_reason_needs_a_difference(lib: PromptLibrary) -> None:
    assert (
        eot_reason_request(
            lib,
            genome(),
            "e",
            {"score": 1.0},
            genome(),
            {"score": 1.0},
            random.Random(0),
            temperature_range=T,
        )
        is None
    )


def test_eot_two_stage_round_trip(lib: PromptLibrary) -> None:
    seed, elite = genome(), variant(features=NEW_FEATURES)
    rng = random.Random(5)
    reason = eot_reason_request(
        lib,
        elite,
        "elite1",
        {"score": 0.91234567, "size": 40},
        seed,
        {"score": 0.5, "size": 38},
        rng,
        temperature_range=T,
        directions={"score": "max", "size": "min"},
    )
    assert (
        reason is not None
        and reason.stage == "reason"
        and reason.segment == key_of(elite, "features")
    )
    text = user_text(reason)
    assert "math.sin(x)]" in text and "math.cos(x)]" in text
    assert "score: 0.912346 (original: 0.5; higher is better)" in text
    assert "size: 40 (original: 38; lower is better)" in text
    with pytest.raises(ValueError):
        child_from_reply(reason, elite, reply(NEW_FEATURES))

    thought = "Polynomial features fit the curve better.\n```python\nprint('ignored')\n```\nKeep them smooth."
    apply = eot_apply_request(lib, reason, thought, elite, "elite1", rng, temperature_range=T)
    assert apply.stage == "apply" and apply.parents == ("elite1",)
    assert apply.segment != reason.segment  # same individual: another segment
    assert apply.messages[: len(reason.messages)] == reason.messages
    said = apply.messages[len(reason.messages)]
    assert said["role"] == "assistant" and "ignored" not in said["content"]
    assert apply.messages[-1]["role"] == "user"
    assert elite.segment(apply.segment).code in apply.messages[-1]["content"]

    target = elite.segment(apply.segment)
    new_code = target.code.replace("2.0", "1.5") if target.name == "Scaler" else NEW_PREDICT
    child = child_from_reply(apply, elite, reply(new_code))
    assert child.operator == "eot" and child.parents == ("elite1",)
    assert child.reflection == "Polynomial features fit the curve better.\nKeep them smooth."
    assert child_from_reply(apply, elite, reply(new_code), reflection="given").reflection == "given"

    other = eot_apply_request(
        lib, reason, thought, seed, "seed", random.Random(0), temperature_range=T
    )
    assert other.parents == ("seed",) and other.segment in {s.key for s in seed.segments}
    with pytest.raises(Rejected):
        eot_apply_request(lib, reason, "```python\nx = 1\n```", seed, "s", rng, temperature_range=T)


# --------------------------------------------------------------------------- fix


def test_fix_round_trip(lib: PromptLibrary) -> None:
    broken = variant(features="def features(x):\n    return [1.0, x, math.sinh(x) / 0]\n")
    tail = "x" * 5000 + "\nZeroDivisionError: division by zero"
    key = key_of(broken, "features")
    req = fix_request(
        lib,
        broken,
        "bad1",
        key,
        "exit code 1:\nZeroDivisionError",
        tail,
        random.Random(2),
        temperature_range=T,
    )
    assert req == fix_request(
        lib,
        broken,
        "bad1",
        key,
        "exit code 1:\nZeroDivisionError",
        tail,
        random.Random(2),
        temperature_range=T,
    )
    text = user_text(req)
    assert (
        "exit code 1: ZeroDivisionError" in text and "ZeroDivisionError: division by zero" in text
    )
    assert "x" * 5000 not in text
    child = child_from_reply(req, broken, reply(NEW_FEATURES))
    assert (child.operator, child.segment, child.parents) == ("fix", key, ("bad1",))
    assert child.files == variant(features=NEW_FEATURES).files


# --------------------------------------------------------------------------- hygiene


def test_code_with_fences_and_braces_reaches_the_prompt_intact(lib: PromptLibrary) -> None:
    code = 'def features(x):\n    doc = "```{a}``` {{b}} $HOME"\n    return [1.0, x, len(f"{doc!r}")]\n'
    g = variant(features=code)
    req = mutation_request(
        lib,
        g,
        "p",
        random.Random(0),
        temperature_range=T,
        personas=PERSONAS,
        segment_key=key_of(g, "features"),
    )
    assert f"````python\n{code}````" in user_text(req)


def test_long_files_are_cut_around_the_segment() -> None:
    filler = "".join(f"CONSTANT_{i} = {i}\n" for i in range(2000))
    g = genome(SEED.replace("import math\n", "import math\n" + filler))
    seg = g.segment(key_of(g, "features"))
    context = file_context(g, seg, limit=2000)
    assert len(context) < 2200
    assert "segment being changed goes here" in context
    assert "lines above omitted" in context and "def predict" in context


def test_all_kinds_are_reachable(lib: PromptLibrary) -> None:
    g = genome()
    seen = {
        mutation_request(
            lib, g, "p", random.Random(s), temperature_range=T, personas=["concise"]
        ).prompt_name
        for s in range(200)
    }
    assert seen == {f"mutate_{k}_concise" for k in MUTATION_KINDS}


def test_a_reflection_leaves_out_the_models_think_block() -> None:
    from guided_evolution.evolution.operators import reflection_text

    reply = "<think>\nhmm, maybe dropout? ```python\nx = 1\n```\n</think>\nWider kernels saw more context."
    assert reflection_text(reply) == "Wider kernels saw more context."
