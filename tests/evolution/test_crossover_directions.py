"""Crossover keeps the plan's directions: a crossed pair is two children, (A with B) and (B with A),
each built on its own primary parent's files, its ``Ge-Parents`` naming that base first (issue 25
item 3: a coin inside the operator used to re-draw the base, so half the pairs had one base twice).
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.config import EvolutionConfig
from guided_evolution.evolution.operators import child_from_reply, registry
from guided_evolution.evolution.operators.spec import StepContext
from guided_evolution.evolution.plan import Plan, plan_generation
from guided_evolution.evolution.prompts import PromptLibrary
from guided_evolution.evolution.scoring import Scored
from guided_evolution.evolution.segments import Genome, parse_genome
from guided_evolution.runstore.run_index import RunIndex
from tests.support.harness import FakeExecutor, run_engine, size_score
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, template_seed

OBJ = (("score", "max"), ("size", "min"))
SEGMENTS = ("alpha", "beta", "gamma")


def genome_of(i: int) -> Genome:
    """Variant ``i``: three segments, each with a constant of its own, so every pair differs in all
    three and the untouched segments tell whose files a child kept."""
    parts = [
        f"# --OPTION--\ndef {name}(x):\n    return x + {i * 10 + k}\n\n"
        for k, name in enumerate(SEGMENTS)
    ]
    return parse_genome({"m.py": "".join(parts)}, ["m.py"])


class Source:
    """The ``StepSource`` of a population of ``genome_of`` variants."""

    def __init__(self, genomes: Mapping[str, Genome]) -> None:
        self.genomes = genomes

    def genome(self, vid: str) -> Genome:
        return self.genomes[vid]

    def objective_metrics(self, vid: str) -> Mapping[str, object] | None:
        return None

    def feedback(self, vid: str) -> str:
        return ""


def crossed_plans(generation: int, pop: list[Scored]) -> list[Plan]:
    cfg = EvolutionConfig.model_validate(
        {"population": len(pop), "elites": 2, "crossover_probability": 1.0,
         "mutation_probability": 0.0, "eot_probability": 0.0}
    )  # fmt: skip
    return plan_generation(generation, pop, None, "seed", cfg, OBJ, eot=False).plans


def merged(code: str) -> str:
    """The LLM's 'merge': the base's version of the segment with a marker line."""
    return f"```python\n{code.rstrip()}  # merged\n```\n"


@pytest.mark.parametrize("generation", range(1, 9))
def test_both_children_of_a_crossed_pair_keep_their_own_base(generation: int) -> None:
    lib = PromptLibrary.load()
    pop = [Scored(f"v{i}", {"score": float(i), "size": float(i)}) for i in range(10)]
    genomes = {s.id: genome_of(i) for i, s in enumerate(pop)}
    plans = crossed_plans(generation, pop)
    pairs = [(plans[i], plans[i + 1]) for i in range(0, len(plans) - 1, 2)]
    assert pairs
    distinct = 0
    for first, second in pairs:
        assert (first.parent, second.parent) == (second.parents[1], first.parents[1])
        children: list[Any] = []
        for plan in (first, second):
            (step,) = plan.steps
            assert step.op == "crossover"
            ctx = StepContext(
                lib=lib, genome=genomes[plan.parent], parent_id=plan.parent, other=step.other,
                rng=plan.rng(7), temperature_range=(0.1, 0.2), source=Source(genomes), seed_id="seed",
            )  # fmt: skip
            req = registry.spec("crossover").build(ctx)
            if req is None:  # a variant crossed with itself: nothing differs
                assert plan.parent == step.other
                continue
            base = genomes[plan.parent]
            assert req.base is base and req.parents == plan.parents
            child = child_from_reply(req, base, merged(base.segment(req.segment).code))
            assert child.parents == plan.parents  # Ge-Parents: the base first
            got = parse_genome(child.files, ["m.py"])
            for seg in base.segments:
                if seg.key != req.segment:
                    assert got.segment(seg.key).code == seg.code  # the plan's parent's files
            children.append(child)
        if len(children) == 2 and first.parent != second.parent:
            distinct += 1
            assert children[0].files != children[1].files
    assert distinct > 0


def test_the_operator_draws_no_direction() -> None:
    """The same request whatever the RNG's state after the segment and temperature draws: the
    direction is not drawn (it was ``rng.random() < 0.5`` after the segment)."""
    lib = PromptLibrary.load()
    a, b = genome_of(1), genome_of(2)
    for seed in range(40):
        ctx = StepContext(
            lib=lib, genome=a, parent_id="a", other="b", rng=random.Random(seed),
            temperature_range=(0.1, 0.2), source=Source({"a": a, "b": b}), seed_id="seed",
        )  # fmt: skip
        req = registry.spec("crossover").build(ctx)
        assert req is not None and req.base is a and req.parents == ("a", "b")
        assert req.detail == "base a, ideas from b"


# --------------------------------------------------------------------------- a run


def append_statement(code: str, n: int) -> str:
    """A fake model's edit: a statement of its own at the end of the function (unique code)."""
    return f"{code.rstrip()}\n    _ = {n}\n"


def test_a_runs_crossover_children_keep_their_first_parents_files(tmp_path: Path) -> None:
    """Through `ge run` against the fake server: every crossover child's commit has the files of
    the parent its ``Ge-Parents`` names first, but for the merged segment (checked where the two
    parents differ outside it too, so that the other parent's files would show)."""
    seed = template_seed(
        tmp_path / "seed", initial_population=6, population=6, generations=2,
        crossover_probability=1.0, mutation_probability=0.0, eot_probability=0.0,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    with serve(responder=CodeWriter(append_statement)) as server:
        summary = run_engine(
            seed, run_dir, executor=FakeExecutor(size_score).factory,
            model="openai/test-model", api_base=server.base_url,
        )  # fmt: skip
    assert summary["finished"], summary
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        variants = {v.id: v for v in index.variants()}
    finally:
        index.close()

    def genome(vid: str) -> Genome:
        sha = variants[vid].commit_sha
        text = subprocess.run(
            ["git", "--git-dir", str(run_dir / "repo.git"), "show", f"{sha}:model.py"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        return parse_genome({"model.py": text}, ["model.py"])

    telling = 0
    for child in (v for v in variants.values() if v.operator == "crossover"):
        first, second = child.parents
        mine, base, other = genome(child.id), genome(first), genome(second)
        kept = [s for s in base.segments if s.key != child.segment]
        assert all(mine.segment(s.key).code == s.code for s in kept), child.id
        telling += any(other.segment(s.key).code != s.code for s in kept)
    assert telling >= 3, telling
