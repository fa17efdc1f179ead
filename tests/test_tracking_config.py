"""The `[tracking]` table and where its URI points (no MLflow needed): bad keys and values are one
line naming them, a relative store is made absolute once, and a run without the table starts no
follower and writes nothing for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from guided_evolution.config import parse_config
from guided_evolution.errors import ConfigError
from guided_evolution.tracking.spawn import STATE_FILE, resolve_uri

BASE = {"objectives": [{"name": "acc", "direction": "max"}], "evaluator": {"command": "python e.py"}}


def config(tracking: dict[str, object]) -> object:
    return parse_config({**BASE, "tracking": tracking}, "ge.toml")


def test_the_table_is_off_by_default_and_takes_a_uri() -> None:
    assert parse_config(BASE).tracking.mlflow is None
    cfg = config({"mlflow": "http://127.0.0.1:5000", "experiment": "sweep 3", "interval_s": 5})
    assert (cfg.tracking.mlflow, cfg.tracking.experiment, cfg.tracking.interval_s) == (
        "http://127.0.0.1:5000",
        "sweep 3",
        5.0,
    )


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ({"mlfow": "file:./mlruns"}, "ge.toml: unknown key 'tracking.mlfow'"),
        ({"mlflow": "file:./my runs"}, "ge.toml: 'tracking.mlflow' = \"file:./my runs\""),
        ({"mlflow": ""}, "ge.toml: 'tracking.mlflow' = \"\""),
        ({"mlflow": "file:./mlruns", "interval_s": 0}, "ge.toml: 'tracking.interval_s' = 0"),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_it(table: dict[str, object], said: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(table)
    assert str(err.value.message).startswith(said)
    assert "\n" not in err.value.message


def test_relative_stores_are_made_absolute_against_the_working_directory(tmp_path: Path) -> None:
    assert resolve_uri("file:./mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_uri("file:mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_uri("mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert resolve_uri("sqlite:///db/mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/db/mlflow.db"
    for kept in ("file:///srv/mlruns", "sqlite:////srv/m.db", "http://host:5000", "databricks"):
        assert resolve_uri(kept, tmp_path) == kept


def test_an_untracked_run_has_no_tracking_state(template_run: Path) -> None:
    assert (template_run / "config.json").is_file()
    assert not (template_run / STATE_FILE).exists()
