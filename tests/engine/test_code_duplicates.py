"""A child that differs from a variant only in comments, blank lines or spacing is that variant
(issue 26 item 5): recorded as a ``duplicate`` event, never evaluated. String contents, a coding
declaration and files that are not Python still tell children apart."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from guided_evolution.engine.recorder import code_key
from guided_evolution.evolution.segments import variant_id
from guided_evolution.runstore.run_index import RunIndex
from tests.support.harness import FakeExecutor, Intercepted, intercepting, run_engine, size_score
from tests.support.seeds import template_seed

PY = ["model.py"]


def _key(text: str, name: str = "model.py") -> str:
    return code_key({name: text}, [name])


def test_comments_blank_lines_and_spacing_do_not_make_another_program() -> None:
    code = 'def f(x):\n    y = x * 2  # double\n    return [y, "a  b"]\n'
    same = [
        '# header\n\ndef f(x):\n\n  # why\n  y=x*2\n  return [ y,\n    "a  b" ]   # done\n\n',
        'def f(x):\n\ty = x \\\n\t\t* 2\n\treturn [y, "a  b"]\n',
    ]
    for text in same:
        assert _key(text) == _key(code), text
    different = [
        code.replace('"a  b"', '"a b"'),  # a string's contents
        code.replace("# double", "") + "    z = 1\n",  # code added
        code.replace("    return", "\n    pass\nreturn"),  # structure: return left the def
        "# -*- coding: latin-1 -*-\n" + code,  # a coding declaration changes how it is read
        code.replace("* 2", "** 2"),
    ]
    for text in different:
        assert _key(text) != _key(code), text


def test_files_that_are_not_python_or_do_not_tokenize_compare_as_written() -> None:
    assert _key("a: 1  # x\n", "conf.yaml") != _key("a: 1\n", "conf.yaml")
    broken = 'def f(:\n    s = """never closed\n'
    assert _key(broken) != _key(broken + "# comment\n")
    assert _key(broken) == _key(broken)


def test_comment_only_children_cost_no_evaluation(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1, initial_population=4)
    text = (seed / "model.py").read_text()
    made_files = {
        0: text + 'LABEL = "a  b"\n',
        1: text + '\n\n# the label\nLABEL   =   "a  b"    # spaced\n\n',  # a duplicate of 0
        2: text + 'LABEL = "a b"\n',  # another string: another program
        3: "# tidied\n" + text.replace("    ", "  ") + "\n\n",  # the seed, re-indented
    }

    def hook(plan: Any, child: Any) -> Any:
        if plan.generation == 0 and plan.index in made_files:
            return dataclasses.replace(child, files={"model.py": made_files[plan.index]})
        return child

    fake = FakeExecutor(size_score)  # scores by length: comments would change the score
    made: list[Intercepted] = []
    run_engine(seed, tmp_path / "run", executor=fake.factory, proposer=intercepting(hook, made))
    ids = {i: variant_id({"model.py": t}, PY) for i, t in made_files.items()}
    evaluated = [r.variant_id for r in fake.requests]
    assert len(evaluated) == len(set(evaluated))
    assert (ids[0] in evaluated) != (ids[1] in evaluated)  # one of the pair, whichever came first
    assert ids[2] in evaluated and ids[3] not in evaluated
    with RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True) as index:
        seed_id = next(v.id for v in index.variants() if v.operator == "seed")
        stored = {v.id for v in index.variants()}
        dups = [e.data for e in index.events("duplicate") if e.data.get("generation") == 0]
    assert ids[3] not in stored and not (ids[0] in stored and ids[1] in stored)
    normalised = {d["child"]: d["variant"] for d in dups if "child" in d}
    assert normalised[ids[3]] == seed_id
    pair = {ids[0], ids[1]}
    assert any(child in pair and twin in pair for child, twin in normalised.items())
    assert all(d["same"] == "up to comments and spacing" for d in dups if "child" in d)


def test_a_resumed_run_knows_the_programs_of_its_earlier_sessions(tmp_path: Path) -> None:
    from tests.support.harness import resume_engine

    seed = template_seed(tmp_path / "seed", generations=1)
    fake = FakeExecutor(size_score)
    run_engine(seed, tmp_path / "run", executor=fake.factory)
    text = "# tidied\n" + (seed / "model.py").read_text().replace("    ", "  ")

    def hook(plan: Any, child: Any) -> Any:
        if plan.generation == 2 and plan.index == 0:
            return dataclasses.replace(child, files={"model.py": text})
        return child

    made: list[Intercepted] = []
    resume_engine(
        tmp_path / "run", executor=fake.factory, proposer=intercepting(hook, made), generations=2
    )
    twin = variant_id({"model.py": text}, PY)
    assert twin not in [r.variant_id for r in fake.requests]
    with RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True) as index:
        seed_id = next(v.id for v in index.variants() if v.operator == "seed")
        dups = [e.data for e in index.events("duplicate") if e.data.get("child") == twin]
    assert [d["variant"] for d in dups] == [seed_id]
