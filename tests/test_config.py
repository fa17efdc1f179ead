"""ge.toml validation: good files load, bad ones give one line naming the key, value and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from guided_evolution.cli import app
from guided_evolution.config import ResolvedConfig, load_config, parse_config
from guided_evolution.errors import ConfigError, GeError
from tests.support.cli import ge_here

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = {"objectives": [{"name": "acc", "direction": "max"}], "evaluator": {"command": "python evaluate.py"}}


@pytest.mark.parametrize(
    "path",
    ["guided_evolution/templates/ge.toml", "seeds/tiny_cnn/ge.toml", "seeds/exquisitenet_v2/ge.toml"],
)
def test_shipped_configs_load(path: str) -> None:
    cfg = load_config(ROOT / path)
    assert cfg.selected_objectives and cfg.evaluator.command


def test_defaults_are_the_ge_papers() -> None:
    evo = parse_config(MINIMAL).evolution
    assert (evo.initial_population, evo.population, evo.elites, evo.hall_of_fame) == (144, 44, 44, 100)
    assert (evo.crossover_probability, evo.mutation_probability, evo.eot_probability) == (0.35, 0.8, 0.25)
    assert evo.temperature.mutation == (0.02, 0.35) and evo.temperature.initial == (0.05, 0.4)
    assert evo.temperature.crossover == (0.05, 0.10)
    assert parse_config(MINIMAL).llm.offline


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"evolutoin": {}}, "unknown key 'evolutoin'"),
        ({"evolution": {"population": 0}}, "'evolution.population' = 0"),
        ({"evolution": {"crossover_probability": 1.5}}, "less than or equal to 1"),
        ({"evolution": {"temperature": {"mutation": [0.5, 0.1]}}}, "mutation = [0.5, 0.1]"),
        ({"evolution": {"top_p": {"eot": 0}}}, "'evolution.top_p.eot' = 0"),
        ({"evolution": {"top_p": 1.5}}, "less than or equal to 1"),
        ({"objectives": [{"name": "acc", "direction": "up"}]}, "'objectives[0].direction' = \"up\""),
        ({"objectives": [{"name": "acc", "direction": "max", "select": False}]}, "select = true"),
        ({"objectives": [{"name": "a", "direction": "max"}, {"name": "a", "direction": "min"}]}, "unique"),
        ({"llm": {"models": ["offline", "gpt-4o"]}}, "'offline' cannot be mixed"),
        ({"executor": {"kind": "kubernetes"}}, "'executor.kind'"),
        ({"executor": {"slots": 0}}, "'executor.slots'"),
        ({"evaluator": {}}, "missing required key 'evaluator.command'"),
        ({"run": {"name": "a/b"}}, "'run.name'"),
        ({"evaluator": {"command": "x", "worker_check": True}}, "needs evaluator.worker"),
        (
            {"evaluator": {"command": "x", "worker": "w", "worker_check": True}},
            "needs evaluator.check too",
        ),
    ],
)
def test_bad_values_name_the_key(change: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**MINIMAL, **change})
    line = err.value.one_line()
    assert expected in line and "\n" not in line


def test_model_strings_and_tables_both_work() -> None:
    cfg = parse_config({**MINIMAL, "llm": {"models": ["gpt-4o-mini", {"model": "ollama/qwen", "weight": 2}]}})
    assert [m.model for m in cfg.llm.models] == ["gpt-4o-mini", "ollama/qwen"]
    assert cfg.llm.models[1].weight == 2 and not cfg.llm.offline


def test_overrides_win_and_none_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "ge.toml"
    path.write_text('[evaluator]\ncommand = "true"\n[[objectives]]\nname = "a"\ndirection = "min"\n[evolution]\ngenerations = 7\n')
    cfg = load_config(path, {"evolution.generations": 2, "evolution.population": None, "llm.models": ["m"]})
    assert cfg.evolution.generations == 2 and cfg.evolution.population == 44
    assert cfg.llm.models[0].model == "m"


PROFILED = """
[evaluator]
command = "true"
[[objectives]]
name = "a"
direction = "min"
[evolution]
generations = 7
population = 5
[profile.big.evolution]
generations = 30
elites = 44
[profile.big.llm]
models = ["m1", "m2"]
"""


def test_a_profile_merges_over_the_file_and_flags_still_win(tmp_path: Path) -> None:
    path = tmp_path / "ge.toml"
    path.write_text(PROFILED)
    plain = load_config(path)  # the [profile.*] tables are not config keys
    assert (plain.evolution.generations, plain.evolution.elites) == (7, 44)
    big = load_config(path, {"evolution.generations": 3}, profile="big")
    assert (big.evolution.generations, big.evolution.population, big.evolution.elites) == (3, 5, 44)
    assert [m.model for m in big.llm.models] == ["m1", "m2"]
    with pytest.raises(ConfigError) as err:
        load_config(path, profile="bigg")
    assert "no profile 'bigg' (defined: big)" in err.value.one_line()
    path.write_text(PROFILED + '\n[profile.bad]\nevolution = 3\n')
    with pytest.raises(ConfigError, match="'evolution' = 3"):
        load_config(path, profile="bad")
    path.write_text('profile = 1\n' + PROFILED.split("[profile.big.evolution]")[0])
    with pytest.raises(ConfigError, match="must hold tables"):
        load_config(path)


def test_the_exquisitenet_paper_profile_has_the_ge_papers_population() -> None:
    evo = load_config(ROOT / "seeds/exquisitenet_v2/ge.toml", profile="paper").evolution
    assert (evo.initial_population, evo.population, evo.elites, evo.hall_of_fame, evo.generations) == (
        144, 44, 44, 100, 30)
    assert set(evo.top_p.model_dump().values()) == {0.1}  # GE sampled every call with top_p 0.1
    plain = load_config(ROOT / "seeds/exquisitenet_v2/ge.toml").evolution.top_p
    assert set(plain.model_dump().values()) == {None}  # unset: not sent


def test_top_p_is_per_operator_or_one_number_for_all() -> None:
    evo = parse_config({**MINIMAL, "evolution": {"top_p": {"crossover": 0.3}}}).evolution
    assert evo.top_p.crossover == 0.3 and evo.top_p.mutation is None
    assert parse_config(MINIMAL).evolution.top_p.eot is None


def test_an_unknown_profile_on_the_command_line_writes_nothing(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "ge.toml").write_text(PROFILED)
    proc = ge_here("run", str(seed), "--profile", "nope", "--run-dir", str(tmp_path / "r"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    # The hint keeps its brackets: error lines are never read as rich markup.
    assert "no profile 'nope' (defined: big)" in proc.stderr and "[profile.nope]" in proc.stderr
    assert not (tmp_path / "r").exists()


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "ge.toml").write_text("[evaluator\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(tmp_path / "ge.toml")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    assert f"--config {tmp_path / 'ge.toml'}" in err.value.one_line()


def test_resolved_config_round_trips(tmp_path: Path) -> None:
    resolved = ResolvedConfig(
        config=parse_config(MINIMAL), config_path="/x/ge.toml", seed_dir="/x", run_dir="/x/runs/r", ge_version="0"
    )
    (tmp_path / "config.json").write_text(resolved.dump())
    assert ResolvedConfig.load(tmp_path / "config.json") == resolved
    with pytest.raises(ConfigError, match="not a ge run directory"):
        ResolvedConfig.load(tmp_path / "missing" / "config.json")


def test_init_writes_a_runnable_template_and_refuses_to_overwrite(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "s" / "ge.toml").seed.files == ("model.py",)
    again = runner.invoke(app, ["init", str(tmp_path / "s")])
    assert isinstance(again.exception, GeError) and "already exist" in again.exception.one_line()


def test_a_models_client_library_reaches_the_llm_settings() -> None:
    """`client` in `[[llm.models]]` forces the library that sends the model's requests."""
    from guided_evolution.llm.config_settings import llm_settings
    from guided_evolution.llm.direct import uses_openai

    models = [
        {"model": "qwen-coder", "api_base": "http://127.0.0.1:9/v1"},
        {"model": "qwen-coder", "api_base": "http://127.0.0.1:9/v1", "client": "litellm"},
    ]
    specs = llm_settings(parse_config({**MINIMAL, "llm": {"models": models}})).models
    assert [s.client for s in specs] == ["auto", "litellm"]
    assert uses_openai(specs[0]) and not uses_openai(specs[1])
    with pytest.raises(ConfigError, match="client"):
        parse_config({**MINIMAL, "llm": {"models": [{"model": "m", "client": "requests"}]}})
