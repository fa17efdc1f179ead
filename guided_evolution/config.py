"""The `ge.toml` schema (pydantic), CLI overrides, and the frozen resolved config of a run.

Defaults are the GE paper's (Morris, Jurado, Zutty, GECCO 2024) unless said otherwise. The
module is long because it is the one schema of `ge.toml`: every key with its type, bounds and
description in one place (the template and `--help` are checked against it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from guided_evolution.config_moved import migrate, refuse_moved
from guided_evolution.config_sections import (
    BanditConfig,
    DiffConfig,
    IslandsConfig,
    LimitsConfig,
    MateChoiceConfig,
    NoveltyConfig,
    PreloadConfig,
    TrackingConfig,
)
from guided_evolution.errors import ConfigError

CONFIG_NAME = "ge.toml"
TASK_FILE = "TASK.md"  # the task description beside ge.toml, read when [seed] task is absent
TASK_MAX_CHARS = 8000
_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)  # notes in TASK.md for its author, not the LLM
OFFLINE_MODEL = "offline"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SeedConfig(_Model):
    """Where the seed code is and which parts of it evolve."""

    dir: str = Field(".", description="seed directory, relative to ge.toml")
    files: tuple[str, ...] = Field(("model.py",), min_length=1, description="evolvable files")
    marker: str = Field("# --OPTION--", min_length=1, description="segment marker line")
    exclude: tuple[str, ...] = Field(
        ("runs", ".git", "__pycache__", "*.pyc", ".venv", "data"),
        description="glob patterns of seed files not copied into the run repository",
    )
    task: str | None = Field(
        None,
        max_length=TASK_MAX_CHARS,
        description="what the program does and what 'better' means, shown in every prompt "
        "(absent: the text of TASK.md beside ge.toml)",
    )


class ModelEntry(_Model):
    """One LLM of the ensemble (a litellm model string)."""

    model: str = Field(min_length=1)
    weight: float = Field(1.0, gt=0)
    api_base: str | None = None
    api_key_env: str | None = Field(None, description="name of the env var holding the key")
    input_cost_per_token: float | None = Field(None, ge=0)
    output_cost_per_token: float | None = Field(None, ge=0)
    input_price: float | None = Field(None, ge=0, description="USD per million input tokens")
    output_price: float | None = Field(None, ge=0, description="USD per million output tokens")
    client: Literal["auto", "openai", "litellm"] = Field(
        "auto",
        description="library that makes the calls: auto = the openai client for OpenAI and "
        "OpenAI-compatible endpoints (any api_base), litellm for other providers",
    )

    @model_validator(mode="after")
    def _one_price_unit(self) -> ModelEntry:
        for side in ("input", "output"):
            if getattr(self, f"{side}_price") is not None and getattr(self, f"{side}_cost_per_token") is not None:
                raise ValueError(
                    f"{side}_price (USD per million tokens) and {side}_cost_per_token are both set; keep one"
                )
        return self

    def token_prices(self) -> tuple[float | None, float | None]:
        """(input, output) USD per token: the per-token keys, or the per-million ones / 1e6."""
        per_million = (self.input_price, self.output_price)
        per_token = (self.input_cost_per_token, self.output_cost_per_token)
        return tuple(  # type: ignore[return-value]
            t if t is not None else (m / 1e6 if m is not None else None)
            for t, m in zip(per_token, per_million, strict=True)
        )


class LLMConfig(_Model):
    """LLM endpoints, limits and spend."""

    models: tuple[ModelEntry, ...] = (ModelEntry(model=OFFLINE_MODEL),)
    api_base: str | None = Field(None, description="default api_base for models without their own")
    concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(120.0, gt=0, description="hard deadline of one call, retries excluded")
    retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    give_up_after_s: float = Field(
        600.0,
        gt=0,
        description="stop the run (resumable) when LLM calls have kept failing this long "
        "without one success; a generation whose calls all fail stops it too",
    )
    budget_usd: float | None = Field(
        None, gt=0, description="stop proposing once the LLM calls cost this much (known prices only)"
    )
    budget_tokens: int | None = Field(
        None, gt=0, description="stop proposing once the LLM calls used this many tokens (any endpoint)"
    )
    bandit: BanditConfig = BanditConfig()

    @field_validator("models", mode="before")
    @classmethod
    def _strings_are_models(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, (list, tuple)):
            return [{"model": v} if isinstance(v, str) else v for v in value]
        return value

    @property
    def offline(self) -> bool:
        """True when the built-in no-LLM operator set is used."""
        return all(m.model == OFFLINE_MODEL for m in self.models)

    @model_validator(mode="after")
    def _offline_alone(self) -> LLMConfig:
        names = [m.model for m in self.models]
        if OFFLINE_MODEL in names and len(names) > 1:
            raise ValueError("'offline' cannot be mixed with LLM models; use it alone")
        return self


class TemperatureRanges(_Model):
    """Per-operator temperature ranges [low, high]; each call draws uniformly."""

    initial: tuple[float, float] = (0.05, 0.4)
    mutation: tuple[float, float] = (0.02, 0.35)
    crossover: tuple[float, float] = (0.05, 0.10)
    eot: tuple[float, float] = (0.02, 0.35)
    fix: tuple[float, float] = (0.02, 0.2)

    @model_validator(mode="after")
    def _ordered(self) -> TemperatureRanges:
        for name in ("initial", "mutation", "crossover", "eot", "fix"):
            low, high = getattr(self, name)
            if not 0 <= low <= high <= 2:
                raise ValueError(f"{name} = [{low}, {high}] must satisfy 0 <= low <= high <= 2")
        return self


OPERATOR_KINDS = ("initial", "mutation", "crossover", "eot", "fix")
"""The operator kinds with a temperature range and a top_p each (initial = generation 0's mutation)."""


class TopP(_Model):
    """Per-operator nucleus sampling ``top_p``; unset (None) is not sent: the provider's default.

    ``top_p = 0.1`` (one number) sets every operator; the GE paper sampled with 0.1.
    """

    initial: float | None = Field(None, gt=0, le=1)
    mutation: float | None = Field(None, gt=0, le=1)
    crossover: float | None = Field(None, gt=0, le=1)
    eot: float | None = Field(None, gt=0, le=1)
    fix: float | None = Field(None, gt=0, le=1)


class EvolutionConfig(_Model):
    """The generational loop (GE paper defaults)."""

    initial_population: int = Field(144, ge=1)
    population: int = Field(44, ge=1, description="offspring proposed per generation")
    elites: int = Field(44, ge=0, description="SPEA2 elites carried to the next generation")
    hall_of_fame: int = Field(100, ge=1)
    generations: int = Field(30, ge=0, description="generations after the initial population")
    crossover_probability: float = Field(0.35, ge=0, le=1)
    mutation_probability: float = Field(0.8, ge=0, le=1)
    eot_probability: float = Field(0.25, ge=0, le=1)
    eot_start_generation: int = Field(1, ge=0, description="first generation that may use EoT")
    eot_teachers: Literal["beat_seed", "spea2_top"] = Field(
        "beat_seed",
        description="EoT teachers: elites that beat the seed on some objective, or (the GE paper) "
        "the SPEA2 top `eot_teacher_pool` of the population",
    )
    eot_teacher_pool: int = Field(10, ge=1, description="spea2_top: how many (GE paper: 10)")
    parent_tournament: Literal["rank_crowding", "dcd"] = Field(
        "rank_crowding",
        description="NSGA-II rank then crowding, or (the GE paper) deap's selTournamentDCD: "
        "pairwise dominance, then crowding",
    )
    fix_attempts: int = Field(0, ge=0, le=5, description="feed a failure back to the LLM N times")
    personas: tuple[str, ...] = ("concise", "expert", "inventive", "bumbler")
    temperature: TemperatureRanges = TemperatureRanges()
    top_p: TopP = TopP()
    seed: int = 0
    max_pending: int = Field(
        0, ge=0, description="bound of proposed-but-unevaluated children; 0 = 2*slots"
    )
    mode: Literal["generational", "steady"] = "generational"  # steady: no generation barrier
    overlap_tail: int = Field(0, ge=0)  # generational: plan g+1 while N children of g evaluate
    stop_at: dict[str, Annotated[float, Field(allow_inf_nan=False)]] = Field(
        default_factory=dict,
        description="{objective = target}: the run finishes at the close of the generation in "
        "which a child reaches a target (>= for max, <= for min)",
    )
    stop_after_stale: int | None = Field(
        None, ge=1, description="finish when the Pareto front has not changed for N generations"
    )
    strategy: Literal["evolution", "best_of_n"] = Field(
        "evolution",
        description="best_of_n: a control run, every child a mutation of the seed (no selection, "
        "crossover or EoT) at the same budget, to see whether evolution pays on the task",
    )
    # Beyond GE, each a table of its own, off by default (config_sections.py).
    diff: DiffConfig = DiffConfig()
    islands: IslandsConfig = IslandsConfig()
    mate_choice: MateChoiceConfig = MateChoiceConfig()
    novelty: NoveltyConfig = NoveltyConfig()

    @model_validator(mode="after")
    def _mode_options(self) -> EvolutionConfig:
        problem = (
            'mode = "steady" keeps its population in the SPEA2 archive: set elites >= 1'
            if self.mode == "steady" and self.elites < 1
            else 'overlap_tail is for mode = "generational" and without fix_attempts'
            if self.overlap_tail and (self.mode == "steady" or self.fix_attempts)
            else '[evolution.islands] count > 1 is for mode = "generational" (an island is a '
            'population per generation); set count = 1 or mode = "generational"'
            if self.islands.count > 1 and self.mode == "steady"
            else 'strategy = "best_of_n" is for mode = "generational" with one island (its children '
            "are all the seed's); set mode = \"generational\" and [evolution.islands] count = 1"
            if self.strategy == "best_of_n" and (self.mode == "steady" or self.islands.count > 1)
            else None
        )
        if problem:
            raise ValueError(problem)
        return self

    @field_validator("top_p", mode="before")
    @classmethod
    def _one_top_p_for_all(cls, value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return {kind: value for kind in OPERATOR_KINDS}
        return value


class Objective(_Model):
    """One metric from the evaluator's metrics file."""

    name: str = Field(min_length=1)
    direction: Literal["max", "min"]
    select: bool = Field(True, description="false = reported only, never used for selection")


STDLIB_PRELOAD = (
    "json",
    "math",
    "random",
    "re",
    "collections",
    "itertools",
    "functools",
    "dataclasses",
    "pathlib",
    "argparse",
    "typing",
)
"""What every preloading worker imports once: the standard library evaluators use most."""


def _is_python(command: str) -> bool:
    """Whether ``command`` looks like ``python SCRIPT [ARGS]`` or ``python -m MODULE [ARGS]``."""
    w = [*command.split(), ""]
    arg = w[1] == "-m" or bool(w[1] and w[1][0] != "-")
    return w[0].rsplit("/", 1)[-1].startswith("python") and arg


class EvaluatorConfig(_Model):
    """The user's evaluator and its sandbox limits."""

    command: str = Field(min_length=1, description="shell command run in the variant's directory")
    check: str | None = Field(None, description="cheap check run first (cascade)")
    worker: str | None = Field(
        None,
        min_length=1,
        description="persistent worker command, one per local slot, that forks one child per "
        "evaluation (see guided_evolution/evaluation/workers/pool.py); command stays the fallback",
    )
    worker_check: bool = Field(
        False,
        description="send the check stage to the worker too, as a request with "
        'args {"check": true} (the worker must understand it); check stays the fallback',
    )
    worker_start_timeout_s: float = Field(
        600.0, gt=0, description="time a worker may take to print its ready line"
    )
    preload: PreloadConfig = PreloadConfig()
    limits: LimitsConfig = LimitsConfig()
    timeout_s: float = Field(3600.0, gt=0)
    check_timeout_s: float = Field(120.0, gt=0)
    network: bool = False
    pass_env: tuple[str, ...] = ()
    feedback_max_chars: int = Field(
        2000,
        ge=100,
        le=100_000,
        description="characters kept of "
        "the evaluator's $GE_FEEDBACK text (head, then a marker) for ge show and the next prompt",
    )
    sandbox: Literal["auto", "bwrap", "landlock", "none"] = Field(
        "auto",
        description="auto = bwrap where it works, else ge's own Landlock + namespaces sandbox, else "
        'refuse to start; "none" runs evaluated code without isolation (only in a throw-away VM)',
    )

    @field_validator("sandbox", mode="before")
    @classmethod
    def _unshare_is_landlock(cls, value: Any) -> Any:
        # "unshare" (pid + network namespaces only) left the file system writable; ge's own
        # sandbox is its successor and includes those namespaces.
        return "landlock" if value == "unshare" else value

    def preload_modules(self) -> tuple[str, ...] | None:
        """The modules the preloading worker imports (the standard library's first), or None
        when stages start fresh processes: ``[evaluator.preload] enabled = false``, an
        ``evaluator.worker``, or (by default) a command that is not a plain Python invocation."""
        preload = self.preload
        if not preload.enabled:
            return None
        if not preload.modules and (self.worker or not _is_python(self.command)):
            return None
        return (*STDLIB_PRELOAD, *preload.modules)

    @model_validator(mode="after")
    def _preload_needs_python(self) -> EvaluatorConfig:
        """Modules named explicitly make preloading a requirement: the commands must allow it."""
        if not (self.preload.enabled and self.preload.modules):
            return self  # the default: used where the command allows it, silently
        bad = ["it excludes worker"] if self.worker else []
        for command in filter(None, (self.command, self.check)):
            if not _is_python(command):
                bad.append(
                    f"{command!r} is not `python SCRIPT [ARGS]` or `python -m MODULE [ARGS]`"
                )
        if bad:
            raise ValueError(
                f"evaluator.preload: {bad[0]}; fix it or set [evaluator.preload] enabled = false"
            )
        return self

    @model_validator(mode="after")
    def _worker_check_needs_both(self) -> EvaluatorConfig:
        if self.worker_check and not (self.worker and self.check):
            missing = "worker" if not self.worker else "check"
            raise ValueError(
                f"worker_check = true needs evaluator.{missing} too; set it or drop worker_check"
            )
        return self


class SlurmConfig(_Model):
    """sbatch settings for `[executor] kind = "slurm"`."""

    partition: str | None = None
    time_limit: str = "01:00:00"
    gres: str | None = None
    gpus: int | None = Field(None, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    mem: str | None = None
    extra_sbatch: tuple[str, ...] = ()
    setup: str = ""
    max_queued: int = Field(16, ge=1)
    check_on_cluster: bool = False
    poll_s: float = Field(2.0, gt=0)
    python: str | None = Field(
        None, description="interpreter with ge installed, as the nodes see it (default: ge's own)"
    )
    grace_s: float = Field(
        60.0, gt=0, description="wait for a job's files (shared FS lag) before calling it lost"
    )


class ExecutorConfig(_Model):
    """Where evaluations run."""

    kind: Literal["local", "slurm"] = "local"
    slots: int | Literal["auto"] = 1
    gpus: tuple[str, ...] | Literal["auto"] = "auto"
    slots_per_gpu: int | Literal["auto"] = 1
    gpu_memory_mb: float = Field(
        2048.0,
        gt=0,
        description='GPU memory one evaluation needs; slots_per_gpu = "auto" packs as many as fit '
        "into the free memory (less headroom), up to the throughput saturation point",
    )
    slurm: SlurmConfig = SlurmConfig()

    @field_validator("slots", "slots_per_gpu")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError('must be >= 1 or "auto"')
        return value


class RunConfig(_Model):
    """Where run output goes."""

    dir: str = Field(
        "runs", description="parent directory of runs, relative to the working directory"
    )
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]+$")


class GeConfig(_Model):
    """The whole `ge.toml`."""

    seed: SeedConfig = SeedConfig()
    llm: LLMConfig = LLMConfig()
    evolution: EvolutionConfig = EvolutionConfig()
    objectives: tuple[Objective, ...] = Field(min_length=1)
    evaluator: EvaluatorConfig
    executor: ExecutorConfig = ExecutorConfig()
    run: RunConfig = RunConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> GeConfig:
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objective names must be unique, got {names}")
        if not any(o.select for o in self.objectives):
            raise ValueError("at least one objective must have select = true")
        selected = [o.name for o in self.objectives if o.select]
        for name in self.evolution.stop_at:
            if name not in selected:
                raise ValueError(
                    f"[evolution] stop_at names {name!r}, which is not a selection objective; "
                    f"name one of {', '.join(selected)} (select = true)"
                )
        return self

    @property
    def selected_objectives(self) -> tuple[Objective, ...]:
        """The objectives that drive selection (validation metrics, never test metrics)."""
        return tuple(o for o in self.objectives if o.select)


# --------------------------------------------------------------------------- loading


_TYPE_TAGS = {"int", "float", "str", "bool"}
# `ge run`'s flags whose name is not the key's last part (the rest: --generations, --slots, ...)
_FLAG_NAMES = {"llm.models": "--model", "executor.kind": "--executor", "evaluator.sandbox": "--no-sandbox"}


def _dotted(loc: tuple[Any, ...]) -> str:
    """``executor.slots``, ``llm.models[0].model``: the key a validation error is about, without
    pydantic's union-member tags (``int``, ``literal['auto']``), which name no key."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.isidentifier() and part not in _TYPE_TAGS:
            out += f".{part}" if out else part
    return out


def _flag(loc: str, flags: set[str]) -> str | None:
    """The CLI flag that set the key at ``loc`` (an override), or None (the file did)."""
    for key in flags:
        if loc == key or loc.startswith((key + ".", key + "[")):
            return _FLAG_NAMES.get(key, "--" + key.rpartition(".")[2].replace("_", "-"))
    return None


def _format_validation_error(
    source: str, err: ValidationError, flags: set[str] | frozenset[str] = frozenset()
) -> str:
    errors = err.errors()
    first = errors[0]
    loc = _dotted(first["loc"])
    kind = first["type"]
    value = first.get("input")
    if kind == "extra_forbidden":
        return f"{source}: unknown key '{loc}' (check the spelling; see `ge init` for every key)"
    if kind == "missing":
        return f"{source}: missing required key '{loc}'"
    msg = first["msg"].removeprefix("Value error, ")
    for other in errors[1:]:  # the other members of a union (`int | "auto"`) at the same key
        if _dotted(other["loc"]) == loc:
            expected = (other.get("ctx") or {}).get("expected")
            msg += f", or {expected}" if other["type"] == "literal_error" and expected else ""
    shown = json.dumps(value, default=str) if not isinstance(value, dict) else "{...}"
    if len(shown) > 60:
        shown = shown[:57] + "..."
    flag = _flag(loc, set(flags))
    if flag is not None:
        return f"{flag} {shown}: {msg}"
    within = sorted({_flag(key, {key}) or key for key in flags if key.startswith(loc + ".")})
    if loc and within:  # a check of the whole table that a flag set a key of
        return f"{', '.join(within)} (with the [{loc}] table of {source}): {msg}"
    where = f"'{loc}' = {shown}" if loc else shown
    return f"{source}: {where}: {msg}"


def parse_config(
    data: dict[str, Any], source: str = CONFIG_NAME, flags: set[str] | frozenset[str] = frozenset()
) -> GeConfig:
    """Validate a decoded config mapping; raise ConfigError with one line on failure (naming the
    CLI flag where one of the dotted keys in ``flags``, set by a flag, is the bad value)."""
    refuse_moved(data, source)
    try:
        return GeConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(source, err, flags)) from None


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into a one-line ConfigError."""
    if not path.exists():
        raise ConfigError(
            f"config file not found: {path}", "create one with `ge init DIR` or pass --config FILE"
        )
    if path.is_dir():
        raise ConfigError(
            f"{path} is a directory, expected a ge.toml file",
            f"pass the file, e.g. --config {path / CONFIG_NAME}, or the directory as SEED_DIR",
        )
    if sys.version_info >= (3, 11):  # imported here: only a ge.toml is TOML (~6 ms at start)
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path.name}: invalid TOML: {err}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read {path}: {err}") from None


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot override '{dotted}': '{part}' is not a table")
        node = child
    node[last] = value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `data` with dotted-key overrides (from CLI flags) applied; None is skipped."""
    merged = json.loads(json.dumps(data))
    for key, value in overrides.items():
        if value is not None:
            _set_dotted(merged, key, value)
    return merged


PROFILES_KEY = "profile"


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """`top` over `base`: tables merge key by key, anything else (arrays too) replaces."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def apply_profile(data: dict[str, Any], profile: str | None, source: str) -> dict[str, Any]:
    """Drop the `[profile.*]` tables from `data`; with `profile`, merge that one over the rest."""
    profiles = data.get(PROFILES_KEY, {})
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ConfigError(
            f"{source}: '{PROFILES_KEY}' must hold tables such as [{PROFILES_KEY}.paper.evolution]"
        )
    base = {k: v for k, v in data.items() if k != PROFILES_KEY}
    if profile is None:
        return base
    if profile not in profiles:
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError(
            f"{source}: no profile '{profile}' (defined: {known})",
            f"add a [{PROFILES_KEY}.{profile}] table to {source} or pick a defined one",
        )
    return _deep_merge(base, profiles[profile])


def _task_from_file(data: dict[str, Any], task_file: Path) -> dict[str, Any]:
    """`[seed] task` from TASK.md beside ge.toml (its `<!-- -->` comments dropped) when the table
    does not set it; frozen with the rest of the config."""
    seed = data.get("seed", {})
    if not isinstance(seed, dict) or "task" in seed or not task_file.is_file():
        return data
    try:
        text = _COMMENT.sub("", task_file.read_text(encoding="utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {task_file}: {exc}", "make it a UTF-8 text file") from None
    if len(text) > TASK_MAX_CHARS:
        raise ConfigError(
            f"{task_file} has {len(text)} characters, more than {TASK_MAX_CHARS}",
            "shorten the task description: it is shown in every prompt",
        )
    return {**data, "seed": {**seed, "task": text}} if text else data


def load_config(
    path: Path, overrides: dict[str, Any] | None = None, profile: str | None = None
) -> GeConfig:
    """Load `ge.toml`, apply a `[profile.NAME]`, then CLI overrides (dotted keys), validate."""
    data = apply_profile(read_toml(path), profile, path.name)
    data = apply_overrides(data, overrides or {})
    data = _task_from_file(data, path.parent / TASK_FILE)
    source = path.name if profile is None else f"{path.name} (profile {profile})"
    flags = {key for key, value in (overrides or {}).items() if value is not None}
    return parse_config(data, source=source, flags=flags)


def find_config(seed_dir: Path | None, config: Path | None) -> Path:
    """The config file named by --config, else `ge.toml` in the seed directory (or the cwd)."""
    if config is not None:
        return config
    base = seed_dir if seed_dir is not None else Path.cwd()
    if not base.exists():
        raise ConfigError(f"seed directory not found: {base}", "pass an existing directory")
    return base / CONFIG_NAME


# --------------------------------------------------------------------------- frozen run config


class ResolvedConfig(_Model):
    """What a run was started with: the validated config plus resolved locations. Frozen."""

    config: GeConfig
    config_path: str
    seed_dir: str
    run_dir: str
    ge_version: str

    @field_validator("config", mode="before")
    @classmethod
    def _stored_before_sections(cls, value: Any) -> Any:
        """A run made before the config had tables reads as if written with them."""
        return migrate(value) if isinstance(value, dict) else value

    def dump(self) -> str:
        """JSON text of the resolved config."""
        return self.model_dump_json(indent=2)

    @classmethod
    def load(cls, path: Path) -> ResolvedConfig:
        """Read `config.json` of a run directory."""
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(
                f"{path.parent} is not a ge run directory (no config.json)",
                "pass the directory that `ge run` created, e.g. runs/<name>",
            ) from None
        except ValidationError as err:
            raise ConfigError(_format_validation_error(str(path), err)) from None
