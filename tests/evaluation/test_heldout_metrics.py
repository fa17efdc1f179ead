"""What an LLM sees of the metrics, and how it samples, through `ge run` against a fake server.

A reported-only objective (``select = false``, a held-out test metric) and metrics nobody
configured never reach any request (mutation, crossover, EoT, fix) or the run's record of LLM
calls, while the selecting objectives do reach the EoT prompts. ``[evolution.top_p]`` is sent per
operator, and only where it is set.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, bump_first_integer, template_seed, with_statement

_INT = re.compile(r"(?<![\w.])(\d+)(?![\w.])")  # an integer literal, as bump_first_integer finds

HELDOUT = "heldout_accuracy"
HELDOUT_VALUE = "0.917364"
EXTRA = "unconfigured_extra"
EXTRA_VALUE = "0.428571"
TOP_P = {"initial": 0.11, "mutation": 0.22, "crossover": 0.33, "fix": 0.55}  # eot: unset

# Revisions n % 4 == 1 crash after printing the held-out metric by name; n % 4 == 2 write a NaN
# score (a failure with recorded metrics) after printing the held-out value without its name.
EVALUATOR_TAIL = f'''
    import re
    revisions = re.findall(r"# revision (\\d+)", Path("model.py").read_text())
    n = int(revisions[-1]) if revisions else 0
    metrics["{HELDOUT}"] = {HELDOUT_VALUE}
    metrics["{EXTRA}"] = {EXTRA_VALUE}
    if n % 4 == 1:
        print("{HELDOUT} = {HELDOUT_VALUE}")
        print("crashing on purpose", file=sys.stderr)
        return 1
    if n % 4 == 2:
        print("held-out split: {HELDOUT_VALUE}")
        metrics["score"] = float("nan")
    Path(args.metrics).write_text(json.dumps(metrics))
'''


def _seed(directory: Path) -> Path:
    seed = template_seed(
        directory,
        crossover_probability=0.5,
        eot_probability=0.5,
        eot_start_generation=1,
        generations=3,
        fix_attempts=1,
    )
    evaluate = seed / "evaluate.py"
    text = evaluate.read_text()
    write = "    Path(args.metrics).write_text(json.dumps(metrics))\n"
    assert write in text
    evaluate.write_text(text.replace(write, EVALUATOR_TAIL.lstrip("\n")))
    config = seed / "ge.toml"
    config.write_text(
        config.read_text()
        + "[evolution.top_p]\n"
        + "".join(f"{kind} = {value}\n" for kind, value in TOP_P.items())
        + f'\n[[objectives]]\nname = "{HELDOUT}"\ndirection = "max"\nselect = false\n'
    )
    return seed


def _kind(request: dict[str, Any]) -> str:
    user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
    if "Do not write any code" in user:
        return "eot"
    if "Now put that lesson to work" in user:
        return "eot"
    if "made the program fail when it was evaluated" in user:
        return "fix"
    if "Merge them into a single version" in user:
        return "crossover"
    return "mutation"


def _edit(code: str, n: int) -> str:
    """The fake LLM's change: a new program per request (CodeWriter's default edit alone repeats
    every third request, and the duplicates left too few parents for a crossover in some runs),
    inside the requested segment. A statement at the top of its function's body, and its first
    integer literal raised where it has one (the score changes too). A statement after the
    function, at the top level, was taken for the next segment's code: the proposal was rejected,
    and a generation whose every proposal was (under load, about one run in six) stopped the
    run."""
    lines = code.split("\n")
    body = next((i for i, line in enumerate(lines[1:], 1) if line.strip()), None)
    if body is None or not lines[0].lstrip().startswith(("def ", "async def ")):
        return with_statement(bump_first_integer(code, n), f"_revision = {n}")
    if _INT.search("\n".join(lines[1:])):
        lines = bump_first_integer(code, n).split("\n")
    indent = lines[body][: len(lines[body]) - len(lines[body].lstrip())]
    lines.insert(body, f"{indent}_revision = {n}")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict[str, Any]], Path]:
    """The requests the fake LLM received during one run, and the run directory."""
    tmp = tmp_path_factory.mktemp("heldout")
    seed = _seed(tmp / "seed")
    writer = CodeWriter(edit=_edit)
    with serve(responder=writer) as server:
        summary = here_json(
            "run", str(seed), "--run-dir", str(tmp / "run"), "--model", "openai/test-model",
            "--api-base", server.base_url, cwd=tmp,
        )  # fmt: skip
        requests = list(server.requests)
    assert summary["finished"]
    return requests, tmp / "run"


def test_reported_only_metrics_reach_no_prompt(run: tuple[list[dict[str, Any]], Path]) -> None:
    requests, run_dir = run
    kinds = [_kind(r) for r in requests]
    assert {"mutation", "crossover", "eot", "fix"} <= set(kinds), kinds
    for request in requests:
        text = json.dumps(request["messages"])
        for secret in (HELDOUT, HELDOUT_VALUE, EXTRA, EXTRA_VALUE):
            assert secret not in text, (secret, _kind(request))
    # The selecting objectives do reach the EoT prompts (so the check above can fail).
    reasons = [
        json.dumps(r["messages"]) for r in requests if "Do not write any code" in json.dumps(r)
    ]
    assert reasons and all("- score:" in t and "- size:" in t for t in reasons)
    # The fix prompts saw the failures, with the held-out lines withheld.
    fixes = [json.dumps(r["messages"]) for r, k in zip(requests, kinds, strict=True) if k == "fix"]
    assert any("line withheld" in t for t in fixes) and any(
        "crashing on purpose" in t for t in fixes
    )
    # Nor does the run's record of the LLM calls hold it; the evaluations do keep the metric.
    db = sqlite3.connect(run_dir / "index.sqlite")
    try:
        calls = db.execute("SELECT messages, COALESCE(reply, '') FROM llm_calls").fetchall()
        metrics = [m for (m,) in db.execute("SELECT metrics FROM evaluations")]
    finally:
        db.close()
    assert len(calls) >= len(requests)
    for messages, reply in calls:
        assert HELDOUT not in messages + reply and HELDOUT_VALUE not in messages + reply
    assert any(HELDOUT_VALUE in m for m in metrics)


def test_top_p_is_sent_per_operator_only_where_set(run: tuple[list[dict[str, Any]], Path]) -> None:
    requests, _ = run
    expected = {
        "mutation": {TOP_P["initial"], TOP_P["mutation"]},
        "crossover": {TOP_P["crossover"]},
        "fix": {TOP_P["fix"]},
        "eot": {None},
    }
    seen: dict[str, set[float | None]] = {}
    for request in requests:
        seen.setdefault(_kind(request), set()).add(request.get("top_p"))
    assert seen == expected
    assert requests[0].get("top_p") == TOP_P["initial"]  # generation 0's mutations
