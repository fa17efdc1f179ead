"""Reproducibility: two runs with the same seed, and a run killed then resumed, are the same run.

Compared per run: every variant's id, generation, operator, parents, status and metrics; the
population, elites and hall of fame of each generation; the git tree of every variant branch
(``git ls-tree -r``, so commit times do not matter); the LLM reply cache (key -> reply); and the
HTML report with times and paths normalized (see :func:`normalized_report`).
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.support import llm_config
from tests.support.cli import ge_here, here_json
from tests.support.gitcli import git as _git
from tests.support.openai_server import Action, reply, serve
from tests.support.seeds import bump_first_integer, template_seed

pytestmark = pytest.mark.timeout(240)

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"```(?:python)?\n(.*?)```", re.S)
_TIME = re.compile(
    r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:?\d\d)?"  # timestamps
    r"|\b\d+(?:\.\d+)? ?(?:ms|s|min|h)\b"  # durations (evaluation and call times)
)
_PROGRESS = re.compile(r'<section id="progress">.*?</section>', re.S)
EVOLUTION = {
    "generations": 2,
    "initial_population": 4,
    "population": 6,
    "crossover_probability": 0.7,
    "eot_probability": 0.7,
    "eot_start_generation": 1,
    "seed": 7,
}


def content_writer(request: dict[str, Any]) -> Action:
    """A fake LLM whose reply depends only on the request's last user message (not on arrival
    order, which concurrent calls make vary): EoT reasoning gets prose, the rest gets the prompt's
    first code block with one integer changed and a revision tag."""
    user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    n = int(hashlib.sha256(user.encode()).hexdigest()[:8], 16)
    if "Do not write any code" in user:
        return reply(f"Lesson {n % 1000}: smaller steps helped.")
    blocks = _FENCE.findall(user)
    if not blocks:
        return reply("I cannot help with that.")
    code = bump_first_integer(blocks[0], n)
    return reply(f"```python\n{code.rstrip()}\n# revision {n % 1000}\n```\n", 120, 80)


def snapshot(run_dir: Path) -> dict[str, Any]:
    """Everything two identical runs must share, free of times, paths and row ids."""
    db = sqlite3.connect(f"file:{run_dir / 'index.sqlite'}?mode=ro", uri=True)
    try:
        variants = db.execute(
            "SELECT id, generation, operator, parents, segment, persona, temperature, status,"
            " eot_reflection FROM variants ORDER BY id"
        ).fetchall()
        metrics = db.execute(
            "SELECT variant_id, stage, status, metrics, failure_reason FROM evaluations"
            " ORDER BY variant_id, stage, status"
        ).fetchall()
        generations = db.execute(
            "SELECT generation, population, elites, hall_of_fame FROM generations ORDER BY 1"
        ).fetchall()
        cache = db.execute("SELECT key, reply FROM llm_cache ORDER BY key").fetchall()
    finally:
        db.close()
    repo = run_dir / "repo.git"
    branches = _git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/").split()
    trees = {ref: _git(repo, "ls-tree", "-r", ref) for ref in branches}
    return {
        "variants": variants,
        "evaluations": metrics,
        "generations": generations,
        "trees": trees,
        "cache": cache,
    }


def normalized_report(run_dir: Path, tmp_path: Path, cards: tuple[str, ...] = ()) -> str:
    """`ge report` of the run, with what may differ between identical runs normalized:

    - the run directory's path and name -> ``RUN``; timestamps and durations -> ``TIME``;
    - the "Best so far" section (plots over wall-clock time, and over the spend paid by the time
      each evaluation ended) -> ``PROGRESS``;
    - the values of the counter ``cards`` named (for a resumed run, see the test).
    """
    out = tmp_path / f"{run_dir.name}.html"
    proc = ge_here("report", str(run_dir), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    text = text.replace(str(run_dir.resolve()), "RUN").replace(str(run_dir), "RUN")
    text = re.sub(rf"\b{re.escape(run_dir.name)}\b", "RUN", text)
    text = _PROGRESS.sub("PROGRESS", text)
    for card in cards:
        text, n = re.subn(
            rf'(<div class="k">{re.escape(card)}</div><div class="v">)[^<]*', r"\1CARD", text
        )
        assert n == 1, card
    return _TIME.sub("TIME", text)


def operators(snap: dict[str, Any]) -> dict[int, list[str]]:
    """generation -> sorted operators of its variants."""
    out: dict[int, list[str]] = {}
    for row in snap["variants"]:
        out.setdefault(row[1], []).append(row[2])
    return {g: sorted(ops) for g, ops in out.items()}


def _llm_run(seed: Path, run_dir: Path, cwd: Path) -> dict[str, Any]:
    return here_json(
        "run", str(seed), "--run-dir", str(run_dir), cwd=cwd, env={"OPENAI_API_KEY": "sk-x"}
    )


def _killed_then_resumed(seed: Path, run_dir: Path, cwd: Path) -> dict[str, Any]:
    """Run, SIGKILLed by the kill-point launcher inside the 8th evaluation's transaction (in
    generation 1: the seed and generation 0 record 7), then `ge resume` to the end."""
    env = {
        **os.environ,
        "LITELLM_OFFLINE_MODE": "true",
        "PYTHONPATH": str(ROOT),
        "OPENAI_API_KEY": "sk-x",
    }
    args = ["run", str(seed), "--run-dir", str(run_dir), "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability.killpoint", "evaluation", "8", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    db = sqlite3.connect(f"file:{run_dir / 'index.sqlite'}?mode=ro", uri=True)
    try:
        saved = [g for (g,) in db.execute("SELECT generation FROM generations")]
    finally:
        db.close()
    assert saved == [0], f"killed in generation 1, not after generations {saved}"
    return here_json("resume", str(run_dir), cwd=cwd, env={"OPENAI_API_KEY": "sk-x"})


def test_llm_runs_with_eot_and_crossover_are_identical_and_resume_matches(tmp_path: Path) -> None:
    with serve(responder=content_writer) as server:
        runs = {}
        for name in ("run_alpha", "run_beta", "run_resumed"):
            seed = template_seed(tmp_path / f"seed_{name}", **EVOLUTION)
            llm_config(seed, server.base_url, concurrency=4)
            run_dir = tmp_path / name
            summary = (
                _killed_then_resumed(seed, run_dir, tmp_path)
                if name == "run_resumed"
                else _llm_run(seed, run_dir, tmp_path)
            )
            assert summary["finished"], summary
            runs[name] = snapshot(run_dir)
    a = runs["run_alpha"]
    ops = {op for row in a["variants"] for op in row[2].split("+")}
    eot = [row for row in a["variants"] if row[8]]
    assert "crossover" in ops and eot, f"both crossover and EoT children occur: {operators(a)}"
    assert a["cache"], "LLM replies were cached"
    for name in ("run_beta", "run_resumed"):
        other = runs[name]
        assert operators(other) == operators(a), name
        for key in a:
            assert other[key] == a[key], f"{name}: {key} differs"
    report = normalized_report(tmp_path / "run_alpha", tmp_path)
    assert normalized_report(tmp_path / "run_beta", tmp_path) == report
    # A resumed run's replies served from the cache are counted as LLM calls and tokens (37
    # calls, 5,550 tokens against 28 and 4,305 here, $0 either way): only those cards may differ.
    resumed = normalized_report(tmp_path / "run_resumed", tmp_path, ("LLM calls", "tokens"))
    assert resumed == normalized_report(tmp_path / "run_alpha", tmp_path, ("LLM calls", "tokens"))


def test_offline_runs_are_identical(tmp_path: Path) -> None:
    runs = []
    for name in ("run_alpha", "run_beta"):
        seed = template_seed(tmp_path / f"seed_{name}", **EVOLUTION)
        assert here_json("run", str(seed), "--run-dir", str(tmp_path / name), cwd=tmp_path)[
            "finished"
        ]
        runs.append(snapshot(tmp_path / name))
    assert any(row[2] == "offline-crossover" for row in runs[0]["variants"])
    assert runs[0] == runs[1]
    assert normalized_report(tmp_path / "run_alpha", tmp_path) == normalized_report(
        tmp_path / "run_beta", tmp_path
    )
