"""Terminal rendering (rich) of the data that `inspection.py` and the engine return."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.syntax import Syntax
from rich.table import Table


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "-" if value is None else str(value)


def front_table(front: list[dict[str, Any]], objectives: list[dict[str, Any]], title: str = "Pareto front") -> Table:
    """A table of the front: one row per variant, one column per objective."""
    table = Table(title=title, title_justify="left")
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("gen", justify="right")
    table.add_column("operator")
    for o in objectives:
        arrow = "↑" if o["direction"] == "max" else "↓"
        label = f"{o['name']} {arrow}" + ("" if o.get("select", True) else " (report)")
        table.add_column(label, justify="right")
    table.add_column("branch", style="dim")
    for row in front:
        metrics = row.get("metrics") or {}
        table.add_row(
            row["id"],
            _fmt(row.get("generation")),
            _fmt(row.get("operator")),
            *[_fmt(metrics.get(o["name"])) for o in objectives],
            _fmt(row.get("branch")),
        )
    return table


def print_summary(console: Console, summary: Any) -> None:
    """The end of `ge run` / `ge resume`."""
    data = summary.as_dict()
    console.print(front_table(data["front"], data["objectives"]))
    console.print(
        f"{data['children']} children, {data['evaluated']} evaluated, {data['failed']} failed, "
        f"{data['llm_calls']} LLM calls, ${data['cost_usd']:.4f}; {data['stop_reason']}"
    )
    console.print(f"run: {data['run_dir']}  (inspect: ge best / ge show {data['run_dir']} ID)")


def print_status(console: Console, data: dict[str, Any]) -> None:
    """`ge status`."""
    state = "finished: " + data["stop_reason"] if data["finished"] else "running or stopped (resume with `ge resume`)"
    console.print(f"[bold]{data['run_dir']}[/bold]  {state}")
    console.print(
        f"generation {data['generation']}/{data['generations']}  children {data['children']}  "
        f"evaluated {data['evaluated']}  failed {data['failed']}  pending {data['pending']}"
    )
    console.print(
        f"LLM calls {data['llm_calls']} ({data['llm_errors']} errors)  tokens "
        f"{data['prompt_tokens'] + data['completion_tokens']}  spend ${data['cost_usd']:.4f}  models {', '.join(data['models'])}"
    )


def print_front(console: Console, data: dict[str, Any]) -> None:
    """`ge best`."""
    if not data["front"]:
        console.print("no evaluated variant yet")
        return
    console.print(front_table(data["front"], data["objectives"]))


def print_variant(console: Console, data: dict[str, Any]) -> None:
    """`ge show`."""
    console.print(f"[bold cyan]{data['id']}[/bold cyan]  {data['branch']}  generation {data['generation']}")
    console.print(
        f"operator {data['operator']}  segment {_fmt(data['segment'])}  prompt {_fmt(data['prompt_name'])}  "
        f"persona {_fmt(data['persona'])}  model {_fmt(data['model'])}  T={_fmt(data['temperature'])}"
    )
    console.print(f"parents {', '.join(data['parents']) or '-'}  tokens {data['tokens']}  cost ${data['cost_usd']:.4f}")
    console.print(f"status {data['status']}" + (f"  [red]{data['failure_reason']}[/red]" if data["failure_reason"] else ""))
    if data["metrics"]:
        console.print("metrics " + "  ".join(f"{k}={_fmt(v)}" for k, v in data["metrics"].items()))
    if data["eot_reflection"]:
        console.print("[bold]EoT reflection[/bold]")
        console.print(data["eot_reflection"])
    if data["prompt"]:
        console.rule("prompt")
        console.print(data["prompt"], markup=False)
    if data["reply"]:
        console.rule("reply")
        console.print(data["reply"], markup=False)
    if data["diff"]:
        console.rule("diff against parent")
        console.print(Syntax(data["diff"], "diff", theme="ansi_dark", word_wrap=True))
    if data["status"] == "failed" and data["output_tail"]:
        console.rule("output tail")
        console.print(data["output_tail"], markup=False)
