"""One held-out rule (``evolution/heldout.py``) for every prompt (issue 25 item 8).

The rule itself: names in any spelling, values in every printed form down to 2 significant
digits, nothing for values of fewer digits. Then a `ge run` against the fake OpenAI-compatible
server whose evaluator records a distinctive held-out value on every variant that passes, prints
it (rounded, without its name) in its feedback, and makes some children fail after printing it:
a failed child has no metrics of its own, so only its parents' recorded value can find it. No
form of the value reaches any request (mutation, crossover, EoT, fix), while the text around it
does (so the check can fail). Before, the fix prompt's scrub looked only at the failed child's
own metrics, and neither scrub knew rounded forms such as "0.87" or "87.3 %".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guided_evolution.evolution.heldout import (
    WITHHELD_LINE,
    WITHHELD_VALUE,
    HeldOut,
    shown_metrics,
    significant_digits,
    value_forms,
)
from guided_evolution.runstore.records import EvaluationRecord
from tests.support.cli import here_json
from tests.support.openai_server import serve
from tests.support.seeds import CodeWriter, template_seed

HELD = "test_accuracy"
VALUE = 0.873142
# how the evaluator prints it: none of these names the metric
PRINTED = ("0.873142", "0.8731", "87.31 %", "87.3%", "0.87", ".873")


@pytest.mark.parametrize("form", PRINTED)
def test_every_printed_form_of_a_withheld_value_is_replaced(form: str) -> None:
    rule = HeldOut.of([HELD], [None, {HELD: VALUE, "score": 0.5}])
    text = f"validation 0.5000 fine\nsplit B: {form} today\nend"
    shown = rule.scrub(text)
    assert form.rstrip(" %") not in shown
    assert (
        shown
        == f"validation 0.5000 fine\nsplit B: {WITHHELD_VALUE}{form[len(form.rstrip(' %')) :]} today\nend"
    )


def test_a_line_naming_the_metric_in_any_spelling_is_withheld() -> None:
    rule = HeldOut.of([HELD], [])
    for line in ("Test accuracy: high", "TEST-ACCURACY ok", "the test.accuracy went up"):
        assert rule.scrub(f"a\n{line}\nb") == f"a\n{WITHHELD_LINE}\nb"
    assert rule.scrub("accuracy 0.9") == "accuracy 0.9"


def test_numbers_that_only_contain_a_form_are_kept() -> None:
    rule = HeldOut.of([HELD], [{HELD: VALUE}])
    kept = "87.9 and 0.8799 and 187.31 and v0.87 and 0.873142e5 and 1.87"
    assert rule.scrub(kept) == kept


def test_values_of_under_two_significant_digits_are_not_looked_for() -> None:
    """A withheld 0.5 or 1.0 would blank every "0.5", "50" or "1"; its name still withholds lines."""
    for value in (0.5, 1.0, 100.0, 3, 0.0):
        assert value_forms(value) == set()
    rule = HeldOut.of([HELD], [{HELD: 0.5}])
    assert rule.scrub("lr 0.5, 50 epochs") == "lr 0.5, 50 epochs"
    assert all(significant_digits(f) >= 2 for f in value_forms(VALUE))
    assert {"0.87", "87", "87.3", "0.8731", "8.73e-01"} <= value_forms(VALUE)


def test_without_withheld_metrics_nothing_changes() -> None:
    assert HeldOut.of([], [{HELD: VALUE}]).scrub("0.873142") == "0.873142"
    record = EvaluationRecord("v", "ok", metrics={HELD: VALUE}, feedback="split 87.3%")
    assert record.prompt_feedback([HELD]) == f"split {WITHHELD_VALUE}%"
    assert record.prompt_feedback([]) == "split 87.3%"


def test_shown_metrics_are_the_selecting_objectives_finite_values() -> None:
    metrics = {"score": 0.5, "size": float("nan"), HELD: VALUE, "other": 2.0, "flag": True}
    assert shown_metrics(metrics, ["score", "size", "flag"]) == {"score": 0.5}
    assert shown_metrics(None, ["score"]) == {}


# --------------------------------------------------------------------------- a run

EVALUATOR_TAIL = f'''
    import re
    revisions = re.findall(r"# revision (\\d+)", Path("model.py").read_text())
    n = int(revisions[-1]) if revisions else 0
    if n % 3 == 1:  # fails after printing the value its parents recorded, without its name
        print("split B: 0.8731 (87.31 %), 0.87 rounded; planted-failure-{{n}}")
        print("crashing on purpose", file=sys.stderr)
        return 1
    metrics["{HELD}"] = {VALUE}
    if os.environ.get("GE_FEEDBACK"):
        Path(os.environ["GE_FEEDBACK"]).write_text(
            f"planted-feedback-{{n}}: split B 87.3%, i.e. 0.873142 or .873\\n"
        )
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
        + f'\n[[objectives]]\nname = "{HELD}"\ndirection = "max"\nselect = false\n'
    )
    return seed


def _kind(user: str) -> str:
    if "Do not write any code" in user or "Now put that lesson to work" in user:
        return "eot"
    if "made the program fail when it was evaluated" in user:
        return "fix"
    if "Merge them into a single version" in user:
        return "crossover"
    return "mutation"


def test_no_form_of_a_parents_held_out_value_reaches_any_prompt(tmp_path: Path) -> None:
    seed = _seed(tmp_path / "seed")
    with serve(responder=CodeWriter()) as server:
        summary = here_json(
            "run", str(seed), "--run-dir", str(tmp_path / "run"), "--model", "openai/test-model",
            "--api-base", server.base_url, cwd=tmp_path,
        )  # fmt: skip
        requests: list[dict[str, Any]] = list(server.requests)
    assert summary["finished"]
    users = [[m for m in r["messages"] if m["role"] == "user"][-1]["content"] for r in requests]
    kinds = {_kind(u) for u in users}
    assert {"mutation", "crossover", "eot", "fix"} <= kinds, kinds
    for request in requests:
        text = json.dumps(request["messages"])
        for secret in ("8731", "87.3", "0.87", ".873", "test_accuracy", "test accuracy"):
            assert secret not in text, (secret, _kind(text))
    everything = "\n".join(json.dumps(r["messages"]) for r in requests)
    # what was around the value did reach the prompts: the scrub, not an absence, hid it
    assert "planted-failure-" in everything and "crashing on purpose" in everything
    assert "planted-feedback-" in everything
    assert WITHHELD_VALUE in everything
