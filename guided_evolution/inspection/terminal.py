"""Terminal rendering (rich) of the data that `views_data`, `export` and the engine return.

Every string of run data goes through `_fmt` (or `termsafe.inert`) before it is printed: metric
names and values, output tails, reasons, feedback, prompts and replies are the variant's or the
LLM's, and their control characters (terminal escapes) must show, not act. With markup on, `_m`
escapes rich markup too. The module is long because it renders every command's view (status,
best, show, lineage, diff, log, export and the run's summary) with these two rules in one place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.style import Style
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from guided_evolution.inspection.report_bandit import BanditView, TokenView
from guided_evolution.inspection.report_diversity import diversity_lines
from guided_evolution.inspection.report_islands import island_lines, migration_words
from guided_evolution.inspection.view_models import (
    BestView,
    DiffView,
    FailureSummary,
    FrontRow,
    IsolationInfo,
    LineageNode,
    LineageView,
    LogView,
    MissingNode,
    Objective,
    StatusView,
    VariantView,
)
from guided_evolution.inspection.views_data import (
    ISOLATION_ASPECTS,
    ISOLATION_NOT_RECORDED,
    column_numbers,
    front_groups,
    isolation_notes,
    isolation_warnings,
)
from guided_evolution.termsafe import inert

STATUS_GENERATIONS = 10  # generations `ge status` prints per-generation rows for (--json: all)


def _fmt(value: Any, digits: int = 6) -> str:
    """A value as one inert line of plain text (control characters shown escaped; never rich
    markup: wrap it in `Text` or `escape` it to print)."""
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "-" if value is None else inert(value)


def _block(value: Any) -> str:
    """A block of text (output, feedback, a reply, a diff) made inert, its lines kept."""
    return inert(value, multiline=True)


def _diff_syntax(diff: str) -> Any:
    """A diff, coloured (rich.syntax loads pygments: only `ge show` and `ge diff` pay for it)."""
    from rich.syntax import Syntax

    return Syntax(_block(diff), "diff", theme="ansi_dark", word_wrap=True)


def print_wide(console: Console, renderable: Any) -> None:
    """Print a table whole: in a file, a pipe or CI (no terminal: rich assumes 80 columns) at
    its natural width, so no name or value is cut; on a terminal its cells fold, never cut."""
    if not console.is_terminal:
        natural = console.measure(renderable, options=console.options.update_width(10_000))
        if natural.maximum > console.width:
            saved = console.width
            console.width = natural.maximum
            try:
                console.print(renderable)
            finally:
                console.width = saved
            return
    console.print(renderable)


def _m(value: Any) -> str:
    """A value for an f-string printed with markup on: formatted, then escaped.

    Metric names and values come from variant code, reasons and reflections from the LLM or
    the variant: `[/bold]` in them must show as is, not style (or crash) the output.
    """
    return escape(_fmt(value))


def front_table(
    front: list[FrontRow], objectives: list[Objective], title: str = "Pareto front"
) -> Table:
    """A table of the front: one row per variant, one column per objective; variants with equal
    selection values are one row, the oldest, with their count (``×8``).

    Selection objectives come first with their direction; reported-only metrics (e.g. test
    accuracy) follow, dimmed. The branch is `v/<gen>/<id>`, so it needs no column of its own.
    The values of one column have the same digits.
    """
    selected = [o for o in objectives if o.select]
    reported = [o for o in objectives if not o.select]
    groups = front_groups(front, objectives)
    notes = ["dim columns are reported only"] if reported else []
    if any(g.count > 1 for g in groups):
        notes.append("×N: N variants alike on selection, oldest shown; all: --json")
    table = Table(
        title=title,
        title_justify="left",
        caption="\n".join([*notes, "branch = v/<gen>/<id>"]),
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("gen", justify="right")
    table.add_column("operator", overflow="fold")
    for o in selected:
        arrow = "↑" if o.direction == "max" else "↓"
        table.add_column(Text(f"{_fmt(o.name)} {arrow}"), justify="right", overflow="fold")
    for o in reported:
        table.add_column(
            Text(_fmt(o.name)), justify="right", style="dim", header_style="dim", overflow="fold"
        )
    columns = []
    for o in (*selected, *reported):
        values = [(g.row.metrics or {}).get(o.name) for g in groups]
        numbers = column_numbers(values)
        columns.append([n if n is not None else _fmt(v) for n, v in zip(numbers, values, strict=True)])
    for i, group in enumerate(groups):
        row = group.row
        ident = Text(_fmt(row.id))
        if group.count > 1:
            ident.append(f" ×{group.count}", style="bold")
        table.add_row(
            ident,
            Text(_fmt(row.generation)),
            Text(_fmt(row.operator)),
            *[Text(column[i]) for column in columns],
        )
    return table


def _variants(children: int, evaluated: int, failed: int, pending: int = 0) -> str:
    """``13 children + seed: 11 evaluated, 3 failed``: the counts of variants (the seed is one)
    add up to the children plus the seed; what is neither is said (not evaluated yet)."""
    rest = children + 1 - evaluated - failed - pending
    tail = f", {pending} pending" if pending else ""
    tail += f", {rest} not evaluated" if rest > 0 else ""
    return f"{children} children + seed: {evaluated} evaluated, {failed} failed{tail}"


def print_summary(console: Console, summary: Any) -> None:
    """The end of `ge run` / `ge resume`."""
    data = summary.as_dict()
    front = [FrontRow(**row) for row in data["front"]]
    print_wide(console, front_table(front, [Objective(**o) for o in data["objectives"]]))
    console.print(
        f"{_variants(data['children'], data['evaluated'], data['failed'])}, "
        f"{data['llm_calls']} LLM calls ({data['llm_retries']} retried), "
        f"${data['cost_usd']:.4f}; {_m(data['stop_reason'])}",
        soft_wrap=True,
    )
    run_dir = _m(data["run_dir"])
    console.print(f"run: {run_dir}  (inspect: ge best / ge show {run_dir} ID)", soft_wrap=True)


def print_status(console: Console, data: StatusView) -> None:
    """`ge status`."""
    run = data.run_state
    if run.state == "live":
        line = Text(f"live (pid {_fmt(run.pid)})", style="green")
        if run.stop_reason:  # `ge stop` asked it to finish
            line += Text(f", {_fmt(run.stop_reason)}")
    elif run.state == "stopped":
        line = Text("stopped: ", style="bold yellow") + Text(
            f"{_fmt(run.stop_reason)} — {_fmt(run.fix)}"
        )
    else:
        line = Text(f"finished: {_fmt(run.stop_reason)}")
    console.print(Text(_fmt(data.run_dir), style="bold") + Text("  ") + line)
    console.print(
        f"{_generations(data)}  {_variants(data.children, data.evaluated, data.failed, data.pending)}",
        soft_wrap=True,
    )
    console.print(
        f"LLM calls {data.llm_calls} ({data.llm_errors} errors, {data.llm_retries} retried)  tokens "
        f"{data.prompt_tokens + data.completion_tokens}  spend ${data.cost_usd:.4f}  models {_m(', '.join(data.models))}"
    )
    per_gen = data.children_per_generation or []
    if per_gen:  # the last ten on a terminal (a long run has hundreds); --json has them all
        cells = [
            f"{r.generation}: {r.configured}/{_fmt(r.planned)}/{_fmt(r.new)}"
            for r in per_gen[-STATUS_GENERATIONS:]
        ]
        older = len(per_gen) - len(cells)
        label = f" (last {len(cells)} of {len(per_gen)})" if older else ""
        console.print(
            f"children per generation{label} (configured/planned/new)  " + "  ".join(cells)
        )
    for line in [*diversity_lines(data.diversity or []), *island_lines(data.islands)]:
        console.print(Text(_fmt(line)))
    for line in spend_lines(data.tokens, data.bandit):
        console.print(Text(_fmt(line)))
    for line in _isolation_lines(data.isolation_info):
        console.print(line)


def _generations(data: StatusView) -> str:
    """``generation 2/4 completed, generation 3 unfinished``: the last completed generation and
    the one started after it (running, or where a stopped run stopped), so that it reads with
    "interrupted in generation 3"."""
    rows = data.children_per_generation or []
    done = [r.generation for r in rows if r.new is not None]
    text = (
        f"generation {max(done)}/{data.generations} completed"
        if done
        else f"no generation completed yet (of {data.generations})"
    )
    started = [r.generation for r in rows if r.new is None and r.generation > max(done, default=-1)]
    if started:
        state = "running" if data.run_state.state == "live" else "unfinished"
        text += f", generation {max(started)} {state}"
    return text


def _isolation_lines(info: IsolationInfo) -> list[Text]:
    """The isolation block of `ge status`: backend and the five aspects, uncontained ones in red."""
    iso = info.isolation
    if not iso:
        return [Text("isolation  ") + Text(ISOLATION_NOT_RECORDED, style="yellow")]
    bad = set(iso.get("uncontained") or [])
    backend = _fmt(iso.get("backend"))
    head = Text("isolation  ", style="bold") + Text(
        backend, style="bold red" if "backend" in bad else "green"
    )
    if "backend" in bad:
        head.append("  (no sandbox)", style="bold red")
    layers = iso.get("layers")
    if isinstance(layers, list) and layers:
        head.append("  layers: " + ", ".join(_fmt(layer) for layer in layers), style="dim")
    lines = [head]
    for aspect in ISOLATION_ASPECTS:
        value = iso.get(aspect)
        line = Text(f"  {aspect:<12}")
        if value is None:
            line.append("not recorded", style="dim")
        elif aspect in bad:
            line.append(_fmt(value) + "  (not contained)", style="bold red")
        else:
            line.append(_fmt(value))
        lines.append(line)
    for warning in isolation_warnings(iso):
        lines.append(Text("  warning: " + _fmt(warning), style="yellow"))
    for note in isolation_notes(info):
        lines.append(Text("  " + _fmt(note), style="yellow"))
    return lines


def print_front(console: Console, data: BestView) -> None:
    """`ge best` (``--island``: the front of one island's variants)."""
    where = f" on island {data.island}" if data.island is not None else ""
    if not data.front:
        console.print(f"no evaluated variant yet{where}")
        return
    print_wide(console, front_table(data.front, data.objectives, f"Pareto front{where}"))


def print_variant(console: Console, data: VariantView) -> None:
    """`ge show`."""
    console.print(
        f"[bold cyan]{_m(data.id)}[/bold cyan]  {_m(data.branch)}  generation {_m(data.generation)}"
    )
    console.print(
        f"operator {_m(data.operator)}  segment {_m(data.segment)}  prompt {_m(data.prompt_name)}  "
        f"persona {_m(data.persona)}  model {_m(data.model)}  T={_m(data.temperature)}"
    )
    console.print(
        f"parents {_m(', '.join(data.parents)) or '-'}  tokens {data.tokens}"
        + (
            f" ({data.prompt_tokens} prompt + {data.completion_tokens} completion)"
            if data.calls
            else ""
        )
        + f"  cost ${data.cost_usd:.4f}"
        + (f"  LLM calls {len(data.calls)}" if data.calls else "")
    )
    for parent, metrics in (data.parent_metrics or {}).items():
        if metrics:
            console.print(
                f"  parent {_m(parent)}: "
                + "  ".join(f"{_m(k)}={_m(v)}" for k, v in metrics.items())
            )
    reason = data.failure_reason
    console.print(f"status {_m(data.status)}" + (f"  [red]{_m(reason)}[/red]" if reason else ""))
    if data.metrics:
        console.print(
            "metrics " + "  ".join(f"{_m(k)}={_m(v)}" for k, v in data.metrics.items())
        )
    if data.feedback:  # the evaluator's words (or a failure's reason and last line)
        console.rule("evaluator feedback")
        console.print(_block(data.feedback), markup=False)
    if data.eot_reflection:
        console.print("[bold]EoT reflection[/bold]")
        console.print(_block(data.eot_reflection), markup=False)
    if data.prompt:
        console.rule("prompt")
        console.print(_block(data.prompt), markup=False)
    if data.reply:
        console.rule("reply")
        console.print(_block(data.reply), markup=False)
    if data.diff:
        console.rule(Text(f"diff against parent {_fmt(data.diff_base or '')}".rstrip()))
        console.print(_diff_syntax(data.diff))
    if data.status == "failed" and data.output_tail:
        console.rule("output tail")
        console.print(_block(data.output_tail), markup=False)


def _metrics_text(metrics: dict[str, Any] | None, objectives: list[Objective]) -> str:
    if not metrics:
        return ""
    names = [o.name for o in objectives if o.name in metrics] or list(metrics)
    return "  ".join(f"{_fmt(n)}={_fmt(metrics.get(n))}" for n in names)


def _node_label(node: LineageNode | MissingNode, objectives: list[Objective]) -> Text:
    return Text.assemble(*_label_parts(node, objectives))


def _label_parts(node: LineageNode | MissingNode, objectives: list[Objective]) -> list[tuple[str, str]]:
    """A lineage node's line as (text, style) pieces."""
    parts = [(_fmt(node.id), "bold cyan")]
    if isinstance(node, MissingNode):
        return [*parts, ("  (not in the index)", "red")]
    parts.append((f"  gen {node.generation}  ", "dim"))
    if node.mark is not None and node.mark.island is not None:
        parts.append((f"island {node.mark.island}  ", "blue"))
    parts.append((_fmt(node.operator) + (f" ({_fmt(node.persona)})" if node.persona else ""), "magenta"))
    if node.status == "evaluated":
        parts.append(("  " + _metrics_text(node.metrics, objectives), ""))
        if node.improved:
            parts.append(("  ▲ improved", "green"))
    else:
        bad = node.status in ("failed", "invalid")
        parts.append((f"  {_fmt(node.status)}", "red" if bad else "yellow"))
        if node.failure_reason:
            parts.append((f": {_fmt(node.failure_reason)}", "red"))
    if node.mark is not None and node.mark.migrations:
        parts.append((f"  ⇄ {_fmt(migration_words(node.mark.migrations))}", "blue"))
    return parts


TREE_NODES = 400  # a larger ancestry is listed, not drawn as a tree (its depth is the run's)


def print_lineage(console: Console, data: LineageView) -> None:
    """`ge lineage`: the ancestry as a tree; an ancestor reached twice is shown once. An ancestry
    of more than ``TREE_NODES`` variants (hundreds of generations deep, crossovers merging
    lines) is listed newest first, each variant with its parents."""
    nodes = {n.id: n for n in data.nodes}
    objectives = data.objectives
    if len(nodes) > TREE_NODES:
        _print_ancestry_list(console, data, nodes)
        return
    shown: set[str] = set()

    def grow(tree: Tree, vid: str) -> None:
        for parent in nodes[vid].parents:
            node = nodes.get(parent) or MissingNode(parent)
            if parent in shown:
                tree.add(Text(f"{_fmt(parent)}  (shown above)", style="dim"))
                continue
            shown.add(parent)
            grow(tree.add(_node_label(node, objectives)), parent)

    root_id = data.id
    shown.add(root_id)
    tree = Tree(_node_label(nodes[root_id], objectives), guide_style="dim")
    grow(tree, root_id)
    console.print(tree)
    console.print(f"[dim]{len(nodes)} variants in the ancestry; seed {_m(data.seed)}[/dim]")


def _print_ancestry_list(
    console: Console, data: LineageView, nodes: dict[str, LineageNode | MissingNode]
) -> None:
    """A large ancestry as lines, newest generation first: label, then ``<- parents``."""
    order = sorted(
        data.nodes, key=lambda n: -(n.generation if isinstance(n, LineageNode) else -1)
    )
    paint, lines = _painter(console), []
    for node in order:
        text = "".join(paint(part, style) for part, style in _label_parts(node, data.objectives))
        parents = node.parents if isinstance(node, LineageNode) else []
        lines.append(text + (paint("  <- " + ", ".join(_fmt(p) for p in parents), "dim") if parents else ""))
    lines.append(paint(f"{len(nodes)} variants in the ancestry (listed newest first: too many to draw as a tree); seed {_fmt(data.seed)}", "dim"))
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def print_diff(console: Console, data: DiffView) -> None:
    """`ge diff`."""
    console.print(
        f"[bold]{_m(data.from_)}[/bold] → [bold cyan]{_m(data.to)}[/bold cyan]  "
        f"{len(data.files)} file(s)  [green]+{data.added}[/green] [red]-{data.removed}[/red]"
    )
    if data.diff:
        console.print(_diff_syntax(data.diff))
    else:
        console.print("no difference")


def _clock(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(when)) if when else "-"


def _event_details(row: dict[str, Any]) -> str:
    skip = {"time", "kind"}
    if row["kind"] == "evaluated":
        return f"{_fmt(row['variant'])}  " + "  ".join(
            f"{_fmt(k)}={_fmt(v)}" for k, v in (row.get("metrics") or {}).items()
        )
    if row["kind"] == "evaluation_failed":
        return f"{_fmt(row['variant'])}  {_fmt(row.get('stage'))}: {_fmt(row.get('reason'))}"
    return "  ".join(f"{_fmt(k)}={_fmt(v)}" for k, v in row.items() if k not in skip)


def _arms_text(state: dict[str, Any]) -> str:
    arms = [*state.get("models", []), *state.get("personas", [])]
    return "  ".join(f"{_fmt(a['arm'])} {a['improvements']}/{a['pulls']}" for a in arms) or "-"


def spend_lines(tokens: TokenView | None, bandit: BanditView | None) -> list[str]:
    """Tokens per operator and mode, tokens per valid child, and each bandit arm's
    improvements/pulls, improvement rate and spend."""
    lines: list[str] = []
    if tokens and tokens.by_operator:
        cells = [
            f"{r.operator}/{r.mode} {r.prompt_tokens}+{r.completion_tokens}"
            for r in tokens.by_operator
        ]
        lines.append("tokens (prompt+completion) " + "  ".join(cells))
        lines.append(f"tokens per valid child {_fmt(tokens.tokens_per_valid_child)}")
    if bandit:
        for name, arms in (("models", bandit.models), ("personas", bandit.personas)):
            if len(arms) < 2 or not any(a["pulls"] for a in arms):
                continue
            cells = [
                f"{a['arm']} {a['improvements']}/{a['pulls']} ({a['rate']:.0%}, ${a['cost_usd']:.4f})"
                for a in arms
            ]
            persona = "operator/persona" if bandit.models else "edit class (offline)"
            label = persona if name == "personas" else name
            lines.append(f"{label} (bandit {bandit.algorithm}): " + "  ".join(cells))
    return lines


def no_bandit_line(bandit: BanditView) -> str:
    """Why `ge log --bandit` has no arm to show (an offline run, one model, nothing pulled yet)."""
    if not bandit.models:
        models = "an offline run has no models to choose between"
    elif len(bandit.models) < 2:
        models = "one model, so no choice of model"
    else:
        models = "no model has a pull yet"
    personas = "operator/persona arm" if bandit.models else "edit class"
    return (
        f"no bandit arms to show: {models}, and no {personas} has a pull yet "
        f'([llm.bandit] kind = "{bandit.algorithm}")'
    )


def print_log(console: Console, data: LogView) -> None:
    """`ge log`: events, EoT reflections and/or grouped failure reasons."""
    if data.events is not None:
        _print_events(console, data.events)
    if data.reflections is not None:
        if not data.reflections:
            console.print("no EoT reflections in this run")
        for row in data.reflections:
            title = f"{_fmt(row.variant)} (gen {_fmt(row.generation)}, elite {_fmt(row.elite)}, segment {_fmt(row.segment)})"
            console.rule(Text(title), align="left")
            console.print(_block(row.text), markup=False, highlight=False)
    if data.bandit is not None:
        for line in spend_lines(None, data.bandit) or [no_bandit_line(data.bandit)]:
            console.print(Text(_fmt(line)), soft_wrap=True)
        for state in data.bandit.generations or []:
            console.print(Text(f"  generation {state['generation']} drew from: " + _arms_text(state)))
    if data.failures is not None:
        _print_failures(console, data.failures)


def _print_events(console: Console, events: list[dict[str, Any]]) -> None:
    """The event log as aligned lines, written at once (rich's own rendering of a Text measures
    every line: seconds for the hundred thousand evaluations of a long run; a recording console,
    as tests use, still gets it); a long line wraps in the terminal."""
    styles = {"evaluation_failed": "red", "proposal_rejected": "yellow", "evaluated": "green"}
    rows = [(row["kind"], _fmt(row["kind"]), _event_details(row), row["time"]) for row in events]
    width = max((len(name) for _, name, _, _ in rows), default=5)
    if console.record:
        out = Text()
        out.append("events\n", style="italic")
        for kind, name, details, when in rows:
            out.append(_clock(when), style="dim")
            out.append("  ")
            out.append(name.ljust(width), style=styles.get(kind, ""))
            out.append(f"  {details}\n")
        console.print(out, soft_wrap=True, end="")
        return
    paint = _painter(console)
    lines = [paint("events", "italic")]
    lines += [
        f"{paint(_clock(when), 'dim')}  {paint(name.ljust(width), styles.get(kind, ''))}  {details}"
        for kind, name, details, when in rows
    ]
    console.file.write("\n".join(lines) + "\n")
    console.file.flush()


def _painter(console: Console) -> Callable[[str, str], str]:
    """``paint(text, style)``: the text with the ANSI codes of a rich style for this console's
    colours (none when it has none: a pipe, NO_COLOR). The text is already inert (``_fmt``)."""
    system = None if console.no_color else getattr(console, "_color_system", None)

    def paint(text: str, style: str) -> str:
        if not style or system is None:
            return text
        return Style.parse(style).render(text, color_system=system)

    return paint


def _print_failures(console: Console, failures: FailureSummary) -> None:
    """`ge log --failures`: the groups in a table."""
    groups = failures.groups
    if not groups:
        console.print("no failures")
        return
    table = Table(title=f"failures ({failures.total})", title_justify="left", show_edge=False)
    table.add_column("count", justify="right")
    table.add_column("where")
    table.add_column("reason", overflow="fold")
    table.add_column("detail", overflow="fold")
    table.add_column("e.g.", style="dim", overflow="fold")
    for g in groups:
        table.add_row(
            str(g.count),
            Text(_fmt(g.stage)),
            Text(_fmt(g.reason)),
            Text(_fmt(", ".join(g.details or []))),
            Text(_fmt(", ".join(g.variants[:3]))),
        )
    console.print(table)


def print_export(console: Console, data: dict[str, Any]) -> None:
    """`ge export`."""
    if data["kind"] == "patch":
        console.print(
            f"wrote {_m(data['path'])}: patch of {_m(data['id'])} against the seed, {len(data['files'])} file(s), "
            f"+{data['added']} -{data['removed']}"
        )
        console.print(f"apply it in your project with [bold]git apply {_m(data['path'])}[/bold]")
        return
    console.print(
        f"exported {_m(data['id'])}: {len(data['files'])} file(s) into {_m(data['path'])}"
    )
    if data["overwritten"]:
        console.print(
            f"overwrote {len(data['overwritten'])} existing file(s): {_m(', '.join(data['overwritten'][:10]))}"
        )
