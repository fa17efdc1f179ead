"""Progress of a run: a live panel on a terminal (rich), plain lines in a log file or CI (stderr
not a terminal), nothing at all in --json mode."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TextIO

from rich.console import Console, Group
from rich.markup import escape
from rich.text import Text

from guided_evolution.evolution.scoring import Scored, dominates
from guided_evolution.evolution.selection import distinct_front
from guided_evolution.termsafe import inert


class Progress:
    """Counts what the engine does; subclasses render it. The base class renders nothing."""

    def __init__(
        self, objectives: Sequence[tuple[str, str]] = (), generations: int = 0
    ) -> None:
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
        self.front: list[Scored] = []  # the Pareto front of what was evaluated so far
        self.cost_usd = 0.0
        self.gen: int | None = None  # None while the seed is evaluated, before generation 0
        self.generations = generations
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

    def best(self, point: Scored | None) -> None:
        """A newly evaluated variant (None: not selectable) joins the front if nothing in it
        dominates or equals it, and pushes out what it dominates."""
        if point is not None and self._add(point):
            self.refresh()

    def load(self, points: Iterable[Scored]) -> None:
        """The variants a resumed run had evaluated before, into the front (no redraw): what
        adding them one by one leaves, computed at once (100,000 variants in well under 1 s)."""
        self.front = distinct_front([*self.front, *points], self.objectives)

    def _add(self, point: Scored) -> bool:
        objectives, values = self.objectives, dict(point.metrics)
        if any(dict(p.metrics) == values or dominates(p, point, objectives) for p in self.front):
            return False
        self.front = [p for p in self.front if not dominates(point, p, objectives)] + [point]
        return True

    def best_of_front(self) -> list[tuple[str, str, float, str]]:
        """Per objective: (name, direction, best value in the front, id of the variant with it)."""
        out = []
        for name, direction in self.objectives:
            sign = 1.0 if direction == "max" else -1.0
            top = max(self.front, key=lambda p: (sign * p.metrics[name], p.id), default=None)
            if top is not None:
                out.append((name, direction, top.metrics[name], top.id))
        return out

    def front_line(self) -> str:
        """``front: N  best score ↑ 0.826 (id)  size ↓ 164 (id)``: each value with its variant."""
        best = "  ".join(
            f"{name} {'↑' if d == 'max' else '↓'} {value:.6g} ({vid[:8]})"
            for name, d, value, vid in self.best_of_front()
        )
        return f"front: {len(self.front)}  best {best}" if self.front else "front: -"

    def spend(self, cost_usd: float) -> None:
        self.cost_usd = cost_usd

    def info(self, message: str) -> None:
        """A line about the run's set-up (e.g. its evaluation slots); only on a live terminal."""

    def notice(self, message: str) -> None:
        """A line every run prints at its start (the isolation in force): on stderr, always."""
        Console(stderr=True, highlight=False).print(
            inert(message, multiline=True), markup=False, soft_wrap=True
        )

    def warn(self, message: str) -> None:
        """Shown once at the start (e.g. a missing network sandbox): on stderr even with --json."""
        Console(stderr=True, highlight=False).print(
            f"warning: {inert(message, multiline=True)}", markup=False, soft_wrap=True
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
        if self.gen is None or finished <= 0 or elapsed <= 0:
            return None
        per_child = elapsed / finished
        left_now = max(self.planned - finished, 0)
        later = max(self.generations - self.gen, 0) * max(self.planned, 1)
        return per_child * (left_now + later)


class LiveProgress(Progress):
    """A rich Live panel on stderr: generation, children by state, the front, spend, ETA."""

    def __init__(
        self, objectives: Sequence[tuple[str, str]] = (), generations: int = 0
    ) -> None:
        from rich.live import Live  # rich.live, rich.table: only on a terminal

        super().__init__(objectives, generations)
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
        self.console.print(
            inert(message, multiline=True), markup=False, highlight=False, soft_wrap=True
        )

    def notice(self, message: str) -> None:
        self.info(message)

    def warn(self, message: str) -> None:
        self.console.print(
            f"[yellow]warning:[/yellow] {escape(inert(message, multiline=True))}", soft_wrap=True
        )

    def refresh(self) -> None:
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        self.live.update(self._render(), refresh=True)

    def _render(self) -> Group:
        from rich.table import Table

        c = self.counts
        table = Table.grid(padding=(0, 2))
        where = "seed" if self.gen is None else f"generation {self.gen}"
        table.add_row(
            Text(f"{where}/{self.generations}", style="bold"),
            f"proposing {c['proposing']}",
            f"queued {c['queued']}",
            f"evaluating {c['evaluating']}",
            Text(f"done {c['done']}", style="green"),
            Text(f"failed {c['failed']}", style="red" if c["failed"] else ""),
            f"rejected {c['rejected']}",
        )
        eta = self.eta_s()
        elapsed = time.monotonic() - self.started
        line = f"   spend: ${self.cost_usd:.4f}   elapsed: {elapsed:.0f}s" + (
            f"   ETA: {eta:.0f}s" if eta is not None else ""
        )
        return Group(table, Text(inert(self.front_line() + line)))


LOG_EVERY_S = 60.0  # a log line at least this often while nothing else prints one


def _clock(seconds: float) -> str:
    """Elapsed time as ``42s``, ``3m05s`` or ``2h07m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class LogProgress(Progress):
    """Plain lines on stderr for a log file or CI: one when a generation starts (in steady mode a
    generation starts every ``population`` children), one at least every ``every_s`` seconds in
    between (a timer thread), and one at the end. Each line has the generation, the children
    evaluated, failed and rejected, the front's best value per objective and the LLM spend."""

    def __init__(
        self,
        objectives: Sequence[tuple[str, str]] = (),
        generations: int = 0,
        every_s: float = LOG_EVERY_S,
        stream: TextIO | None = None,
    ) -> None:
        super().__init__(objectives, generations)
        self.every_s = every_s
        self.stream = stream
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._last_line = time.monotonic()
        self._timer: threading.Thread | None = None

    def __enter__(self) -> Progress:
        self._timer = threading.Thread(target=self._tick, name="ge-progress-log", daemon=True)
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        self.emit("stopped" if exc and exc[0] is not None else "done")

    def generation(self, gen: int, total: int, planned: int) -> None:
        super().generation(gen, total, planned)
        self.emit("started")

    def _tick(self) -> None:
        """The timer: a line when ``every_s`` passed since the last one."""
        while not self._stop.wait(max(self._last_line + self.every_s - time.monotonic(), 0.01)):
            if time.monotonic() - self._last_line >= self.every_s:
                self.emit("running")

    def line(self, state: str) -> str:
        """``generation 2/3 started  9 evaluated, 1 failed, 0 rejected  front 3: ...  LLM $0.0000``."""
        c = self.counts
        where = "seed" if self.gen is None else f"generation {self.gen}/{self.generations}"
        return (
            f"[{_clock(time.monotonic() - self.started)}] {where} {state}  "
            f"{c['done']} evaluated, {c['failed']} failed, {c['rejected']} rejected  "
            f"{self.front_line()}  LLM ${self.cost_usd:.4f}"
        )

    def emit(self, state: str) -> None:
        """Write one line now (from the engine's thread or the timer's)."""
        with self._lock:
            self._last_line = time.monotonic()
            stream = self.stream or sys.stderr
            stream.write(inert(self.line(state)) + "\n")
            stream.flush()


def make_progress(
    json_mode: bool, objectives: Sequence[tuple[str, str]] = (), generations: int = 0
) -> Progress:
    """Silent counters in --json mode, plain lines when stderr is not a terminal (a log file,
    CI), a live panel otherwise."""
    if json_mode:
        return Progress(objectives, generations)
    if not Console(stderr=True).is_terminal:
        return LogProgress(objectives, generations)
    return LiveProgress(objectives, generations)
