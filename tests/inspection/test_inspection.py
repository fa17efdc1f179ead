"""Run-inspection commands (show, lineage, diff, log, export) against a real small offline run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from guided_evolution.cli import app
from guided_evolution.inspection import views_data
from guided_evolution.inspection.run_data import normalise_reason
from guided_evolution.inspection.terminal import print_status
from guided_evolution.llm.records import CallRecord
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.records import EvaluationRecord, ReflectionRecord
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import RunLock
from tests.support.cli import ge_here, here_json
from tests.support.seeds import template_seed

runner = CliRunner()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(seed dir, run dir) of an offline run: 2 generations, crossovers on, no GPU."""
    root = tmp_path_factory.mktemp("inspect")
    seed = template_seed(root / "seed", generations=2, crossover_probability=1.0)
    run = root / "run"
    here_json("run", str(seed), "--run-dir", str(run), cwd=root)
    return seed, run


@pytest.fixture()
def run_copy(made: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the run that a test may write into."""
    return Path(shutil.copytree(made[1], tmp_path / "run"))


def ge_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def ge_text(*args: str) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def variants(run: Path) -> list:
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    try:
        return index.variants()
    finally:
        index.close()


def evaluated_child(run: Path, parents: int = 1):
    return next(
        v
        for v in variants(run)
        if v.operator != "seed" and v.status == "evaluated" and len(v.parents) == parents
    )


# --------------------------------------------------------------------------- --json everywhere


def test_every_command_prints_parseable_json(made: tuple[Path, Path], tmp_path: Path) -> None:
    _, run = made
    vid = evaluated_child(run).id
    assert ge_json("status", str(run))["finished"]
    assert ge_json("best", str(run))["front"]
    assert ge_json("show", str(run), vid)["id"] == vid
    assert ge_json("lineage", str(run), vid)["nodes"][0]["id"] == vid
    assert ge_json("diff", str(run), vid)["to"] == vid
    assert ge_json("log", str(run))["events"]
    assert "reflections" in ge_json("log", str(run), "--eot")
    assert "groups" in ge_json("log", str(run), "--failures")["failures"]
    assert ge_json("export", str(run), vid, str(tmp_path / "out"))["files"]
    assert ge_json("export", str(run), vid, str(tmp_path / "p.patch"), "--patch")["path"]
    assert ge_json("report", str(run), "-o", str(tmp_path / "r.html"))["bytes"] > 0


# --------------------------------------------------------------------------- show


def test_show_counts_tokens_and_cost_of_the_variants_own_calls(run_copy: Path) -> None:
    child = evaluated_child(run_copy)
    index = RunIndex.open(run_copy / "index.sqlite")
    try:
        thought = "Lesson: smaller steps helped."
        reason_id = index.record_call(
            CallRecord(
                "eot:reason",
                "m",
                [{"role": "user", "content": "why?"}],
                reply=thought + "\n",
                prompt_tokens=100,
                completion_tokens=20,
                cost_usd=0.25,
            )
        )
        index.record_call(
            CallRecord("mutation", "m", [], reply="unrelated", prompt_tokens=999, cost_usd=9.0)
        )
        call_id = index.record_call(
            CallRecord(
                "eot",
                "m",
                [{"role": "user", "content": "apply it"}],
                reply="```python\npass\n```",
                prompt_tokens=300,
                completion_tokens=50,
                cost_usd=0.5,
            )
        )
        child.llm_call_id = call_id  # as the engine stores it: the call's own variant_id stays NULL
        child.eot_reflection = thought
        index.add_variant(child, replace=True)
    finally:
        index.close()
    shown = ge_json("show", str(run_copy), child.id[:10])
    assert (
        shown["tokens"] == 470
        and shown["prompt_tokens"] == 400
        and shown["completion_tokens"] == 70
    )
    assert shown["cost_usd"] == pytest.approx(0.75)
    assert [c["id"] for c in shown["calls"]] == [reason_id, call_id]
    assert "apply it" in shown["prompt"] and shown["reply"].startswith("```python")
    assert shown["eot_reflection"] == thought
    assert shown["parent_metrics"][child.parents[0]]["score"] is not None
    assert shown["diff"].startswith("diff --git") and shown["diff_base"] == child.parents[0]
    text = ge_text("show", str(run_copy), child.id)
    assert "470" in text and "Lesson: smaller steps helped." in text


# --------------------------------------------------------------------------- lineage


def test_lineage_follows_both_parents_of_a_crossover_and_dedupes(made: tuple[Path, Path]) -> None:
    _, run = made
    child = evaluated_child(run, parents=2)
    data = ge_json("lineage", str(run), child.id)
    ids = [n["id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids)), "every ancestor appears once"
    assert set(child.parents) <= set(ids) and data["seed"] in ids
    by_id = {n["id"]: n for n in data["nodes"]}
    assert by_id[data["seed"]]["operator"] == "seed"
    for node in data["nodes"]:  # closed under parents: the walk reached the seed on every branch
        assert set(node["parents"]) <= set(ids)
        assert node["operator"] and (node["metrics"] or node["status"] != "evaluated")
    text = ge_text("lineage", str(run), child.id)
    assert child.parents[0] in text and child.parents[1] in text
    assert "(shown above)" in text, "the seed, reached through both parents, is printed once"


# --------------------------------------------------------------------------- diff


def test_diff_defaults_to_the_seed(made: tuple[Path, Path]) -> None:
    _, run = made
    vid = evaluated_child(run).id
    default = ge_json("diff", str(run), vid)
    explicit = ge_json("diff", str(run), vid, "seed")
    assert default == explicit and default["from"] != vid
    assert default["files"] == ["model.py"] and default["added"] >= 1
    assert ge_json("diff", str(run), vid, vid)["diff"] == ""
    assert "model.py" in ge_text("diff", str(run), vid)


# --------------------------------------------------------------------------- log


def test_normalise_reason_groups_numbers_and_ids() -> None:
    assert normalise_reason("timed out after 3.0 s") == normalise_reason("timed out after 12 s")
    assert normalise_reason("exit code 137 in 0123456789abcdef") == "exit code <n> in <id>"
    assert normalise_reason("no code block") != normalise_reason("timed out after 1 s")
    assert normalise_reason(None) == "unknown"


def test_log_groups_and_counts_failures_and_lists_reflections(run_copy: Path) -> None:
    kids = [v for v in variants(run_copy) if v.operator != "seed"][:3]
    index = RunIndex.open(run_copy / "index.sqlite")
    try:
        for v, reason in zip(
            kids, ("timed out after 3.0 s", "timed out after 12.5 s", "exit code 1"), strict=True
        ):
            index.add_evaluation(EvaluationRecord(v.id, "failed", failure_reason=reason, attempt=2))
        index.add_event("proposal_rejected", {"operator": "mutation", "reason": "no code block"})
        index.add_reflection(
            ReflectionRecord(kids[0].id, "Fewer features generalise better.", elite_id=kids[1].id)
        )
    finally:
        index.close()
    failures = ge_json("log", str(run_copy), "--failures")["failures"]
    timed_out = [g for g in failures["groups"] if g["reason"].startswith("timed out")]
    assert len(timed_out) == 1 and timed_out[0]["count"] == 2
    assert set(timed_out[0]["variants"]) == {kids[0].id, kids[1].id}
    assert failures["total"] == sum(g["count"] for g in failures["groups"]) >= 4
    assert any(
        g["stage"].startswith("proposal") and g["reason"] == "no code block"
        for g in failures["groups"]
    )
    both = ge_json("log", str(run_copy), "--eot", "--failures")
    assert (
        both["reflections"][0]["text"] == "Fewer features generalise better." and "failures" in both
    )
    events = ge_json("log", str(run_copy))["events"]
    kinds = [e["kind"] for e in events]
    assert "run_started" in kinds and "evaluated" in kinds and "evaluation_failed" in kinds
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)
    assert "timed out" in ge_text("log", str(run_copy), "--failures")


# --------------------------------------------------------------------------- export


def test_export_files_refuses_non_empty_dest_without_force(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    _, run = made
    vid = evaluated_child(run).id
    dest = tmp_path / "out"
    data = ge_json("export", str(run), vid, str(dest))
    index = RunIndex.open(run / "index.sqlite", readonly=True)
    with GitStore.open(run / "repo.git") as store:
        files = store.read_files(index.get_variant(vid).commit_sha)
    index.close()
    assert sorted(files) == data["files"]
    for name, content in files.items():
        assert (dest / name).read_bytes() == content
    (dest / "mine.txt").write_text("keep me")
    (dest / "model.py").write_text("local edit")
    proc = ge_here("export", str(run), vid, str(dest), cwd=tmp_path)
    assert proc.returncode == 2 and "not empty" in proc.stderr and "--force" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert (dest / "model.py").read_text() == "local edit"
    forced = ge_json("export", str(run), vid, str(dest), "--force")
    assert (dest / "model.py").read_bytes() == files["model.py"] and (
        dest / "mine.txt"
    ).read_text() == "keep me"
    assert "model.py" in forced["overwritten"] and not list(dest.glob(".ge-export-*"))


def test_export_patch_applies_to_the_seed_with_git_apply(
    made: tuple[Path, Path], tmp_path: Path
) -> None:
    seed, run = made
    vid = evaluated_child(run, parents=2).id
    ge_json("export", str(run), vid, str(tmp_path / "variant"))
    patch = tmp_path / "v.patch"
    data = ge_json("export", str(run), vid, str(patch), "--patch")
    assert data["files"] == ["model.py"] and patch.read_text().startswith(
        "diff --git a/model.py b/model.py"
    )
    project = Path(
        shutil.copytree(seed, tmp_path / "project", ignore=shutil.ignore_patterns("runs"))
    )
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    applied = subprocess.run(
        ["git", "apply", "--check", str(patch)], cwd=project, capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    subprocess.run(["git", "apply", str(patch)], cwd=project, check=True)
    assert (project / "model.py").read_text() == (tmp_path / "variant" / "model.py").read_text()
    proc = ge_here("export", str(run), vid, str(patch), "--patch", cwd=tmp_path)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    ge_json("export", str(run), vid, str(patch), "--patch", "--force")
    (tmp_path / "dir").mkdir()
    assert ge_json("export", str(run), vid, str(tmp_path / "dir"), "--patch")["path"] == str(
        tmp_path / "dir" / f"{vid}.patch"
    )
    to_stdout = runner.invoke(app, ["export", str(run), vid, "-", "--patch"])
    assert to_stdout.exit_code == 0 and to_stdout.stdout == patch.read_text()


# --------------------------------------------------------------------------- live runs, errors


def test_commands_read_a_run_while_it_is_being_written(run_copy: Path, tmp_path: Path) -> None:
    vid = evaluated_child(run_copy).id
    writer = RunIndex.open(run_copy / "index.sqlite")
    try:
        with RunLock(run_copy), writer.transaction():
            writer.add_event("generation_started", {"generation": 3})  # uncommitted while we read
            assert ge_json("status", str(run_copy))["children"] > 0
            assert ge_json("best", str(run_copy))["front"]
            assert ge_json("show", str(run_copy), vid)["metrics"]
            assert ge_json("lineage", str(run_copy), vid)["nodes"]
            assert ge_json("diff", str(run_copy), vid)["diff"]
            events = ge_json("log", str(run_copy))["events"]
            assert not any(e.get("generation") == 3 for e in events), (
                "uncommitted writes are invisible"
            )
            assert ge_json("report", str(run_copy), "-o", str(tmp_path / "live.html"))["front"]
    finally:
        writer.close()


@pytest.mark.parametrize(
    "args",
    [
        ("show", "ffffffffff"),
        ("lineage", "ffffffffff"),
        ("diff", "ffffffffff"),
        ("diff", "seed", "zz"),
        ("export", "ffffffffff", "out"),
    ],
)
def test_a_bad_variant_id_is_one_line_and_exit_2(
    made: tuple[Path, Path], tmp_path: Path, args: tuple[str, ...]
) -> None:
    _, run = made
    proc = ge_here(args[0], str(run), *args[1:], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no variant") and "ge best" in lines[0]
    assert not (tmp_path / "out").exists()


def test_not_a_run_directory_is_a_clear_error(tmp_path: Path) -> None:
    proc = ge_here("log", str(tmp_path / "nope"), "--json", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().startswith("error: run directory not found")


def test_untrusted_text_is_shown_verbatim_never_as_rich_markup(run_copy: Path) -> None:
    """Metric keys and values come from variant code, reasons and reflections from an LLM: a
    `[/bold]` in them must print as is (it used to raise MarkupError and crash `ge show`)."""
    child = evaluated_child(run_copy)
    index = RunIndex.open(run_copy / "index.sqlite")
    try:
        index.add_evaluation(
            EvaluationRecord(
                child.id,
                "failed",
                failure_reason="exit code 1 [/bold] [red]x",
                attempt=3,
                metrics={"[/red]key": "[bold]value[/oops]"},
            )
        )
        index.add_reflection(ReflectionRecord(child.id, "Use [/x] tags [link=evil]here[/link]."))
        with index.transaction() as conn:
            conn.execute(
                "UPDATE variants SET eot_reflection = ? WHERE id = ?",
                ("why [/nope] it helped", child.id),
            )
    finally:
        index.close()
    shown = ge_text("show", str(run_copy), child.id)
    assert "exit code 1 [/bold] [red]x" in shown
    assert "[/red]key=[bold]value[/oops]" in shown
    assert "why [/nope] it helped" in shown
    assert "Use [/x] tags [link=evil]here[/link]." in ge_text("log", str(run_copy), "--eot")
    assert "exit code <n> [/bold] [red]x" in ge_text(
        "log", str(run_copy), "--failures"
    )  # normalised


# --------------------------------------------------------------------------- isolation in ge status

BWRAP = {
    "backend": "bwrap",
    "layers": ["bwrap", "mount namespace", "pid namespace", "network namespace", "rlimits"],
    "filesystem": "writes only in the variant directory and a private /tmp",
    "network": "none",
    "secrets": "environment scrubbed; run directory and home credentials hidden",
    "processes": "own pid namespace; dedicated uid; rlimits",
    "resources": "memory 2048 MB per process (RLIMIT_AS), not per evaluation",
    "summary": "bwrap — writes only in the variant dir; no network; secrets scrubbed",
    "warnings": [],
}
UNSANDBOXED = {
    "backend": "none",
    "layers": ["rlimits"],
    "filesystem": "writable wherever ge's user can write",
    "network": "open",
    "secrets": "environment scrubbed; run directory and home credentials readable",
    "processes": "rlimits",
    "resources": "files up to 1024 MB each",
    "summary": "none — no sandbox",
    "warnings": ["sandbox: disabled [/bold] (evaluator.sandbox = none)"],
}


def set_isolation(run: Path, *records: dict, extra_starts: int = 0) -> None:
    """Replace the run's isolation events by ``records`` (one per start, oldest first)."""
    index = RunIndex.open(run / "index.sqlite")
    try:
        with index.transaction() as conn:
            conn.execute("DELETE FROM events WHERE kind = 'isolation'")
        for _ in range(extra_starts):
            index.add_event("executor", {"summary": "an earlier start"}, when=1.0)
        for n, data in enumerate(records):
            index.add_event("isolation", data, when=1_700_000_000.0 + n)
    finally:
        index.close()


def test_status_shows_the_isolation_of_the_latest_start(run_copy: Path) -> None:
    set_isolation(run_copy, BWRAP)
    data = ge_json("status", str(run_copy))
    assert data["isolation"] == {**BWRAP, "time": 1_700_000_000.0, "uncontained": []}
    assert data["isolation_changes"] == [] and len(data["isolation_history"]) == 1
    text = ge_text("status", str(run_copy))
    assert "isolation  bwrap  layers: bwrap, mount namespace, pid namespace" in text
    for aspect in ("filesystem", "network", "secrets", "processes", "resources"):
        line = next(x for x in text.splitlines() if x.strip().startswith(aspect))
        assert BWRAP[aspect] in line and "not contained" not in line
    assert "changed" not in text and "warning" not in text


def test_status_warns_about_no_sandbox_and_every_uncontained_aspect(run_copy: Path) -> None:
    set_isolation(run_copy, UNSANDBOXED)
    data = ge_json("status", str(run_copy))
    assert data["isolation"]["uncontained"] == ["backend", "filesystem", "network", "secrets"]
    text = ge_text("status", str(run_copy))
    assert "isolation  none  (no sandbox)" in text
    assert "writable wherever ge's user can write  (not contained)" in text
    assert "network     open  (not contained)" in text
    assert "rlimits  (not contained)" not in text, "processes is contained"
    assert "warning: sandbox: disabled [/bold] (evaluator.sandbox = none)" in text, (
        "verbatim, not markup"
    )
    console = Console(record=True, force_terminal=True, color_system="standard", width=200)
    print_status(console, views_data.status(run_copy))
    styled = console.export_text(styles=True)
    network = next(x for x in styled.splitlines() if "network" in x and "open" in x)
    resources = next(x for x in styled.splitlines() if "resources" in x)
    assert "\x1b[1;31m" in network and "\x1b[31m" not in resources and "\x1b[1;31m" not in resources


def test_status_of_a_run_older_than_isolation_records(run_copy: Path) -> None:
    set_isolation(run_copy)
    data = ge_json("status", str(run_copy))
    assert data["isolation"] is None and data["isolation_history"] == []
    text = ge_text("status", str(run_copy))
    assert "isolation  not recorded (run started before ge recorded its isolation)" in text


def test_status_says_when_a_resume_changed_the_isolation(run_copy: Path) -> None:
    landlock = {**BWRAP, "backend": "landlock", "layers": ["landlock ABI 7", "rlimits"]}
    set_isolation(run_copy, BWRAP, BWRAP, landlock)
    data = ge_json("status", str(run_copy))
    assert data["isolation"]["backend"] == "landlock"
    assert [h["backend"] for h in data["isolation_history"]] == ["bwrap", "bwrap", "landlock"]
    assert data["isolation_changes"] == ["bwrap → landlock"]
    assert "isolation changed during the run: bwrap → landlock" in ge_text("status", str(run_copy))
    set_isolation(run_copy, BWRAP, {**BWRAP, "network": "open"})
    assert ge_json("status", str(run_copy))["isolation_changes"] == ["network none → open"]


def test_status_says_which_starts_ran_before_isolation_was_recorded(run_copy: Path) -> None:
    """An old run resumed by a newer ge: its first start ran under isolation nobody recorded."""
    set_isolation(run_copy, BWRAP)
    assert ge_json("status", str(run_copy))["isolation_unrecorded_starts"] == 0
    set_isolation(run_copy, BWRAP, extra_starts=1)
    assert ge_json("status", str(run_copy))["isolation_unrecorded_starts"] == 1
    assert "isolation not recorded for the first 1 start(s)" in ge_text("status", str(run_copy))


def test_status_trusts_the_records_contained_flags_and_does_not_repeat_warnings(
    run_copy: Path,
) -> None:
    """The sandbox records per aspect whether it is contained, and one warning per uncontained one."""
    processes = "ge's pid namespace, ge's uid: evaluated code can signal and trace ge"
    record = {
        **BWRAP,
        "backend": "landlock",
        "processes": processes,
        "contained": {
            "filesystem": True,
            "network": True,
            "secrets": True,
            "processes": False,
            "resources": True,
        },
        "warnings": [
            f"sandbox (landlock): processes: {processes}",
            "memory is not capped per evaluation",
        ],
    }
    set_isolation(run_copy, record)
    assert ge_json("status", str(run_copy))["isolation"]["uncontained"] == ["processes"]
    text = ge_text("status", str(run_copy))
    assert f"{processes}  (not contained)" in text and text.count("signal and trace ge") == 1
    assert "warning: memory is not capped per evaluation" in text


# --------------------------------------------------------------------------- children per generation


def test_status_shows_configured_planned_and_new_children_per_generation(run_copy: Path) -> None:
    rows = ge_json("status", str(run_copy))["children_per_generation"]
    assert [r["generation"] for r in rows] == [0, 1, 2]
    assert all(r["configured"] == 4 for r in rows)  # initial_population and population
    index = RunIndex.open(run_copy / "index.sqlite")
    try:
        for r in rows:
            made = [v for v in index.variants(generation=r["generation"]) if v.operator != "seed"]
            assert r["new"] == len(made) and 0 < r["new"] <= r["planned"] <= r["configured"]
        index.add_event(
            "generation_started", {"generation": 3, "plans": 3}
        )  # a generation under way
    finally:
        index.close()
    data = ge_json("status", str(run_copy))
    assert data["children_per_generation"][-1] == {
        "generation": 3,
        "configured": 4,
        "planned": 3,
        "new": None,
    }
    cells = [f"{r['generation']}: 4/{r['planned']}/{r['new']}" for r in rows]
    line = next(
        x for x in ge_text("status", str(run_copy)).splitlines() if "configured/planned/new" in x
    )
    assert all(cell in line for cell in cells) and "3: 4/3/-" in line


def test_status_text_shows_the_last_ten_generations_of_a_long_run(run_copy: Path) -> None:
    index = RunIndex.open(run_copy / "index.sqlite")
    try:
        for gen in range(3, 40):  # a long run: one line per generation would fill the screen
            index.add_event("generation_started", {"generation": gen, "plans": 4})
    finally:
        index.close()
    assert len(ge_json("status", str(run_copy))["children_per_generation"]) == 40
    line = next(
        x for x in ge_text("status", str(run_copy)).splitlines() if "configured/planned/new" in x
    )
    assert "(last 10 of 40)" in line and "39: 4/4/-" in line and "30: 4/4/-" in line
    assert "29: " not in line and " 0: " not in line


# --------------------------------------------------------------------------- the JSON's keys, pinned

# Dicts whose keys are the run's own (metric names, segment keys, variant ids, event data).
_OPEN_KEYS = {"metrics", "parent_metrics", "distinct", "scores", "events", "generations", "isolation"}
_OPEN_KEYS |= {"isolation_history", "best", "last_migration", "migrations"}


def key_lines(value: object, path: str = ".") -> list[str]:
    """``path: key key …`` for every dict of a JSON value, keys in order (a list: its first
    element); dicts keyed by the run's own names are left open."""
    if isinstance(value, list):
        return key_lines(value[0], path + "[]") if value else []
    if not isinstance(value, dict):
        return []
    lines = [f"{path}: {' '.join(value)}"]
    for k, v in value.items():
        if k not in _OPEN_KEYS:
            lines += key_lines(v, f"{path.rstrip('.')}.{k}")
    return lines


PINNED_KEYS = {
    "status": """
.: run_dir generation generations children evaluated failed pending llm_calls llm_errors llm_retries prompt_tokens completion_tokens cost_usd finished state pid stop_reason fix models children_per_generation diversity isolation isolation_history isolation_changes isolation_unrecorded_starts evaluator_reloads tokens bandit islands mating_preference
.children_per_generation[]: generation configured planned new
.diversity[]: generation population valid front distinct mean_distance distance_sampled
.tokens: by_operator valid_children tokens_per_valid_child
.tokens.by_operator[]: operator mode calls prompt_tokens completion_tokens
.bandit: algorithm per_dollar models personas
.bandit.personas[]: arm pulls rewards improvements rate cost_usd prior""",
    "best": """
.: run_dir objectives front
.objectives[]: name direction select
.front[]: id branch generation operator metrics""",
    "show": """
.: id branch commit generation parents operator segment prompt_name persona model temperature status metrics failure_reason output_tail feedback duration_s prompt reply tokens prompt_tokens completion_tokens cost_usd calls parent_metrics eot_reflection diff_base diff
.calls[]: id purpose model outcome prompt_tokens completion_tokens cost_usd latency_s""",
    "lineage": """
.: run_dir id seed objectives nodes
.objectives[]: name direction select
.nodes[]: id generation operator persona model segment status parents metrics failure_reason improved""",
    "diff": """
.: from to files added removed diff""",
    "log": """
.: run_dir events""",
    "log --eot --failures --bandit": """
.: run_dir reflections failures bandit
.reflections[]: variant elite segment time generation metrics improved text
.failures: total groups
.failures.groups[]: stage reason count examples variants details
.bandit: algorithm per_dollar models personas generations
.bandit.personas[]: arm pulls rewards improvements rate cost_usd prior""",
    "report": """
.: path bytes variants front plots failure_groups reflections""",
}


def test_every_json_view_keeps_its_keys_and_their_order(run_copy: Path, tmp_path: Path) -> None:
    child = evaluated_child(run_copy)
    with RunIndex.open(run_copy / "index.sqlite") as index:
        call = CallRecord("mutation", "m", [], reply="r", prompt_tokens=3, completion_tokens=2)
        child.llm_call_id = index.record_call(call)
        index.add_variant(child, replace=True)
        index.add_reflection(ReflectionRecord(child.id, "a lesson", elite_id=child.parents[0]))
        index.add_event("proposal_rejected", {"operator": "mutation", "reason": "no code block"})
    run = str(run_copy)
    found = {
        "status": ge_json("status", run),
        "best": ge_json("best", run),
        "show": ge_json("show", run, child.id),
        "lineage": ge_json("lineage", run, child.id),
        "diff": ge_json("diff", run, child.id),
        "log": ge_json("log", run),
        "log --eot --failures --bandit": ge_json("log", run, "--eot", "--failures", "--bandit"),
        "report": ge_json("report", run, "-o", str(tmp_path / "r.html")),
    }
    for command, pinned in PINNED_KEYS.items():
        assert key_lines(found[command]) == pinned.strip().splitlines(), command
    assert found["status"]["islands"] is None and found["status"]["mating_preference"] == []
    assert found["show"]["calls"][0]["prompt_tokens"] == 3 and found["show"]["tokens"] == 5
