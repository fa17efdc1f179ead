"""The threats of the hostile-variant suite (``test_sandbox_threats.py``): payloads and their scene.

``Scene`` makes what the variants attack (a home with credentials, owner-only files, a
world-writable directory); ``Listeners`` are the host's TCP, UDP and unix servers they try to
reach; ``payload`` is the code of one threat. ``THREATS`` are evaluated side by side in one run;
``SEQUENCES`` are runs of one slot where a victim evaluated after each attack (and a witness
before them) shows what the attack left for later variants of the slot.

Each payload is evaluate-stage code appended to the template seed's ``model.py``: it attacks at import
and prints one line ``RESULT <threat> <verdict> <notes>`` to its log. The verdict is the inside
view: ``ESCAPED`` / ``CONTAINED`` where the variant can tell for sure (the real file opened for
writing, a connection accepted by a listener no sandbox could host), ``TRIED`` where only the
host can tell (a write that may have landed in a private /tmp, a datagram, a daemon); ``ERROR``
when the payload itself broke. The parameters (paths, ports, the secrets' marker) come as JSON.
Attacks that would wreck the control run (``sandbox = "none"``) prove the right first and undo
it: SIGSTOP then SIGCONT before any SIGKILL, reads of ge's memory before PTRACE_SEIZE, opens of
the run's files for writing without writing.
"""

from __future__ import annotations

import json
import platform
import secrets
import selectors
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.reliability.support import evaluate_stage_only, tree_digest

THREATS = (
    "tmp-write", "home-write", "run-dir-write", "run-dir-read", "seed-write",
    "world-writable-write", "env-secrets", "parent-environ", "home-secrets", "tcp", "udp",
    "owner-only-read", "unix-abstract", "unix-path", "unix-path-owner", "daemon",
    "daemon-env-i", "signal-ge", "ptrace-ge", "metrics-symlink", "metrics-hardlink",
    "metrics-fifo", "inherited-fds", "umount-proc", "setns-net", "interpreter-write",
    "keyring", "unix-path-srv", "unix-path-var-lib", "escape-seq-metrics", "escape-seq-output",
)  # fmt: skip
SEQUENCES = {
    "poison": ("witness", "disk-fill", "victim-disk", "worker-poison", "victim-poison"),
    "chain": ("survivor-chain", "victim-chain", "io-jam", "victim-jam"),
}
"""`ge run`s of one slot, each evaluated in this order: an attack, then the variant it must not
reach (and a witness first, with the limits and priorities a variant normally gets).
``witness`` and ``victim-*`` report what they found (``STATE {...}``). Two runs, as a poisoned
worker (nice, SCHED_BATCH) starves the chains and a jammed slot fails every later variant."""
SEQUENCE_THREATS = ("worker-poison", "survivor-chain", "io-jam", "disk-fill")
ALL_THREATS = THREATS + SEQUENCE_THREATS
HOSTILE_TEXT = "\x1b]52;c;cHduZWQ=\x07\x1b]0;ge-pwned-{0}\x07\x1b[2J\x9b31m\x9d\u202eevil-{0}"
"""Terminal escapes a variant writes (OSC 52 clipboard, window title, screen clear, C1 CSI and
OSC, a right-to-left override); ``{0}`` tells which payload wrote them."""
SERVICE_PARENTS = {"unix-path-srv": "/srv", "unix-path-var-lib": "/var/lib"}
"""Where services keep path-named sockets outside /run, /var/run, /var/tmp and /tmp."""
DISK_MB = 256
"""What disk-fill writes (in 4 MB steps): the test sets ge's disk floor closer than this."""
SYSCALLS = {
    "x86_64": {"add_key": 248, "keyctl": 250, "ioprio_set": 251, "ioprio_get": 252},
    "aarch64": {"add_key": 217, "keyctl": 219, "ioprio_set": 30, "ioprio_get": 31},
}

_PRELUDE = """
def _ge_threat():
    import ctypes, json, os, signal, socket, sys, time
    P = json.loads(_GE_PARAMS)
    notes = []
    verdict = "TRIED"

    def attempt(what, fn):
        try:
            out = fn()
        except OSError as e:
            notes.append(f"{what}: blocked ({e.strerror or e})")
            return False
        notes.append(f"{what}: done" + ("" if out is None else f" ({out})"))
        return True

    def ge_pids():
        seen, pid = set(), os.getpid()
        while pid > 1 and pid not in seen:
            seen.add(pid)
            try:
                pid = int(open(f"/proc/{pid}/status").read().split("PPid:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                break
        found = []
        for pid in sorted(seen | {int(e) for e in os.listdir("/proc") if e.isdigit()}):
            try:
                cmd = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if b"guided_evolution\\0run\\0" in cmd and P["run"].encode() in cmd:  # ge, not a launcher
                found.append(pid)
        return found
"""
_EPILOGUE = """
    return verdict, notes
try:
    _ge_v, _ge_n = _ge_threat()
except BaseException as _ge_e:
    _ge_v, _ge_n = "ERROR", [repr(_ge_e)]
print("RESULT", _GE_NAME, _ge_v, " | ".join(_ge_n).replace("\\n", " "), flush=True)
"""
_BODIES = {
    "tmp-write": """
for d in ("/tmp", "/dev/shm"):
    p = os.path.join(d, "ge-threat-" + P["tag"])
    attempt("write " + p, lambda: open(p, "w").write("pwned"))
""",
    "home-write": """
h = P["home"]
attempt("create ~/pwned", lambda: open(os.path.join(h, "pwned"), "w").write("x"))
attempt("append ~/notes.txt", lambda: open(os.path.join(h, "notes.txt"), "a").write("pwned"))
attempt("delete ~/victim.txt", lambda: os.unlink(os.path.join(h, "victim.txt")))
""",
    "run-dir-write": """
r, hits = os.environ["GE_RUN_DIR"], []
for name in ("index.sqlite", "config.json", "lock"):
    p = os.path.join(r, name)  # O_APPEND without O_CREAT: success means the real file is writable
    hits.append(attempt("open " + p + " for writing", lambda: os.close(os.open(p, os.O_WRONLY | os.O_APPEND))))
probe = os.path.join(r, "repo.git", "objects", "ge-threat-probe")
if os.path.isdir(os.path.dirname(probe)):
    hits.append(attempt("create " + probe, lambda: (open(probe, "w").close(), os.unlink(probe)) and None))
verdict = "ESCAPED" if any(hits) else "CONTAINED"
""",
    "run-dir-read": """
r = os.environ["GE_RUN_DIR"]
hits = [attempt("read " + n, lambda: len(open(os.path.join(r, n), "rb").read(64))) for n in ("index.sqlite", "config.json")]
verdict = "ESCAPED" if any(hits) else "CONTAINED"
""",
    "seed-write": """
s = os.environ.get("GE_SEED_DIR") or P["seed"]
attempt("append evaluate.py", lambda: open(os.path.join(s, "evaluate.py"), "a").write("# pwned"))
attempt("create pwned.py", lambda: open(os.path.join(s, "pwned.py"), "w").write("x"))
""",
    "world-writable-write": """
d = P["shared"]
attempt("append canary.txt (0666)", lambda: open(os.path.join(d, "canary.txt"), "a").write("pwned"))
attempt("create in drop/ (1777)", lambda: open(os.path.join(d, "drop", "pwned"), "w").write("x"))
""",
    "env-secrets": """
found = sorted(k for k, v in os.environ.items() if P["secret"] in v)
notes.append(f"secret variables: {found}")
verdict = "ESCAPED" if found else "CONTAINED"
""",
    "parent-environ": """
found, pid = [], os.getpid()
while pid > 1:  # up the PPid chain to ge, then every process
    try:
        pid = int(open(f"/proc/{pid}/status").read().split("PPid:")[1].split()[0])
    except (OSError, IndexError, ValueError):
        break
    notes.append(f"ancestor {pid}")
for e in [str(pid)] + [e for e in os.listdir("/proc") if e.isdigit()]:
    try:
        if P["secret"].encode() in open(f"/proc/{e}/environ", "rb").read():
            found.append(int(e))
    except OSError:
        pass
notes.append(f"environ with a secret: pids {sorted(set(found))}")
verdict = "ESCAPED" if found else "CONTAINED"
""",
    "home-secrets": """
found = []
for rel in (".netrc", ".ssh/id_rsa", ".aws/credentials"):
    for p in (os.path.join(P["home"], rel), os.path.expanduser("~/" + rel)):
        try:
            if P["secret"] in open(p).read():
                found.append(p)
        except OSError as e:
            notes.append(f"{p}: {e.strerror}")
notes.append(f"read: {found}")
verdict = "ESCAPED" if found else "CONTAINED"
""",
    "tcp": """
def go():
    c = socket.create_connection(("127.0.0.1", P["tcp"]), timeout=3)
    c.sendall(P["tag"].encode())
    c.close()
verdict = "ESCAPED" if attempt("connect 127.0.0.1", go) else "CONTAINED"
""",
    "udp": """
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(3):
    attempt("sendto 127.0.0.1", lambda: u.sendto(P["tag"].encode(), ("127.0.0.1", P["udp"])))
""",
    "owner-only-read": """
def go():
    return "stolen" in open(P["owner_only"]).read() or None
verdict = "ESCAPED" if attempt("read " + P["owner_only"] + " (0600, ge's user)", go) else "CONTAINED"
""",
    "unix-abstract": """
def go():
    c = socket.socket(socket.AF_UNIX)
    c.connect("\\0" + P["abstract"])
    c.sendall(P["tag"].encode())
    c.close()
verdict = "ESCAPED" if attempt("connect @" + P["abstract"], go) else "CONTAINED"
""",
    "unix-path": """
def go():
    c = socket.socket(socket.AF_UNIX)
    c.connect(os.path.join(P["shared"], "s"))
    c.sendall(P["tag"].encode())
    c.close()
verdict = "ESCAPED" if attempt("connect " + P["shared"] + "/s", go) else "CONTAINED"
""",
    "unix-path-owner": """
def go():  # 0600, ge's user's: like docker.sock, an ssh-agent or the user's D-Bus socket
    c = socket.socket(socket.AF_UNIX)
    c.connect(os.path.join(P["shared"], "owner"))
    c.sendall(P["tag"].encode())
    c.close()
verdict = "ESCAPED" if attempt("connect " + P["shared"] + "/owner", go) else "CONTAINED"
""",
    "daemon": """
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        fd = os.open(os.devnull, os.O_RDWR)
        for n in (0, 1, 2):
            os.dup2(fd, n)
        os.execv(sys.executable, [sys.executable, "-c", "import time; time.sleep(120)", P["stray"] + "-daemon"])
    os._exit(0)
os.wait()
notes.append("double fork + setsid")
""",
    "daemon-env-i": """
import subprocess
cmd = ["env", "-i", "setsid", "-f", sys.executable, "-c", "import time; time.sleep(120)", P["stray"] + "-envi"]
attempt("env -i setsid -f", lambda: subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode)
""",
    "signal-ge": """
pids = ge_pids()
notes.append(f"ge pids seen: {pids}")
verdict = "CONTAINED"
for pid in pids:  # SIGSTOP proves the right (and is undone); SIGKILL only where it was refused
    if attempt(f"SIGSTOP {pid}", lambda: os.kill(pid, signal.SIGSTOP)):
        time.sleep(0.2)
        attempt("state", lambda: open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0])
        attempt(f"SIGCONT {pid}", lambda: os.kill(pid, signal.SIGCONT))
        verdict = "ESCAPED"
    elif attempt(f"SIGKILL {pid}", lambda: os.kill(pid, signal.SIGKILL)):
        verdict = "ESCAPED"
""",
    "ptrace-ge": """
def peek(pid):
    start = int(open(f"/proc/{pid}/maps").readline().split("-")[0], 16)
    with open(f"/proc/{pid}/mem", "rb") as m:
        m.seek(start)
        return f"{len(m.read(64))} bytes of ge's memory"
def seize(pid):  # PTRACE_SEIZE does not stop ge; the tracer's exit detaches
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(0x4206, pid, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
pids = ge_pids()
notes.append(f"ge pids seen: {pids}")
verdict = "CONTAINED"
for pid in pids:
    if attempt(f"read /proc/{pid}/mem", lambda: peek(pid)) or attempt(f"PTRACE_SEIZE {pid}", lambda: seize(pid)):
        verdict = "ESCAPED"
""",
    "umount-proc": """
libc = ctypes.CDLL(None, use_errno=True)
# The attack pass on `unshare` as root detached /proc to reach the host's. Prove the right without
# using it (the control run shares ge's mount namespace): MNT_EXPIRE|MNT_DETACH is refused with
# EPERM without the right and with EINVAL, after the permission check, with it.
r = libc.umount2(b"/proc", 4 | 2)
err = ctypes.get_errno() if r != 0 else 0
notes.append(f"umount2 /proc (probe): {os.strerror(err) if err else 'allowed'}")
verdict = "CONTAINED" if err in (1, 13) else "ESCAPED"
""",
    "setns-net": """
libc = ctypes.CDLL(None, use_errno=True)
joined = []
for e in [e for e in os.listdir("/proc") if e.isdigit()]:
    try:
        fd = os.open(f"/proc/{e}/ns/net", os.O_RDONLY)
    except OSError:
        continue
    if libc.setns(fd, 0x40000000) == 0:
        joined.append(int(e))
        os.close(fd)
        break
    os.close(fd)
notes.append(f"joined the network namespace of: {joined}")
def go():
    c = socket.create_connection(("127.0.0.1", P["tcp"]), timeout=3)
    c.sendall(P["tag"].encode())
    c.close()
verdict = "ESCAPED" if joined and attempt("connect 127.0.0.1 after setns", go) else "CONTAINED"
""",
    "interpreter-write": """
import sysconfig
hits = []
for d in {sys.prefix, sysconfig.get_paths()["purelib"], "/etc/cron.d", "/usr/local/bin"}:
    p = os.path.join(d, "ge-threat-" + P["tag"])
    if attempt("create " + p, lambda: open(p, "w").close()):
        hits.append(p)
        os.unlink(p)
verdict = "ESCAPED" if hits else "CONTAINED"
""",
    "metrics-symlink": """
import atexit
def swap():  # after evaluate.py wrote its metrics: ge must not follow a link out of the workdir
    m = os.environ["GE_METRICS"]
    os.unlink(m)
    os.symlink(P["owner_only"], m)
atexit.register(swap)
notes.append("metrics.json becomes a symlink at exit")
""",
    "metrics-hardlink": """
import atexit
def swap():  # a hard link is a regular file, not a symlink: O_NOFOLLOW alone lets it through
    m = os.environ["GE_METRICS"]
    os.unlink(m)
    os.link(P["beside"], m)
atexit.register(swap)
notes.append("metrics.json becomes a hard link at exit")
""",
    "metrics-fifo": """
import atexit
def swap():  # a FIFO with no writer: ge must not block reading it
    m = os.environ["GE_METRICS"]
    os.unlink(m)
    os.mkfifo(m)
atexit.register(swap)
notes.append("metrics.json becomes a FIFO at exit")
""",
    "inherited-fds": """
wd, bad = os.getcwd(), []
for fd in range(3, 65):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    if target != wd and not target.startswith(wd + os.sep):
        bad.append(f"{fd} -> {target}")
notes.append(f"open fds outside the workdir: {bad} (of {sorted(os.listdir('/proc/self/fd'))})")
verdict = "ESCAPED" if bad else "CONTAINED"
""",
    "keyring": """
S = P["sys"]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
L = ctypes.c_long
buf = ctypes.create_string_buffer(4096)
def call(*args):
    r = libc.syscall(*args)
    if r < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return r
def describe(ring):  # KEYCTL_GET_KEYRING_ID, KEYCTL_DESCRIBE
    call(S["keyctl"], L(6), L(call(S["keyctl"], L(0), L(ring), L(0))), buf, L(4096))
    return buf.value.decode(errors="replace")
attempt("session keyring", lambda: describe(-3))
found = []
for ring, name in ((-3, "@s"), (-4, "@u")):  # KEYCTL_SEARCH the key ge's user planted
    def search():
        return call(S["keyctl"], L(10), L(ring), b"user", P["key"].encode(), L(0))
    if not attempt("search " + name, search):
        continue
    key = search()
    def read():  # KEYCTL_READ
        return buf.raw[: call(S["keyctl"], L(11), L(key), buf, L(4096))]
    if attempt("read the planted key", lambda: len(read())) and P["key_secret"].encode() in read():
        found.append("read")
    if attempt("update the planted key", lambda: call(S["keyctl"], L(2), L(key), b"pwned", L(5))):
        found.append("update")
    break
for ring, name in ((-3, "@s"), (-4, "@u")):  # add_key: the host tells whose keyring it reached
    attempt("add a key to " + name, lambda: call(S["add_key"], b"user", P["key_added"].encode(), b"pwned", L(5), L(ring)))
verdict = "ESCAPED" if found else "TRIED"
""",
    "unix-path-srv": """
path = P["sockets"][_GE_NAME]
def go():  # world-connectable, outside /run, /var/run, /var/tmp and /tmp: a service's socket
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    c.sendall(P["tag"].encode())
    c.close()
verdict = "ESCAPED" if attempt("connect " + path, go) else "CONTAINED"
""",
    "escape-seq-metrics": """
import atexit
H = P["hostile"].format("m")
print("training " + H, flush=True)
def spoil():  # after evaluate.py wrote its metrics: a hostile metric name and value beside them
    m = os.environ["GE_METRICS"]
    data = json.load(open(m))
    data[H] = 1.5
    data["note"] = H
    open(m, "w").write(json.dumps(data))
    open(os.environ["GE_FEEDBACK"], "w").write("feedback " + H)
    print("done " + H, flush=True)
atexit.register(spoil)
notes.append("escapes in its output, a metric name and value, its feedback")
""",
    "escape-seq-output": """
H = P["hostile"].format("o")
print("RESULT", _GE_NAME, "TRIED", "exits 3 with escapes in its last output lines", flush=True)
print("boom " + H, flush=True)
print("boom " + H, file=sys.stderr, flush=True)
os._exit(3)
""",
    "worker-poison": """
import resource
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
S = P["sys"]
def ioprio_idle(pid):  # IOPRIO_WHO_PROCESS, class IDLE
    if libc.syscall(S["ioprio_set"], 1, pid, 3 << 13) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
def up():
    out, pid = [], os.getpid()
    while True:
        try:
            pid = int(open(f"/proc/{pid}/status").read().split("PPid:")[1].split()[0])
        except (OSError, IndexError, ValueError):
            return out
        if pid <= 0:
            return out
        out.append(pid)
ge, hit = set(ge_pids()), []
# Every ancestor below ge: the process that forks later variants (a preload worker) passes its
# limits, niceness, scheduling and I/O priority on to them (RLIMIT_FSIZE 1 MB, not 16 bytes:
# the victim can still compile model.py and show what it got). ge itself (no pid namespace in
# between): the right is proven with its own limit set again (the control run must go on).
for pid in up():
    try:
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        cmd = b""
    notes.append(f"ancestor {pid}: {cmd[:70]!r}")
    if pid in ge or b"-m\\0guided_evolution\\0run\\0" in cmd or b"-m\\0pytest\\0" in cmd:
        def again():
            resource.prlimit(pid, resource.RLIMIT_FSIZE, resource.prlimit(pid, resource.RLIMIT_FSIZE))
        if attempt(f"prlimit ge ({pid}) to its own RLIMIT_FSIZE", again):
            hit.append(pid)
        break
    attempt(f"prlimit {pid} RLIMIT_FSIZE 1 MB", lambda: resource.prlimit(pid, resource.RLIMIT_FSIZE, (1 << 20,) * 2))
    attempt(f"prlimit {pid} RLIMIT_AS", lambda: resource.prlimit(pid, resource.RLIMIT_AS, (P["poison_as"],) * 2))
    attempt(f"setpriority {pid} 15", lambda: os.setpriority(os.PRIO_PROCESS, pid, 15))
    attempt(f"SCHED_BATCH {pid}", lambda: os.sched_setscheduler(pid, os.SCHED_BATCH, os.sched_param(0)))
    if S:
        attempt(f"ioprio idle {pid}", lambda: ioprio_idle(pid))
verdict = "ESCAPED" if hit else "TRIED"
""",
    "survivor-chain": """
import mmap, struct, threading
libc = ctypes.CDLL(None, use_errno=True)
jam = _GE_NAME == "io-jam"
marker = (P["chain"] + ("j" if jam else "c")).encode()
def scrub():  # ge finds its leftovers by the token in /proc/PID/environ: overwrite it in memory
    fields = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])  # env_start, env_end
    raw, key, n = ctypes.string_at(start, end - start), b"GE_SANDBOX_TOKEN=", 0
    i = raw.find(key)
    while i >= 0:
        j = raw.find(b"\\0", i)
        ctypes.memset(start + i, ord("x"), j - i)
        n, i = n + 1, raw.find(key, j)
    return n
attempt("scrub the token in /proc/self/environ", scrub)
notes.append(f"token still in environ: {b'GE_SANDBOX_TOKEN=' in open('/proc/self/environ', 'rb').read()}")
shm = mmap.mmap(-1, 8)  # shared by the whole chain: how many links were made
def made():
    return struct.unpack_from("q", shm, 0)[0]
depth, end = P["chain_depth"], time.time() + P["chain_life"]
io = os.path.dirname(os.environ["GE_METRICS"])
slot = os.path.dirname(os.getcwd())
def touch(k):
    os.close(os.open(os.path.join(io, f"j{k}"), os.O_CREAT | os.O_WRONLY, 0o600))
full = []
def spy(grown):  # what a survivor does: read later variants' metrics (io-jam: keep io/ full)
    if jam:  # thousands of entries once, then new ones as fast as they are removed
        try:
            for k in range(0 if full else P["jam_entries"]):
                touch(k)
            full.append(True)
            for k in range(1000 if grown else 16):  # a few ms between two looks at the chain
                touch(k % 64)
        except OSError:
            time.sleep(0.002)
        return
    for rel in ("io/metrics.json", "io/feedback.txt"):
        try:
            open(os.path.join(slot, rel), "rb").read()
        except OSError:
            pass
def jam_on():  # more hands for io-jam: a thread that goes on while its link waits
    while time.time() < end:
        try:
            for k in range(64):
                touch(k)
        except OSError:
            time.sleep(0.002)
def link(d):  # a new link of the chain, the d-th from its first: quiet, named
    if d == 1:
        os.setsid()  # out of the evaluation's process group and session
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    libc.prctl(15, marker, 0, 0, 0)  # PR_SET_NAME
    struct.pack_into("q", shm, 0, made() + 1)
    if jam and d > depth and d % 32 == 0:  # grown back after its head was killed
        threading.Thread(target=jam_on, daemon=True).start()
def length():  # the links from here up to the chain's head (killed first: a subreaper's child)
    n, pid = 1, os.getppid()
    while pid > 1:
        try:
            stat = open(f"/proc/{pid}/stat", "rb").read()
        except OSError:
            break
        if stat[stat.find(b"(") + 1 : stat.rfind(b")")] != marker:
            break
        n, pid = n + 1, int(stat[stat.rfind(b")") + 2 :].split()[1])
    return n
def life():  # the leaf grows the chain back to `depth` as its head is killed; the others wait
    d = 1
    link(d)
    while time.time() < end:
        spy(d >= depth)
        if d >= depth and length() >= depth:  # (a chain is never longer than d)
            time.sleep(0 if jam else 0.005)
            continue
        try:
            pid = os.fork()
        except OSError:
            time.sleep(0.01)
            continue
        if pid == 0:
            d += 1
            link(d)
            continue
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
if os.fork() == 0:
    try:
        life()
    finally:
        os._exit(0)
t = time.time()
while made() < depth * 3 // 4 and time.time() < t + 10:  # it goes on growing meanwhile
    time.sleep(0.01)
notes.append(f"a chain of {made()} processes named {marker.decode()}")
""",
    "disk-fill": """
mb, chunk, written = P["disk_mb"], 4, 0
block = b"\\1" * (chunk << 20)
try:
    with open("ge-disk-fill.bin", "wb") as fh:
        while written < mb:
            fh.write(block)
            fh.flush()
            written += chunk
            time.sleep(0.01)
except OSError as e:
    notes.append(f"stopped: {e.strerror}")
notes.append(f"wrote {written} MB into the variant dir")
""",
    "victim": """
import resource
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
names = ("RLIMIT_FSIZE", "RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_CPU", "RLIMIT_CORE")
state = {n: list(resource.getrlimit(getattr(resource, n))) for n in names}
state["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
state["sched"] = os.sched_getscheduler(0)
if P["sys"]:
    state["ioprio"] = libc.syscall(P["sys"]["ioprio_get"], 1, 0)
seen = {"c": 0, "j": 0}
for e in os.listdir("/proc"):
    try:
        comm = open(f"/proc/{e}/comm").read().strip() if e.isdigit() else ""
    except OSError:
        continue
    if comm.startswith(P["chain"]):
        seen[comm[-1]] += 1
notes.append(f"chain processes visible: {seen['c']} of survivor-chain, {seen['j']} of io-jam")
notes.append("STATE " + json.dumps(state, sort_keys=True))
""",
}


_SAME_BODY = {"unix-path-var-lib": "unix-path-srv", "io-jam": "survivor-chain"}


def payload(name: str, params: dict[str, object]) -> str:
    """The evaluate-stage code of one threat: its body between the prelude and the RESULT line."""
    key = "victim" if name == "witness" or name.startswith("victim-") else name
    text = _BODIES[_SAME_BODY.get(key, key)]
    body = "\n".join("    " + line if line.strip() else "" for line in text.strip().splitlines())
    code = (
        f"_GE_NAME = {name!r}\n_GE_PARAMS = {json.dumps(params)!r}\n{_PRELUDE}{body}\n{_EPILOGUE}"
    )
    return evaluate_stage_only(code)


class Listeners:
    """A TCP, a UDP, an abstract and path-named unix listeners on this host; what each heard."""

    def __init__(
        self, shared: Path, abstract: str, services: dict[str, Path] | None = None
    ) -> None:
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        unix_abstract = socket.socket(socket.AF_UNIX)
        unix_abstract.bind("\0" + abstract)
        self.sockets = {"tcp": tcp, "udp": udp, "unix-abstract": unix_abstract}
        # world-connectable like /run/dbus/system_bus_socket; ge's user's only like docker.sock
        for name, mode in (("unix-path", 0o777), ("unix-path-owner", 0o600)):
            path = shared / ("s" if mode == 0o777 else "owner")
            self.sockets[name] = socket.socket(socket.AF_UNIX)
            self.sockets[name].bind(str(path))
            path.chmod(mode)
        for name, directory in (services or {}).items():  # a service's socket in /srv, /var/lib
            self.sockets[name] = socket.socket(socket.AF_UNIX)
            self.sockets[name].bind(str(directory / "s"))
            (directory / "s").chmod(0o777)
        for name, sock in self.sockets.items():
            if name != "udp":
                sock.listen(16)
        self.heard: dict[str, list[bytes]] = {name: [] for name in self.sockets}
        self.tcp_port, self.udp_port = tcp.getsockname()[1], udp.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            for name, sock in self.sockets.items():
                selector.register(sock, selectors.EVENT_READ, name)
            while not self._stop.is_set():
                for key, _ in selector.select(0.2):
                    assert isinstance(key.fileobj, socket.socket)
                    self.heard[key.data].append(self._hear(key.fileobj, key.data == "udp"))

    @staticmethod
    def _hear(sock: socket.socket, datagram: bool) -> bytes:
        """What one datagram or connection brought (a connection that sent nothing counts too)."""
        try:
            if datagram:
                return sock.recv(4096)
            conn, _ = sock.accept()
        except OSError as exc:
            return f"(error: {exc})".encode()
        with conn:
            conn.settimeout(1)
            try:
                return conn.recv(4096) or b"(connected)"
            except OSError:
                return b"(connected)"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for sock in self.sockets.values():
            sock.close()


@dataclass
class Scene:
    """The files and names one backend's run attacks, all made by the test."""

    root: Path
    shared: Path
    tag: str = field(default_factory=lambda: secrets.token_hex(5))
    services: dict[str, Path] = field(default_factory=dict)
    """threat -> a directory (0755) made in ``SERVICE_PARENTS`` for its world-connectable socket."""
    unmeasured: dict[str, str] = field(default_factory=dict)
    """threat -> why this machine cannot show it."""

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def seed(self) -> Path:
        return self.root / "seed"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def secret(self) -> str:
        return f"gesecret{self.tag}"

    @property
    def owner_only(self) -> list[Path]:
        """A 0600 JSON file of ge's user outside /tmp, and one beside the run (for a hard link)."""
        return [self.shared / "owner-only.json", self.root / "outside" / "owner-only.json"]

    @property
    def token(self) -> str:
        return f"owneronly{self.tag[::-1]}"

    @property
    def stray(self) -> str:
        return f"GE-STRAY-{self.tag}"

    def build(self) -> None:
        """The user's home (credentials 0600), owner-only JSON files, a world-writable dir."""
        for rel in (".netrc", ".ssh/id_rsa", ".aws/credentials"):
            path = self.home / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"password {self.secret}-{rel}\n")
            path.chmod(0o600)
        (self.home / "notes.txt").write_text("the user's own file\n")
        (self.home / "victim.txt").write_text("delete me\n")
        self.shared.chmod(0o755)
        self.owner_only[1].parent.mkdir()
        for path in self.owner_only:
            path.write_text(json.dumps({"score": -1.0, "size": 1, "stolen": self.token}))
            path.chmod(0o600)
        (self.shared / "canary.txt").write_text("must not change\n")
        (self.shared / "canary.txt").chmod(0o666)
        (self.shared / "drop").mkdir()
        (self.shared / "drop").chmod(0o1777)

    @property
    def key(self) -> str:
        """The description of the key planted in the session keyring ge runs in."""
        return f"ge-threat-key-{self.tag}"

    @property
    def key_secret(self) -> str:
        return f"keyring{self.tag[::-1]}"

    @property
    def key_added(self) -> str:
        """The description of the key a variant tries to add to a keyring it reaches."""
        return f"ge-threat-added-{self.tag}"

    @property
    def chain(self) -> str:
        """The process name (comm) of the survivor-chain and io-jam processes (+ "c" / "j")."""
        return f"gc{self.tag}"

    def make_services(self) -> None:
        """The directories of the unix-path-srv / -var-lib sockets (root can make them)."""
        for threat, parent in SERVICE_PARENTS.items():
            try:
                directory = Path(tempfile.mkdtemp(prefix="ge-threat-", dir=parent))
                directory.chmod(0o755)
            except OSError as exc:
                self.unmeasured[threat] = f"cannot make a directory in {parent} ({exc.strerror})"
                continue
            self.services[threat] = directory

    def remove_services(self) -> None:
        for directory in self.services.values():
            shutil.rmtree(directory, ignore_errors=True)

    def params(self, ears: Listeners, run_dir: Path | None = None) -> dict[str, object]:
        return {
            "tag": self.tag, "home": str(self.home), "seed": str(self.seed),
            "run": str(run_dir or self.run_dir), "shared": str(self.shared),
            "secret": self.secret, "owner_only": str(self.owner_only[0]),
            "beside": str(self.owner_only[1]), "stray": self.stray, "tcp": ears.tcp_port,
            "udp": ears.udp_port, "abstract": f"ge-threat-{self.tag}",
            "sockets": {t: str(d / "s") for t, d in self.services.items()},
            "sys": SYSCALLS.get(platform.machine(), {}), "key": self.key,
            "key_secret": self.key_secret, "key_added": self.key_added,
            "hostile": HOSTILE_TEXT, "chain": self.chain, "chain_depth": 160,
            "chain_life": 30, "jam_entries": 3000, "poison_as": 6 << 30, "disk_mb": DISK_MB,
        }  # fmt: skip

    def digests(self) -> dict[str, str]:
        return tree_digest(
            self.home, self.seed, self.shared,
            skip=lambda p: "__pycache__" in p.parts or p.is_socket(),
        )  # fmt: skip

    def host_tmp_files(self) -> list[Path]:
        return [
            p for p in (Path("/tmp"), Path("/dev/shm")) if (p / f"ge-threat-{self.tag}").exists()
        ]
