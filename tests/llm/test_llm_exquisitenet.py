"""The paper's case with the LLM path: `ge run seeds/exquisitenet_v2 --model ... --api-base ...`
against the fake OpenAI-compatible server, on tiny CIFAR-format data, on CPU."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.evolution.segments import Genome, differing_segments, parse_genome
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, cpu_exquisitenet_seed, template_seed, with_statement

_FLOAT = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.])")


_SHRINK = (
    (r"nn\.BatchNorm2d\((\w+)\)", r"nn.BatchNorm2d(\1, affine=False)"),
    (r"nn\.LayerNorm\((\w+)\)", r"nn.LayerNorm(\1, elementwise_affine=False)"),
    (r"nn\.Linear\(384, class_num\)", "nn.Linear(384, class_num, bias=False)"),
)


def safe_edit(code: str, n: int) -> str:
    """An edit that keeps ExquisiteNetV2 trainable, for `CodeWriter(edit=safe_edit)`.

    The first decimal literal is scaled down (the lr of get_optimizer, the dropout of the
    network) and one norm or bias is made parameter-free where there is one; changing an
    integer (CodeWriter's default edit) would break a channel count or a kernel size. A segment
    with neither gets a statement ``_revision = n`` at its first line's depth.
    """
    original = code
    found = _FLOAT.search(code)
    if found:
        value = float(found.group(1)) * (1 - 0.1 * (1 + n % 4))
        code = f"{code[: found.start(1)]}{value:.4g}{code[found.end(1) :]}"
    # A smaller network where the segment allows it, so some children beat the seed on
    # params (an EoT elite must be better than the seed on some objective).
    for old, new in _SHRINK:
        if re.search(old, code):
            return re.sub(old, new, code, count=1)
    if code == original:  # nothing to change: a harmless statement (a comment alone would make
        # a child equal to its parent, which ge merges with it)
        code = with_statement(code, f"_revision = {n}")
    return code


def _git(run_dir: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "--git-dir", str(run_dir / "repo.git"), *args],
        capture_output=True, text=True, check=True,
    ).stdout


def _genome(run_dir: Path, commit: str) -> Genome:
    return parse_genome({"model.py": _git(run_dir, "show", f"{commit}:model.py")}, ["model.py"])


def _notes_text(notes: str) -> str:
    """A segment's NOTE block as the prompt shows it: plain text, no delimiters, no '#'."""
    lines = [line.strip() for line in notes.splitlines() if line.strip() != "# -- NOTE --"]
    return "\n".join(re.sub(r"^#\s?", "", line) for line in lines).strip()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_exquisitenet_evolves_with_an_llm_on_tiny_cifar(tmp_path: Path) -> None:
    # Generation 1 has 3 children: a crossover pair (each then EoT-applied) and one EoT child.
    seed = cpu_exquisitenet_seed(
        tmp_path / "exquisitenet_v2",
        crossover_probability=1.0, mutation_probability=1.0, eot_probability=1.0,
    )
    run_dir = tmp_path / "run"
    editor = CodeWriter(edit=safe_edit)
    with serve(responder=editor) as server:
        summary = here_json(
            "run", str(seed), "--run-dir", str(run_dir), "--model", "openai/exquisite-test",
            "--api-base", server.base_url, "--generations", "1", "--initial-population", "4",
            "--population", "3", cwd=tmp_path,
        )
        requests = list(server.requests)
    assert summary["finished"] and summary["generation"] == 1, summary
    assert summary["llm_calls"] == len(requests) > 0 and "reason" in editor.kinds

    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        seed_id = index.get_meta("seed_variant")
        seed_eval = index.latest_evaluation(seed_id)
        seed_commit = index.get_variant(seed_id).commit_sha
        children = [v for v in index.variants() if v.id != seed_id]
        evaluations = {v.id: index.latest_evaluation(v.id) for v in children}
        reflections = index.reflections()
        calls = {v.id: index.get_call(v.llm_call_id) for v in children}
    finally:
        index.close()
    assert seed_eval.status == "ok" and seed_eval.metrics["params"] == 518_230  # the paper's network

    by_operator: dict[str, list[Any]] = {}
    for child in children:
        by_operator.setdefault(child.operator, []).append(child)
    assert {"mutation", "crossover", "eot"} <= set(by_operator), sorted(by_operator)
    ok = [vid for vid, ev in evaluations.items() if ev is not None and ev.status == "ok"]
    assert ok, {vid: ev and ev.failure_reason for vid, ev in evaluations.items()}
    shown = here_json("show", str(run_dir), ok[0], cwd=tmp_path)
    assert {"val_accuracy", "params", "test_accuracy"} <= set(shown["metrics"])

    # A crossover child is a merge commit of its two parents.
    for child in by_operator["crossover"]:
        commit_parents = _git(run_dir, "rev-list", "--parents", "-n", "1", child.commit_sha).split()[1:]
        assert len(child.parents) == 2 and len(commit_parents) == 2, child
        # ... and then EoT-applied: the subject names both steps, not only the last one.
        subject = _git(run_dir, "log", "-1", "--format=%s", child.commit_sha).strip()
        assert subject.startswith("crossover then eot of model.py#"), subject

    # The prompts carried the segment's code and its NOTE text (as plain text, not the comments of
    # the surrounding file); the seed's genome tells which segment each prompt was about.
    seed_genome = _genome(run_dir, seed_commit)
    prompts = ["\n".join(m["content"] for m in r["messages"] if m["role"] == "user") for r in requests]
    noted = [s for s in seed_genome.segments if s.notes]
    assert len(noted) == 3
    seen_with_notes = 0
    for seg in seed_genome.segments:
        about = [p for p in prompts if f"```python\n{seg.code.rstrip()}\n```" in p]
        if seg.notes:
            for prompt in about:
                assert _notes_text(seg.notes) in prompt, (seg.name, prompt[:2000])
            seen_with_notes += bool(about)
    assert seen_with_notes, "no prompt was about a segment with a NOTE block"

    # EoT: the reflection is recorded and shown by `ge log --eot`.
    assert reflections
    logged = here_json("log", str(run_dir), "--eot", cwd=tmp_path)["reflections"]
    assert logged and all(row["text"].startswith("Lesson ") for row in logged)
    assert {row["elite"] for row in logged} <= {v.id for v in children}  # never the seed
    eot = here_json("show", str(run_dir), by_operator["eot"][0].id, cwd=tmp_path)
    assert eot["eot_reflection"].startswith("Lesson ") and eot["parents"]

    # A mutation child changes exactly its own segment and keeps every NOTE block.
    for child in children:
        genome = _genome(run_dir, child.commit_sha)
        assert [s.notes for s in genome.segments] == [s.notes for s in seed_genome.segments]
        if child.operator == "mutation":
            assert differing_segments(seed_genome, genome) == [child.segment], child
            if child.generation == 0:  # its prompt showed the seed's version of that segment
                prompt = "\n".join(m["content"] for m in calls[child.id].messages)
                assert f"```python\n{seed_genome.segment(child.segment).code.rstrip()}\n```" in prompt


def test_eot_never_draws_the_seed_as_its_elite(tmp_path: Path) -> None:
    """Regression: the seed is often an elite early on, and EoT drawn with it (no change to learn
    from) silently became a plain mutation."""
    seed = template_seed(
        tmp_path / "seed", generations=1, population=6, elites=10, crossover_probability=0.0,
        mutation_probability=1.0, eot_probability=1.0,
    )
    with serve(responder=CodeWriter()) as server:
        here_json(
            "run", str(seed), "--run-dir", str(tmp_path / "run"), "--model", "openai/m",
            "--api-base", server.base_url, cwd=tmp_path,
        )
    objectives = json.loads((tmp_path / "run" / "config.json").read_text())["config"]["objectives"]
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        seed_id = index.get_meta("seed_variant")
        assert seed_id in index.get_generation(1).elites
        children = index.variants(generation=1)
        reflections = index.reflections()
        seed_metrics = index.latest_evaluation(seed_id).metrics
        elite_metrics = {r.elite_id: index.latest_evaluation(r.elite_id).metrics for r in reflections}
    finally:
        index.close()
    assert children and {v.operator for v in children} == {"eot"}
    assert len(reflections) == len(children) and seed_id not in {r.elite_id for r in reflections}
    # The EoT prompt says the elite measured better than the seed on some objective: it must be.
    for metrics in elite_metrics.values():
        assert any(
            (metrics[o["name"]] > seed_metrics[o["name"]]) if o["direction"] == "max"
            else (metrics[o["name"]] < seed_metrics[o["name"]])
            for o in objectives if o.get("select", True)
        ), (metrics, seed_metrics)
