"""A real single-node SLURM cluster for tests: slurmctld + slurmd under a temporary directory.

No munge (auth/none), no systemd, no accounting database. ``start_cluster`` returns a handle whose
``env`` (``SLURM_CONF``) every client command needs; ``stop`` cancels the jobs and kills both
daemons. The daemons die with the process that started them (PR_SET_PDEATHSIG), so a killed test
run leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DAEMONS = ("slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "scontrol", "sinfo")
_PR_SET_PDEATHSIG = 1


class ClusterUnavailable(Exception):
    """SLURM cannot run here; the message says why (tests skip with it)."""


@dataclass
class SlurmCluster:
    """A running test cluster."""

    root: Path
    conf: Path
    node: str
    partition: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The environment client commands need."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client command against this cluster; its stdout."""
        proc = subprocess.run(
            list(argv),
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
        return proc.stdout

    def jobs(self, name_prefix: str = "") -> list[tuple[str, str, str, str]]:
        """(id, name, state, reason) of the jobs still in the queue (pending or running)."""
        out = self.run("squeue", "-h", "-o", "%i|%j|%T|%r")
        rows = [tuple(line.split("|", 3)) for line in out.splitlines() if line.strip()]
        return [r for r in rows if len(r) == 4 and r[1].startswith(name_prefix)]  # type: ignore[misc]

    def log_tail(self, lines: int = 30) -> str:
        """The end of both daemon logs (for failure messages)."""
        parts = []
        for name in DAEMONS:
            path = self.root / f"{name}.log"
            if path.exists():
                text = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}.log\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel every job, then kill the daemons (by the pids this handle started)."""
        with contextlib.suppress(Exception):
            self.run("scancel", "--user", str(os.getuid()), check=False, timeout=10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.jobs():
                time.sleep(0.2)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        _kill_job_leftovers(self.conf)
        shutil.rmtree(self.root, ignore_errors=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _kill_job_leftovers(conf: Path) -> None:
    """Kill processes of this cluster's jobs that outlived the daemons (their env names the conf)."""
    marker = f"SLURM_CONF={conf}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if marker in fh.read().split(b"\0"):
                    os.kill(int(entry), signal.SIGKILL)
        except OSError:
            continue


def write_conf(root: Path, node: str, cpus: int, partition: str) -> Path:
    """A minimal slurm.conf: no munge, no cgroups, no accounting, scheduling without delay.

    Two partitions on the one node: ``partition`` (no time limit) and ``short`` (1 minute).
    """
    ctld_port, node_port = _free_port(), _free_port()
    user = "root" if os.getuid() == 0 else os.environ.get("USER") or str(os.getuid())
    lines = [
        "ClusterName=getest",
        f"SlurmctldHost={node}",
        f"SlurmUser={user}",
        f"SlurmdUser={user}",
        "AuthType=auth/none",
        "CredType=cred/none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
        "SlurmdParameters=config_overrides",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "KillWait=2",
        "MinJobAge=300",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={node_port}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        f"NodeName={node} CPUs={cpus} State=UNKNOWN",
        f"PartitionName={partition} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        f"PartitionName=short Nodes={node} MaxTime=1 State=UP",
    ]
    (root / "state").mkdir(parents=True, exist_ok=True)
    (root / "spool").mkdir(parents=True, exist_ok=True)
    conf = root / "slurm.conf"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_cluster(root: Path, *, cpus: int = 8, ready_timeout_s: float = 20.0) -> SlurmCluster:
    """Start slurmctld and slurmd under ``root`` and wait until the node is idle.

    Raises ClusterUnavailable (with the reason) where SLURM is not installed or will not start.
    """
    missing = [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name) is None]
    if missing:
        raise ClusterUnavailable(
            f"SLURM is not installed ({', '.join(missing)} missing): "
            "apt-get install slurmctld slurmd slurm-client"
        )
    node = socket.gethostname().split(".")[0]
    root.mkdir(parents=True, exist_ok=True)
    conf = write_conf(root, node, cpus, "debug")
    cluster = SlurmCluster(root=root, conf=conf, node=node, partition="debug")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    try:
        for argv in (
            [shutil.which("slurmctld") or "slurmctld", "-D", "-c", "-f", str(conf)],
            [shutil.which("slurmd") or "slurmd", "-D", "-f", str(conf)],
        ):
            log = open(root / f"{Path(argv[0]).name}.stderr", "wb")  # noqa: SIM115
            cluster.procs.append(
                subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                )
            )
            log.close()
        deadline = time.monotonic() + ready_timeout_s
        state = ""
        while time.monotonic() < deadline:
            for proc in cluster.procs:
                if proc.poll() is not None:
                    raise ClusterUnavailable(
                        f"{proc.args[0]} exited with {proc.returncode}\n{cluster.log_tail()}"
                    )
            out = cluster.run("sinfo", "-h", "-n", node, "-o", "%T", check=False, timeout=5)
            state = out.strip()
            if state in ("idle", "mixed", "allocated"):
                return cluster
            time.sleep(0.2)
        raise ClusterUnavailable(
            f"the SLURM node did not become idle within {ready_timeout_s:g} s "
            f"(state {state!r})\n{cluster.log_tail()}"
        )
    except BaseException:
        cluster.stop()
        raise


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A running single-node cluster for the whole session, with SLURM_CONF exported.

    Skips (with the reason) where SLURM cannot start; always kills the daemons afterwards.
    """
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"))
    except ClusterUnavailable as exc:
        pytest.skip(f"no SLURM cluster: {exc}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous
