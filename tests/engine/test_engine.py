"""End-to-end evolutions: offline, through the real LLM path, resume, errors.

What the CLI itself does (exit codes, one-line messages, flags, `--json` output) and what the
real evaluator does (its failures, its environment) go through the CLI's entry point in this
process (``ge_here``: parsing, the run, the one-line errors and exit codes as the `ge` process
has them, without its start-up and litellm import); what needs a process of its own (kill -9, a
second process on a run) starts `ge` in a subprocess; runs whose evaluation only has to give a
score run in-process on the harness (tests/support/harness.py) with its ``FakeExecutor``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from tests.support.cli import ge_here, here_json
from tests.support.gitcli import git
from tests.support.harness import FakeExecutor, resume_engine, run_engine, size_score, view_json
from tests.support.openai_server import hang, reply, serve, status
from tests.support.seeds import CodeWriter, template_seed, write_config

ROOT = Path(__file__).resolve().parents[2]


def test_offline_evolution_creates_evaluates_selects_and_merges(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", crossover_probability=1.0, generations=2)
    summary = run_engine(seed, tmp_path / "run", executor=FakeExecutor(size_score).factory)
    assert summary["finished"] and summary["stop_reason"] == "completed 2 generations"
    assert summary["children"] >= 8 and summary["evaluated"] >= 8
    assert summary["front"], "a Pareto front was selected"
    repo = tmp_path / "run" / "repo.git"
    merges = git(repo, "rev-list", "--merges", "--branches").split()
    assert merges, "crossover children are merge commits"
    parents = git(repo, "rev-list", "--parents", "-n", "1", merges[0]).split()
    assert len(parents) == 3
    assert (
        subprocess.run(["git", "--git-dir", str(repo), "fsck"], capture_output=True).returncode == 0
    )
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        assert index.last_generation().generation == 2
        gen1 = index.get_generation(1)
        assert gen1.elites and set(gen1.elites) <= set(index.get_generation(0).population)
        # every variant is on its own branch named after its generation and id
        for v in index.variants():
            if v.operator != "seed":
                assert v.branch == f"v/{v.generation}/{v.id}"
    finally:
        index.close()
    best = view_json("best", tmp_path / "run")  # `ge best --json`: tests/inspection
    assert {"id", "branch", "metrics"} <= set(best["front"][0])


def test_same_seed_same_run(tmp_path: Path) -> None:
    ids = []
    for name in ("a", "b"):
        seed = template_seed(tmp_path / f"seed_{name}", generations=1)
        run_engine(seed, tmp_path / name, executor=FakeExecutor(size_score).factory)
        store = GitStore.open(tmp_path / name / "repo.git")
        try:
            ids.append(sorted(b.rsplit("/", 1)[-1] for b in store.branches("v/")))
        finally:
            store.close()
    assert ids[0] == ids[1] and ids[0]


def test_llm_evolution_through_real_http(tmp_path: Path) -> None:
    writer = CodeWriter()
    seed = template_seed(
        tmp_path / "seed",
        crossover_probability=1.0,
        eot_probability=1.0,
        eot_start_generation=1,
        generations=2,
    )
    with serve([status(429, retry_after=0)], responder=writer) as server:
        summary = here_json(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            "openai/test-model",
            "--api-base",
            server.base_url,
            cwd=tmp_path,
            env={"OPENAI_API_KEY": "sk-test-secret"},
        )
        requests = len(server.requests)
    assert summary["finished"]
    assert summary["llm_calls"] >= requests - 1 > 0
    assert "reason" in writer.kinds and "code" in writer.kinds
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        variants = index.variants()
        ops = {v.operator for v in variants}
        assert "crossover" in ops and "mutation" in ops
        # EoT follows a crossover here (p = 1), so its reflection rides on crossover children too
        eot = next(v for v in variants if v.eot_reflection)
        assert eot.eot_reflection and "Lesson" in eot.eot_reflection
        assert index.reflections(eot.id)
    finally:
        index.close()
    shown = here_json("show", str(tmp_path / "run"), eot.id, cwd=tmp_path)
    assert shown["eot_reflection"] and shown["reply"] and shown["prompt"]
    assert shown["operator"] in ("eot", "crossover") and shown["parents"]
    # the API key reached the LLM client, never an evaluation log
    for log in (tmp_path / "run" / "logs").iterdir():
        assert "sk-test-secret" not in log.read_text(errors="replace")


def test_resume_replays_cached_llm_calls_without_paying_twice(tmp_path: Path) -> None:
    writer = CodeWriter()
    seed = template_seed(tmp_path / "seed", generations=1)
    run_dir = tmp_path / "run"
    fake = FakeExecutor(size_score)
    with serve(responder=writer) as server:
        run_engine(seed, run_dir, executor=fake.factory, model="openai/m", api_base=server.base_url)
        sent = len(server.requests)
    # Forget the last generation, as if the run had been killed before it was recorded.
    index = RunIndex.open(run_dir / "index.sqlite")
    with index.transaction() as conn:
        conn.execute("DELETE FROM generations WHERE generation = 1")
        conn.execute("DELETE FROM meta WHERE key = 'finished'")
    index.close()
    with serve(responder=writer) as server:
        summary = resume_engine(run_dir, executor=fake.factory)
        assert len(server.requests) == 0, "every reply came from the cache"
    assert summary["finished"] and sent > 0


def _slow_seed(tmp_path: Path) -> Path:
    seed = template_seed(tmp_path / "seed", generations=2, initial_population=6, population=6)
    evaluate = seed / "evaluate.py"
    evaluate.write_text(
        evaluate.read_text().replace(
            "    rng = random.Random(0)",
            "    import time\n    time.sleep(0.4)\n    rng = random.Random(0)",
        )
    )
    return seed


@pytest.mark.slow
def test_resume_after_kill_9_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    seed = _slow_seed(tmp_path)
    run_dir = tmp_path / "run"
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    for delay in (1.5, 2.5):
        args = (
            ["run", str(seed), "--run-dir", str(run_dir), "--json"]
            if not run_dir.exists()
            else ["resume", str(run_dir), "--json"]
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "guided_evolution", *args],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # The run directory appears once the seed evaluated ok (issue 26): kill inside the run.
        deadline = time.monotonic() + 120
        while not run_dir.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    summary = here_json("resume", str(run_dir), cwd=tmp_path)
    assert summary["finished"]
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        ok_per_variant: dict[str, int] = {}
        for ev in index.evaluations():
            if ev.status == "ok" and ev.stage == "evaluate":
                ok_per_variant[ev.variant_id] = ok_per_variant.get(ev.variant_id, 0) + 1
        assert ok_per_variant and max(ok_per_variant.values()) == 1, (
            "no variant was evaluated to completion twice"
        )
        for v in index.variants():
            assert v.status in ("evaluated", "failed"), (v.id, v.status)
    finally:
        index.close()
    assert (
        subprocess.run(
            ["git", "--git-dir", str(run_dir / "repo.git"), "fsck"], capture_output=True
        ).returncode
        == 0
    )
    doctor = ge_here("doctor", str(run_dir), "--json", cwd=tmp_path)
    assert doctor.returncode == 0 and json.loads(doctor.stdout)["ok"], doctor.stdout


def test_second_process_on_same_run_refuses(tmp_path: Path) -> None:
    seed = _slow_seed(tmp_path)
    run_dir = tmp_path / "run"
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "guided_evolution",
            "run",
            str(seed),
            "--run-dir",
            str(run_dir),
            "--json",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 30
        while not (run_dir / "lock").exists() and time.time() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        second = ge_here("resume", str(run_dir), cwd=tmp_path)
        assert second.returncode == 2
        assert "in use by another ge process" in second.stderr and "Traceback" not in second.stderr
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: (s / "ge.toml").write_text("[evolution\n"), "invalid TOML"),
        (
            lambda s: (s / "ge.toml").write_text(
                (s / "ge.toml").read_text() + "\n[bogus]\nx = 1\n"
            ),
            "unknown key 'bogus'",
        ),
        (
            lambda s: (s / "ge.toml").write_text(
                (s / "ge.toml").read_text().replace("population = 4", "population = -4", 1)
            ),
            "initial_population",
        ),
        (lambda s: (s / "model.py").unlink(), "model.py not found"),
        (lambda s: (s / "model.py").write_text("def f():\n    return 1\n"), "marker"),
        (
            lambda s: (s / "model.py").write_text(
                '"""\n# --OPTION--\n"""\n# --OPTION--\ndef f():\n    return 1\n'
            ),
            "string",
        ),
        (
            lambda s: (s / "ge.toml").write_text(
                (s / "ge.toml")
                .read_text()
                .replace('command = "python evaluate.py"', 'command = "no-such-evaluator --go"')
            ),
            "not found",
        ),
    ],
    ids=[
        "malformed-toml",
        "unknown-key",
        "bad-value",
        "missing-seed-file",
        "no-markers",
        "marker-in-string",
        "missing-evaluator",
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, mutate, expected: str
) -> None:
    seed = template_seed(tmp_path / "seed")
    mutate(seed)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "runs" / "x"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs" / "x").exists()


def test_unwritable_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = ge_here("run", str(seed), "--run-dir", str(blocker / "run"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "run directory" in proc.stderr


def test_budget_stops_the_run_cleanly(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=3)
    cfg = (
        (seed / "ge.toml")
        .read_text()
        .replace(
            'models = ["offline"]',
            'models = [{ model = "openai/priced", input_cost_per_token = 0.001, output_cost_per_token = 0.001 }]\nbudget_usd = 0.5',
        )
    )
    (seed / "ge.toml").write_text(cfg)
    with serve(responder=CodeWriter()) as server:
        summary = run_engine(
            seed,
            tmp_path / "run",
            executor=FakeExecutor(size_score).factory,
            api_base=server.base_url,
        )
    assert summary["finished"] and "budget" in summary["stop_reason"]
    # each call costs 0.2 USD: at most `concurrency` calls can overshoot the 0.5 USD budget
    assert summary["cost_usd"] <= 0.5 + 4 * 0.2 + 1e-9


def test_config_override_flags_win(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=3)
    summary = here_json(
        "run",
        str(seed),
        "--run-dir",
        str(tmp_path / "run"),
        "--generations",
        "1",
        "--initial-population",
        "3",
        "--population",
        "5",
        cwd=tmp_path,
    )  # the seed's ge.toml says 3 generations of 4, and 4 children of the seed
    frozen = json.loads((tmp_path / "run" / "config.json").read_text())["config"]["evolution"]
    assert (frozen["generations"], frozen["initial_population"], frozen["population"]) == (1, 3, 5)
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        plans = [e.data["plans"] for e in index.events("generation_started")]
        made = Counter(v.generation for v in index.variants() if v.operator != "seed")
    finally:
        index.close()
    assert plans == [3, 5], plans
    # the offline baseline (seed 1) makes every planned child: exactly the counts the flags ask for
    assert (made[0], made[1], sum(made.values())) == (3, 5, summary["children"]), made
    assert summary["generation"] == 1 and summary["finished"]


def test_write_config_helper_roundtrip(tmp_path: Path) -> None:
    from guided_evolution.config import load_config

    write_config(
        tmp_path / "ge.toml",
        {"evaluator": {"command": "true"}},
        [{"name": "a", "direction": "min"}],
    )
    assert load_config(tmp_path / "ge.toml").objectives[0].direction == "min"


def test_a_failing_seed_stops_with_one_line_before_the_run_and_a_new_run_succeeds(
    tmp_path: Path,
) -> None:
    seed = template_seed(tmp_path / "seed")
    evaluate = seed / "evaluate.py"
    evaluate.write_text(
        evaluate.read_text().replace(
            "    rng = random.Random(0)",
            "    if not os.path.exists(os.path.join(os.environ['GE_SEED_DIR'], 'data.ok')):\n"
            "        sys.exit('no data: put data.ok into the seed directory')\n    rng = random.Random(0)",
        )
    )
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 2 and "the seed failed its own evaluation: exit code 1" in proc.stderr
    # The evaluator's own last words are in the message: no need to open the log to see why.
    assert "(last output: no data: put data.ok into the seed directory)" in " ".join(
        proc.stderr.split()
    )
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # the seed is evaluated before the run is created
    (seed / "data.ok").write_text("")  # the user fixes the environment, not the seed's code
    summary = here_json("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert summary["finished"] and summary["evaluated"] > 1


@pytest.mark.parametrize(
    ("code", "calls_at_most", "words"),
    [(401, 4, "authentication failed"), (404, 4, "not found"), (400, 8, "request rejected")],
)
def test_an_llm_error_that_repeats_on_every_call_stops_the_run_and_resume_continues(
    tmp_path: Path, code: int, calls_at_most: int, words: str
) -> None:
    """A wrong key, model name or endpoint used to "finish" the run with every proposal
    rejected (exit 0, nothing evolved). Now it stops at once (401/404) or after a streak of
    rejected requests (400, which can also be one over-long prompt), unfinished, so `ge resume`
    carries on once the cause is fixed."""
    seed = template_seed(tmp_path / "seed", generations=1)
    failing = True

    def responder(request: dict) -> object:
        return status(code) if failing else CodeWriter()(request)

    with serve(responder=responder) as server:
        proc = ge_here(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            "openai/m",
            "--api-base",
            server.base_url,
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        message = " ".join(proc.stderr.split())
        assert "the LLM calls keep failing" in message and words in message
        assert "ge resume" in message
        # Stopped early: no more calls than the concurrent ones in flight (plus the streak).
        assert len(server.requests) <= calls_at_most + 4
        status_now = view_json("status", tmp_path / "run")  # `ge status --json`
        assert not status_now["finished"]
        failing = False  # the user fixes the key / the server
        summary = resume_engine(tmp_path / "run", executor=FakeExecutor(size_score).factory)
    assert summary["finished"] and summary["evaluated"] > 1


def test_a_generation_whose_llm_calls_all_fail_stops_the_run_and_resume_continues(
    tmp_path: Path,
) -> None:
    """A server that is down (HTTP 500, connection refused, ...) made every proposal fail after
    its retries, and the run went on to "finish" with nothing evolved."""
    seed = template_seed(tmp_path / "seed", generations=1)
    failing = True

    def responder(request: dict) -> object:
        return status(500) if failing else CodeWriter()(request)

    with serve(responder=responder) as server:
        proc = ge_here(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            "openai/m",
            "--api-base",
            server.base_url,
            cwd=tmp_path,
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        message = " ".join(proc.stderr.split())
        assert "all 4 LLM calls of generation 0 failed" in message and "HTTP 500" in message
        assert not view_json("status", tmp_path / "run")["finished"]
        failing = False
        summary = resume_engine(tmp_path / "run", executor=FakeExecutor(size_score).factory)
    assert summary["finished"] and summary["evaluated"] > 1


def test_llm_calls_failing_for_longer_than_give_up_after_s_stop_the_run(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1, initial_population=40)
    toml = (seed / "ge.toml").read_text()
    (seed / "ge.toml").write_text(
        toml.replace("[llm]\n", "[llm]\ngive_up_after_s = 1.5\nconcurrency = 2\n", 1)
    )
    with serve(responder=lambda request: hang(0.2, then=status(503))) as server:
        proc = ge_here(
            "run",
            str(seed),
            "--run-dir",
            str(tmp_path / "run"),
            "--model",
            "openai/m",
            "--api-base",
            server.base_url,
            cwd=tmp_path,
        )
        calls = len(server.requests)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "no LLM call has succeeded for" in " ".join(proc.stderr.split())
    # Stopped mid-generation: far fewer than the 40 children x 2 attempts of 0.2 s each.
    assert calls < 40  # a call count, not a wall time: that fails on a loaded machine


FIXED_RULE = "Answer with the changed segment in one python code block."


def test_a_generation_whose_every_proposal_is_rejected_stops_the_run_and_resume_continues(
    tmp_path: Path,
) -> None:
    """A model whose replies hold no usable code had every proposal rejected, yet `ge run`
    exited 0 with "completed 2 generations" and nothing evolved. Now the generation stops the
    run unfinished with the common reason; a prompt override in the seed fixes it for resume."""
    seed = template_seed(tmp_path / "seed", generations=2)
    run_dir = tmp_path / "run"
    writer = CodeWriter()

    def responder(request: dict) -> object:
        user = [m for m in request["messages"] if m["role"] == "user"][-1]["content"]
        if FIXED_RULE in user:
            return writer(request)
        return reply("Sure! I would make the model deeper and add dropout to it.")

    llm = ("--model", "openai/m", "--api-base")
    with serve(responder=responder) as server:
        proc = ge_here("run", str(seed), "--run-dir", str(run_dir), *llm, server.base_url, cwd=tmp_path)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        message = " ".join(proc.stderr.split())
        assert "every proposal of generation 0 was rejected: no code block (4 of 4)" in message
        assert f"ge resume {run_dir}" in message and "prompts" in message
        index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
        try:
            stops = index.events("run_stopped")
            assert stops and "no code block" in stops[-1].data["reason"]
            assert index.last_generation() is None, "the failed generation is not checkpointed"
        finally:
            index.close()
        assert not view_json("status", run_dir)["finished"]
        (seed / "prompts").mkdir()
        rules = (ROOT / "prompts" / "rules.txt").read_text()
        (seed / "prompts" / "rules.txt").write_text(f"{rules.rstrip()}\n- {FIXED_RULE}\n")
        summary = resume_engine(run_dir, executor=FakeExecutor(size_score).factory)
    assert summary["finished"] and summary["evaluated"] > 4, summary


def _evaluator_failing_children(seed: Path, which: str) -> None:
    """Children (not the seed) fail while the seed directory has no data.ok: all of them, or
    (which = "half") those whose model.py hashes to an odd number."""
    evaluate = seed / "evaluate.py"
    chosen = "True" if which == "all" else "int(hashlib.sha256(own.encode()).hexdigest(), 16) % 2"
    evaluate.write_text(
        evaluate.read_text().replace(
            "    rng = random.Random(0)",
            "    import hashlib\n"
            "    own = Path('model.py').read_text()\n"
            "    seed_dir = os.environ['GE_SEED_DIR']\n"
            "    is_seed = own == Path(seed_dir, 'model.py').read_text()\n"
            f"    if not is_seed and {chosen} and not Path(seed_dir, 'data.ok').exists():\n"
            "        sys.exit('no data: put data.ok into the seed directory')\n"
            "    rng = random.Random(0)",
        )
    )


def test_a_generation_whose_every_child_fails_evaluation_stops_and_resume_evaluates_again(
    tmp_path: Path,
) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    _evaluator_failing_children(seed, "all")
    run_dir = tmp_path / "run"
    proc = ge_here("run", str(seed), "--run-dir", str(run_dir), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    message = " ".join(proc.stderr.split())
    assert "every child of generation 0 failed its evaluation: exit code 1 (4 of 4)" in message
    assert f"ge resume {run_dir}" in message
    assert not view_json("status", run_dir)["finished"]
    (seed / "data.ok").write_text("")  # the user fixes the environment
    summary = here_json("resume", str(run_dir), cwd=tmp_path)
    assert summary["finished"] and summary["evaluated"] >= 8, summary
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        gen0 = [v for v in index.variants() if v.generation == 0 and v.operator != "seed"]
        for v in gen0:  # the failed children were evaluated again, once, and are ok now
            attempts = [e.attempt for e in index.evaluations(v.id) if e.stage == "evaluate"]
            assert v.status == "evaluated" and max(attempts) == 2, (v.id, attempts)
    finally:
        index.close()


def test_a_generation_where_some_children_succeed_goes_on(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed", generations=1)
    _evaluator_failing_children(seed, "half")
    summary = here_json("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert summary["finished"] and summary["failed"] > 0 and summary["evaluated"] > 1, summary


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"mode": "steady", "elites": 0}, "elites >= 1"),
        ({"mode": "steady", "overlap_tail": 2}, 'overlap_tail is for mode = "generational"'),
        ({"overlap_tail": 2, "fix_attempts": 1}, "without fix_attempts"),
    ],
)
def test_mode_options_that_make_no_sense_are_a_one_line_config_error(
    tmp_path: Path, options: dict, words: str
) -> None:
    seed = template_seed(tmp_path / "seed", **options)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert words in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def _overlap_seed(tmp_path: Path) -> Path:
    seed = _slow_seed(tmp_path)
    (seed / "ge.toml").write_text(
        (seed / "ge.toml").read_text().replace("[evolution]\n", "[evolution]\noverlap_tail = 2\n", 1)
    )
    return seed


def _late_children(index: RunIndex) -> list[tuple[int, str]]:
    """(g, id) of generation g - 1's children that first appear in generation g's population."""
    generation_of = {v.id: v.generation for v in index.variants()}
    late = []
    last = index.last_generation()
    assert last is not None
    for g in range(1, last.generation + 1):
        before = set(index.get_generation(g - 1).population)
        for vid in index.get_generation(g).population:
            if generation_of[vid] == g - 1 and vid not in before:
                late.append((g, vid))
    return late


def test_overlap_tail_plans_the_next_generation_while_the_last_children_evaluate(
    tmp_path: Path,
) -> None:
    """Opt-in (`overlap_tail`, not the paper's): generation g + 1 is planned while up to N
    children of g are still being evaluated; they join g + 1's population, and none is lost."""
    seed = _overlap_seed(tmp_path)
    summary = here_json("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert summary["finished"] and summary["generation"] == 2
    index = RunIndex.open(tmp_path / "run" / "index.sqlite", readonly=True)
    try:
        late = _late_children(index)
        started = {e.data["generation"]: e.time for e in index.events("generation_started")}
        ends = {
            e.variant_id: (e.started_at or 0) + (e.duration_s or 0) for e in index.evaluations()
        }
        assert late, "no child of a generation was still evaluating when the next one started"
        assert any(started[g] < ends[vid] for g, vid in late)
        members = {vid for g in range(3) for vid in index.get_generation(g).population}
        for v in index.variants():
            assert v.status in ("evaluated", "failed") and v.id in members, v.id
    finally:
        index.close()


def test_overlap_tail_resumes_after_a_kill_with_the_late_children(tmp_path: Path) -> None:
    seed = _overlap_seed(tmp_path)
    run_dir = tmp_path / "run"
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true", "PYTHONPATH": str(ROOT)}
    args = ["run", str(seed), "--run-dir", str(run_dir), "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "tests.reliability.killpoint", "evaluation", "10", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    summary = here_json("resume", str(run_dir), cwd=tmp_path)
    assert summary["finished"], summary
    index = RunIndex.open(run_dir / "index.sqlite", readonly=True)
    try:
        runs = Counter(e.variant_id for e in index.evaluations() if e.stage == "evaluate")
        members = {vid for g in range(3) for vid in index.get_generation(g).population}
        for v in index.variants():
            assert v.status in ("evaluated", "failed") and v.id in members, v.id
        assert max(runs.values()) == 1, "no child was evaluated twice"
    finally:
        index.close()
