"""A variant that damages the run's record (evaluated with `sandbox = "none"`, so it can write the
run directory) never crashes `ge` and is never reported as a success.

`ge run` stops with one `error:` line that names the damage and `ge doctor RUN_DIR` with the flag
that repairs it (no traceback, no Pareto table, non-zero exit); `ge status` / `best` / `show` then
say the same instead of "not a ge run directory"; `ge doctor` explains it and repairs what can be
repaired, after which the run reads again. Before this, each of these runs exited 0 with a Pareto
table, and a deleted repository ended in a traceback.

`ge run`, status, best, show and doctor go through the CLI's entry point in
this process (``ge_here``, whose output is the process's: tests/test_cli_here.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from tests.reliability.support import (
    PayloadWriter,
    assert_store_intact,
    evaluate_stage_only,
    llm_config,
    set_config,
)
from tests.support.cli import ge_here, here_json
from tests.support.openai_server import serve
from tests.support.seeds import template_seed

pytestmark = pytest.mark.timeout(240)

_REPO = "_r = __import__('os').path.join(__import__('os').environ['GE_RUN_DIR'], 'repo.git')\n"
HEADER = (
    "import os as _os\n_p = _os.path.join(_os.environ['GE_RUN_DIR'], 'index.sqlite')\n"
    "with open(_p, 'r+b') as _f:\n    _f.write(b'hostile!' * 16)\n"
)
ALL_REFS = (
    f"import os as _os, shutil as _sh\n{_REPO}_sh.rmtree(_os.path.join(_r, 'refs'))\n"
    "try:\n    _os.unlink(_os.path.join(_r, 'packed-refs'))\nexcept OSError:\n    pass\n"
)
VARIANT_REFS = (
    f"import os as _os, shutil as _sh\n{_REPO}"
    "_sh.rmtree(_os.path.join(_r, 'refs', 'heads', 'v'), ignore_errors=True)\n"
)
REPOSITORY = f"import shutil as _sh\n{_REPO}_sh.rmtree(_r)\n"


def damaging_run(
    tmp_path: Path, payload: str, *flags: str
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """`ge run` without a sandbox, where the first child of generation 0 runs ``payload``."""
    seed = template_seed(tmp_path / "seed", generations=1, initial_population=3)
    set_config(seed, "evaluator", sandbox="none")
    run_dir = tmp_path / "run"
    with serve(responder=PayloadWriter([("damage", evaluate_stage_only(payload))])) as server:
        llm_config(seed, server.base_url)
        proc = ge_here(
            "run", str(seed), "--run-dir", str(run_dir), *flags,
            cwd=tmp_path, env={"OPENAI_API_KEY": "sk-damage-test", "COLUMNS": "300"},
        )  # fmt: skip
    return run_dir, proc


def error_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one `error:` line, last on stderr (after the run's start notices), naming ``words``."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr[-3000:]
    assert "Pareto" not in proc.stdout and "Pareto" not in proc.stderr
    for word in ("damaged", "ge doctor", *words):
        assert word in errors[0], (word, errors[0])
    return errors[0]


def readers_name_the_damage(run_dir: Path, cwd: Path, *words: str) -> None:
    """`ge status`, `ge best` and `ge show` say what is damaged, never "not a ge run directory"."""
    for args in (("status",), ("best",), ("show", "seed")):
        proc = ge_here(args[0], str(run_dir), *args[1:], cwd=cwd, env={"COLUMNS": "300"})
        line = error_line(proc, *words)
        assert "not a ge run directory" not in line
        assert proc.stdout == ""


def doctor_json(run_dir: Path, cwd: Path, *flags: str) -> tuple[int, dict]:
    proc = ge_here("doctor", str(run_dir), *flags, "--json", cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.returncode, json.loads(proc.stdout)


def test_an_overwritten_index_header_stops_the_run_and_a_rebuild_repairs_it(tmp_path: Path) -> None:
    run_dir, proc = damaging_run(tmp_path, HEADER)
    error_line(proc, "index.sqlite", "header", f"ge doctor {run_dir} --rebuild-index")
    readers_name_the_damage(run_dir, tmp_path, "index.sqlite", "--rebuild-index")
    code, report = doctor_json(run_dir, tmp_path)
    assert code == 1 and not report["ok"] and report["repairable"], report
    code, report = doctor_json(run_dir, tmp_path, "--rebuild-index")
    assert code == 0 and report["ok"], report
    assert any(line.startswith("rebuilt index.sqlite") for line in report["repaired"]), report
    status = here_json("status", str(run_dir), cwd=tmp_path)
    assert not status["finished"] and status["children"] >= 1, status
    here_json("best", str(run_dir), cwd=tmp_path)
    assert_store_intact(run_dir, tmp_path)


def test_deleted_refs_stop_the_run_and_repair_restores_the_branches(tmp_path: Path) -> None:
    run_dir, proc = damaging_run(tmp_path, ALL_REFS, "--json")
    assert proc.stdout == "", "a damaged run printed a summary"
    error_line(proc, "branches", f"ge doctor {run_dir} --repair")
    readers_name_the_damage(run_dir, tmp_path, "branches", "--repair")
    code, report = doctor_json(run_dir, tmp_path)
    assert code == 1 and report["repairable"], report
    assert any("lost its branches" in line for line in report["problems"]), report
    code, report = doctor_json(run_dir, tmp_path, "--repair")
    assert code == 0 and report["ok"], report
    assert any("restored" in line and "branches" in line for line in report["repaired"]), report
    with RunIndex.open(run_dir / "index.sqlite", readonly=True) as index:
        committed = {v.branch: v.commit_sha for v in index.variants() if v.commit_sha}
    with GitStore.open(run_dir / "repo.git") as store:
        assert {b: store.branch_sha(b) for b in committed} == committed
    assert here_json("status", str(run_dir), cwd=tmp_path)["children"] >= 1
    assert_store_intact(run_dir, tmp_path)


def test_deleted_variant_branches_are_found_by_the_end_of_run_check(tmp_path: Path) -> None:
    """The seed's branch stays, so only the end-of-run check (before `git prune` would delete the
    orphaned commits) finds the variants' branches gone."""
    run_dir, proc = damaging_run(tmp_path, VARIANT_REFS)
    error_line(proc, "variant branches are gone", "--repair")
    readers_name_the_damage(run_dir, tmp_path, "--repair")
    code, report = doctor_json(run_dir, tmp_path, "--repair")
    assert code == 0 and report["ok"], report
    assert here_json("status", str(run_dir), cwd=tmp_path)["finished"]
    assert_store_intact(run_dir, tmp_path)


def test_a_deleted_repository_stops_the_run_and_doctor_says_what_is_left(tmp_path: Path) -> None:
    run_dir, proc = damaging_run(tmp_path, REPOSITORY)
    error_line(proc, "repo.git", f"ge doctor {run_dir}")
    readers_name_the_damage(run_dir, tmp_path, "repo.git")
    text = ge_here("doctor", str(run_dir), cwd=tmp_path, env={"COLUMNS": "400"})
    assert text.returncode == 1 and "Traceback" not in text.stderr, text.stderr
    problems = [line for line in text.stdout.splitlines() if line.startswith("problem")]
    assert len(problems) == 1, text.stdout
    assert "repo.git" in problems[0] and "index.sqlite" in problems[0] and "logs/" in problems[0]
    assert "cannot be repaired" in text.stdout and "try --repair" not in text.stdout
    code, report = doctor_json(run_dir, tmp_path, "--repair")
    assert code == 1 and not report["ok"] and not report["repairable"], report
    rebuild = ge_here("doctor", str(run_dir), "--rebuild-index", cwd=tmp_path, env={"COLUMNS": "300"})
    error_line(rebuild, "cannot rebuild index.sqlite", "repo.git")
    assert (run_dir / "index.sqlite").is_file(), "a failed rebuild lost the index"
