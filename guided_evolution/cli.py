"""The `ge` command line (typer + rich): a thin layer over the Python API (`guided_evolution.api`),
which starts, resumes and reads runs; the commands parse arguments and print. Heavy modules are
imported inside the commands that need them, and `ge CMD` builds only CMD's click command
(``_app_for``): each `ge` process starts in as little CPU as it can.

It is long because it declares every command with its arguments, options and help text (typer
reads them from the signatures), and says which run a command means when none is given.
"""

from __future__ import annotations

import copy
import errno
import inspect
import json
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from guided_evolution.errors import GeError
from guided_evolution.termsafe import inert

if TYPE_CHECKING:
    from types import ModuleType

    from rich.console import Console

_app = typer.Typer(
    name="ge",
    help=(
        "Guided Evolution: evolve marked segments of your code with LLMs.\n\n"
        "Every variant is a git commit in the run repository, scored by your evaluator in a "
        "sandbox, selected by NSGA-II/SPEA2 on your objectives.\n\n"
        "Start with [bold]ge init my_seed[/bold], then [bold]ge run my_seed[/bold]."
    ),
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
"""The commands but `ge serve`, which ``_whole_app`` adds: ``app`` is the whole of them."""


def __getattr__(name: str) -> Any:
    """``app``: the whole typer app (with `ge serve`), as tests and ``typer.main.get_command``
    want it."""
    if name == "app":
        return _whole_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _whole_app() -> typer.Typer:
    """Every command, `ge serve` in its place after `ge export` (its module loads ``socket``,
    ``secrets`` and ``ipaddress``, which the other commands do without)."""
    commands = _app.registered_commands
    if not any(_command_name(c) == "serve" for c in commands):
        from guided_evolution.serve.command import serve

        _app.command("serve")(serve)
        after = next(i for i, c in enumerate(commands) if _command_name(c) == "export")
        commands.insert(after + 1, commands.pop())
    return _app


def _command_name(info: Any) -> str:
    """A registered command's name, as typer derives it from its function when not given."""
    return str(info.name or typer.main.get_command_name(info.callback.__name__))


def _app_for(words: list[str]) -> typer.Typer:
    """The app that runs ``ge WORDS``: when the first word names a command, an app of that
    command alone (typer builds a click command per command from its signature, ~10 ms for
    all of them at every start), else the whole app (`ge --help`, `ge --version`, a mistyped
    command and its suggestions)."""
    name = words[0] if words else ""
    if name != "serve":
        for info in _app.registered_commands:
            if _command_name(info) == name:
                one = copy.copy(_app)
                one.registered_commands = [info]
                return one
    return _whole_app()

def _version(value: bool) -> None:
    if value:
        from guided_evolution import __version__

        sys.stdout.write(f"ge {__version__}\n")
        raise typer.Exit()


@_app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Guided Evolution: evolve marked segments of your code with LLMs."""


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout, nothing else.")]
DetachFlag = Annotated[
    bool,
    typer.Option("--detach", help="On Ctrl-C leave SLURM jobs running; `ge resume` re-attaches to them."),
]
NoSandboxFlag = Annotated[
    bool,
    typer.Option(
        "--no-sandbox",
        help='Evaluate WITHOUT isolation (evaluator.sandbox = "none"): the LLM-written code gets '
        "your network, files and processes. Only in a throw-away VM or container.",
    ),
]
RunDirArg = Annotated[Path, typer.Argument(help="A run directory, e.g. runs/tiny_cnn-20260101-120000.")]
LatestRunArg = Annotated[
    str | None,
    typer.Argument(
        help="A run directory, e.g. runs/tiny_cnn-20260101-120000 (default: the latest run "
        "under ./runs, or under \\[run] dir of ./ge.toml).",
        show_default=False,
    ),
]


def _run_dir(value: str | None) -> Path:
    """The run directory given, or the latest run of the current directory (said on stderr)."""
    if value is not None:
        return _path(value, "RUN_DIR", "runs/NAME")
    from guided_evolution import api

    found = api.latest_run_dir(Path("."))
    _console(json_mode=True).print(f"run: {inert(found)} (the latest)", markup=False)
    return found


def _run_and(words: list[str | None], usage: str) -> tuple[Path, list[str | None]]:
    """The run and the other positional words of a command whose RUN_DIR may be left out: the
    first word is the run when every word is given or it is a run directory."""
    from guided_evolution import api

    given = [w for w in words if w is not None]
    if given and (len(given) == len(words) or api.looks_like_run(Path(given[0]))):
        run, rest = _run_dir(given[0]), given[1:]
    else:
        run, rest = _run_dir(None), given
    needed = [w for w in usage.split()[2:] if not w.startswith("[")]
    if len(rest) < len(needed):
        raise GeError(f"missing {needed[len(rest)]}", f"usage: {usage}; variant ids: `ge best`")
    return run, rest + [None] * (len(words) - 1 - len(rest))


def _console(json_mode: bool = False) -> Console:
    """rich's console (stderr when stdout is JSON); rich is imported only to print text."""
    from rich.console import Console

    return Console(stderr=json_mode, highlight=False)


def _stderr() -> Console:
    """rich's console on stderr, highlighting as rich does by default."""
    from rich.console import Console

    return Console(stderr=True)


def _views() -> ModuleType:
    """The terminal rendering of the views (rich): only for text, never for --json."""
    from guided_evolution.inspection import terminal

    return terminal


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _path(value: str, what: str, example: str) -> Path:
    """A path argument that must not be blank (`Path("")` would silently mean the current dir)."""
    if not value.strip():
        raise GeError(f"{what} is empty", f"give a path, e.g. {example}")
    return Path(value)


# --------------------------------------------------------------------------- init


@_app.command()
def init(
    directory: Annotated[str, typer.Argument(help="Directory to create the seed in.")],
    force: Annotated[bool, typer.Option(help="Overwrite files that already exist.")] = False,
) -> None:
    """Write a commented [bold]ge.toml[/bold] and a minimal marked seed into DIRECTORY.

    The seed is a small Python predictor whose segments are marked with `# --OPTION--`; its
    evaluator writes two objectives. Run it with `ge run DIRECTORY` (offline, no LLM needed).
    """
    from guided_evolution import api

    written = api.init(_path(directory, "DIRECTORY", "my_seed"), force=force)
    console = _console()
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"next: [bold]ge run {directory}[/bold]  (edit {directory}/ge.toml to use an LLM)")


# --------------------------------------------------------------------------- run / resume


@_app.command()
def run(
    seed_dir: Annotated[
        Path | None, typer.Argument(help="Seed directory holding ge.toml (default: current dir).")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Config file (default: SEED_DIR/ge.toml).")] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            help="Apply the \\[profile.NAME] tables of the config over it, e.g. 'paper' for the GE "
            "paper's population settings in seeds/exquisitenet_v2. Flags still win."
        ),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory to create (default: runs/<seed>-<time>).")
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            help="litellm model string; repeat for an ensemble. 'offline' = built-in no-LLM baseline."
        ),
    ] = None,
    api_base: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")] = None,
    generations: Annotated[int | None, typer.Option(help="Generations after the initial population.")] = None,
    population: Annotated[int | None, typer.Option(help="Offspring per generation.")] = None,
    initial_population: Annotated[int | None, typer.Option(help="Children of the seed in generation 0.")] = None,
    slots: Annotated[int | None, typer.Option(help="Concurrent evaluations.")] = None,
    seed: Annotated[int | None, typer.Option(help="RNG seed.")] = None,
    budget_usd: Annotated[float | None, typer.Option(help="Stop proposing children after this LLM spend in USD (every model needs a price).")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="Stop proposing children after this many LLM tokens (any endpoint).")] = None,
    executor: Annotated[str | None, typer.Option(help="Where evaluations run: local or slurm.")] = None,
    no_sandbox: NoSandboxFlag = False,
    detach: DetachFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Start an evolution from a seed directory.

    Example: [bold]ge run seeds/tiny_cnn[/bold] (offline) or
    [bold]ge run my_seed --model gpt-4o-mini --budget-usd 2[/bold].
    """
    from guided_evolution import api

    handle = api.run(
        seed_dir, config=config, profile=profile, run_dir=run_dir, models=model or None,
        api_base=api_base, generations=generations, population=population,
        initial_population=initial_population, slots=slots, seed=seed, budget_usd=budget_usd,
        budget_tokens=budget_tokens, executor=executor, no_sandbox=no_sandbox, detach=detach,
        quiet=json_out,
    )  # fmt: skip
    _finish(handle.summary, json_out)


@_app.command()
def resume(
    run_dir: LatestRunArg = None,
    generations: Annotated[
        int | None,
        typer.Option(
            help="Generations in total from now on: more than the run completed extends it, "
            "a finished run too (kept by later resumes)."
        ),
    ] = None,
    no_sandbox: NoSandboxFlag = False,
    reload_evaluator: Annotated[
        bool,
        typer.Option(
            "--reload-evaluator",
            help="Take the evaluator files and \\[evaluator] of ge.toml as they are now in the "
            "seed directory (recorded, shown by `ge status`); \\[objectives] stay the run's.",
        ),
    ] = False,
    detach: DetachFlag = False,
    json_out: JsonFlag = False,
) -> None:
    """Continue a run exactly where it stopped (after Ctrl-C, kill -9 or a reboot).

    No evaluated variant is lost or evaluated twice; unfinished LLM calls and evaluations are
    redone once, and cached LLM replies are never paid for twice. A finished run says so;
    [bold]--generations N[/bold] extends it to N generations.
    """
    from guided_evolution import api

    handle = api.resume(
        _run_dir(run_dir),
        generations=generations,
        no_sandbox=no_sandbox,
        reload_evaluator=reload_evaluator,
        detach=detach,
        quiet=json_out,
    )
    _finish(handle.summary, json_out)


def _finish(summary: Any, json_out: bool) -> None:
    """Print the run's summary with its Pareto front (read back from the run, as `ge best`)."""
    if json_out:
        _print_json(summary.as_dict())
        return
    _views().print_summary(_console(), summary)


# --------------------------------------------------------------------------- inspection


@_app.command()
def stop(run_dir: LatestRunArg = None) -> None:
    """Finish a live run from another terminal, gracefully.

    The run completes the generation under way (its LLM calls, evaluations and checkpoint), then
    finishes with the reason "stopped by `ge stop`", which `ge status` and `ge report` show.
    Go on later with [bold]ge resume RUN --generations N[/bold]. To stop at once instead
    (resumable with `ge resume RUN`): Ctrl-C in the run's terminal, or `kill PID`.
    """
    from guided_evolution import api

    handle = api.open_run(_run_dir(run_dir))
    pid = handle.stop()
    root = handle.path.resolve()
    print(
        f"asked the run (pid {pid}) to finish after its current generation; "
        f"`ge status {root}` shows when it has; to stop at once: kill {pid}"
    )


@_app.command()
def status(run_dir: LatestRunArg = None, json_out: JsonFlag = False) -> None:
    """Progress of a run (live or finished): generation, children, evaluations, LLM calls, spend."""
    from guided_evolution import api

    # The text shows the last 10 generations' diversity: computing every generation's costs ~1 s
    # on a 30-generation paper-sized run, which a live `watch ge status` should not pay.
    data = api.open_run(_run_dir(run_dir)).status_view(diversity_last=None if json_out else 10)
    if json_out:
        _print_json(data.to_json())
    else:
        _views().print_status(_console(), data)


@_app.command()
def best(
    run_dir: LatestRunArg = None,
    island: Annotated[
        int | None,
        typer.Option(
            "--island",
            metavar="K",
            help="Only the variants that lived on island K (0, 1, ...; `ge status` lists them): "
            "born there, or migrated into it, so its front as the island knew it.",
        ),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """The Pareto front of a run on its selection objectives."""
    from guided_evolution import api

    data = api.open_run(_run_dir(run_dir)).best(island=island)
    if json_out:
        _print_json(data.to_json())
    else:
        _views().print_front(_console(), data)


@_app.command()
def show(
    run_dir: LatestRunArg = None,
    variant: Annotated[str | None, typer.Argument(help="Variant id (a unique prefix is enough).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Everything about one variant: metrics, operator, prompt and reply, reflection, diff."""
    from guided_evolution import api

    run, (vid,) = _run_and([run_dir, variant], "ge show [RUN_DIR] VARIANT")
    data = api.open_run(run).variant(str(vid)).view
    if json_out:
        _print_json(data.to_json())
    else:
        _views().print_variant(_console(), data)


@_app.command()
def doctor(
    run_dir: LatestRunArg = None,
    repair: Annotated[bool, typer.Option(help="Repair what can be repaired.")] = False,
    rebuild_index: Annotated[
        bool, typer.Option("--rebuild-index", help="Rebuild index.sqlite from the git repository.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Check a run: the index against git, and damage to either (explained one line per kind).

    [bold]--repair[/bold] repairs what can be repaired (lost branches are put back from the
    commits still in git, an unusable index is rebuilt); [bold]--rebuild-index[/bold] rebuilds
    index.sqlite from the git repository. A run that stopped on damage is usable again once
    doctor finds nothing left to repair.
    """
    from guided_evolution import api

    report = api.doctor(_run_dir(run_dir), repair=repair, rebuild_index=rebuild_index)
    if json_out:
        _print_json(report.to_json())
    else:
        _print_doctor(report, report.writer_pid, repair or rebuild_index)
    if not report.ok:
        raise typer.Exit(1)


def _print_doctor(report: Any, writer: str | None, repairing: bool) -> None:
    from rich.markup import escape

    console = _console()
    for line in report.repaired:
        console.print(f"[green]repaired[/green] {escape(inert(line))}")
    for line in report.problems:
        console.print(f"[red]problem[/red] {escape(inert(line))}")
    if report.ok:
        console.print("[green]ok[/green]")
    elif writer is not None:
        console.print(
            f"[red]not ok[/red] while ge (pid {escape(inert(writer))}) writes this run: notes and "
            "rows in flight look like problems; check again after it finishes"
        )
    elif repairing or not report.repairable:
        console.print("[red]not ok[/red] (what is left cannot be repaired by ge doctor)")
    else:
        console.print("[red]not ok[/red] (try --repair)")


@_app.command("lineage")
def lineage_cmd(
    run_dir: LatestRunArg = None,
    variant: Annotated[str | None, typer.Argument(help="Variant id (a unique prefix is enough).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """The ancestry of a variant back to the seed, with the operator and metrics at each step."""
    from guided_evolution import api

    run, (vid,) = _run_and([run_dir, variant], "ge lineage [RUN_DIR] VARIANT")
    data = api.open_run(run).lineage(str(vid))
    if json_out:
        _print_json(data.to_json())
    else:
        _views().print_lineage(_console(), data)


@_app.command("diff")
def diff_cmd(
    run_dir: LatestRunArg = None,
    a: Annotated[str | None, typer.Argument(help="Variant id (or unique prefix) to show.")] = None,
    b: Annotated[str | None, typer.Argument(help="Variant to compare against (default: the seed).")] = None,
    json_out: JsonFlag = False,
) -> None:
    """What changed from variant B (default: the seed) to variant A."""
    from guided_evolution import api

    run, (to, base) = _run_and([run_dir, a, b], "ge diff [RUN_DIR] A [B]")
    data = api.open_run(run).diff(str(to), base)
    if json_out:
        _print_json(data.to_json())
    else:
        _views().print_diff(_console(), data)


@_app.command("log")
def log_cmd(
    run_dir: LatestRunArg = None,
    eot: Annotated[bool, typer.Option("--eot", help="Show the EoT reflections.")] = False,
    failures: Annotated[
        bool, typer.Option("--failures", help="Show failure reasons, grouped and counted.")
    ] = False,
    bandit: Annotated[
        bool, typer.Option("--bandit", help="Show the bandits' arms and per-generation states.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """The event log of a run (with every evaluation), its EoT reflections, failures or bandits."""
    from guided_evolution import api

    data = api.open_run(_run_dir(run_dir)).log(eot=eot, failures=failures, bandit=bandit)
    if json_out:
        _print_json(data.to_json())
    else:
        _views().print_log(_console(), data)


@_app.command("export")
def export_cmd(
    run_dir: LatestRunArg = None,
    variant: Annotated[str | None, typer.Argument(help="Variant id (a unique prefix is enough).")] = None,
    dest: Annotated[
        str | None,
        typer.Argument(help="Directory for the files; with --patch a file, a directory, or - for stdout."),
    ] = None,
    patch: Annotated[bool, typer.Option("--patch", help="Write a `git apply`-able patch against the seed.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a non-empty destination.")] = False,
    json_out: JsonFlag = False,
) -> None:
    """Copy a variant's files into DEST (or write its patch against the seed) for your own project."""
    from guided_evolution import api

    run, (vid, out) = _run_and([run_dir, variant, dest], "ge export [RUN_DIR] VARIANT DEST")
    target = _path(str(out), "DEST", "./best")
    data = api.open_run(run).export(str(vid), target, patch=patch, force=force).to_json()
    if json_out:
        _print_json(data)
    elif data.get("patch") is not None:
        sys.stdout.write(data["patch"])
    else:
        _views().print_export(_console(), data)



@_app.command("report")
def report_cmd(
    run_dir: LatestRunArg = None,
    output: Annotated[str, typer.Option("-o", "--output", help="The HTML file to write.")] = "report.html",
    compare: Annotated[
        str | None,
        typer.Option("--compare", help="A control run (e.g. strategy = \"best_of_n\") to overlay on the same axes."),
    ] = None,
    json_out: JsonFlag = False,
) -> None:
    """One self-contained HTML report (opens offline): front, progress, operators, failures, lineage."""
    from guided_evolution import api

    if output == "-":
        raise GeError("the report cannot go to standard output", "give an HTML file name, e.g. -o report.html")
    control = _path(compare, "--compare", "runs/NAME") if compare is not None else None
    data = api.open_run(_run_dir(run_dir)).report(_path(output, "-o", "report.html"), control)
    if json_out:
        _print_json(data.to_json())
    else:
        _console().print(f"wrote {data.path} ({data.bytes // 1024} KiB); open it in a browser")


# --------------------------------------------------------------------------- entry point


_PATH_ERRNOS = {
    errno.ENAMETOOLONG: "use a shorter path",
    errno.ENOTDIR: "check the path",
    errno.ELOOP: "check the path (a symbolic link loops)",
    errno.EACCES: "check its permissions",
    errno.EPERM: "check its permissions",
    errno.EROFS: "choose a writable location",
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space",
}
"""OSErrors that a bad or unusable path explains, with their fix (not a missing file: that can be a bug)."""


def _readable(command: Any) -> Any:
    """The click command of ``app`` as a reader should see its --help: a docstring's paragraphs
    flow (typer's rich mode keeps their source line breaks), flags carry no ``<bool>`` label."""
    command.help = re.sub(r"(?<!\n)\n(?!\n)", " ", inspect.cleandoc(command.help or ""))
    for param in command.get_params(typer.Context(command)):
        if param.metavar is None and getattr(param, "is_flag", False):
            param.metavar = ""
        elif param.metavar is None and param.param_type_name == "argument":
            param.metavar = (param.name or "").upper()
    for sub in getattr(command, "commands", {}).values():
        _readable(sub)
    return command


def _command_line_errors() -> tuple[type[Exception], ...]:
    """The exceptions of click's command-line parsing: from typer 0.26 on, which vendors click,
    its ``TyperException`` (so `ge` need not import click itself, ~7 ms), before it click's."""
    vendored = getattr(typer, "TyperException", None)
    if vendored is not None:
        return (vendored,)
    import click

    return (click.ClickException,)


def _usage_error(err: Any) -> GeError:
    """A mistake on the command line (missing argument, unknown option or command, a value of
    the wrong type) as one line with the usage, not click's boxed panel."""
    message = err.format_message().rstrip(".")
    ctx = getattr(err, "ctx", None)
    if ctx is None:
        return GeError(message, "see `ge --help`")
    usage = ctx.get_usage().removeprefix("Usage: ").replace("{", "").replace("}", "")
    return GeError(message, f"usage: {usage}; see `{ctx.command_path} --help`")


def _fail(err: GeError) -> None:
    label = "[yellow]stopped:[/yellow]" if err.exit_code in (130, 143) else "[red]error:[/red]"
    # The message may quote a variant (the seed's last output line, a generation's failure
    # reason): its control characters are shown escaped, its markup as written.
    from rich.markup import escape

    message = escape(inert(err.one_line()))
    _console(json_mode=True).print(f"{label} {message}", soft_wrap=True)
    sys.exit(err.exit_code)


def main() -> None:
    """Entry point of the `ge` script: user errors become one line on stderr and exit code 2.

    A file-system error on a path the user gave (name too long, permission denied, ...) and a
    damaged index or git repository that slipped past a command's own checks are reported the
    same way (a run that finds its record damaged says so itself: a ``RunDamagedError``).
    """
    import atexit
    import gc
    import sqlite3

    import typer.main

    # Last of the exit handlers (they run in reverse order): what is alive then stays out of the
    # cyclic collector while the interpreter tears its ~1,500 modules down, which otherwise walks
    # every object (0.15-0.3 s at the end of a run). Only cyclic garbage left at exit is affected,
    # whose finalizers Python does not promise to run; atexit hooks and refcounts work as before.
    atexit.register(gc.freeze)
    try:
        command = typer.main.get_command(_app_for(sys.argv[1:]))
        code = _readable(command).main(standalone_mode=False)
        if isinstance(code, int):  # typer.Exit(N) (`--help`, `--version`: 0; doctor: 1)
            sys.exit(code)
    except typer.Abort:
        _stderr().print("aborted")
        sys.exit(1)
    except _command_line_errors() as err:
        if type(err).__name__ == "NoArgsIsHelpError":  # `ge` alone: its help is printed
            sys.exit(2)
        _fail(_usage_error(err))
    except GeError as err:
        _fail(err)
    except OSError as err:
        if err.filename is None or err.errno not in _PATH_ERRNOS:
            raise
        name = str(err.filename)
        name = name if len(name) <= 120 else name[:120] + "…"
        _fail(GeError(f"{name}: {err.strerror or err}", _PATH_ERRNOS[err.errno]))
    except sqlite3.DatabaseError as err:
        _fail(GeError(f"the run's index is damaged ({err})", "run `ge doctor RUN_DIR --rebuild-index`"))
    except Exception as err:
        if type(err).__module__.partition(".")[0] not in ("_pygit2", "pygit2"):
            raise
        _fail(GeError(f"the run's git repository is damaged ({err})", "run `ge doctor RUN_DIR`"))
    except KeyboardInterrupt:
        _stderr().print("interrupted; continue with `ge resume RUN_DIR`")
        sys.exit(130)
