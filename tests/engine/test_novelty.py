"""Novelty rejection before evaluation (``[evolution] novelty_distance``, issue 16).

Through real runs: runs of seeds/fast_exp with the offline operators, and runs of the template
seed against the fake OpenAI server whose scripted model first answers with a segment a few tokens
away from its parent, and with a clearly different one when the novelty prompt tells it what it
repeated. The archive's decision itself is checked on small segments. Novelty is decided before
evaluation: the runs are in-process (tests/support/harness.py) and scored by ``FakeExecutor``,
except those that stop, whose exit code and message `ge run` gives.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.evolution.diversity import code_distance
from guided_evolution.evolution.novelty import NoveltyArchive, cosine_distance, new_keys
from tests.support.cli import ge_here
from tests.support.harness import FakeExecutor, run_engine, size_score
from tests.support.openai_server import Action, bag_of_words, reply, serve
from tests.support.seeds import copy_seed, evolution_lines, template_seed

FAST_EXP = Path(__file__).resolve().parents[2] / "seeds" / "fast_exp"
FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.S)
NOVELTY_ASK = "almost the same code as a version this search has already evaluated"
REASON = re.compile(r"^near-duplicate of ([0-9a-f]{16}) \(distance ([0-9.e-]+) <= 0\.2\)$")
TABLE = "    table = [" + ", ".join(str(i) for i in range(40)) + "]\n"


# --------------------------------------------------------------------------- the decision


def test_archive_finds_the_nearest_evaluated_segment_within_the_threshold() -> None:
    archive = NoveltyArchive(threshold=0.1)
    base = "def f(x):\n    y = x * 2 + 1\n    return y + 3 * x - 7 // 2\n"
    archive.add("a", {"m.py#0": base, "m.py#1": "z = 1"})
    archive.add("b", {"m.py#0": base.replace("+ 1", "- 5 * x * x * x"), "m.py#1": "z = 1"})
    near = base.replace("+ 3", "+ 4")  # one token of ~25
    found = archive.check({"m.py#0": near, "m.py#1": "z = 2"}, ["m.py#0"])
    assert found is not None and found.variant == "a" and found.code == base
    assert found.distance == pytest.approx(code_distance(near, base))
    assert found.reason == f"near-duplicate of a (distance {found.distance:.3g} <= 0.1)"
    far = "def f(x):\n    return sum(i * x for i in range(10))\n"
    assert archive.check({"m.py#0": far}, ["m.py#0"]) is None
    # only the new positions count: the same code elsewhere is no near-duplicate
    assert new_keys({"m.py#0": near, "m.py#1": "z = 1"}, [{"m.py#0": base, "m.py#1": "z = 1"}]) == (
        "m.py#0",
    )
    assert cosine_distance([1.0, 0.0], [1.0, 0.0]) == 0.0
    assert cosine_distance([1.0, 0.0], [0.0, 1.0]) == 1.0


# --------------------------------------------------------------------------- offline runs


def _events(run_dir: Path, kind: str) -> list[dict[str, Any]]:
    db = sqlite3.connect(run_dir / "index.sqlite")
    try:
        rows = db.execute("SELECT data FROM events WHERE kind = ? ORDER BY id", (kind,)).fetchall()
    finally:
        db.close()
    return [json.loads(row[0]) for row in rows]


def _variants(run_dir: Path) -> list[tuple[str, str, int]]:
    db = sqlite3.connect(run_dir / "index.sqlite")
    try:
        return sorted(db.execute("SELECT id, operator, generation FROM variants").fetchall())
    finally:
        db.close()


def _fast_exp(tmp_path: Path, name: str, **evolution: Any) -> Path:
    seed = copy_seed(FAST_EXP, tmp_path / f"seed-{name}")
    extra = "".join(f"\n{line}" for line in evolution_lines(evolution))
    text = (seed / "ge.toml").read_text().replace("[evolution]", f"[evolution]{extra}", 1)
    (seed / "ge.toml").write_text(text)
    run_dir = tmp_path / f"run-{name}"
    summary = run_engine(
        seed, run_dir, executor=FakeExecutor(_exp_score).factory, model="offline", generations=2,
        population=6, initial_population=6,
    )  # fmt: skip
    assert summary["finished"]
    return run_dir


def _exp_score(files: dict[str, str]) -> dict[str, float | str]:
    """fast_exp's objectives from the code's size (shorter: fewer ops, and here more accurate)."""
    chars = float(len(files["approx.py"]))
    return {"accuracy": -chars / 1000.0, "ops": chars, "heldout_accuracy": -chars / 1000.0}


def _rejections(run_dir: Path) -> list[tuple[int, int, str]]:
    return [
        (e["generation"], e["plan"], e["reason"])
        for e in _events(run_dir, "proposal_rejected")
        if e["reason"].startswith("near-duplicate of ")
    ]


def test_offline_near_duplicates_are_redrawn_or_rejected_the_same_way_each_run(
    tmp_path: Path,
) -> None:
    runs = [_fast_exp(tmp_path, str(i), novelty_distance=0.05) for i in range(2)]
    found = _events(runs[0], "near_duplicate")
    assert found, "the offline edits (one token of a segment) nearly repeat evaluated variants"
    assert {e["action"] for e in found} <= {"re-proposed", "rejected"}
    assert all(e["distance"] <= 0.05 and e["metric"] == "tokens" for e in found)
    redrawn = {(e["generation"], e["plan"]) for e in found if e["action"] == "re-proposed"}
    rejected = [(e["generation"], e["plan"]) for e in found if e["action"] == "rejected"]
    assert [(g, p) for g, p, _ in _rejections(runs[0])] == rejected
    assert redrawn - set(rejected), "some plans found a novel child on their second draw"
    evaluated = {v for v, _, _ in _variants(runs[0])}
    assert all(e["variant"] in evaluated for e in found)
    # determinism: the same seed makes the same children and rejects the same proposals
    assert _variants(runs[0]) == _variants(runs[1])
    assert found == _events(runs[1], "near_duplicate")


def test_offline_without_retries_rejects_the_plan(tmp_path: Path) -> None:
    run_dir = _fast_exp(tmp_path, "r0", novelty_distance=0.05, novelty_retries=0)
    found = _events(run_dir, "near_duplicate")
    assert found and all(e["action"] == "rejected" for e in found)
    assert len(_rejections(run_dir)) == len(found)


# --------------------------------------------------------------------------- LLM runs


class Repeater:
    """A scripted model: a mutation's reply is the segment with ``pass`` added (a few tokens
    away from the parent's); a reply to the novelty prompt adds a 40-entry table instead."""

    def __init__(self, differ: bool = True) -> None:
        self.differ = differ

    def __call__(self, request: dict[str, Any]) -> Action:
        users = [m["content"] for m in request["messages"] if m["role"] == "user"]
        code = FENCE.findall(users[0])[0].rstrip("\n")
        if NOVELTY_ASK in users[-1] and self.differ:
            head, _, body = code.partition("\n")
            return reply(f"A different idea.\n\n```python\n{head}\n{TABLE}{body}\n```\n")
        return reply(f"```python\n{code}\n    pass\n```\n")


def _llm_run(
    tmp_path: Path, name: str, responder: Any, finished: bool = True, **evolution: Any
) -> tuple[Path, Any, str]:
    """A generation-0 run of the template seed against the fake server: (run dir, server,
    stderr). ``finished``: whether it finishes (a generation whose every proposal is rejected
    for one reason stops the run)."""
    seed = template_seed(
        tmp_path / f"seed-{name}", initial_population=3, generations=0, **evolution
    )
    config = seed / "ge.toml"
    config.write_text(config.read_text().replace("[llm]\n", "[llm]\nconcurrency = 1\n", 1))
    run_dir = tmp_path / f"run-{name}"
    with serve(responder=responder) as server:
        if finished:  # in-process: nothing of the CLI's is checked
            summary = run_engine(
                seed, run_dir, executor=FakeExecutor(size_score).factory,
                model="openai/test-model", api_base=server.base_url,
            )  # fmt: skip
            assert summary["finished"], summary
            return run_dir, server, ""
        proc = ge_here(
            "run", str(seed), "--run-dir", str(run_dir), "--model", "openai/test-model",
            "--api-base", server.base_url, cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode != 0, proc.stderr[-2000:]
    return run_dir, server, proc.stderr


def _seed_id(run_dir: Path) -> str:
    return next(v for v, op, _ in _variants(run_dir) if op == "seed")


def test_llm_is_told_what_it_repeated_and_its_second_idea_is_kept(tmp_path: Path) -> None:
    run_dir, server, _ = _llm_run(tmp_path, "llm", Repeater(), novelty_distance=0.2)
    seed = _seed_id(run_dir)
    found = _events(run_dir, "near_duplicate")
    assert len(found) == 3 and all(e["action"] == "re-proposed" for e in found)
    assert all(e["variant"] == seed and e["metric"] == "tokens" for e in found)
    asks = [r["messages"] for r in server.requests if NOVELTY_ASK in r["messages"][-1]["content"]]
    assert len(asks) == 3 and len(server.requests) == 6
    for messages in asks:  # the reply, then what it repeated: the seed's segment, fenced
        assert messages[-2]["role"] == "assistant" and messages[-2]["content"].endswith(
            "pass\n```\n"
        )
        shown = FENCE.findall(messages[-1]["content"])[0]
        assert seed in messages[-1]["content"] and shown.strip() in messages[1]["content"]
    children = [v for v, op, _ in _variants(run_dir) if op != "seed"]
    # each plan's second reply is kept (two plans on one segment make the same child)
    assert len(children) + len(_events(run_dir, "duplicate")) == 3 and not _rejections(run_dir)


def test_llm_without_retries_rejects_the_plan_with_the_reason(tmp_path: Path) -> None:
    run_dir, server, stderr = _llm_run(
        tmp_path, "r0", Repeater(), finished=False, novelty_distance=0.2, novelty_retries=0
    )
    seed = _seed_id(run_dir)
    reasons = [reason for _, _, reason in _rejections(run_dir)]
    assert len(reasons) == 3 and len(server.requests) == 3
    assert all((m := REASON.match(r)) and m.group(1) == seed for r in reasons)
    assert f"near-duplicate of {seed}" in stderr  # every proposal of generation 0: the run stops


def test_llm_near_duplicate_again_after_the_retry_is_rejected(tmp_path: Path) -> None:
    run_dir, server, _ = _llm_run(
        tmp_path, "again", Repeater(differ=False), finished=False, novelty_distance=0.2
    )
    actions = [e["action"] for e in _events(run_dir, "near_duplicate")]
    assert actions.count("re-proposed") == actions.count("rejected") == 3
    assert len(_rejections(run_dir)) == 3 and len(server.requests) == 6


def test_embedding_distance_from_the_endpoint(tmp_path: Path) -> None:
    run_dir, server, _ = _llm_run(
        tmp_path, "emb", Repeater(), novelty_distance=0.2, novelty_embedding_model="openai/embed"
    )
    found = _events(run_dir, "near_duplicate")
    assert len(found) == 3 and all(e["metric"] == "embedding" for e in found)
    assert server.embedding_requests and not _events(run_dir, "warning")
    texts = [t for r in server.embedding_requests for t in r["input"]]
    assert len(texts) == len(set(texts)), "each segment is embedded once"
    assert all(len(bag_of_words(t)) == 64 for t in texts)


def test_failing_embedding_model_falls_back_to_tokens_with_one_warning(tmp_path: Path) -> None:
    def failing(request: dict[str, Any]) -> Action:
        server_box[0].embedding_status = 500
        return Repeater()(request)

    server_box: list[Any] = []
    seed = template_seed(
        tmp_path / "seed", initial_population=3, generations=0, novelty_distance=0.2,
        novelty_embedding_model="openai/embed",
    )  # fmt: skip
    with serve(responder=failing) as server:
        server_box.append(server)
        run_engine(
            seed, tmp_path / "run", executor=FakeExecutor(size_score).factory,
            model="openai/test-model", api_base=server.base_url,
        )  # fmt: skip
    warnings = [e["message"] for e in _events(tmp_path / "run", "warning")]
    assert len([w for w in warnings if "[evolution.novelty] embedding_model openai/embed failed" in w]) == 1
    found = _events(tmp_path / "run", "near_duplicate")
    assert found and all(e["metric"] == "tokens" for e in found)


def test_off_by_default_prompts_and_variants_unchanged(tmp_path: Path) -> None:
    plain, a, _ = _llm_run(tmp_path, "plain", Repeater())
    off, b, _ = _llm_run(
        tmp_path, "off", Repeater(), novelty_distance=0.0, novelty_retries=3,
        novelty_embedding_model="openai/embed",
    )  # fmt: skip
    key = lambda r: json.dumps(r["messages"], sort_keys=True)  # noqa: E731
    assert sorted(map(key, a.requests)) == sorted(map(key, b.requests))
    assert _variants(plain) == _variants(off) and len(_variants(plain)) > 1
    assert not b.embedding_requests and not _events(off, "near_duplicate")


def test_a_generation_of_near_duplicates_stops_the_run_with_the_novelty_fix(tmp_path: Path) -> None:
    from guided_evolution.engine.outcome import Outcome, failed_generation
    from guided_evolution.evolution.plan import Plan, Step

    reasons = [f"near-duplicate of {vid} (distance 0.0{i} <= 0.05)" for i, vid in
               enumerate(["9ae2ab80a6aa9e27", "be8485c3d3329fd0", "8b3c66c6a3c5a98e"])]  # fmt: skip
    outcomes = [Outcome(Plan(2, i, "p", (Step("mutation"),)), None, False, r)
                for i, r in enumerate(reasons)]  # fmt: skip
    failed = failed_generation(2, outcomes, {})
    assert failed is not None, "different variants named, but one cause: the run must stop"
    error = failed.error(tmp_path / "run", str(tmp_path / "seed"))
    assert "repeated an evaluated variant (3 of 3)" in error.message
    assert "[evolution.novelty] distance" in (error.hint or "")
