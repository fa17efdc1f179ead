"""`ge serve` over HTTP: the view data match `ge report`'s and `ge best`'s, the points travel
once, variant-written text stays inert, and the server never writes to a run, never holds its
lock nor a read transaction, and answers only its own host (or the token)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from guided_evolution.inspection.report_data import collect
from guided_evolution.inspection.views_data import best
from guided_evolution.llm.records import CallRecord
from guided_evolution.runstore.records import META_FINISHED, EvaluationRecord, ReflectionRecord
from guided_evolution.runstore.run_index import RunIndex
from guided_evolution.runstore.rundir import RunLock
from guided_evolution.serve.live import CHECK_S, LOCK_CHECK_S
from guided_evolution.serve.runs import target_of
from guided_evolution.serve.server import encode, make_server

PAYLOAD = (
    "</script><script>document.body.dataset.pwned='1'</script>"
    "<img src=x onerror=\"document.body.dataset.pwned='2'\">\x1b]0;pwned\x07\u202e"
)


class Served:
    """A `ge serve` server in a thread; `get` returns (status, headers, body)."""

    def __init__(self, path: Path, host: str = "127.0.0.1", token: str | None = None) -> None:
        self.server = make_server(target_of(path), host, 0, token)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()

    def get(self, path: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, headers={"Host": f"127.0.0.1:{self.port}", **(headers or {})})
            reply = conn.getresponse()
            return reply.status, dict(reply.getheaders()), reply.read()
        finally:
            conn.close()

    def json(self, path: str) -> dict:
        status, headers, body = self.get(path)
        assert status == 200 and headers["Content-Type"] == "application/json", body[:300]
        return json.loads(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture()
def served(template_run: Path, copy_run) -> Iterator[Served]:
    s = Served(copy_run(template_run))
    yield s
    s.close()


def _files(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every file's size, time and hash; of SQLite's shared-memory file (where every WAL reader,
    `ge status` too, records its read mark) the size only."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            if path.name.endswith("-shm"):
                out[str(path.relative_to(root))] = (st.st_size, 0, "")
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns, digest)
    return out


# --------------------------------------------------------------------------- the data


def test_live_view_is_the_reports_data(served: Served, template_run: Path) -> None:
    status, headers, _ = served.get("/")
    assert status == 302 and headers["Location"] == "/run/run"
    status, headers, page = served.get("/run/run")
    assert status == 200 and b"<script src=\"/static/app.js\"" in page
    assert "script-src 'self'" in headers["Content-Security-Policy"] and headers["X-Content-Type-Options"] == "nosniff"
    view = served.json("/api/run/run/live")
    report = collect(template_run)
    points = {p[0]: p for p in view["points"] if p[1] is not None}
    assert set(points) == {p.id for p in report.points}
    for p in report.points:
        assert points[p.id][1:] == [p.generation, p.operator, [p.scores[n] for n in view["selected"]]]
    front = best(template_run).front
    assert view["front_size"] == len(front) and {f["id"] for f in view["front"]} <= {r.id for r in front}
    assert view["state"]["state"] == "finished" and view["state"]["stop_reason"] == report.state.removeprefix("finished: ")
    assert view["counts"]["evaluated"] == report.counts["evaluated"]
    assert view["isolation"] == report.isolation.isolation
    assert view["failures"] == [g.to_json() for g in report.failures]
    assert view["progress"][-1]["best"] == report.progress[-1].best


def test_a_stopped_run_says_why_and_how_to_go_on(template_run: Path, copy_run) -> None:
    run = copy_run(template_run)
    with sqlite3.connect(run / "index.sqlite") as conn:
        conn.execute("DELETE FROM meta WHERE key = ?", (META_FINISHED,))
    index = RunIndex.open(run / "index.sqlite")
    try:
        index.add_event("run_interrupted", {"generation": 1})
    finally:
        index.close()
    s = Served(run)
    try:
        state = s.json("/api/run/run/live")["state"]
        assert state == {
            "state": "stopped",
            "pid": None,
            "stop_reason": "interrupted (Ctrl-C) in generation 1",
            "fix": f"continue with `ge resume {run.resolve()}`",
        }
    finally:
        s.close()


def test_points_travel_once(served: Served) -> None:
    first = served.json("/api/run/run/live")
    assert first["reset"] and first["cursor"] == len(first["points"]) > 0
    again = served.json(f"/api/run/run/live?epoch={first['epoch']}&cursor={first['cursor']}")
    assert not again["reset"] and again["points"] == [] and again["progress"] == []
    assert again["front"] == first["front"]
    other = served.json(f"/api/run/run/live?epoch=another.1&cursor={first['cursor']}")
    assert other["reset"] and other["points"] == first["points"], "another epoch: everything again"
    beyond = served.json(f"/api/run/run/live?epoch={first['epoch']}&cursor=99999")
    assert beyond["reset"] and len(beyond["points"]) == first["cursor"]


def test_variant_shows_diffs_against_parents_and_seed_and_lineage(served: Served) -> None:
    view = served.json("/api/run/run/live")
    child = next(p[0] for p in view["points"] if p[0] != view["seed"])
    shown = served.json(f"/api/run/run/variant/{child}")
    v = shown["variant"]
    assert v["id"] == child and v["parents"] and "metrics" in v and "prompt" in v and "reply" in v
    labels = [d["label"] for d in shown["diffs"]]
    assert labels[: len(v["parents"])] == [f"against parent {p}" for p in v["parents"]]
    if view["seed"] not in v["parents"]:
        assert labels[-1] == "against the seed"
    assert all(d["diff"].startswith("diff --git") for d in shown["diffs"])
    assert shown["lineage"]["nodes"][0]["id"] == child and shown["lineage"]["seed"] == view["seed"]
    status, _, body = served.get("/api/run/run/variant/nosuchvariant")
    assert status == 404 and json.loads(body)["error"].startswith("no variant 'nosuchvariant' in this run")
    status, _, body = served.get("/api/run/other/live")
    assert status == 404 and "no run 'other'" in json.loads(body)["error"]


def test_targets(template_run: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    shutil.copytree(template_run, runs / "r1")
    (runs / "latest").write_text("r1")  # `latest` may be a file naming the run
    assert target_of(runs / "latest") == target_of(runs / "r1")
    assert target_of(runs / "r1").single and not target_of(runs).single
    assert list(target_of(runs).runs()) == ["r1"]


def test_runs_of_a_directory(template_run: Path, tmp_path: Path) -> None:
    shutil.copytree(template_run, tmp_path / "runs" / "a")
    shutil.copytree(template_run, tmp_path / "runs" / "b")
    (tmp_path / "runs" / "notes").mkdir()
    broken = shutil.copytree(template_run, tmp_path / "runs" / "c")
    (broken / "config.json").write_text("{")
    s = Served(tmp_path / "runs")
    try:
        status, _, page = s.get("/")
        assert status == 200 and b"app.js" in page
        listing = s.json("/api/runs")
        assert [r["name"] for r in listing["runs"]] == ["c", "b", "a"]
        assert listing["runs"][0]["error"].startswith("the run's frozen config is damaged")
        assert all(r["state"]["state"] == "finished" for r in listing["runs"][1:])
        assert listing["runs"][1]["counts"]["evaluated"] == s.json("/api/run/b/live")["counts"]["evaluated"]
        assert s.json("/api/run/a/live")["run"] == "a"
    finally:
        s.close()


# --------------------------------------------------------------------------- read-only, never blocking


@pytest.mark.parametrize("closed", [False, True], ids=["wal", "checkpointed"])
def test_never_writes_never_locks_never_holds_a_read(template_run: Path, copy_run, closed: bool) -> None:
    """Every file of the run keeps its bytes and time (the -shm: its size; SQLite's shared memory
    of read marks). A run whose index has no -wal and -shm (checkpointed and closed) gets them
    empty, as from any reader (`ge status` too): SQLite creates them to read a WAL database."""
    run = copy_run(template_run)
    if closed:
        conn = sqlite3.connect(run / "index.sqlite")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()  # the last connection: SQLite removes the -wal and -shm
        assert not (run / "index.sqlite-wal").exists()
    before = _files(run)
    s = Served(run)
    try:
        view = s.json("/api/run/run/live")
        for vid in [p[0] for p in view["points"]][:3]:
            s.json(f"/api/run/run/variant/{vid}")
        s.json(f"/api/run/run/live?epoch={view['epoch']}&cursor=0")
        s.json("/api/runs")
        assert s.get("/api/run/run/live", method="POST")[0] == 405
        after = _files(run)
        created = {k: after.pop(k) for k in set(after) - set(before)}
        assert after == before, "nothing written"
        assert set(created) <= {"index.sqlite-wal", "index.sqlite-shm"} and created.get("index.sqlite-wal", (0,))[0] == 0
        assert created == {} or closed, "nothing created (no -wal, -shm, lock)"
        # a writer still checkpoints the whole WAL: no reader holds a snapshot between requests
        with sqlite3.connect(run / "index.sqlite") as conn:
            busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert busy == 0
    finally:
        s.close()


def test_no_lock_is_tried(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """Not even a shared lock for an instant (`doctor.lock_holder`'s way), which would make a
    `ge resume` starting in that instant fail: the lock table is read instead."""
    import fcntl

    calls: list[object] = []
    monkeypatch.setattr(fcntl, "flock", lambda *a: calls.append(a))
    monkeypatch.setattr(fcntl, "lockf", lambda *a: calls.append(a))
    view = served.json("/api/run/run/live")
    served.json("/api/runs")
    served.json(f"/api/run/run/variant/{view['points'][0][0]}")
    assert view["state"]["state"] == "finished" and calls == []


def test_a_live_writer_is_seen_and_never_blocked(template_run: Path, copy_run) -> None:
    run = copy_run(template_run)
    s = Served(run)
    try:
        with RunLock(run):
            view = s.json("/api/run/run/live")
            assert view["state"]["state"] == "live" and view["state"]["pid"] == str(os.getpid())
            index = RunIndex.open(run / "index.sqlite")
            try:  # a write transaction under way: the server still answers, from the last commit
                with index.transaction():
                    index.add_event("proposal_rejected", {"operator": "mutation", "reason": "held"})
                    assert s.json("/api/run/run/live")["failures"] == view["failures"]
            finally:
                index.close()
            time.sleep(CHECK_S + 0.1)
            later = s.json("/api/run/run/live")
            assert any(f["reason"] == "held" for f in later["failures"]) and later["version"] > view["version"]
            # the lock stays the writer's alone: a second locker fails, the server took nothing
            with pytest.raises(Exception, match="in use by another ge process"), RunLock(run):
                pass
        time.sleep(LOCK_CHECK_S + 0.1)
        assert s.json("/api/run/run/live")["state"]["state"] == "finished"
    finally:
        s.close()


# --------------------------------------------------------------------------- hostile text


def make_hostile(run: Path) -> str:
    """Make the run's best variant's text (LLM reply, persona, reflection, feedback, a metric's
    name, the output) and a rejected proposal's reason and the isolation record carry script
    and escapes; the variant's id."""
    front = best(run).front[0].id
    index = RunIndex.open(run / "index.sqlite")
    try:
        v = index.get_variant(front)
        call = index.record_call(CallRecord("mutation", "m", [{"role": "user", "content": PAYLOAD}], reply=PAYLOAD))
        v.llm_call_id, v.persona, v.eot_reflection = call, PAYLOAD, PAYLOAD
        index.add_variant(v, replace=True)
        index.add_reflection(ReflectionRecord(front, PAYLOAD, elite_id=None))
        ev = index.latest_evaluation(front)
        metrics = {**ev.metrics, PAYLOAD: float("nan"), "note": PAYLOAD}
        index.add_evaluation(EvaluationRecord(front, "ok", metrics=metrics, output_tail=PAYLOAD, feedback=PAYLOAD))
        index.add_event("proposal_rejected", {"operator": "mutation", "reason": PAYLOAD})
        index.add_event("isolation", {k: PAYLOAD for k in ("backend", "filesystem", "network")} | {"layers": [PAYLOAD]})
    finally:
        index.close()
    return front


@pytest.fixture()
def hostile(template_run: Path, copy_run) -> Path:
    run = copy_run(template_run)
    make_hostile(run)
    return run


def _strings(data: object) -> set[str]:
    if isinstance(data, str):
        return {data}
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else []
    return set().union(*([{str(k)} | _strings(v) for k, v in items] or [set()]))


def test_hostile_text_is_inert_json(hostile: Path) -> None:
    s = Served(hostile)
    try:
        front = best(hostile).front[0].id
        for path in ("/api/run/run/live", f"/api/run/run/variant/{front}", "/api/runs"):
            status, _, body = s.get(path)
            assert status == 200
            assert not set(body) & set(b"<>&") and max(body) < 128, "ASCII, no markup character"
            data = json.loads(body)
            assert PAYLOAD in _strings(data) or path == "/api/runs", "the text itself arrives intact"
        shown = s.json(f"/api/run/run/variant/{front}")["variant"]
        assert shown["reply"] == PAYLOAD and shown["feedback"] == PAYLOAD and shown["metrics"][PAYLOAD] == "nan"
    finally:
        s.close()


def test_encode_writes_valid_json_for_non_finite_numbers() -> None:
    text = encode({"a": float("nan"), "b": [float("inf")], "c": "<&>"}).decode()
    assert json.loads(text) == {"a": "nan", "b": ["inf"], "c": "<&>"} and "<" not in text


# --------------------------------------------------------------------------- access


def test_other_hosts_are_refused_and_a_token_is_required_beyond_loopback(served: Served, template_run: Path, copy_run) -> None:
    status, _, body = served.get("/api/run/run/live", headers={"Host": "evil.example:80"})
    assert status == 403 and b"127.0.0.1" in body
    s = Served(template_run, token="t0ken")
    try:
        assert s.get("/api/run/run/live")[0] == 401
        assert s.get("/api/run/run/live", headers={"Cookie": "ge_serve_token=wrong"})[0] == 401
        status, headers, _ = s.get("/run/run?token=t0ken")
        assert status == 303 and headers["Location"] == "/run/run" and "HttpOnly" in headers["Set-Cookie"]
        assert s.get("/api/run/run/live", headers={"Cookie": "ge_serve_token=t0ken", "Host": "any:1"})[0] == 200
    finally:
        s.close()


def _serve_cli(*args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LITELLM_OFFLINE_MODE": "true"}
    return subprocess.Popen([sys.executable, "-m", "guided_evolution.serve", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def test_command_prints_its_address_inert_and_warns_beyond_loopback(template_run: Path, tmp_path: Path) -> None:
    odd = Path(shutil.copytree(template_run, tmp_path / "run\x1b]0;pwned\x07"))
    proc = _serve_cli(str(odd), "--port", "0", cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ge serve: run ") and "\x1b" not in line and "\\x1b]0;pwned\\x07" in line
        assert "http://127.0.0.1:" in line and "token" not in line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    proc = _serve_cli(str(template_run), "--host", "0.0.0.0", "--port", "0", cwd=tmp_path)
    try:
        line = proc.stdout.readline()
        assert "?token=" in line
        assert proc.stderr.readline().startswith("warning: --host 0.0.0.0 is not the loopback interface")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nowhere"], "error: nowhere does not exist (pass a run directory"),
        (["RUN", "--port", "70000"], "error: --port 70000 is not a port"),
        (["RUN", "--host", "no.such.host.invalid"], "error: cannot listen on no.such.host.invalid:"),
    ],
)
def test_command_errors_are_one_line(template_run: Path, tmp_path: Path, args: list[str], expected: str) -> None:
    args = [str(template_run) if a == "RUN" else a for a in args]
    proc = _serve_cli(*args, cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and err.startswith(expected) and err.count("\n") == 1, err
    assert "Traceback" not in err and out == ""


def test_a_port_in_use_is_one_line(template_run: Path, tmp_path: Path) -> None:
    s = Served(template_run)
    try:
        proc = _serve_cli(str(template_run), "--port", str(s.port), cwd=tmp_path)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and err == f"error: port {s.port} is in use (pass --port 0 for any free port, or another --port)\n"
    finally:
        s.close()
