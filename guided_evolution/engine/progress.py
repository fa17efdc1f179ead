"""Live progress of a run on a terminal (rich), or nothing at all in --json mode."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text


class Progress:
    """Counts what the engine does; subclasses render it. The base class renders nothing."""

    def __init__(self, objectives: Sequence[tuple[str, str]] = ()) -> None:
        self.objectives = list(objectives)
        self.counts: dict[str, int] = {
            "proposing": 0,
            "proposed": 0,
            "rejected": 0,
            "queued": 0,
            "evaluating": 0,
            "done": 0,
            "failed": 0,
        }
        self.best_values: dict[str, float] = {}
        self.cost_usd = 0.0
        self.gen = 0
        self.generations = 0
        self.planned = 0
        self.started = time.monotonic()
        self.gen_started = self.started
        self.gen_done_at_start = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def count(self, key: str, delta: int) -> None:
        self.counts[key] = self.counts.get(key, 0) + delta
        self.refresh()

    def generation(self, gen: int, total: int, planned: int) -> None:
        self.gen, self.generations, self.planned = gen, total, planned
        self.gen_started = time.monotonic()
        self.gen_done_at_start = (
            self.counts["done"] + self.counts["failed"] + self.counts["rejected"]
        )
        self.refresh()

    def best(self, metrics: dict[str, float]) -> None:
        for name, direction in self.objectives:
            if name not in metrics:
                continue
            value = metrics[name]
            old = self.best_values.get(name)
            if old is None or (value > old if direction == "max" else value < old):
                self.best_values[name] = value
        self.refresh()

    def spend(self, cost_usd: float) -> None:
        self.cost_usd = cost_usd

    def info(self, message: str) -> None:
        """A line about the run's set-up (e.g. its evaluation slots); only on a live terminal."""

    def notice(self, message: str) -> None:
        """A line every run prints at its start (the isolation in force): on stderr, always."""
        Console(stderr=True, highlight=False).print(message, markup=False, soft_wrap=True)

    def warn(self, message: str) -> None:
        """Shown once at the start (e.g. a missing network sandbox): on stderr even with --json."""
        Console(stderr=True, highlight=False).print(
            f"warning: {message}", markup=False, soft_wrap=True
        )

    def refresh(self) -> None:
        """Redraw, where there is something to draw."""

    def eta_s(self) -> float | None:
        """Seconds left in the run, from this generation's rate."""
        finished = (
            self.counts["done"]
            + self.counts["failed"]
            + self.counts["rejected"]
            - self.gen_done_at_start
        )
        elapsed = time.monotonic() - self.gen_started
        if finished <= 0 or elapsed <= 0:
            return None
        per_child = elapsed / finished
        left_now = max(self.planned - finished, 0)
        later = max(self.generations - self.gen, 0) * max(self.planned, 1)
        return per_child * (left_now + later)


class LiveProgress(Progress):
    """A rich Live panel on stderr: generation, children by state, best so far, spend, ETA."""

    def __init__(self, objectives: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(objectives)
        self.console = Console(stderr=True)
        self.live = Live(
            console=self.console, refresh_per_second=4, transient=False, auto_refresh=False
        )
        self._last = 0.0

    def __enter__(self) -> Progress:
        self.live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.update(self._render(), refresh=True)
        self.live.stop()

    def info(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False, soft_wrap=True)

    def notice(self, message: str) -> None:
        self.info(message)

    def warn(self, message: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True)

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        self.live.update(self._render(), refresh=True)

    def _render(self) -> Group:
        c = self.counts
        table = Table.grid(padding=(0, 2))
        table.add_row(
            Text(f"generation {self.gen}/{self.generations}", style="bold"),
            f"proposing {c['proposing']}",
            f"queued {c['queued']}",
            f"evaluating {c['evaluating']}",
            Text(f"done {c['done']}", style="green"),
            Text(f"failed {c['failed']}", style="red" if c["failed"] else ""),
            f"rejected {c['rejected']}",
        )
        best = "  ".join(
            f"{name} {'↑' if d == 'max' else '↓'} {self.best_values[name]:.6g}"
            for name, d in self.objectives
            if name in self.best_values
        )
        eta = self.eta_s()
        elapsed = time.monotonic() - self.started
        line = f"best: {best or '-'}   spend: ${self.cost_usd:.4f}   elapsed: {elapsed:.0f}s" + (
            f"   ETA: {eta:.0f}s" if eta is not None else ""
        )
        return Group(table, Text(line))


def make_progress(json_mode: bool, objectives: Sequence[tuple[str, str]] = ()) -> Progress:
    """Silent counters in --json mode or when stderr is not a terminal, a live panel otherwise."""
    if json_mode or not Console(stderr=True).is_terminal:
        return Progress(objectives)
    return LiveProgress(objectives)
