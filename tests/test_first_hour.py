"""The first hour with ge (issue 13): Ctrl-C, finding the latest run, live/stopped status,
extending a finished run, credentials checked before the run exists, readable failures and help.

Every test drives the real `ge` entry point on the offline template seed (the finished run that
several read is conftest's ``template_run``, made once in-process): Ctrl-C/SIGTERM, the live panel
on a terminal, `ge run --help` and a status beside another process's lock in a `ge` process;
the other commands (runs, resumes, status, best, show, diff, lineage, log, each `--help`)
through the CLI's entry point in this process (``ge_here``: the same parsing, run, messages and
exit codes, without the start-up; its output is the process's: tests/test_cli_here.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from guided_evolution.runstore.records import EvaluationRecord, VariantRecord
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import RunLock
from tests.support.cli import ge, ge_here, here_json, run_json
from tests.support.openai_server import serve, status
from tests.support.seeds import CodeWriter, template_seed

CopyRun = Callable[[Path], Path]


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    return subprocess.Popen(
        [sys.executable, "-m", "guided_evolution", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell without job control starts background jobs with SIGINT ignored (`pytest &`),
        # and children inherit that: give ge the terminal's default, as a user's Ctrl-C finds it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_says_where_the_run_is_and_how_to_resume(tmp_path: Path, sig: int) -> None:
    seed = template_seed(tmp_path / "seed", generations=3)
    run = tmp_path / "run"
    proc = _start(["run", str(seed), "--run-dir", str(run)], tmp_path)
    assert proc.stderr is not None
    # the run directory is named as the run starts (once the seed evaluated ok)
    first = next((line for line in proc.stderr if line.startswith("run: ")), "")
    assert f"run: {run}" in first, first
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err  # 128 + the signal
    assert "interrupted in generation" in err and "children so far" in err, err
    assert f"ge resume {run}" in err, err
    assert "Traceback" not in err
    state = here_json("status", str(run), cwd=tmp_path)
    assert state["state"] == "stopped" and state["stop_reason"].startswith("interrupted"), state
    assert f"ge resume {run}" in state["fix"]
    done = here_json("resume", str(run), cwd=tmp_path)
    assert done["finished"] and done["generation"] == 3


def _commands() -> list[tuple[list[str], str]]:
    """Every command of `ge` (the app itself first) with its help text as written."""
    import typer.main

    from guided_evolution.cli import app

    group = typer.main.get_command(app)
    return [([], group.help or "")] + [
        ([name], cmd.help or "")
        for name, cmd in group.commands.items()  # type: ignore[attr-defined]
    ]


def test_every_help_reads_as_written(tmp_path: Path) -> None:
    import inspect
    import re

    from rich.text import Text

    for words, help_text in _commands():
        proc = ge_here(*words, "--help", cwd=tmp_path, env={"COLUMNS": "400"})
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout
        assert "<bool>" not in out, words
        assert not re.search(r"\[/?(bold|red|green|dim|cyan)\]", out), (words, out)
        lines = [" ".join(line.strip(" │").split()) for line in out.splitlines()]
        for paragraph in inspect.cleandoc(help_text).split("\n\n"):
            plain = " ".join(Text.from_markup(paragraph).plain.split())
            assert plain in lines, (words, plain, out)  # one paragraph, one unbroken line
    run_help = ge("run", "--help", cwd=tmp_path, env={"COLUMNS": "400"}).stdout
    assert "Apply the [profile.NAME] tables" in run_help


def test_option_help_brackets_are_escaped() -> None:
    """A `[word]` in an option's help is rich markup unless escaped: it would vanish."""
    import click
    import typer.main

    from guided_evolution.cli import app

    group = typer.main.get_command(app)
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        for param in cmd.get_params(click.Context(cmd)):
            text = getattr(param, "help", None) or ""
            assert text.count("[") == text.count("\\["), (name, param.name, text)


def _children(run: Path) -> list[VariantRecord]:
    with RunIndex.open(run / "index.sqlite", readonly=True) as index:
        return [v for v in index.variants() if v.operator != "seed"]


def _evaluate(run: Path, vid: str, **fields: object) -> None:
    with RunIndex.open(run / "index.sqlite") as index:
        index.add_evaluation(EvaluationRecord(vid, attempt=5, **fields))  # type: ignore[arg-type]


def test_front_table_prints_enough_digits_to_tell_members_apart(
    template_run: Path, copy_run: CopyRun, tmp_path: Path
) -> None:
    run = copy_run(template_run)
    a, b = _children(run)[:2]
    _evaluate(run, a.id, status="ok", metrics={"score": 10.00000041, "size": 216})
    _evaluate(run, b.id, status="ok", metrics={"score": 10.00000012, "size": 192})
    out = ge_here("best", str(run), cwd=tmp_path, env={"COLUMNS": "200"}).stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    assert rows[a.id][3] != rows[b.id][3], out  # 10.0000004 vs 10.0000001, not 10 and 10


def _crash(message: str) -> str:
    """An evaluator's output tail ending in a Python traceback and ge's own note."""
    lines = [
        "epoch 1",
        "Traceback (most recent call last):",
        '  File "train.py", line 3',
        "    model(x)",
    ]
    return "\n".join([*lines, message, "[ge] evaluator exited with code 1", ""])


def test_log_failures_groups_by_the_evaluators_own_error(
    template_run: Path, copy_run: CopyRun, tmp_path: Path
) -> None:
    run = copy_run(template_run)
    kids = _children(run)
    shape = "RuntimeError: Given groups=1, weight of size [{0}, 5, 3, 3], expected 5 channels, but got {1}"
    for v, (a, b) in zip(kids[:3], [(23, 8), (17, 6), (23, 8)], strict=True):
        _evaluate(
            run,
            v.id,
            status="failed",
            failure_reason="exit code 1",
            output_tail=_crash(shape.format(a, b)),
        )
    _evaluate(
        run,
        kids[3].id,
        status="failed",
        failure_reason="exit code 1",
        output_tail=_crash("ValueError: bad learning rate"),
    )
    groups = here_json("log", str(run), "--failures", cwd=tmp_path)["failures"]["groups"]
    by_reason = {g["reason"]: g for g in groups}
    channels = [r for r in by_reason if r.startswith("RuntimeError: Given groups")]
    assert len(channels) == 1 and by_reason[channels[0]]["count"] == 3, groups
    assert by_reason[channels[0]]["details"] == ["exit code 1"]
    assert by_reason["ValueError: bad learning rate"]["count"] == 1
    assert not any(r.startswith("exit code") for r in by_reason)
    text = ge_here("log", str(run), "--failures", cwd=tmp_path, env={"COLUMNS": "300"}).stdout
    assert "ValueError: bad learning rate" in text and "exit code 1" in text


def test_status_says_live_with_the_writers_pid(
    template_run: Path, copy_run: CopyRun, tmp_path: Path
) -> None:
    run = copy_run(template_run)
    assert run_json("status", str(run), cwd=tmp_path)["state"] == "finished"
    with RunLock(run):
        data = run_json("status", str(run), cwd=tmp_path)
        text = ge("status", str(run), cwd=tmp_path, env={"COLUMNS": "300"}).stdout
    assert data["state"] == "live" and data["pid"] == str(os.getpid())
    assert f"live (pid {os.getpid()})" in text


def test_status_says_once_why_a_run_stopped_and_the_fix(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    run = tmp_path / "run"
    denied = {"error": {"message": "Incorrect API key", "type": "invalid_request_error"}}
    with serve(responder=lambda _request: status(401, denied)) as server:
        proc = ge_here(
            "run",
            str(seed),
            "--run-dir",
            str(run),
            "--model",
            "openai/gpt-x",
            "--api-base",
            server.base_url,
            cwd=tmp_path,
            env={"OPENAI_API_KEY": "sk-wrong"},
        )
    assert proc.returncode == 2, proc.stderr
    data = here_json("status", str(run), cwd=tmp_path)
    assert data["state"] == "stopped" and "authentication failed" in data["stop_reason"], data
    assert f"ge resume {run}" in data["fix"]
    text = ge_here("status", str(run), cwd=tmp_path, env={"COLUMNS": "400"}).stdout
    assert text.count("authentication failed") == 1, text
    assert "stopped: " in text and "check the model name" in text


def test_resume_of_a_finished_run_says_so_and_extends_it(
    template_run: Path, copy_run: CopyRun, tmp_path: Path
) -> None:
    run = copy_run(template_run)
    before = {v.id for v in _children(run)}
    again = ge_here("resume", str(run), cwd=tmp_path, env={"COLUMNS": "300"})
    assert again.returncode == 0, again.stderr
    assert "this run is finished" in again.stderr and "--generations 2" in again.stderr
    assert {v.id for v in _children(run)} == before
    too_few = ge_here("resume", str(run), "--generations", "1", cwd=tmp_path)
    assert too_few.returncode == 2 and "already completed generation 1" in too_few.stderr
    done = here_json("resume", str(run), "--generations", "2", cwd=tmp_path)
    assert done["finished"] and done["generation"] == 2, done
    new = [v for v in _children(run) if v.id not in before]
    assert new and {v.generation for v in new} == {2}
    status = here_json("status", str(run), cwd=tmp_path)
    assert status["generations"] == 2 and status["state"] == "finished"
    later = ge_here("resume", str(run), cwd=tmp_path)  # the new total is kept
    assert "this run is finished" in later.stderr and "--generations 3" in later.stderr


def test_inspection_commands_default_to_the_latest_run(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=0)
    for name in ("first", "second"):
        here_json("run", "seed", "--run-dir", f"runs/{name}", cwd=tmp_path)
    latest = tmp_path / "runs" / "latest"
    assert latest.is_symlink() and latest.resolve() == (tmp_path / "runs" / "second").resolve()
    # wide: the notice names the run by its path, which rich would wrap at 80 columns
    proc = ge_here("status", "--json", cwd=tmp_path, env={"COLUMNS": "400"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["run_dir"] == str((tmp_path / "runs" / "second").resolve())
    assert "(the latest)" in proc.stderr and "second" in proc.stderr
    assert here_json("show", "seed", cwd=tmp_path)["operator"] == "seed"
    assert here_json("diff", "seed", cwd=tmp_path)["files"] == []
    assert here_json("best", cwd=tmp_path)["front"]
    assert here_json("lineage", "seed", cwd=tmp_path)["nodes"]
    assert "events" in here_json("log", cwd=tmp_path)
    explicit = here_json("show", "runs/first", "seed", cwd=tmp_path)  # an explicit run still wins
    assert explicit["id"] == here_json("show", "seed", cwd=tmp_path)["id"]
    assert here_json("status", "runs/first", cwd=tmp_path)["run_dir"].endswith("first")
    missing = ge_here("show", cwd=tmp_path)
    assert missing.returncode == 2 and "missing VARIANT" in missing.stderr
    empty = ge_here("status", cwd=seed)
    assert empty.returncode == 2 and "no run found" in empty.stderr


@contextmanager
def _models_server(code: int, ids: list[str]) -> Iterator[str]:
    """An OpenAI-style server whose GET /models answers ``code`` listing ``ids``; its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": i} for i in ids]}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _no_run(tmp_path: Path) -> bool:
    return not (tmp_path / "run").exists() and not any(tmp_path.glob(".run.creating-*"))


def test_a_missing_key_fails_before_the_run_directory_exists(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    env = {k: "" for k in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_BASE")}
    for model, var in (
        ("gpt-4o-mini", "OPENAI_API_KEY"),
        ("anthropic/claude-x", "ANTHROPIC_API_KEY"),
    ):
        proc = ge_here("run", str(seed), "--run-dir", "run", "--model", model, cwd=tmp_path,
                  env={**env, "ANTHROPIC_API_KEY": ""})  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert f"{var} is not set" in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert _no_run(tmp_path)


def test_an_api_base_server_is_asked_which_models_it_serves(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    with _models_server(200, ["qwen-7b", "llama-3"]) as base:
        proc = ge_here("run", str(seed), "--run-dir", "run", "--model", "openai/gpt-x",
                  "--api-base", base, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and _no_run(tmp_path), proc.stderr
    assert "does not serve model 'gpt-x'" in proc.stderr and "qwen-7b, llama-3" in proc.stderr
    assert "openai/qwen-7b" in proc.stderr  # the fix names a model it has
    with _models_server(401, []) as base:
        proc = ge_here("run", str(seed), "--run-dir", "run", "--model", "openai/qwen-7b",
                  "--api-base", base, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "refuses the key (HTTP 401" in proc.stderr, proc.stderr
    assert _no_run(tmp_path)


def test_a_served_model_passes_the_preflight(tmp_path: Path) -> None:
    """The fake server (no /models listing) and a listed model both start the run."""
    seed = template_seed(tmp_path / "seed", generations=0, initial_population=1)
    with serve(responder=CodeWriter()) as server:
        done = here_json("run", str(seed), "--run-dir", "run", "--model", "openai/any",
                        "--api-base", server.base_url, cwd=tmp_path)  # fmt: skip
    assert done["llm_calls"] >= 1


def _on_a_terminal(args: list[str], cwd: Path) -> str:
    """Run `ge ARGS` with its output on a pseudo-terminal (so the live panel draws); the text."""
    import pty

    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "COLUMNS": "250", "TERM": "xterm"}
    main, side = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "guided_evolution", *args], cwd=cwd, env=env,
        stdin=subprocess.DEVNULL, stdout=side, stderr=side,
    )  # fmt: skip
    os.close(side)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(timeout=240)
    os.close(main)
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))


def test_live_progress_shows_the_front_with_each_best_variant(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    text = _on_a_terminal(["run", str(seed), "--run-dir", "run"], tmp_path)
    assert "generation 0/0" not in text and "generation 1/1" in text, text[-3000:]
    lines = [line for line in text.splitlines() if "front: " in line]
    assert lines, text[-3000:]
    front = here_json("best", "run", cwd=tmp_path)["front"]
    match = re.search(
        r"front: (\d+)  best score ↑ (\S+) \((\w+)\)  size ↓ (\S+) \((\w+)\)", lines[-1]
    )
    assert match, lines[-1]
    assert int(match[1]) == len(front)
    by_id = {row["id"][:8]: row["metrics"] for row in front}
    assert float(match[2]) == pytest.approx(by_id[match[3]]["score"], rel=1e-5)  # its own value
    assert float(match[4]) == pytest.approx(by_id[match[5]]["size"], rel=1e-5)
    assert by_id[match[3]]["score"] == max(m["score"] for m in by_id.values())
    assert by_id[match[5]]["size"] == min(m["size"] for m in by_id.values())


def test_a_seed_without_its_data_says_so_once(tmp_path: Path) -> None:
    """ExquiteNetV2 without CIFAR-10: its persistent worker and its command both fail on the
    missing data; the error used to be printed three times (two worker warnings, then the seed's
    failure)."""
    root = Path(__file__).resolve().parent.parent
    seed = tmp_path / "exquisitenet_v2"
    shutil.copytree(root / "seeds" / "exquisitenet_v2", seed, ignore=shutil.ignore_patterns("data"))
    proc = ge_here(
        "run", str(seed), "--model", "offline", "--run-dir", str(tmp_path / "run"), cwd=tmp_path
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("CIFAR-10 not found") == 1, proc.stderr
    assert "the seed failed its own evaluation" in proc.stderr
    assert "Traceback" not in proc.stderr
