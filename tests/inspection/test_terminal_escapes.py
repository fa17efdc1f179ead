"""Variant-written text reaches a terminal inert: control characters (terminal escapes, C1 codes,
bidirectional overrides) are shown escaped in every command's text output, and rich markup in it
shows as is; ``--json`` and the store keep the raw value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guided_evolution.termsafe import inert
from tests.support.cli import ge_here
from tests.support.seeds import template_seed, write_config

# An OSC 52 clipboard write, a title change, a screen clear, a C1 CSI, a right-to-left override
# and rich markup: each would act on the terminal (or on rich) if printed raw.
HOSTILE = "\x1b]52;c;cHduZWQ=\x07\x1b]0;pwned\x07\x1b[2J\x9b31m\u202eevil[bold]x[/bold]\x9d"
RAW = ("\x1b", "\x07", "\x9b", "\x9d", "\u202e")

_EVALUATE_HEAD = """
import hashlib, json, os, sys
HOSTILE = {hostile!r}
SEED_FAILS = {seed_fails!r}
"""

_EVALUATE_MAIN = """
def main() -> int:
    if "--check" in sys.argv:
        return 0
    source = open("model.py").read()
    print("training " + HOSTILE, flush=True)
    child = source != SEED_SOURCE
    if SEED_FAILS or (child and hashlib.sha256(source.encode()).digest()[0] % 2 == 0):
        print("boom " + HOSTILE, flush=True)
        return 1
    metrics = {"score": -len(source) / 1000.0, "size": len(source), "note": HOSTILE, HOSTILE: 1.5}
    with open(os.environ["GE_METRICS"], "w") as fh:
        json.dump(metrics, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
"""


def _hostile_seed(directory: Path, seed_fails: bool = False) -> Path:
    """The template seed whose evaluator prints and writes ``HOSTILE``: in its output, as the
    value of a reported-only objective, as a metric's name and value; about half of the children
    fail (with it as their last output line), or the seed itself fails."""
    seed = template_seed(directory, initial_population=4, population=4, generations=1)
    source = (seed / "model.py").read_text()
    (seed / "evaluate.py").write_text(
        _EVALUATE_HEAD.format(hostile=HOSTILE, seed_fails=seed_fails)
        + f"SEED_SOURCE = {source!r}\n"
        + _EVALUATE_MAIN
    )
    write_config(
        seed / "ge.toml",
        {
            "seed": {"files": ["model.py"]},
            "llm": {"models": ["offline"], "timeout_s": 10, "retries": 1, "backoff_s": 0.01},
            "evolution": {
                "initial_population": 4,
                "population": 4,
                "elites": 2,
                "hall_of_fame": 10,
                "generations": 1,
                "seed": 1,
            },
            "evaluator": {"command": "python evaluate.py", "timeout_s": 60},
            "executor": {"slots": 2, "gpus": []},
        },
        [
            {"name": "score", "direction": "max"},
            {"name": "size", "direction": "min"},
            {"name": "note", "direction": "max", "select": False},
        ],
    )
    return seed


def _assert_inert(text: str, where: str) -> None:
    found = [repr(ch) for ch in RAW if ch in text]
    assert not found, f"{where} printed raw {', '.join(found)}: {text[-2000:]!r}"


WIDE = {"COLUMNS": "400"}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The run of the hostile seed, and what `ge run` printed (stdout and stderr)."""
    root = tmp_path_factory.mktemp("hostile")
    seed = _hostile_seed(root / "seed")
    run = root / "run"
    proc = ge_here("run", str(seed), "--run-dir", str(run), cwd=root, env=WIDE)
    # A generation whose every child failed stops the run (exit 2): the record is there either way.
    stopped = proc.returncode == 2 and "every child of generation" in proc.stderr
    assert proc.returncode == 0 or stopped, proc.stderr[-3000:]
    return run, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def hostile_run(hostile: tuple[Path, str]) -> Path:
    return hostile[0]


def test_run_prints_its_summary_inert(hostile: tuple[Path, str]) -> None:
    _, printed = hostile
    _assert_inert(printed, "ge run")
    assert "\\x1b]0;pwned\\x07" in printed  # the reported-only objective of the seed, in the front


def _json(*args: str, cwd: Path) -> dict:
    proc = ge_here(*args, "--json", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _text(*args: str, cwd: Path) -> str:
    proc = ge_here(*args, cwd=cwd, env=WIDE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_inert(proc.stdout + proc.stderr, "ge " + " ".join(args[:1]))
    return proc.stdout


def _variants(run: Path) -> list[dict]:
    return _json("log", str(run), cwd=run.parent)["events"]


def test_show_prints_metric_names_values_and_output_tail_inert(hostile_run: Path) -> None:
    events = _variants(hostile_run)
    ok = next(e["variant"] for e in events if e["kind"] == "evaluated")
    failed = next(e["variant"] for e in events if e["kind"] == "evaluation_failed")
    raw = _json("show", str(hostile_run), ok, cwd=hostile_run.parent)
    assert raw["metrics"][HOSTILE] == 1.5 and raw["metrics"]["note"] == HOSTILE  # --json: raw
    shown = _text("show", str(hostile_run), ok, cwd=hostile_run.parent)
    assert "\\x1b]52;c;cHduZWQ=\\x07" in shown and "\\x9b31m" in shown and "\\u202e" in shown
    assert "[bold]x[/bold]" in shown  # rich markup shown as written, not applied
    raw = _json("show", str(hostile_run), failed, cwd=hostile_run.parent)
    assert HOSTILE in raw["output_tail"]
    shown = _text("show", str(hostile_run), failed, cwd=hostile_run.parent)
    assert "boom \\x1b]52;c;cHduZWQ=\\x07" in shown


def test_best_status_lineage_and_log_print_inert(hostile_run: Path) -> None:
    cwd = hostile_run.parent
    best = _json("best", str(hostile_run), cwd=cwd)
    assert any(row["metrics"].get("note") == HOSTILE for row in best["front"])
    assert "\\x1b]0;pwned\\x07" in _text("best", str(hostile_run), cwd=cwd)
    _text("status", str(hostile_run), cwd=cwd)
    ok = next(e["variant"] for e in _variants(hostile_run) if e["kind"] == "evaluated")
    _text("lineage", str(hostile_run), ok, cwd=cwd)
    _text("log", str(hostile_run), cwd=cwd)
    _text("log", str(hostile_run), "--failures", cwd=cwd)
    _text("diff", str(hostile_run), ok, cwd=cwd)


def test_a_failing_seeds_last_output_line_is_printed_inert(tmp_path: Path) -> None:
    seed = _hostile_seed(tmp_path / "seed", seed_fails=True)
    run = tmp_path / "run"
    proc = ge_here("run", str(seed), "--run-dir", str(run), cwd=tmp_path, env=WIDE)
    assert proc.returncode == 2 and "the seed failed its own evaluation" in proc.stderr
    _assert_inert(proc.stdout + proc.stderr, "ge run")
    assert "(last output: boom \\x1b]52;c;cHduZWQ=\\x07" in proc.stderr
    assert "[bold]x[/bold]" in proc.stderr
    assert not run.exists()  # the seed is evaluated before its run is created (issue 26)


def test_inert_escapes_control_and_disguising_characters_only() -> None:
    assert (
        inert("plain text, ümlauts, 日本語, emoji 👩\u200d💻")
        == "plain text, ümlauts, 日本語, emoji 👩\u200d💻"
    )
    assert inert("a\x1b[2Jb\x07\x9b\x7f\x08\x00") == "a\\x1b[2Jb\\x07\\x9b\\x7f\\x08\\x00"
    assert inert("\u202eevil\u2066\u200b\ufeff") == "\\u202eevil\\u2066\\u200b\\ufeff"
    assert inert("one\ntwo\tthree\r") == "one\\ntwo\\tthree\\r"
    assert inert("one\r\ntwo\tthree\rfour", multiline=True) == "one\ntwo\tthree\\rfour"
    assert inert("\udcff\U000e0041") == "\\udcff\\U000e0041"  # lone surrogate, tag character
    assert inert(1.5) == "1.5" and inert(None) == "None"
