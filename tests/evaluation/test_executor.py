"""LocalExecutor: the metrics contract, cascade, timeouts, output cap, isolation, slots, GPUs."""

from __future__ import annotations

import asyncio
import math
import shlex
import socket
import sys
import textwrap
import uuid
from collections import Counter
from pathlib import Path

import pytest

from guided_evolution.errors import GeError
from guided_evolution.evaluation.contract import EvalRequest, EvalResult, read_metrics
from guided_evolution.evaluation.local import LocalExecutor
from guided_evolution.evaluation.sandbox.wrap import Sandbox
from tests.support.cli import processes_with

PY = shlex.quote(sys.executable)


def _py(script: str) -> str:
    """A shell command running a python script (the script is passed as one argument)."""
    return f"{PY} -c {shlex.quote(textwrap.dedent(script))}"


WRITE_METRICS = """
    import json, os
    json.dump({"score": 0.75, "note": "fine"}, open(os.environ["GE_METRICS"], "w"))
"""


def _request(tmp_path: Path, command: str, vid: str = "v1", **kw) -> EvalRequest:
    run_dir = tmp_path / "run"
    workdir = run_dir / "work" / vid
    workdir.mkdir(parents=True, exist_ok=True)
    fields = {
        "variant_id": vid,
        "workdir": workdir,
        "run_dir": run_dir,
        "command": command,
        "check_command": None,
        "timeout_s": 60.0,
        "check_timeout_s": 60.0,
        "metrics_path": workdir / "metrics.json",
        "log_path": run_dir / "logs" / f"{vid}.log",
        "objectives": ("score",),
        "env": {},
    }
    fields.update(kw)
    return EvalRequest(**fields)


def _evaluate(sandbox: Sandbox, *requests: EvalRequest, **kw) -> list[EvalResult]:
    async def main() -> list[EvalResult]:
        executor = LocalExecutor(
            kw.get("slots", 1), kw.get("gpus"), kw.get("slots_per_gpu"), sandbox, kill_grace_s=1.0
        )
        try:
            return list(await asyncio.gather(*(executor.evaluate(r) for r in requests)))
        finally:
            await executor.aclose()

    return asyncio.run(main())


# --------------------------------------------------------------------------- read_metrics


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"other": 1}', "metric 'score' missing"),
        ('{"score": NaN}', "metric 'score' is not finite"),
        ('{"score": Infinity}', "metric 'score' is not finite"),
        ('{"score": "0.5"}', "metric 'score' is not a number"),
        ('{"score": true}', "metric 'score' is not a number"),
    ],
)
def test_read_metrics_reasons(tmp_path: Path, content: str, reason: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(content)
    _metrics, got = read_metrics(path, ["score"])
    assert got is not None and reason in got


def test_read_metrics_ok_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    assert read_metrics(path, ["score"]) == ({}, "no metrics file written")
    path.write_text('{"score": 2, "tag": "x", "extra": NaN}')
    metrics, reason = read_metrics(path, ["score"])
    assert reason is None
    assert metrics["score"] == 2.0 and metrics["tag"] == "x" and math.isnan(metrics["extra"])


# --------------------------------------------------------------------------- evaluations


def test_ok_run_with_metrics_and_env(sandbox: Sandbox, tmp_path: Path) -> None:
    script = """
        import json, os
        keys = ("GE_VARIANT_ID", "GE_RUN_DIR", "CUDA_VISIBLE_DEVICES", "EXTRA")
        json.dump({"score": 0.5, **{k: os.environ.get(k, "<unset>") for k in keys}},
                  open(os.environ["GE_METRICS"], "w"))
        print("hello from the variant")
    """
    request = _request(tmp_path, _py(script), env={"EXTRA": "yes"})
    (result,) = _evaluate(sandbox, request)
    assert result.status == "ok", result.failure_reason
    assert result.stage == "evaluate" and result.failure_reason is None
    assert result.metrics == {
        "score": 0.5,
        "GE_VARIANT_ID": "v1",
        "GE_RUN_DIR": str(request.run_dir),
        "CUDA_VISIBLE_DEVICES": "",
        "EXTRA": "yes",
    }
    assert result.gpu is None
    assert "hello from the variant" in result.output_tail
    assert "hello from the variant" in request.log_path.read_text()


def test_missing_metrics(sandbox: Sandbox, tmp_path: Path) -> None:
    (result,) = _evaluate(sandbox, _request(tmp_path, "true"))
    assert result.status == "failed"
    assert result.failure_reason == "no metrics file written"


def test_non_zero_exit(sandbox: Sandbox, tmp_path: Path) -> None:
    (result,) = _evaluate(sandbox, _request(tmp_path, "echo boom; exit 3"))
    assert result.status == "failed"
    assert result.failure_reason == "exit code 3"
    assert "boom" in result.output_tail


def test_secret_in_request_env_is_refused(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(GeError, match="OPENAI_API_KEY"):
        _evaluate(sandbox, _request(tmp_path, "true", env={"OPENAI_API_KEY": "sk"}))


def test_timeout_kills_whole_process_group(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = f"ge-timeout-{uuid.uuid4().hex}"
    sleeper = f"{PY} -c 'import time; time.sleep(300)' {marker}"
    command = f"{sleeper} & {sleeper}; wait"
    (result,) = _evaluate(sandbox, _request(tmp_path, command, timeout_s=0.5))
    assert result.status == "failed"
    assert result.failure_reason == "timed out after 0.5 s"
    assert processes_with(marker) == []


def test_check_stage_rejects_before_training(sandbox: Sandbox, tmp_path: Path) -> None:
    request = _request(
        tmp_path,
        "touch trained.flag; " + _py(WRITE_METRICS),
        check_command="echo check says no; exit 1",
    )
    (result,) = _evaluate(sandbox, request)
    assert result.status == "failed"
    assert result.stage == "check"
    assert result.failure_reason == "exit code 1"
    assert "check says no" in result.output_tail
    assert not (request.workdir / "trained.flag").exists()


def test_check_stage_passes_then_evaluates(sandbox: Sandbox, tmp_path: Path) -> None:
    request = _request(tmp_path, _py(WRITE_METRICS), check_command="true")
    (result,) = _evaluate(sandbox, request)
    assert result.status == "ok" and result.metrics["score"] == 0.75


def test_output_flood_is_capped(sandbox: Sandbox, tmp_path: Path) -> None:
    script = """
        import sys
        line = b"x" * 1023 + b"\\n"
        for _ in range(50 * 1024):
            sys.stdout.buffer.write(line)
        sys.stdout.buffer.write(b"THE END\\n")
    """
    request = _request(tmp_path, _py(script) + "; " + _py(WRITE_METRICS))
    (result,) = _evaluate(sandbox, request)
    assert result.status == "ok", result.failure_reason
    log = request.log_path.read_bytes()
    assert len(log) <= sandbox.policy.output_cap_bytes + 200
    assert b"bytes of output omitted" in log
    assert log.rstrip().endswith(b"THE END")
    assert result.output_tail.rstrip().endswith("THE END")
    assert len(result.output_tail) <= 4096


def test_secrets_are_scrubbed(
    sandbox: Sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-must-not-leak")
    script = """
        import json, os
        leaked = [k for k, v in os.environ.items() if "sk-test" in v or k == "OPENAI_API_KEY"]
        json.dump({"score": 1, "leaked": ",".join(leaked)}, open(os.environ["GE_METRICS"], "w"))
    """
    (result,) = _evaluate(sandbox, _request(tmp_path, _py(script)))
    assert result.status == "ok", result.failure_reason
    assert result.metrics["leaked"] == ""


def test_no_network(sandbox: Sandbox, tmp_path: Path) -> None:
    if not sandbox.probe().network_isolated:
        pytest.skip(f"no network isolation here: {sandbox.probe().warning}")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    script = f"""
        import json, os, socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
            outcome = "connected"
        except OSError as exc:
            outcome = type(exc).__name__
        json.dump({{"score": 1, "outcome": outcome}}, open(os.environ["GE_METRICS"], "w"))
    """
    try:
        (result,) = _evaluate(sandbox, _request(tmp_path, _py(script)))
    finally:
        server.close()
    assert result.status == "ok", result.failure_reason
    assert result.metrics["outcome"] != "connected"


def test_cannot_write_outside_its_dir(sandbox: Sandbox, tmp_path: Path) -> None:
    if not sandbox.probe().isolation.contained["filesystem"]:
        pytest.skip(
            f"no sandbox here keeps writes in the variant's directory: {sandbox.probe().warning}"
        )
    repo = tmp_path / "repo.git"
    repo.mkdir()
    (repo / "HEAD").write_text("ref: refs/heads/seed\n")
    request = _request(tmp_path, "")
    (request.run_dir / "index.sqlite").write_text("index")
    script = f"""
        import json, os, shutil
        done = []
        for victim in ({str(repo / "HEAD")!r}, {str(request.run_dir / "index.sqlite")!r}):
            try:
                open(victim, "w").write("pwned")
                done.append("wrote " + victim)
            except OSError:
                pass
        shutil.rmtree({str(repo)!r}, ignore_errors=True)
        json.dump({{"score": 1, "done": ";".join(done)}}, open(os.environ["GE_METRICS"], "w"))
    """
    request = _request(tmp_path, _py(script))
    (result,) = _evaluate(sandbox, request)
    assert result.status == "ok", result.failure_reason
    assert result.metrics["done"] == ""
    assert (repo / "HEAD").read_text() == "ref: refs/heads/seed\n"
    assert (request.run_dir / "index.sqlite").read_text() == "index"


def test_daemon_does_not_survive(sandbox: Sandbox, tmp_path: Path) -> None:
    marker = f"ge-daemon-{uuid.uuid4().hex}"
    script = f"""
        import json, os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                devnull = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(devnull, fd)
                os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(300)", {marker!r}])
            os._exit(0)
        os.wait()
        json.dump({{"score": 1}}, open(os.environ["GE_METRICS"], "w"))
    """
    (result,) = _evaluate(sandbox, _request(tmp_path, _py(script)))
    assert result.status == "ok", result.failure_reason
    assert processes_with(marker) == []


HOLD = """
    import json, os, time
    start = time.time()
    time.sleep(0.6)
    json.dump({"score": 1, "start": start, "end": time.time(),
               "gpu": os.environ["CUDA_VISIBLE_DEVICES"],
               "order": os.environ.get("CUDA_DEVICE_ORDER", "<unset>")}, open(os.environ["GE_METRICS"], "w"))
"""


def _max_overlap(results: list[EvalResult]) -> int:
    events = sorted(
        [(r.metrics["start"], 1) for r in results] + [(r.metrics["end"], -1) for r in results]
    )
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def test_concurrency_equals_slots(sandbox: Sandbox, tmp_path: Path) -> None:
    requests = [_request(tmp_path, _py(HOLD), vid=f"v{i}") for i in range(5)]
    results = _evaluate(sandbox, *requests, slots=2)
    assert all(r.status == "ok" for r in results), [r.failure_reason for r in results]
    assert _max_overlap(results) == 2


def test_gpu_round_robin(sandbox: Sandbox, tmp_path: Path) -> None:
    requests = [_request(tmp_path, _py(HOLD), vid=f"v{i}") for i in range(4)]
    results = _evaluate(sandbox, *requests, slots=4, gpus=["0", "1"], slots_per_gpu=2)
    assert all(r.status == "ok" for r in results), [r.failure_reason for r in results]
    assert Counter(r.metrics["gpu"] for r in results) == {"0": 2, "1": 2}
    assert all(r.gpu == r.metrics["gpu"] for r in results)
    # The ids are nvidia-smi's, which count in PCI bus order; CUDA must count the same way.
    assert {r.metrics["order"] for r in results} == {"PCI_BUS_ID"}


def test_slots_beyond_gpu_capacity_is_a_user_error(sandbox: Sandbox) -> None:
    with pytest.raises(GeError, match="slots"):
        LocalExecutor(5, ["0", "1"], 2, sandbox)
    executor = LocalExecutor(3, ["0", "1"], None, sandbox)
    assert [s.gpu for s in executor.slots] == ["0", "1", "0"]
