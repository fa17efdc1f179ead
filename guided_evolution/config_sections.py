"""The optional subsystems of `ge.toml`, each a table of its own and off by default.

``[evolution.islands]``, ``[evolution.mate_choice]``, ``[evolution.novelty]``,
``[evolution.diff]``, ``[llm.bandit]``, ``[evaluator.preload]``, ``[evaluator.limits]`` and
``[tracking]``: a subsystem's knobs and the rules between them live together, so a table
validates itself and the parent model only checks what spans tables. ``config_moved`` maps the
flat keys of earlier ge versions onto these tables.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Section(BaseModel):
    """A table of `ge.toml`: unknown keys are refused, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class IslandsConfig(Section):
    """``[evolution.islands]``: populations evolved apart, with migration (off: count = 1)."""

    count: int = Field(1, ge=1, le=64, description="populations evolved apart (1 = GE's one)")
    migration_interval: int = Field(5, ge=1, description="generations between migrations")
    migration_size: int = Field(2, ge=0, description="best variants each island sends")
    migration_topology: Literal["ring", "random"] = "ring"


class MateChoiceConfig(Section):
    """``[evolution.mate_choice]``: how a crossover partner is chosen (off: the tournament's)."""

    kind: Literal["tournament", "dissimilar", "self_adaptive"] = Field(
        "tournament",
        description="crossover partner: the tournament's (GE), one drawn more often the more its "
        "code differs (dissimilar), or by each variant's own evolving preference (self_adaptive)",
    )
    strength: float = Field(
        2.0,
        ge=0,
        le=50,
        description="mate choice's sharpness: dissimilar weighs a partner (distance + 0.001) ** "
        "strength; self_adaptive exp(-4 strength (relative distance - gene)^2); 0 = uniform",
    )
    sigma: float = Field(
        0.1, ge=0, le=1, description="self_adaptive: std of the gene's Gaussian step per child"
    )


class NoveltyConfig(Section):
    """``[evolution.novelty]``: near-duplicate proposals rejected before evaluation (off: 0)."""

    distance: float = Field(
        0.0,
        ge=0,
        le=1,
        description="reject a proposal whose new segments are within this distance (token edit "
        "distance, 0-1) of an evaluated variant's, before its evaluation (0 = off)",
    )
    retries: int = Field(
        1, ge=0, le=3, description="re-proposals after a near-duplicate (0: reject at once)"
    )
    embedding_model: str | None = Field(
        None,
        description="a litellm embedding model: the novelty distance is then the cosine distance "
        "of the segments' embeddings (api_base and key as the run's models; default: tokens)",
    )


class DiffConfig(Section):
    """``[evolution.diff]``: edit blocks instead of whole segments (off: never)."""

    mode: Literal["never", "always", "auto"] = Field(
        "never",
        description="how mutation, EoT and fix replies change a segment: never = the whole new "
        "segment (the GE paper); always = SEARCH/REPLACE edit blocks; auto = edit blocks for "
        "segments of at least `min_chars` characters",
    )
    min_chars: int = Field(
        800, ge=0, description='mode = "auto": the segment size from which edits are asked for'
    )


class BanditConfig(Section):
    """``[llm.bandit]``: the choice of model and persona adapted to what improved (off)."""

    kind: Literal["off", "thompson", "ucb1"] = Field(
        "off",
        description="adapt the choice of model and persona to the children that improved on a "
        "parent (off = the configured weights; thompson is recommended)",
    )
    per_dollar: bool = Field(
        False,
        description="bandit rewards per dollar: times min(1, the cheapest arm's median child "
        "cost / the child's cost)",
    )


class PreloadConfig(Section):
    """``[evaluator.preload]``: one sandboxed worker per slot imports modules once; each stage
    runs in a confined fork of it (on by default for a `python SCRIPT` evaluator)."""

    enabled: bool = Field(
        True,
        description="a Python evaluator (`python SCRIPT ...`) runs each stage in a confined fork "
        "of one sandboxed worker per local slot that imported the standard library once; false: "
        "every stage starts a fresh process (evaluation/workers/preload.py)",
    )
    modules: tuple[str, ...] = Field(
        (),
        description="modules to import once as well (e.g. torch); naming any makes the "
        "evaluator's command a checked requirement (`python SCRIPT` or `python -m MODULE`)",
    )
    recycle_after: int = Field(50, ge=1, description="variants per preloading worker")

    @field_validator("modules")
    @classmethod
    def _module_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not all(part.isidentifier() for part in name.split(".")):
                raise ValueError(f"{name!r} is not a module name; fix it or drop it")
        return value


class LimitsConfig(Section):
    """``[evaluator.limits]``: what one evaluation may use (bounded by default)."""

    memory_mb: int | Literal["auto"] = Field(
        "auto",
        description='memory bound of one evaluation in MB: "auto" = 3/4 of the machine\'s memory '
        "(or of ge's cgroup limit) shared by the slots; 0 = unbounded. A cgroup of its own caps "
        "the evaluation as a whole where the machine allows, else RLIMIT_AS each process",
    )
    cpu_seconds: int | None = Field(None, ge=1)
    file_size_mb: int | None = Field(1024, ge=1)
    max_processes: int | None = Field(256, ge=1)
    output_cap_bytes: int = Field(1_000_000, ge=10_000)
    tmpfs_mb: int | None = Field(
        1024, ge=1, description="size cap of the evaluated code's private /tmp and /dev/shm, each"
    )
    disk_reserve_mb: int | Literal["auto"] = Field(
        "auto",
        description="free space in MB kept on the file system of the run directory: an "
        'evaluation that brings it lower is stopped and failed; "auto" = 1 % of the file '
        "system, between 1024 and 10240 MB; 0 = no reserve",
    )

    @field_validator("memory_mb", "disk_reserve_mb", mode="before")
    @classmethod
    def _auto_or_megabytes(cls, value: Any, info: Any) -> Any:
        if value is None:  # memory_mb of a run's stored config from before the "auto" default
            return "auto"
        if isinstance(value, bool):
            raise ValueError('must be a number of MB or "auto"')
        if isinstance(value, int):
            low = 16 if info.field_name == "memory_mb" else 1
            if value < 0 or 0 < value < low:
                raise ValueError(f'must be 0 (none), at least {low} (MB) or "auto"')
        return value


class TrackingConfig(Section):
    """``[tracking]``: the run logged to an experiment tracker as it goes (off: no URI)."""

    mlflow: str | None = Field(
        None,
        min_length=1,
        max_length=2000,
        pattern=r"^\S+$",
        description='an MLflow tracking URI ("file:./mlruns", "sqlite:///mlflow.db", '
        '"http://host:5000"; a relative path is relative to where you run ge): one MLflow run '
        "per variant under a parent run, logged off the critical path (needs `ge[mlflow]`)",
    )
    experiment: str | None = Field(
        None, min_length=1, max_length=400, description="MLflow experiment (default: the run's name)"
    )
    interval_s: float = Field(
        2.0, ge=0.1, le=3600, description="seconds between two looks at the run for new variants"
    )
