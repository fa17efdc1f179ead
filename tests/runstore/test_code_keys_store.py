"""Each variant's code_key (its program up to comments and spacing) is kept in the index, so a
resumed run finds a twin of an earlier session's program without reading every variant from git
(issue 29 item 4: `ge resume` of a large run starts at once). A run whose index has no keys (an
earlier ge's, an index rebuilt from git) has them computed once, on its first child."""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.engine.recorder import code_key
from guided_evolution.evolution.segments import variant_id
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from tests.support.harness import (
    FakeExecutor,
    intercepting,
    resume_engine,
    run_engine,
    size_score,
)
from tests.support.seeds import template_seed

PY = ["model.py"]


def _stored_keys(run: Path) -> dict[str, str]:
    conn = sqlite3.connect(run / "index.sqlite")
    try:
        return dict(conn.execute("SELECT variant_id, key FROM code_keys").fetchall())
    finally:
        conn.close()


def _keys_from_git(run: Path) -> dict[str, str]:
    with (
        RunIndex.open(run / "index.sqlite", readonly=True) as index,
        GitStore.open(run / "repo.git") as store,
    ):
        out = {}
        for v in index.variants():
            if v.commit_sha:
                data = store.read_files(v.commit_sha)
                out[v.id] = code_key({n: data[n].decode() for n in PY if n in data}, PY)
        return out


@pytest.mark.parametrize("earlier_ge", [False, True])
def test_a_resumed_run_finds_a_twin_of_an_earlier_sessions_child(
    tmp_path: Path, earlier_ge: bool
) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    fake = FakeExecutor(size_score)
    run = tmp_path / "run"
    run_engine(seed, run, executor=fake.factory)
    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        child = next(v for v in index.variants(status="evaluated") if v.operator != "seed")
        text = GitStore.open(run / "repo.git").read_files(child.commit_sha or "")["model.py"]
    if earlier_ge:  # an index without the keys: they are computed from git on the first child
        conn = sqlite3.connect(run / "index.sqlite")
        conn.execute("DROP TABLE code_keys")
        conn.commit()
        conn.close()
    else:
        assert _stored_keys(run) == _keys_from_git(run)
    twin_text = "# the same program, tidied\n" + text.decode().replace("    ", "  ") + "\n\n"

    def hook(plan: Any, made: Any) -> Any:
        if plan.generation == 2 and plan.index == 0:
            return dataclasses.replace(made, files={"model.py": twin_text})
        return made

    resume_engine(run, executor=fake.factory, proposer=intercepting(hook, []), generations=2)
    twin = variant_id({"model.py": twin_text}, PY)
    assert twin not in [r.variant_id for r in fake.requests]
    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        dups = [e.data for e in index.events("duplicate") if e.data.get("child") == twin]
    assert [d["variant"] for d in dups] == [child.id]
    assert _stored_keys(run) == _keys_from_git(run)  # every committed variant, as git has it
