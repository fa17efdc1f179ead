"""``Run``: one run directory seen from Python (typed, read-only views; following, waiting for
and stopping a live run), ``Variant``, one of its variants, ``Background``, its child process,
and the API's own typed views (``VariantInfo``, ``Event``, ``Exported``; the others are the
inspection views `--json` prints).

Every view opens the run's index read-only and never takes the run lock (the readers of
`inspection/`, the very ones `ge status`, `ge best`, `ge show`... print), so a run can be read
while its process writes it. The views are read afresh at each call.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guided_evolution.errors import GeError
from guided_evolution.inspection.json_view import JsonView

if TYPE_CHECKING:
    from guided_evolution.engine.session import RunSummary
    from guided_evolution.inspection.html_report import ReportSummary
    from guided_evolution.inspection.view_models import (
        BestView,
        DiffView,
        FrontRow,
        LineageView,
        LogView,
        StatusView,
        VariantView,
    )

_INTERRUPTED = (130, 143, -signal.SIGTERM)  # Ctrl-C, SIGTERM (also before its handler was set)
RESULT = "result.json"
_CHILD = "import sys; from guided_evolution.api.launch import child; sys.exit(child(sys.argv[1:]))"


@dataclass(frozen=True)
class VariantInfo(JsonView):
    """One variant as ``Run.variants()`` lists it: where it came from and how it scored."""

    id: str
    generation: int
    operator: str
    status: str
    parents: tuple[str, ...]
    branch: str | None
    model: str | None
    island: int | None
    created_at: float
    metrics: dict[str, Any] | None
    """The latest evaluation's metrics (None: not evaluated yet, or it failed)."""
    failure_reason: str | None


@dataclass(frozen=True)
class Event(JsonView):
    """One thing a run recorded, as `ge log --json` lists it: a run event (``run_started``,
    ``generation_started``, ``run_finished``, ...) or an evaluation (``evaluated``,
    ``evaluation_failed``, with its ``variant``). ``data`` is what was stored with it."""

    time: float
    kind: str
    variant: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Exported(JsonView):
    """What ``Run.export`` wrote: the variant, ``kind`` ("files" or "patch"), where, which files;
    ``details`` is the whole outcome as `ge export --json` prints it."""

    id: str
    kind: str
    path: str | None
    files: tuple[str, ...]
    details: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return dict(self.details)


@dataclass
class Background:
    """The child process of a background run (``launch.child``: the very `ge run`/`ge resume`
    path, ``launch.run`` in the foreground, in the child's main thread), and where its outcome
    and output go (a private temp directory: stdout.log, stderr.log, result.json; removed once
    the outcome is read, kept when the child died without one: the error names its output).

    Why a process and not a thread: the run lock is an fcntl lock owned by a process, and its
    pid is what `ge stop`, `ge status` ("live", the writer's pid) and ``kill PID`` act on;
    SIGTERM and Ctrl-C are handled in a process's main thread (the run ends resumable,
    ``run_interrupted`` recorded). A thread would share the caller's pid (``kill PID`` would
    end the notebook), could not handle SIGTERM, and would die with the notebook's kernel. A
    child keeps all of it as `ge run` does: same sandbox, lock and signals, resumable whatever
    happens to the caller. It runs in a session of its own: a Ctrl-C in the caller's terminal
    does not reach it (``Run.stop()`` or `ge stop` do)."""

    process: subprocess.Popen[bytes]
    folder: Path
    result: dict[str, Any] | None = None  # the outcome, once read

    @classmethod
    def start(cls, spec: dict[str, Any]) -> Background:
        """Start the child (in the caller's directory) on ``spec``: {action, options}."""
        folder = Path(tempfile.mkdtemp(prefix="ge-background-"))
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        command = [sys.executable, "-c", _CHILD, json.dumps(spec), str(folder / RESULT)]
        with (folder / "stdout.log").open("wb") as out, (folder / "stderr.log").open("wb") as err:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, start_new_session=True
            )
        return cls(process, folder)

    @property
    def stderr_path(self) -> Path:
        """The child's standard error (its progress notices, a traceback if it crashed)."""
        return self.folder / "stderr.log"

    def alive(self) -> bool:
        return self.process.poll() is None

    def outcome(self) -> dict[str, Any]:
        """The child's outcome once it exited: ``{"summary": ...}`` or ``{"error", "hint",
        "exit_code"}``; a child that died without writing one is an error naming its output."""
        code = self.process.returncode
        try:
            self.result = self.result or json.loads((self.folder / RESULT).read_text(encoding="utf-8"))
            shutil.rmtree(self.folder, ignore_errors=True)  # the outcome says it all
            return self.result
        except (OSError, ValueError):
            pass
        try:
            lines = self.stderr_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        except OSError:
            lines = []
        last = lines[-1] if lines else "no output"
        return {
            "error": f"the background run ended with exit code {code} ({last})",
            "hint": f"its output is in {self.stderr_path}",
            "exit_code": code if code else 1,
        }

    def error(self, outcome: dict[str, Any]) -> GeError:
        """The child's error as the GeError it raised (same message, hint and exit code)."""
        err = GeError(str(outcome.get("error")), outcome.get("hint"))
        err.exit_code = int(outcome.get("exit_code") or 2)
        return err


class Run:
    """A run directory (``path``, absolute): its views, and its process when this handle started
    it (``api.run``/``api.resume``; ``api.open_run`` opens any). As a context manager, a
    background run still going when the block is left by an exception is stopped at once
    (SIGTERM: resumable), so a failing script leaves no run behind."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()
        self._background: Background | None = None
        self._summary: RunSummary | None = None
        self._stopping = False
        self._cursor = (0, 0)  # the last event id and evaluation id that follow() yielded

    @classmethod
    def _in_background(cls, path: Path, action: str, options: dict[str, Any]) -> Run:
        handle = cls(path)
        plain = {k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()}
        handle._background = Background.start({"action": action, "options": plain})
        return handle

    @classmethod
    def _finished(cls, path: Path, summary: RunSummary) -> Run:
        handle = cls(path)
        summary.front = [row.to_json() for row in handle.front()]
        handle._summary = summary
        return handle

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None and self._background is not None and self._background.alive():
            self.stop(now=True)
            self._background.process.wait()

    # ----------------------------------------------------------------- views

    @property
    def status(self) -> StatusView:
        """Progress, state (live/stopped/finished and why), spend, diversity, isolation: `ge
        status --json`."""
        return self.status_view()

    def status_view(self, diversity_last: int | None = None) -> StatusView:
        """``status``, with the diversity of the last ``diversity_last`` generations only."""
        from guided_evolution.inspection import views_data

        return views_data.status(self.path, diversity_last=diversity_last)

    def best(self, island: int | None = None) -> BestView:
        """The objectives and the Pareto front (of island ``island``): `ge best --json`."""
        from guided_evolution.inspection import views_data

        return views_data.best(self.path, island=island)

    def front(self, island: int | None = None) -> list[FrontRow]:
        """The Pareto front on the selecting objectives, best first on the first objective."""
        return self.best(island).front

    def variants(
        self, generation: int | None = None, operator: str | None = None, status: str | None = None
    ) -> list[VariantInfo]:
        """Every variant in creation order (the seed first), or those of one ``generation``,
        ``operator`` ("mutation", "crossover", ...) and/or ``status``, with their metrics."""
        from guided_evolution.inspection.run_data import open_run_index

        with open_run_index(self.path) as (index, _resolved, _paths):
            latest = index.latest_evaluations()
            rows = index.variants(status=status, generation=generation)
        out = []
        for v in rows:
            if operator is not None and v.operator != operator:
                continue
            ev = latest.get(v.id)
            ok = ev is not None and ev.status == "ok"
            failure = ev.failure_reason if ev is not None and not ok else None
            out.append(
                VariantInfo(
                    v.id, v.generation, v.operator, v.status, tuple(v.parents), v.branch, v.model,
                    v.island, v.created_at, ev.metrics if ok and ev else None, failure,
                )
            )
        return out

    def variant(self, variant_id: str) -> Variant:
        """One variant (a unique id prefix, a branch, or "seed"): `ge show --json` and more."""
        from guided_evolution.inspection import views_data

        return Variant(self, views_data.show(self.path, variant_id))

    def lineage(self, variant_id: str) -> LineageView:
        """The ancestry of a variant back to the seed: `ge lineage --json`."""
        from guided_evolution.inspection import views_data

        return views_data.lineage(self.path, variant_id)

    def diff(self, a: str, b: str | None = None) -> DiffView:
        """What changed from variant ``b`` (default: the seed) to variant ``a``: `ge diff`."""
        from guided_evolution.inspection import views_data

        return views_data.diff(self.path, a, b)

    def log(self, *, eot: bool = False, failures: bool = False, bandit: bool = False) -> LogView:
        """`ge log --json`: the events, or the reflections, failures grouped, bandits."""
        from guided_evolution.inspection import views_data

        return views_data.log(self.path, eot=eot, failures=failures, bandit=bandit)

    def events(self, kind: str | None = None) -> list[Event]:
        """Every event and evaluation recorded so far, in time order (of one ``kind``)."""
        found, _ = self._read_since((0, 0))
        return [e for e in found if kind is None or e.kind == kind]

    def files(self, variant_id: str) -> dict[str, bytes]:
        """A variant's files as committed: path -> content."""
        from guided_evolution.inspection.run_data import commit_of, open_run_index, resolve_id
        from guided_evolution.runstore.git_store import GitStore

        with open_run_index(self.path) as (index, _resolved, paths):
            commit = commit_of(index, resolve_id(index, variant_id, self.path))
            with GitStore.open(paths.repo) as store:
                return store.read_files(commit)

    def export(self, variant_id: str, dest: str | Path, *, patch: bool = False, force: bool = False) -> Exported:
        """Copy a variant's files into ``dest`` (or, with ``patch``, write a `git apply`-able
        patch against the seed: a file, a directory, or "-" for ``details["patch"]`` only)."""
        from guided_evolution.inspection import export as exporting

        data = exporting.export(self.path, variant_id, Path(dest), patch=patch, force=force)
        return Exported(data["id"], data["kind"], data.get("path"), tuple(data.get("files", ())), data)

    def report(self, output: str | Path = "report.html", compare: str | Path | None = None) -> ReportSummary:
        """Write `ge report`'s self-contained HTML page (``compare``: a control run overlaid)."""
        from guided_evolution.inspection import html_report

        control = None if compare is None else Path(compare)
        return html_report.write_report(self.path, Path(output), control)

    # ----------------------------------------------------------------- a live run

    @property
    def summary(self) -> RunSummary | None:
        """What `ge run --json` printed for a run this handle ran (after ``wait`` for one in
        the background); None otherwise."""
        return self._summary

    @property
    def live(self) -> bool:
        """Whether a process is running the run (this handle's background process while it
        lives, else whoever holds the run lock)."""
        if self._background is not None:
            return self._background.alive()
        return self._writer() is not None

    def _writer(self) -> str | None:
        from guided_evolution.runstore.doctor import lock_holder

        return lock_holder(self.path)

    def follow(self, poll_s: float = 0.5) -> Iterator[Event]:
        """The run's events as they are recorded (those recorded before first): run events
        (``generation_started``, ``run_finished``, ...) and evaluations (``evaluated``,
        ``evaluation_failed``), until the run's process ends. A background run that failed
        raises its one-line error at the end, as ``wait`` does. Another process's run ends
        when its lock is found free twice, ``poll_s`` apart (a new run takes it just after it
        is created)."""
        free = 0
        while True:
            alive = self.live  # read after this, so the last read sees everything
            if (self.path / "config.json").is_file():
                found, self._cursor = self._read_since(self._cursor)
                yield from found
            free = 0 if alive else free + 1
            if free > (0 if self._background is not None else 1):
                break
            time.sleep(poll_s)
        if self._background is not None:
            self.wait()

    def _read_since(self, cursor: tuple[int, int]) -> tuple[list[Event], tuple[int, int]]:
        from guided_evolution.inspection.run_data import open_run_index

        with open_run_index(self.path) as (index, _resolved, _paths):
            records = index.events(after_id=cursor[0])
            evaluations = index.evaluations(after_id=cursor[1])
            found = [Event(e.time, e.kind, _variant_of(e.data), e.data) for e in records]
            found += [_evaluation_event(index, ev) for ev in evaluations]
        found.sort(key=lambda e: e.time)
        last_event = records[-1].id if records else cursor[0]
        last_eval = (evaluations[-1].id or cursor[1]) if evaluations else cursor[1]
        return found, (last_event, last_eval)

    def wait(self, timeout: float | None = None) -> RunSummary | None:
        """Block until the run's process ends (at most ``timeout`` seconds, else TimeoutError).
        A background run started here: its summary, None when ``stop(now=True)`` interrupted
        it, its one-line error (a GeError, as the CLI prints it) when it failed. A run written
        by another process: None once its lock is found free twice, 0.2 s apart (``follow``)."""
        if self._background is None:
            deadline, free = (None if timeout is None else time.monotonic() + timeout), 0
            while (free := 0 if self._writer() is not None else free + 1) < 2:
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"{self.path} is still running after {timeout} s")
                time.sleep(0.2)
            return self._summary
        try:
            self._background.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.path} is still running after {timeout} s") from None
        if self._summary is not None:
            return self._summary
        outcome = self._background.outcome()
        if "summary" in outcome:
            from guided_evolution.engine.session import RunSummary

            self._summary = RunSummary(**outcome["summary"])
            return self._summary
        err = self._background.error(outcome)
        if self._stopping and (err.exit_code in _INTERRUPTED or self._background.process.returncode in _INTERRUPTED):
            shutil.rmtree(self._background.folder, ignore_errors=True)  # None says it all
            return None
        raise err

    def stop(self, *, now: bool = False) -> str:
        """Stop the run; the pid asked. By default as `ge stop`: the generation under way
        completes, then the run finishes ("stopped by `ge stop`"; extend it later with
        ``resume(..., generations=N)``). ``now``: SIGTERM, as ``kill PID`` (evaluations stopped,
        resumable with ``resume``). A background run still evaluating its seed (no run
        directory yet) is ended by SIGTERM either way, leaving nothing behind."""
        ours = self._background
        if ours is not None and ours.alive() and (now or self._writer() is None):
            self._stopping = True
            os.kill(ours.process.pid, signal.SIGTERM)
            return str(ours.process.pid)
        from guided_evolution.engine.stopping import request_stop
        from guided_evolution.runstore.doctor import lock_holder
        from guided_evolution.runstore.rundir import open_run as open_dir

        paths, _ = open_dir(self.path, check_damage=False)
        pid = lock_holder(paths.root)
        if pid is None:
            raise GeError(
                f"{paths.root} is not running (no ge process holds its lock)",
                f"`ge status {paths.root}` says where it stands",
            )
        if not pid.isdigit():
            raise GeError(f"{paths.root} is starting (its pid is not recorded yet)", "run `ge stop` again in a moment")
        self._stopping = True
        if now:
            os.kill(int(pid), signal.SIGTERM)
        else:
            request_stop(paths.root, pid)
        return pid


def _variant_of(data: dict[str, Any]) -> str | None:
    return found if isinstance(found := data.get("variant"), str) else None


def _evaluation_event(index: Any, ev: Any) -> Event:
    """An evaluation as `ge log` lists it: ``evaluated`` with its metrics, or
    ``evaluation_failed`` with its reason, at the time it ended."""
    when = (ev.started_at or 0.0) + (ev.duration_s or 0.0)
    if not when:
        v = index.get_variant(ev.variant_id)
        when = v.created_at if v else 0.0
    data: dict[str, Any] = {"stage": ev.stage, "attempt": ev.attempt, "duration_s": ev.duration_s}
    if ev.status == "ok":
        return Event(when, "evaluated", ev.variant_id, {**data, "metrics": ev.metrics})
    return Event(when, "evaluation_failed", ev.variant_id, {**data, "reason": ev.failure_reason})


@dataclass(frozen=True)
class Variant:
    """One variant: ``view`` is everything `ge show --json` prints (metrics, operator, prompt
    and reply, reflection, evaluator feedback, diff against its first parent); the methods
    read its files, lineage and diffs."""

    run: Run
    view: VariantView

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.view.metrics

    @property
    def generation(self) -> int:
        return self.view.generation

    @property
    def operator(self) -> str:
        return self.view.operator

    @property
    def parents(self) -> list[str]:
        return self.view.parents

    @property
    def prompt(self) -> str | None:
        return self.view.prompt

    @property
    def reply(self) -> str | None:
        return self.view.reply

    @property
    def reflection(self) -> str | None:
        """The EoT reflection that made it (None for other operators)."""
        return self.view.eot_reflection

    @property
    def feedback(self) -> str | None:
        """The evaluator's feedback text (``GE_FEEDBACK``), or a failure's reason."""
        return self.view.feedback

    def files(self) -> dict[str, bytes]:
        return self.run.files(self.id)

    def source(self, path: str) -> str:
        """One of its files as text."""
        files = self.files()
        if path not in files:
            raise GeError(f"variant {self.id} has no file {path}", f"its files: {', '.join(sorted(files))}")
        return files[path].decode("utf-8", errors="replace")

    def lineage(self) -> LineageView:
        return self.run.lineage(self.id)

    def diff(self, against: str | Variant | None = None) -> DiffView:
        """What changed from ``against`` (a variant or id; default: the seed) to this one."""
        other = against.id if isinstance(against, Variant) else against
        return self.run.diff(self.id, other)

    def export(self, dest: str | Path, *, patch: bool = False, force: bool = False) -> Exported:
        return self.run.export(self.id, dest, patch=patch, force=force)
