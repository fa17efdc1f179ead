"""Optional subsystems in tables of their own: the new form validates, the flat keys of earlier
versions get one line naming the new place (and no run directory), and a run stored before the
move still reads and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guided_evolution.config import ResolvedConfig, parse_config
from guided_evolution.config_moved import MOVED, migrate
from guided_evolution.errors import ConfigError
from tests.support.cli import ge_here, here_json
from tests.support.seeds import template_seed

BASE = {"objectives": [{"name": "score", "direction": "max"}], "evaluator": {"command": "true"}}


def _config(**tables: dict) -> dict:
    out = json.loads(json.dumps(BASE))
    for name, body in tables.items():
        out.setdefault(name, {}).update(body)
    return out


def test_each_section_reads_from_its_table() -> None:
    cfg = parse_config(
        _config(
            evolution={
                "islands": {"count": 3, "migration_interval": 2},
                "mate_choice": {"kind": "dissimilar", "strength": 1.5},
                "novelty": {"distance": 0.1, "retries": 2},
                "diff": {"mode": "auto", "min_chars": 100},
            },
            llm={"bandit": {"kind": "thompson", "per_dollar": True}},
            evaluator={
                "command": "python evaluate.py",
                "preload": {"modules": ["json"], "recycle_after": 7},
                "limits": {"memory_mb": 512, "max_processes": 32, "tmpfs_mb": 64},
            },
        )
    )
    evo = cfg.evolution
    assert (evo.islands.count, evo.islands.migration_interval, evo.islands.migration_size) == (3, 2, 2)
    assert (evo.mate_choice.kind, evo.mate_choice.strength) == ("dissimilar", 1.5)
    assert (evo.novelty.distance, evo.novelty.retries, evo.diff.mode) == (0.1, 2, "auto")
    assert (cfg.llm.bandit.kind, cfg.llm.bandit.per_dollar) == ("thompson", True)
    ev = cfg.evaluator
    assert ev.preload_modules()[-1] == "json" and ev.preload.recycle_after == 7
    assert (ev.limits.memory_mb, ev.limits.max_processes, ev.limits.tmpfs_mb) == (512, 32, 64)


def test_defaults_are_off_and_bounded() -> None:
    cfg = parse_config(_config())
    assert cfg.evolution.islands.count == 1 and cfg.evolution.mate_choice.kind == "tournament"
    assert cfg.evolution.novelty.distance == 0 and cfg.evolution.diff.mode == "never"
    assert cfg.llm.bandit.kind == "off" and cfg.evaluator.preload.enabled
    assert cfg.evaluator.limits.memory_mb == "auto" and cfg.evaluator.limits.max_processes == 256


@pytest.mark.parametrize(("table", "key"), sorted(MOVED))
def test_every_old_flat_key_names_its_new_place(table: str, key: str) -> None:
    value = {
        "preload": False, "bandit": "thompson", "mate_choice": "dissimilar", "edit_mode": "auto",
        "migration_topology": "random", "novelty_embedding_model": "openai/embed",
        "memory_mb": 512, "output_cap_bytes": 20_000,
    }.get(key, 1)  # fmt: skip
    with pytest.raises(ConfigError) as err:
        parse_config(_config(**{table: {key: value}}))
    section, new_key = MOVED[(table, key)]
    message = str(err.value)
    assert f"'{table}.{key}' moved to the table [{table}.{section}]" in message, message
    assert f"[{table}.{section}] {new_key} = {json.dumps(value)}" in err.value.hint
    # followed, the hint works
    parse_config(_config(**{table: {section: {new_key: value}}}))


def test_an_old_key_in_ge_toml_is_one_line_and_leaves_no_run(tmp_path: Path) -> None:
    seed = template_seed(tmp_path / "seed")
    text = (seed / "ge.toml").read_text().replace("[evolution]\n", "[evolution]\nislands = 2\n", 1)
    (seed / "ge.toml").write_text(text)
    proc = ge_here("run", str(seed), "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "[evolution.islands]" in lines[0] and "count = 2" in lines[0], lines[0]
    assert not (tmp_path / "run").exists()


def test_a_preload_list_moves_to_modules_and_stays_enabled() -> None:
    stored = migrate({"evaluator": {"command": "python e.py", "preload": ["json"]}})
    assert stored["evaluator"]["preload"] == {"modules": ["json"], "enabled": True}
    assert migrate({"evaluator": {"preload": False}})["evaluator"]["preload"] == {"enabled": False}


def test_a_run_stored_before_the_sections_reads_and_resumes(tmp_path: Path) -> None:
    """A run's config.json in the flat form (as ge wrote it before the move): ge resume goes on
    with the same settings, and the inspection commands read it."""
    seed = template_seed(tmp_path / "seed", generations=1, islands=2, mate_choice="dissimilar")
    run_dir = tmp_path / "run"
    here_json("run", str(seed), "--run-dir", str(run_dir), cwd=tmp_path)
    path = run_dir / "config.json"
    data = json.loads(path.read_text())
    evo, ev = data["config"]["evolution"], data["config"]["evaluator"]
    islands, mate = evo.pop("islands"), evo.pop("mate_choice")
    evo.update(islands=islands["count"], migration_interval=islands["migration_interval"])
    evo.update(mate_choice=mate["kind"], mate_strength=mate["strength"])
    limits = ev.pop("limits")
    ev.update(memory_mb=limits["memory_mb"], max_processes=limits["max_processes"])
    ev["preload"] = ev.pop("preload")["enabled"]
    path.write_text(json.dumps(data))
    old = ResolvedConfig.load(path).config
    assert old.evolution.islands.count == 2 and old.evolution.mate_choice.kind == "dissimilar"
    status = here_json("status", str(run_dir), cwd=tmp_path)
    assert status["finished"]
    resumed = here_json("resume", str(run_dir), "--generations", "2", cwd=tmp_path)
    assert resumed["finished"] and resumed["generation"] == 2, resumed


def test_migrate_leaves_its_input_as_it_was() -> None:
    data = {"evolution": {"islands": {"count": 2}, "migration_size": 0}}
    out = migrate(data)
    assert out["evolution"]["islands"] == {"count": 2, "migration_size": 0}
    assert data == {"evolution": {"islands": {"count": 2}, "migration_size": 0}}
