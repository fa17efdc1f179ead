"""The follower process: ``python -m guided_evolution.tracking.follower RUN_DIR [--once]``.

Started by ``spawn.follow`` for a live run (nice 10 and SCHED_IDLE, its own session): every ``[tracking]
interval_s`` (or four times as long as its last look took: at most a fifth of a core) it reads
the run's index read-only and logs what is new to MLflow, until its stdin closes; then it looks
once more and exits. ``--once`` logs a run (live, stopped or finished)
once and exits: the way to log a run whose follower could not run. A failure to log is one line
on stdout (the launcher prints it as a ``warning:``), said again only after a success; the next
look retries, and what was missed is logged then.

The MLflow side: one experiment, a parent run for the ge run (its configuration, its spend) and
one nested MLflow run per variant. Every MLflow run of a ge run carries ``ge.run`` (its key in
``tracking.json``); a variant's carries ``ge.variant`` and, once all of it is logged, ``ge.logged``.
Opening the sink lists those runs, deletes the ones a stopped follower left half-logged, and logs
only what is missing, so ``ge resume`` never makes a second MLflow run for a variant. ``mlflow``
is imported here only, so the engine never loads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from guided_evolution.config import ResolvedConfig
from guided_evolution.errors import GeError
from guided_evolution.runstore.git_store import GitStore
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import RunPaths, open_run
from guided_evolution.tracking.snapshot import (
    MAX_PARAM,
    Snapshot,
    VariantEntry,
    clean_key,
    clip_text,
    read_snapshot,
)
from guided_evolution.tracking.spawn import TrackingState, tracking_state

if TYPE_CHECKING:
    from mlflow import MlflowClient

MAX_DIFF = 1_000_000  # characters of a variant's diff kept as its artifact


BATCH = 100  # MLflow's most parameters and tags per log_batch
LOGGED, FRONT, EVALUATION, ROLE = "ge.logged", "ge.front", "ge.evaluation", "ge.role"


@dataclass
class Logged:
    """A variant's MLflow run and what it shows now."""

    run_id: str
    evaluation: str
    front: bool


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def flat_params(data: Any, prefix: str = "") -> dict[str, str]:
    """A nested config as ``a.b.c`` -> value text (lists as JSON), keys made safe."""
    out: dict[str, str] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out.update(flat_params(value, f"{prefix}{key}."))
        return out
    key = clean_key(prefix.rstrip("."))
    if key:
        value = data if isinstance(data, str) else json.dumps(data, default=str)
        out[key] = clip_text(value, MAX_PARAM)
    return out


class MlflowSink:
    """Logs snapshots of one ge run into one MLflow experiment."""

    def __init__(self, client: MlflowClient, experiment_id: str, run_key: str) -> None:
        import mlflow.entities
        import mlflow.exceptions

        self.entities = mlflow.entities
        self.exceptions = mlflow.exceptions
        self.refused: dict[str, str] = {}  # variant id -> why MLflow refused it
        self.client = client
        self.experiment_id = experiment_id
        self.run_key = run_key
        self.parent_id = ""
        self.logged: dict[str, Logged] = {}
        self.totals: dict[str, float] = {}

    @classmethod
    def open(cls, uri: str, experiment: str, snap: Snapshot, config: dict[str, Any]) -> MlflowSink:
        """The experiment (made if missing), the runs already logged, the parent run."""
        from mlflow import MlflowClient  # imported in the follower only, never by the engine
        from mlflow.exceptions import MlflowException

        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = client.create_experiment(experiment, tags={"ge": "1"})
            except MlflowException:  # made meanwhile by another ge run
                experiment_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            experiment_id = found.experiment_id
        sink = cls(client, experiment_id, snap.run_key)
        sink._load()
        sink._parent(snap.name, config)
        return sink

    def _load(self) -> None:
        token = None
        keep: dict[str, Any] = {}
        parents = []
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                f"tags.`ge.run` = '{self.run_key}'",
                self.entities.ViewType.ACTIVE_ONLY,
                max_results=1000,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            for run in page:
                tags = run.data.tags
                if tags.get(ROLE) == "run":
                    parents.append(run)
                elif tags.get(LOGGED) != "1" or tags.get("ge.variant", "") in keep:
                    self.client.delete_run(run.info.run_id)  # half-logged, or a duplicate
                elif "ge.variant" in tags:
                    keep[tags["ge.variant"]] = run
            token = page.token
            if not token:
                break
        for extra in parents[1:]:
            self.client.delete_run(extra.info.run_id)
        if parents:
            self.parent_id = parents[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        for vid, run in keep.items():
            tags = run.data.tags
            self.logged[vid] = Logged(
                run.info.run_id, tags.get(EVALUATION, ""), tags.get(FRONT) == "true"
            )

    def _parent(self, name: str, config: dict[str, Any]) -> None:
        if self.parent_id:
            return
        tags = {"ge.run": self.run_key, ROLE: "run"}
        run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
        flat = flat_params(config.get("config", {}))
        params = [self.entities.Param(k, v) for k, v in flat.items()]
        for chunk in _chunks(params, BATCH):
            self.client.log_batch(run.info.run_id, params=chunk)
        self.client.log_text(run.info.run_id, json.dumps(config, indent=2), "config.json")
        self.parent_id = run.info.run_id

    def sync(self, snap: Snapshot, diff: Callable[[VariantEntry], str]) -> int:
        """Log what changed since the last sync; the number of variant runs made."""
        made = 0
        for entry in snap.entries:
            front = entry.id in snap.front
            known = self.logged.get(entry.id)
            if known is None and entry.id not in self.refused:
                made += self._new_variant(entry, diff, front)
            if known is None:
                continue
            if known.evaluation != entry.evaluation:
                self._evaluated_again(known, entry)
            if known.front != front:
                self.client.set_tag(known.run_id, FRONT, "true" if front else "false")
                known.front = front
        if snap.totals != self.totals:
            now = int(time.time() * 1000)
            step = int(snap.totals.get("ge.children", 0))
            self.client.log_batch(self.parent_id, metrics=self._metrics(snap.totals, now, step))
            self.totals = dict(snap.totals)
        return made

    def _new_variant(
        self, entry: VariantEntry, diff: Callable[[VariantEntry], str], front: bool
    ) -> int:
        """Log a new variant (1); one MLflow refuses as invalid is left out (0), not retried by
        this follower, so that it cannot hold back the variants after it."""
        try:
            self._variant(entry, diff(entry), front)
        except self.exceptions.MlflowException as err:
            if getattr(err, "error_code", "") != "INVALID_PARAMETER_VALUE":
                raise  # the store or the server: the next look retries everything
            self.refused[entry.id] = " ".join(str(err).split())[:200]
            return 0
        return 1

    def _variant(self, entry: VariantEntry, diff: str, front: bool) -> None:
        tags = {**entry.tags, "mlflow.parentRunId": self.parent_id, FRONT: str(front).lower()}
        tags[EVALUATION] = entry.evaluation
        run = self.client.create_run(
            self.experiment_id, start_time=entry.time_ms, tags=tags, run_name=entry.name
        )
        run_id = run.info.run_id
        metrics = self._metrics(entry.metrics, entry.time_ms, entry.generation)
        params = [self.entities.Param(k, v) for k, v in entry.params.items()]
        try:
            self.client.log_batch(run_id, metrics=metrics, params=params)
        except self.exceptions.MlflowException:
            with contextlib.suppress(Exception):  # else the next sink deletes it, half-logged
                self.client.delete_run(run_id)
            raise
        if diff:
            self.client.log_text(run_id, diff, "diff.patch")
        self.client.set_terminated(run_id, "FAILED" if entry.failed else "FINISHED")
        self.client.set_tag(run_id, LOGGED, "1")
        self.logged[entry.id] = Logged(run_id, entry.evaluation, front)

    def _evaluated_again(self, known: Logged, entry: VariantEntry) -> None:
        """A later evaluation (``--reload-evaluator``): its metrics and status on the same run."""
        now = int(time.time() * 1000)
        metrics = self._metrics(entry.metrics, now, entry.generation)
        values = {**entry.tags, EVALUATION: entry.evaluation}
        tags = [self.entities.RunTag(k, v) for k, v in values.items()]
        for chunk in _chunks(tags, BATCH):
            self.client.log_batch(known.run_id, tags=chunk)
        self.client.log_batch(known.run_id, metrics=metrics)
        if "ge.failure" not in entry.tags:  # failed before, not now
            with contextlib.suppress(self.exceptions.MlflowException):
                self.client.delete_tag(known.run_id, "ge.failure")
        self.client.update_run(known.run_id, status="FAILED" if entry.failed else "FINISHED")
        known.evaluation = entry.evaluation

    def _metrics(self, values: dict[str, float], time_ms: int, step: int) -> list[Any]:
        return [self.entities.Metric(k, v, time_ms, step) for k, v in values.items()]

    def end(self, finished: bool) -> None:
        """The parent run FINISHED with the ge run, else KILLED until a resume reopens it."""
        if self.parent_id:
            self.client.set_terminated(self.parent_id, "FINISHED" if finished else "KILLED")


def say(out: TextIO, line: str) -> None:
    """One line for the launcher to print as a warning (nobody may be reading any more)."""
    with contextlib.suppress(OSError, ValueError):
        out.write(" ".join(line.split()) + "\n")
        out.flush()


def describe(err: BaseException) -> str:
    """An exception in one short line (MLflow's messages can be long)."""
    first = " ".join(str(err).split())
    return f"{type(err).__name__}: {first[:200]}" if first else type(err).__name__


def _diff(store: GitStore, entry: VariantEntry) -> str:
    if not entry.commit or not entry.parent_commit:
        return ""
    try:
        text = store.diff(entry.parent_commit, entry.commit)
    except Exception as err:  # the artifact says so; the variant's run is logged all the same
        return f"(no diff: {describe(err)})\n"
    return text if len(text) <= MAX_DIFF else text[:MAX_DIFF] + "\n(diff cut here by ge)\n"


class Tracker:
    """One run followed: its index read each time, the MLflow sink opened once (again after a
    failure)."""

    def __init__(
        self, paths: RunPaths, resolved: ResolvedConfig, state: TrackingState, out: TextIO
    ) -> None:
        self.paths = paths
        self.resolved = resolved
        self.state = state
        self.config = json.loads(paths.config.read_text(encoding="utf-8"))
        self.out = out
        self.sink: MlflowSink | None = None
        self.counts: dict[str, Any] = {}
        self.failing = False

    def look(self, store: GitStore, final: bool) -> int | None:
        """Log what is new (the number of variant runs made, None on a failure); at the end,
        close the parent run. A failure is said once, until a look succeeds again."""
        cfg = self.resolved.config
        try:
            with contextlib.closing(RunIndex.open(self.paths.index, readonly=True)) as index:
                counts = index.counts()  # unchanged: nothing new to log (a few ms)
                if counts == self.counts and self.sink is not None and not final:
                    return 0
                snap = read_snapshot(index, cfg, self.paths.root, self.state.key)
            if snap is None:
                return 0
            if self.sink is None:
                experiment = cfg.tracking.experiment or self.paths.root.name
                self.sink = MlflowSink.open(self.state.uri, experiment, snap, self.config)
            refused = len(self.sink.refused)
            made = self.sink.sync(snap, lambda entry: _diff(store, entry))
            for vid, why in list(self.sink.refused.items())[refused:]:
                say(self.out, f"MLflow refused variant {vid} ({why}); it is left out")
            if final:
                self.sink.end(snap.finished)
            self.failing = False
            self.counts = counts
            return int(made)
        except Exception as err:
            self.sink = None  # opened again next time: it lists what was logged
            if not self.failing:
                interval = cfg.tracking.interval_s
                say(
                    self.out,
                    f"MLflow tracking failed ({describe(err)}); the run goes on, and ge retries "
                    f"every {interval:g} s",
                )
            self.failing = True
            return None


def follow(run_dir: Path, out: TextIO, stop: threading.Event, once: bool = False) -> int:
    """Follow the run until ``stop`` is set (or once); 0, or 1 when it could not start."""
    try:
        paths, resolved = open_run(run_dir, check_damage=False)
    except GeError as err:
        say(out, f"MLflow tracking cannot read the run: {err.message}")
        return 1
    state = tracking_state(paths.root, resolved, save=True)  # --once: as the first start
    if state is None:
        say(out, f"{run_dir} has no [tracking] mlflow URI in its config: nothing to log")
        return 1
    if state.uri.startswith("file:"):
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    tracker = Tracker(paths, resolved, state, out)
    uri = state.uri
    with GitStore.open(paths.repo) as store:
        while True:
            final = once or stop.is_set()
            if final and not once:
                background(False)
            started = time.process_time()
            made = tracker.look(store, final)
            if once and made is not None:
                print(f"logged {made} new variant run(s) of {paths.root} to {uri}", file=out)
            if final:
                return 0 if made is not None else 1
            # at most a fifth of a core: a look at a 10,000-variant run takes ~0.5 s of CPU
            busy = time.process_time() - started
            stop.wait(max(resolved.config.tracking.interval_s, 4 * busy))


def background(idle: bool) -> None:
    """While the run goes: nice 10 and, on Linux, SCHED_IDLE (the follower runs only on a CPU
    that nothing else wants, so it never takes one from ge or an evaluation); for the last look,
    after the engine ended, back to the normal policy where the system lets it."""
    if idle:
        with contextlib.suppress(OSError):
            os.nice(10)
    policy = getattr(os, "SCHED_IDLE" if idle else "SCHED_OTHER", None)
    if policy is not None and hasattr(os, "sched_setscheduler"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, os.sched_param(0))


def _quiet() -> None:
    """MLflow's own logging and warnings stay out of ge's terminal."""
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    warnings.simplefilter("ignore")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    once = "--once" in args
    rest = [a for a in args if a != "--once"]
    if len(rest) != 1:
        print("usage: python -m guided_evolution.tracking.follower RUN_DIR [--once]")
        return 2
    _quiet()
    stop = threading.Event()
    if not once:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ge's Ctrl-C: this ends on stdin's EOF
        background(True)

        def wait_eof() -> None:
            with contextlib.suppress(OSError, ValueError):
                sys.stdin.buffer.read()
            stop.set()

        threading.Thread(target=wait_eof, daemon=True).start()
    try:
        return follow(Path(rest[0]), sys.stdout, stop, once)
    except Exception as err:  # never a traceback in ge's terminal
        say(sys.stdout, f"MLflow tracking stopped ({describe(err)})")
        return 1


if __name__ == "__main__":
    sys.exit(main())
