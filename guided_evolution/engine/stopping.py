"""Why a run finishes before its last generation: a child reached a target (``[evolution]
stop_at``), the Pareto front stayed the same for ``stop_after_stale`` generations, or `ge stop`
asked (a request file in the run directory, polled by the loops).

Each rule is checked as a generation closes (in steady mode, a virtual generation of
``population`` children), so a stopped run ends on a checkpoint like a completed one; `ge stop`
is also seen before each steady draw and between generations. The finish is recorded as the
``run_finished`` event with ``kind`` (``target``, ``stale``, ``stop``) and the reason shown by
`ge status`. `ge resume RUN --generations N` goes on: a target that already stopped the run
does not stop it again (its name is stored in that event), the stale count starts again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

from guided_evolution.config import GeConfig
from guided_evolution.evolution.scoring import Scored, dominates
from guided_evolution.evolution.selection import distinct_front
from guided_evolution.fsutil import atomic_write
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import STOP_REQUEST

FINISHED = "run_finished"


def request_stop(run_dir: Path, pid: str) -> None:
    """Ask the engine of process ``pid`` (the run lock's holder) to finish (what `ge stop`
    does); a request naming another process is stale and ignored."""
    atomic_write(run_dir / STOP_REQUEST, f"{pid}\n")


class StopRules:
    """The early-stop rules of one session of a run (see the module)."""

    def __init__(self, cfg: GeConfig, index: RunIndex, run_dir: Path) -> None:
        evo = cfg.evolution
        self.request = run_dir / STOP_REQUEST
        self.objectives = [(o.name, o.direction) for o in cfg.selected_objectives]
        directions = dict(self.objectives)
        done = {
            name for e in index.events(FINISHED) if e.data.get("kind") == "target"
            for name in e.data.get("targets", [])
        }  # fmt: skip
        self.targets = {
            name: (directions[name], target)
            for name, target in evo.stop_at.items() if name in directions and name not in done
        }  # fmt: skip
        self.stale_after = evo.stop_after_stale
        self.front: list[Scored] = []
        self.unchanged = 0
        self.reason: str | None = None
        self.kind: str | None = None
        self.reached: list[str] = []
        if self._asked():  # `ge stop` while the run started (the lock drops earlier requests)
            self._finish("stop", "stopped by `ge stop`")

    def load(self, scored: Sequence[Scored]) -> None:
        """The variants evaluated before this session (the seed's evaluation included): one that
        reached a target finishes the run at once (a kill came before its finish was recorded,
        or the seed meets it); the front they make (the stale count restarts)."""
        self._targets(scored)
        self.front = distinct_front([*self.front, *scored], self.objectives)

    def requested(self) -> bool:
        """True once `ge stop` asked (the request is then consumed)."""
        if self.reason is None and self._asked():
            self._finish("stop", "stopped by `ge stop`")
        return self.reason is not None

    def _asked(self) -> bool:
        """True when a request names this process; any request found is removed."""
        try:
            text = self.request.read_text(encoding="utf-8", errors="replace")
        except OSError:  # none (the usual case), or unreadable
            return False
        with contextlib.suppress(FileNotFoundError):
            self.request.unlink()
        return text.strip() == str(os.getpid())

    def closed(self, generation: int, children: Sequence[Scored]) -> str | None:
        """A generation closed with these evaluated ``children``: the reason to finish, or None."""
        if self.reason is None:
            self._targets(children)
        changed = self._merge(children)
        self.unchanged = 0 if changed else self.unchanged + 1
        if self.reason is None and self.stale_after and self.unchanged >= self.stale_after:
            self._finish(
                "stale",
                f"the Pareto front has not changed for {self.unchanged} generations "
                f"(stop_after_stale = {self.stale_after}; last changed in generation "
                f"{generation - self.unchanged})",
            )
        if self.reason is None:
            self.requested()
        return self.reason

    def event(self) -> dict[str, object]:
        """The ``run_finished`` event's fields of an early stop (empty when none)."""
        if self.kind is None:
            return {}
        data: dict[str, object] = {"kind": self.kind}
        if self.reached:
            data["targets"] = self.reached
        return data

    def _targets(self, children: Sequence[Scored]) -> None:
        hits: list[str] = []
        for child in children:
            for name, (direction, target) in self.targets.items():
                value = child.metrics[name]
                hit = value >= target if direction == "max" else value <= target
                if hit and name not in self.reached:
                    self.reached.append(name)
                    sign = ">=" if direction == "max" else "<="
                    hits.append(f"{name} = {value:g} {sign} {target:g} (variant {child.id})")
        if hits:
            self._finish("target", "target reached: " + "; ".join(hits))

    def _merge(self, points: Sequence[Scored]) -> bool:
        """Add ``points`` to the front; True when one of them is on it and not a tie of a member."""
        changed = False
        for point in points:
            if any(dominates(f, point, self.objectives) or _tie(f, point) for f in self.front):
                continue
            self.front = [f for f in self.front if not dominates(point, f, self.objectives)]
            self.front.append(point)
            changed = True
        return changed

    def _finish(self, kind: str, reason: str) -> None:
        self.kind, self.reason = kind, reason


def _tie(a: Scored, b: Scored) -> bool:
    return dict(a.metrics) == dict(b.metrics)
