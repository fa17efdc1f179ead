"""LLM faults injected through the real HTTP path: the run goes on, retries are bounded, spend
stays within budget, and every failure is recorded with its reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from guided_evolution.runstore.run_index import RunIndex
from tests.reliability.support import llm_config, set_config
from tests.support.cli import here_json
from tests.support.openai_server import empty, hang, huge, malformed, reply, reset, serve, status
from tests.support.seeds import CodeWriter, template_seed

pytestmark = pytest.mark.timeout(240)

RETRIES = 2
PRICE = 1e-6  # USD per token, in and out


def test_fault_storm_is_survived_bounded_recorded_and_within_budget(tmp_path: Path) -> None:
    attempts = RETRIES + 1
    script = [
        *[status(429, retry_after=0)] * attempts,  # a 429 storm exhausts one call's retries
        status(500), status(502), status(503),  # 5xx on every attempt
        *[hang(5)] * attempts,  # past the 1 s deadline every time
        *[reset()] * attempts,  # connection resets
        *[malformed()] * attempts,  # HTTP 200 with a body that is not JSON
        status(429, retry_after=0), status(503),  # a short storm the third attempt survives
        empty(),  # content null
        huge(300_000, completion_tokens=100_000),  # a huge reply without code
        reply("I would rather not write code today."),  # code-less
        reply("```python\n\n```"),  # an empty code block
    ]  # fmt: skip
    # one proposal at a time, so all attempts of one call meet consecutive scripted faults
    seed = template_seed(
        tmp_path / "seed", generations=1, initial_population=10, population=6, max_pending=1
    )
    set_config(seed, "executor", slots=1)
    budget = 1.0
    with serve(script, responder=CodeWriter()) as server:
        llm_config(
            seed,
            server.base_url,
            concurrency=1,
            timeout_s=1,
            retries=RETRIES,
            backoff_s=0.01,
            budget_usd=budget,
        )
        text = (
            (seed / "ge.toml")
            .read_text()
            .replace(
                'models = ["openai/test-model"]',
                f'models = [{{ model = "openai/test-model", input_cost_per_token = {PRICE}, output_cost_per_token = {PRICE} }}]',
            )
        )
        (seed / "ge.toml").write_text(text)
        summary = here_json(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            cwd=tmp_path,
            env={"OPENAI_API_KEY": "sk-x"},
        )
        sent = len(server.requests)
        assert server.pending == 0, "every scripted fault was served"
    assert summary["finished"] and summary["stop_reason"].startswith("completed"), summary
    assert summary["evaluated"] >= 3, "children were still made and evaluated after the faults"
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        calls = index.calls()
        rejected = [e.data for e in index.events("proposal_rejected")]
    finally:
        index.close()
    errors = [c for c in calls if c.outcome == "error"]
    reasons = " | ".join(c.error or "" for c in errors)
    for pattern in (
        r"429|rate",
        r"HTTP 5\d\d",
        r"deadline|timed? ?out",
        r"connect|reset",
        r"JSON|malformed|HTTP|unexpected",
    ):
        assert re.search(pattern, reasons, re.I), (
            f"no recorded error matches {pattern!r}: {reasons}"
        )
    assert len(errors) >= 5, reasons
    # bounded retries: no call made more than 1 + retries attempts, and the server saw no others
    assert all(1 <= c.attempts <= attempts for c in calls if c.outcome != "cached"), [
        c.attempts for c in calls
    ]
    assert sent == sum(c.attempts for c in calls if c.outcome != "cached"), (
        sent,
        [c.attempts for c in calls],
    )
    assert any(c.outcome == "ok" and c.attempts == attempts for c in calls), (
        "the short storm was retried"
    )
    # the hangs were cut at the deadline, all three attempts of one call (uncut, each would end
    # in a code-less "ok" reply)
    cut = f"deadline of 1 s exceeded after {attempts} attempts"
    assert any((c.error or "").endswith(cut) for c in errors), reasons
    # every failed proposal is an event with its reason: the LLM errors and the unusable replies
    assert all(r.get("reason") for r in rejected)
    rejected_reasons = [r["reason"] for r in rejected]
    for error in errors:
        assert error.error in rejected_reasons, (error.error, rejected_reasons)
    unusable = [r for r in rejected_reasons if not any(r == e.error for e in errors)]
    assert len(unusable) >= 4, f"empty, huge, code-less and empty-block replies: {unusable}"
    # spend: what the index recorded per call adds up, errors cost nothing, the budget holds
    assert all(c.cost_usd == 0 for c in errors)
    spent = sum(c.cost_usd for c in calls if c.outcome == "ok")
    assert abs(summary["cost_usd"] - spent) < 1e-9
    assert spent <= budget
