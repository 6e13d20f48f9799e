#!/usr/bin/env python3
"""The wsrooms benchmark: wsrooms next to its peers, real servers on loopback.

    python bench/run.py --setup                 # create/refresh the bench venv + node deps
    python bench/run.py                         # everything, 3 interleaved repetitions
    python bench/run.py --quick                 # smoke run (CI): 1 repetition, small sizes
    python bench/run.py --scenarios fanout,idle --targets websockets,starlette-loop --reps 1
    python bench/run.py --wsrooms-ref 5359757 --wsrooms-ref HEAD   # before/after, one run

The server under test runs pinned to core 0 and the load generator (Node.js,
bench/loadgen.js) to core 1. Both processes' CPU time and RSS are sampled at the edges of
each measured window. Results: bench/results/results.json, results.md, fanout.png,
memory.png. The exit status is non-zero when a target fails to serve, loses or reorders a
message, or a run hits its deadline. See bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "results"
RAW = RESULTS / "raw"  # server logs, git-ignored
VENV_CANDIDATES = [
    Path(p) for p in (os.environ.get("BENCH_VENV"), BENCH / ".venv", "/work/bench-venv") if p
]
DEFAULT_VENV = next(
    (p for p in VENV_CANDIDATES if (p / "bin" / "python").exists()), VENV_CANDIDATES[0]
)
SERVER_CORE = 0
LOADGEN_CORE = 1
HOST = "127.0.0.1"

# --------------------------------------------------------------------------------------
# Targets


@dataclass(frozen=True)
class Target:
    label: str
    module: str  # bench/targets/<module>.py
    server: str  # uvicorn | hypercorn-asyncio | hypercorn-trio | native
    family: str  # asyncio | hypercorn-asyncio | trio: which baselines its ratios use
    proto: str = "ws"  # ws | sio (Engine.IO v4 framing)
    echo: bool = False  # serves /echo
    stats: bool = False  # serves /stats (hub.dropped)
    scenarios: frozenset[str] | None = None  # None: every scenario
    env: dict[str, str] = field(default_factory=dict)
    note: str = ""
    ref: str | None = None  # --wsrooms-ref given more than once: the git ref measured
    base: str = ""  # the label without "@ref"


def is_wsrooms(target: Target) -> bool:
    return target.module.startswith("wsrooms_")


TARGETS: list[Target] = [
    Target(
        "wsrooms-endpoint",
        "wsrooms_endpoint",
        "uvicorn",
        "asyncio",
        echo=True,
        stats=True,
        note="RoomEndpoint; echo: BaseWSEndpoint (task per message)",
    ),
    Target(
        "wsrooms-room",
        "wsrooms_room",
        "uvicorn",
        "asyncio",
        stats=True,
        note="Room, decorator API 2; the publisher (not connected) awaits push()",
    ),
    Target(
        "starlette-loop",
        "starlette_loop",
        "uvicorn",
        "asyncio",
        echo=True,
        note="room dict + sequential await send_text; echo: WebSocketEndpoint",
    ),
    Target(
        "socketio",
        "socketio_rooms",
        "uvicorn",
        "asyncio",
        proto="sio",
        echo=True,
        note="python-socketio AsyncServer rooms (ASGI)",
    ),
    Target(
        "broadcaster",
        "broadcaster_memory",
        "uvicorn",
        "asyncio",
        note="encode/broadcaster memory:// on Starlette",
    ),
    Target(
        "websockets",
        "websockets_raw",
        "native",
        "asyncio",
        echo=True,
        note="websockets asyncio server + broadcast(), uvloop, no ASGI",
    ),
    Target(
        "wsrooms-endpoint-trio",
        "wsrooms_endpoint",
        "hypercorn-trio",
        "trio",
        echo=True,
        stats=True,
        note="RoomEndpoint on hypercorn -k trio",
    ),
    Target(
        "wsrooms-room-trio",
        "wsrooms_room",
        "hypercorn-trio",
        "trio",
        stats=True,
        note="Room API 2 on hypercorn -k trio",
    ),
    Target(
        "starlette-loop-trio",
        "starlette_loop",
        "hypercorn-trio",
        "trio",
        echo=True,
        note="sequential loop on hypercorn -k trio",
    ),
    Target(
        "websockets-trio",
        "websockets_trio",
        "native",
        "trio",
        echo=True,
        note="websockets.trio server + await broadcast(), no ASGI",
    ),
    Target(
        "wsrooms-endpoint-hca",
        "wsrooms_endpoint",
        "hypercorn-asyncio",
        "hypercorn-asyncio",
        stats=True,
        scenarios=frozenset({"flood"}),
        note="RoomEndpoint on hypercorn's asyncio worker (uvloop), flood only",
    ),
    Target(
        "wsrooms-room-hca",
        "wsrooms_room",
        "hypercorn-asyncio",
        "hypercorn-asyncio",
        stats=True,
        scenarios=frozenset({"flood"}),
        note="Room API 2 on hypercorn's asyncio worker (uvloop), flood only",
    ),
    Target(
        "starlette-loop-hca",
        "starlette_loop",
        "hypercorn-asyncio",
        "hypercorn-asyncio",
        scenarios=frozenset({"flood"}),
        note="sequential loop on hypercorn's asyncio worker (uvloop), flood only",
    ),
    Target(
        "wsrooms-endpoint-drop",
        "wsrooms_endpoint",
        "uvicorn",
        "asyncio",
        stats=True,
        scenarios=frozenset({"slow"}),
        env={"BENCH_SLOW_CONSUMER": "drop_oldest"},
        note="RoomEndpoint with slow_consumer='drop_oldest' (slow scenario only)",
    ),
]
BY_LABEL = {t.label: t for t in TARGETS}
BASELINES = {
    "asyncio": ("starlette-loop", "websockets"),
    "hypercorn-asyncio": ("starlette-loop-hca", "websockets"),
    "trio": ("starlette-loop-trio", "websockets-trio"),
}


def expand_refs(refs: dict[str, Path]) -> None:
    """With two or more wsrooms refs: one copy of every wsrooms target per ref, labelled
    `<target>@<ref>`, each served from that ref's snapshot (peers are run once)."""
    global TARGETS, BY_LABEL
    expanded: list[Target] = []
    for t in TARGETS:
        if is_wsrooms(t):
            for ref in refs:
                expanded.append(replace(t, label=f"{t.label}@{ref}", ref=ref, base=t.label))
        else:
            expanded.append(t)
    TARGETS = expanded
    BY_LABEL = {t.label: t for t in TARGETS}


SEND_QUEUE_SIZE = 256  # wsrooms targets: well above the fan-out window (and small enough
# that a stuck member hits the slow-consumer policy within the slow scenario)

# --------------------------------------------------------------------------------------
# Scenarios: name -> list of variants; each variant is the load generator's config.

FANOUT_WINDOW = 10


def scenario_plan(quick: bool) -> dict[str, list[dict[str, Any]]]:
    if quick:
        return {
            "fanout": [
                dict(
                    variant="N=20",
                    warmSettleMs=100,
                    subscribers=20,
                    messages=300,
                    window=FANOUT_WINDOW,
                    size=100,
                    duration=5,
                )
            ],
            "slow": [
                dict(
                    variant="one stuck member",
                    warmSettleMs=100,
                    subscribers=20,
                    exclude=1,
                    stuck=True,
                    messages=1500,
                    window=FANOUT_WINDOW,
                    size=4096,
                    duration=1.5,
                    drainMs=500,
                    stuckDrainMs=600,
                ),
            ],
            "idle": [
                dict(
                    variant="C=200",
                    connections=200,
                    rooms=10,
                    duration=20,
                    settleMs=300,
                    pauseMs=200,
                )
            ],
            "echo": [
                dict(variant="10 clients", clients=10, size=100, duration=1, warmRoundTrips=5)
            ],
            "churn": [
                dict(
                    variant="200 cycles",
                    cycles=200,
                    warmCycles=50,
                    concurrency=50,
                    rooms=10,
                    duration=20,
                    settleMs=200,
                    pauseMs=200,
                )
            ],
            "flood": [
                dict(
                    variant="10 readers",
                    readers=10,
                    messages=2000,
                    size=100,
                    duration=1,
                    drainMs=2500,
                    warmSettleMs=100,
                )
            ],
        }
    return {
        "fanout": [
            dict(
                variant="N=100",
                subscribers=100,
                messages=6000,
                window=FANOUT_WINDOW,
                size=100,
                duration=10,
            ),
            dict(
                variant="N=1000",
                subscribers=1000,
                messages=800,
                window=FANOUT_WINDOW,
                size=100,
                duration=12,
            ),
        ],
        "slow": [
            dict(
                variant="no stuck member",
                subscribers=100,
                exclude=1,
                stuck=False,
                messages=4000,
                window=FANOUT_WINDOW,
                size=4096,
                duration=12,
                drainMs=2000,
            ),
            dict(
                variant="one stuck member",
                subscribers=100,
                exclude=1,
                stuck=True,
                messages=4000,
                window=FANOUT_WINDOW,
                size=4096,
                duration=12,
                drainMs=2000,
            ),
        ],
        "idle": [
            dict(variant="C=2000", connections=2000, rooms=10, duration=60),
            dict(variant="C=10000", connections=10000, rooms=10, duration=90),
        ],
        "echo": [dict(variant="50 clients", clients=50, size=100, duration=8)],
        "churn": [
            dict(
                variant="10000 cycles",
                cycles=10000,
                warmCycles=1000,
                concurrency=50,
                rooms=10,
                duration=90,
            )
        ],
        "flood": [
            dict(
                variant="30 readers",
                readers=30,
                messages=50000,
                size=100,
                duration=10,
                drainMs=10000,
            )
        ],
    }


SCENARIOS = ["fanout", "slow", "idle", "echo", "churn", "flood"]


def target_runs_scenario(target: Target, scenario: str) -> bool:
    if target.scenarios is not None and scenario not in target.scenarios:
        return False
    if scenario == "flood":
        return True  # every server, every target (hypercorn-asyncio targets: only this)
    if scenario == "echo":
        return target.echo
    return True


# --------------------------------------------------------------------------------------
# Set-up


def setup(venv: Path) -> None:
    """Create (or refresh) the bench venv and install the Node.js client (bench/setup.sh)."""
    env = dict(os.environ, BENCH_VENV=str(venv))
    subprocess.run(["bash", str(BENCH / "setup.sh")], check=True, env=env)


def ensure_venv(args: argparse.Namespace) -> None:
    """Re-run this script under the bench venv's Python if this one lacks the peers."""
    try:
        import psutil  # noqa: F401
        import uvicorn  # noqa: F401
        import websockets  # noqa: F401
    except ImportError:
        pass
    else:
        return
    venv_python = args.venv / "bin" / "python"
    if os.environ.get("BENCH_REEXEC") or not venv_python.exists():
        sys.exit(
            f"this Python lacks the bench's packages and there is no bench venv at {args.venv}:"
            f" run `python {sys.argv[0]} --setup` first (or pass --venv)"
        )
    os.environ["BENCH_REEXEC"] = "1"
    os.execv(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *sys.argv[1:]])


# --------------------------------------------------------------------------------------
# Processes


def pinned(core: int, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core), *argv] if taskset else argv


def child_setup(core: int) -> Any:
    """For each child, before exec: die with the harness (PR_SET_PDEATHSIG), and pin
    it to `core` when there is no `taskset`."""
    has_taskset = shutil.which("taskset") is not None

    def fn() -> None:
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if not has_taskset:
            with contextlib.suppress(AttributeError, OSError):
                os.sched_setaffinity(0, {core})

    return fn


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    target = min(target, 1_048_576)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"server not listening on {port} after {timeout:.0f} s")


def stop(proc: subprocess.Popen[Any] | None, grace: float = 2.0) -> None:
    """Stop one child by its PID: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


def read_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) * 1024
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick  # utime + stime, all threads


def system_busy() -> float:
    """Busy CPU seconds of the whole machine (all cores), from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def sample(server_pid: int, loadgen_pid: int) -> dict[str, float]:
    status = read_status(server_pid)
    return {
        "t": time.monotonic(),
        "server_cpu": cpu_seconds(server_pid),
        "server_rss": status.get("VmRSS", 0),
        "server_hwm": status.get("VmHWM", 0),
        "loadgen_cpu": cpu_seconds(loadgen_pid),
        "loadgen_rss": read_status(loadgen_pid).get("VmRSS", 0),
        "system_busy": system_busy(),
    }


def window(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    wall = max(b["t"] - a["t"], 1e-9)
    server = b["server_cpu"] - a["server_cpu"]
    loadgen = b["loadgen_cpu"] - a["loadgen_cpu"]
    other = b["system_busy"] - a["system_busy"] - server - loadgen
    return {
        "wall_s": wall,
        "server_cpu_pct": 100 * server / wall,
        "loadgen_cpu_pct": 100 * loadgen / wall,
        "other_cpu_pct": max(0.0, 100 * other / wall),  # other tenants of this machine
    }


def query_stats(port: int) -> dict[str, Any] | None:
    """Read /stats (hub.dropped) from a wsrooms target with the websockets sync client."""
    try:
        from websockets.sync.client import connect

        with connect(f"ws://{HOST}:{port}/stats", open_timeout=5, compression=None) as ws:
            return json.loads(ws.recv(timeout=5))
    except Exception as exc:
        return {"error": repr(exc)}


WSROOMS_SRC: Path | None = None  # a snapshot of src/ (one --wsrooms-ref), else the installed one
REF_SRC: dict[str, Path] = {}  # several --wsrooms-ref: each ref's snapshot of src/
REFS: list[str] = []  # those refs, in the order given (the first is "before")


def child_env(target: Target | None = None) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    src = REF_SRC[target.ref] if target is not None and target.ref else WSROOMS_SRC
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(src), env.get("PYTHONPATH", "")) if p)
    return env


def git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def snapshot_wsrooms(ref: str, into: Path) -> dict[str, Any]:
    """Copy wsrooms as of `ref` to `into`/src (read-only use of the repository), so that a
    long run measures one version even while the working tree changes.

    `ref` is a git ref of this repository, or the folder of a work tree (another `git
    worktree`, say), whose src/wsrooms is copied as it is on disk, uncommitted changes
    included; its HEAD, whether it was dirty and a digest of the copied files are recorded.
    """
    folder = Path(ref)
    if folder.is_dir() and (folder / "src" / "wsrooms").is_dir():
        shutil.copytree(
            folder / "src" / "wsrooms",
            into / "src" / "wsrooms",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        import hashlib

        digest = hashlib.sha256()
        for path in sorted((into / "src" / "wsrooms").rglob("*.py")):
            digest.update(str(path.relative_to(into)).encode() + b"\0" + path.read_bytes())

        def there(*args: str) -> str:
            proc = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True)
            return proc.stdout.strip() if proc.returncode == 0 else ""

        return {
            "from": f"the work tree {folder}",
            "commit": there("rev-parse", "HEAD") or None,
            "dirty": bool(there("status", "--porcelain", "--", "src/wsrooms")),
            "digest": digest.hexdigest()[:12],
        }
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    if not sha:
        sys.exit(f"--wsrooms-ref {ref!r} is neither a commit of {REPO} nor a work tree")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", sha, "src/wsrooms"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return {"from": f"git {ref}", "commit": sha}


def wsrooms_source() -> dict[str, Any]:
    """The installed (editable) working tree's state."""
    dirty = bool(git("status", "--porcelain", "--", "src/wsrooms"))
    return {"from": "the working tree", "commit": git("rev-parse", "HEAD") or None, "dirty": dirty}


class Server:
    """One target's server process, pinned to the server core; stopped by its PID."""

    def __init__(self, target: Target, log_name: str) -> None:
        self.target = target
        self.port = free_port()
        RAW.mkdir(parents=True, exist_ok=True)
        self.log_path = RAW / f"{log_name}.server.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> Server:
        env = child_env(self.target)
        env["BENCH_SEND_QUEUE_SIZE"] = str(SEND_QUEUE_SIZE)
        env.update(self.target.env)
        argv = [sys.executable, str(BENCH / "serve.py"), "--target", self.target.module]
        argv += ["--server", self.target.server, "--port", str(self.port)]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                pinned(SERVER_CORE, argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=child_setup(SERVER_CORE),
            )
        wait_listening(self.port, self.proc, 20)
        return self

    def check_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"server exited with {code} during the run")

    def stop(self) -> None:
        stop(self.proc)

    def log_tail(self, n: int = 5) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").strip().splitlines()[-n:]
        except OSError:
            return []


def slug_of(*parts: object) -> str:
    return "-".join(str(p) for p in parts).replace(" ", "_").replace("=", "")


def run_one(
    target: Target,
    scenario: str,
    variant: dict[str, Any],
    rep: int,
    shared: Server | None = None,
) -> dict[str, Any]:
    """One measured run: a fresh server (or `shared`, in quick mode) and one load generator."""
    record: dict[str, Any] = {
        "target": target.label,
        "server": target.server,
        "scenario": scenario,
        "variant": variant["variant"],
        "rep": rep,
        "ok": False,
        "error": None,
    }
    slug = slug_of(scenario, variant["variant"], target.label, f"rep{rep}")
    server = shared or Server(target, slug)
    loadgen = None
    hard_deadline = float(variant.get("duration", 10)) + 60
    started = time.monotonic()
    try:
        if shared is None:
            server.start()
        server.check_alive()
        assert server.proc is not None
        config = dict(
            variant,
            scenario=scenario,
            port=server.port,
            proto=target.proto,
            hardDeadline=hard_deadline - 5,
        )
        node = [shutil.which("node") or "node", str(BENCH / "loadgen.js"), json.dumps(config)]
        with open(RAW / f"{slug}.loadgen.log", "w") as loadgen_log:
            loadgen = subprocess.Popen(
                pinned(LOADGEN_CORE, node),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=loadgen_log,
                text=True,
                bufsize=1,
                preexec_fn=child_setup(LOADGEN_CORE),
            )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump_stdout(stdout: Any) -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump_stdout, args=(loadgen.stdout,), daemon=True).start()
        marks: dict[str, dict[str, float]] = {}
        result = None
        while True:
            remaining = hard_deadline - (time.monotonic() - started)
            if remaining <= 0:
                raise RuntimeError(f"hard deadline ({hard_deadline:.0f} s) reached")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                break
            try:
                msg = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "mark" in msg:
                server.check_alive()
                marks[msg["mark"]] = sample(server.proc.pid, loadgen.pid)
                assert loadgen.stdin is not None
                loadgen.stdin.write("ok\n")
                loadgen.stdin.flush()
            elif "result" in msg:
                result = msg["result"]
            elif "error" in msg:
                raise RuntimeError(f"load generator: {msg['error'].splitlines()[0]}")
        loadgen.wait(10)
        if result is None:
            raise RuntimeError(f"load generator exited with {loadgen.returncode} and no result")
        server.check_alive()
        record["loadgen"] = result
        record["samples"] = marks
        if target.stats and scenario == "slow":
            record["server_stats"] = query_stats(server.port)
        record.update(derive(scenario, result, marks))
        problem = check(scenario, variant, result)
        if problem:
            record["error"] = problem
        else:
            record["ok"] = True
    except Exception as exc:  # every failure becomes part of the report
        record["error"] = str(exc)
    finally:
        stop(loadgen, grace=1.0)
        if shared is None:
            server.stop()
    record["seconds"] = round(time.monotonic() - started, 2)
    if not record["ok"]:
        record["server_log_tail"] = server.log_tail()
    return record


def derive(
    scenario: str, result: dict[str, Any], marks: dict[str, dict[str, float]]
) -> dict[str, Any]:
    """Figures of one run from the load generator's result and the harness's samples."""
    out: dict[str, Any] = {}
    if scenario in ("fanout", "slow", "echo", "flood"):
        a, b = marks["start"], marks["end"]
        out.update(window(a, b))
        out["server_rss_start"] = a["server_rss"]
        out["server_rss_end"] = b["server_rss"]
        out["server_rss_growth"] = b["server_rss"] - a["server_rss"]
        out["server_peak_growth"] = max(0, b["server_hwm"] - a["server_rss"])
    if scenario in ("fanout", "slow"):
        out["deliveries_per_s"] = result["deliveries_per_s"]
        out["p50_ms"] = result["latency_ms"]["p50"]
        out["p99_ms"] = result["latency_ms"]["p99"]
        if out["deliveries_per_s"]:
            # CPU microseconds per delivery: robust to the machine's noise
            out["server_us_per_delivery"] = (
                1e6 * out["server_cpu_pct"] / 100 / out["deliveries_per_s"]
            )
            out["loadgen_us_per_delivery"] = (
                1e6 * out["loadgen_cpu_pct"] / 100 / out["deliveries_per_s"]
            )
        if result.get("stuck"):
            out["stuck_fate"] = result["stuck"][0]["fate"]
    if scenario == "echo":
        out["round_trips_per_s"] = result["round_trips_per_s"]
        out["p50_ms"] = result["latency_ms"]["p50"]
        out["p99_ms"] = result["latency_ms"]["p99"]
        add_cpu_cost(scenario, out)
    if scenario == "idle":
        a, b = marks["before"], marks["idle"]
        opened = max(1, result["opened"])
        out["rss_before"] = a["server_rss"]
        out["rss_idle"] = b["server_rss"]
        out["rss_per_conn_kb"] = (b["server_rss"] - a["server_rss"]) / opened / 1024
        out["rss_after_message"] = marks["after_message"]["server_rss"]
        out["connections_per_s_open"] = result["connections_per_s_open"]
        out.update(window(a, b))
    if scenario == "flood":
        for key in (
            "deliveries_per_s",
            "messages_per_s",
            "readers_dropped",
            "backlog_per_reader_at_stop",
            "undelivered_after_drain",
            "drain_s",
            "min_reader_share",
        ):
            out[key] = result[key]
        out["p50_ms"] = result["latency_ms"]["p50"]
        out["p99_ms"] = result["latency_ms"]["p99"]
        if out["deliveries_per_s"]:
            out["server_us_per_delivery"] = (
                1e6 * out["server_cpu_pct"] / 100 / out["deliveries_per_s"]
            )
    if scenario == "churn":
        a, b = marks["warm"], marks["end"]
        out.update(window(a, b))
        out["connections_per_s"] = result["connections_per_s"]
        out["rss_after_warmup"] = a["server_rss"]
        out["rss_after_all"] = b["server_rss"]
        out["rss_growth"] = b["server_rss"] - a["server_rss"]
        add_cpu_cost(scenario, out)
    return out


# Per scenario: server CPU µs per unit of work (lower is better). CPU time per operation
# barely depends on how much of the core other tenants took, unlike a rate.
CPU_COST = {
    "fanout": ("server_us_per_delivery", "deliveries_per_s"),
    "slow": ("server_us_per_delivery", "deliveries_per_s"),
    "flood": ("server_us_per_delivery", "deliveries_per_s"),
    "echo": ("server_us_per_round_trip", "round_trips_per_s"),
    "churn": ("server_us_per_connection", "connections_per_s"),
}


def add_cpu_cost(scenario: str, out: dict[str, Any]) -> None:
    key, rate = CPU_COST[scenario]
    if out.get(key) is None and out.get(rate) and out.get("server_cpu_pct") is not None:
        out[key] = 1e6 * out["server_cpu_pct"] / 100 / out[rate]


def check(scenario: str, variant: dict[str, Any], r: dict[str, Any]) -> str | None:
    """What makes a run a failure: a lost, reordered or missing message, a refused client."""
    if scenario in ("fanout", "slow"):
        if r["order_violations"]:
            return f"{r['order_violations']} messages out of order"
        if r["gaps"]:
            return f"{r['gaps']} messages lost (gaps in the sequence)"
        if scenario == "fanout" and r["undelivered"]:
            return f"{r['undelivered']} deliveries missing at the end"
        if scenario == "fanout" and r["messages_sent"] == 0:
            return "nothing delivered"
    if scenario == "idle":
        if r["failed"] or r["opened"] < r["connections"]:
            return f"{r['failed']} connections failed, {r['opened']} of {r['connections']} opened"
        if r["delivered"] < r["opened"]:
            return f"only {r['delivered']} of {r['opened']} members got the room's message"
    if scenario == "echo":
        if r["mismatches"]:
            return f"{r['mismatches']} echo replies out of order"
        if not r["round_trips"]:
            return "no round trip completed"
    if scenario == "flood":
        problems = []
        if r["readers_dropped"]:
            codes = ", ".join(f"{n}× {code}" for code, n in r["close_codes"].items())
            problems.append(f"{r['readers_dropped']} of {r['readers']} readers dropped ({codes})")
        if r["publisher_closed"]:
            problems.append(f"the flooding client was closed ({r['publisher_close_code']})")
        if r["order_violations"]:
            problems.append(f"{r['order_violations']} messages out of order")
        if r["gaps"]:
            problems.append(f"{r['gaps']} messages lost (gaps in the sequence)")
        if not r["deliveries_at_stop"]:
            problems.append("nothing delivered")
        return "; ".join(problems) or None
    if scenario == "churn":
        if r["failed"]:
            return f"{r['failed']} of {r['cycles']} connect/close cycles failed"
        if r["timed_out"]:
            return f"only {r['cycles']} of {variant['cycles']} cycles before the deadline"
    return None


# --------------------------------------------------------------------------------------
# Report


def median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def machine_info() -> dict[str, Any]:
    from importlib import metadata

    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    packages = {}
    for name in [
        "wsrooms",
        "starlette",
        "anyio",
        "trio",
        "uvicorn",
        "uvloop",
        "httptools",
        "hypercorn",
        "wsproto",
        "websockets",
        "python-socketio",
        "python-engineio",
        "broadcaster",
        "psutil",
        "matplotlib",
    ]:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    ws_version = None
    with contextlib.suppress(OSError, ValueError):
        ws_version = json.loads((BENCH / "node_modules" / "ws" / "package.json").read_text())[
            "version"
        ]
    commit = (
        subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        or None
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "npm_ws": ws_version,
        "packages": packages,
        "repo_commit": commit,
        "server_core": SERVER_CORE,
        "loadgen_core": LOADGEN_CORE,
    }


# Per scenario: the headline metric (and whether higher is better), shown with ratios.
HEADLINE = {
    "fanout": ("deliveries_per_s", True),
    "slow": ("deliveries_per_s", True),
    "idle": ("rss_per_conn_kb", False),
    "echo": ("round_trips_per_s", True),
    "churn": ("connections_per_s", True),
    "flood": ("deliveries_per_s", True),
}


def measured(r: dict[str, Any]) -> bool:
    """Whether a run's figures count: a passed run, or a flood run that completed but
    found readers dropped or messages lost (its figures are the finding)."""
    return bool(r["ok"] or (r["scenario"] == "flood" and r.get("loadgen")))


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per (scenario, variant, target), and ratios to the family's baselines.

    A ratio is the median over repetitions of (target / baseline) within the same
    repetition: the two runs were close in time, so the machine's noise mostly cancels.
    """
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["scenario"], r["variant"], r["target"]), []).append(r)
    for r in runs:  # results written before CPU costs were derived for every scenario
        if r["scenario"] in CPU_COST and measured(r):
            add_cpu_cost(r["scenario"], r)
    summary: dict[str, Any] = {}
    for (scenario, variant, label), rs in groups.items():
        ok = [r for r in rs if measured(r)]
        keys = sorted(
            {
                k
                for r in ok
                for k, v in r.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            - {"rep", "seconds"}
        )
        med = {k: median([r.get(k) for r in ok]) for k in keys}
        entry = {
            "runs": len(rs),
            "ok": sum(1 for r in rs if r["ok"]),
            "errors": [r["error"] for r in rs if r["error"]],
            "median": med,
        }
        if scenario == "slow":
            entry["stuck_fates"] = [r.get("stuck_fate") for r in rs if r.get("stuck_fate")]
            entry["stuck"] = [
                r["loadgen"]["stuck"][0] for r in rs if r.get("loadgen", {}).get("stuck")
            ]
            entry["server_stats"] = [r["server_stats"] for r in rs if r.get("server_stats")]
            entry["undelivered"] = [r["loadgen"].get("undelivered") for r in rs if r.get("loadgen")]
        if scenario == "flood":
            entry["flood"] = [
                {
                    k: r["loadgen"][k]
                    for k in (
                        "readers",
                        "readers_dropped",
                        "close_codes",
                        "publisher_closed",
                        "messages_sent",
                        "undelivered_after_drain",
                    )
                }
                for r in rs
                if r.get("loadgen")
            ]
        summary.setdefault(scenario, {}).setdefault(variant, {})[label] = entry

    for scenario, variants in summary.items():
        metric, _ = HEADLINE[scenario]
        for variant, targets in variants.items():
            for label, entry in targets.items():
                target = BY_LABEL[label]
                loop_label, ws_label = BASELINES[target.family]
                entry["ratio_to_loop"] = ratio(runs, scenario, variant, label, loop_label, metric)
                entry["ratio_to_websockets"] = ratio(
                    runs, scenario, variant, label, ws_label, metric
                )
                cost = CPU_COST.get(scenario, ("", ""))[0]
                if cost:
                    entry["cpu_ratio_to_loop"] = ratio(
                        runs, scenario, variant, label, loop_label, cost
                    )
                if target.ref and REFS and target.ref != REFS[0]:
                    before = f"{target.base}@{REFS[0]}"
                    entry["ratio_to_first_ref"] = ratio(
                        runs, scenario, variant, label, before, metric
                    )
                    if cost:
                        entry["cpu_ratio_to_first_ref"] = ratio(
                            runs, scenario, variant, label, before, cost
                        )
    return summary


def ratio(
    runs: list[dict[str, Any]], scenario: str, variant: str, label: str, base: str, metric: str
) -> float | None:
    per_rep: dict[int, dict[str, float]] = {}
    for r in runs:
        if r["scenario"] == scenario and r["variant"] == variant and r["target"] in (label, base):
            value = r.get(metric)
            if value is not None and measured(r):
                per_rep.setdefault(r["rep"], {})[r["target"]] = value
    ratios = [v[label] / v[base] for v in per_rep.values() if label in v and v.get(base)]
    return median(ratios)


def fmt(value: Any, digits: int = 0, scale: float = 1.0) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        v = value * scale
        if digits == 0:
            return f"{v:,.0f}"
        return f"{v:,.{digits}f}"
    return str(value)


def fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table; columns after the first are right-aligned unless marked `<`."""
    aligns = ["---"] + ["---" if h.startswith("<") else "---:" for h in header[1:]]
    header = [h.lstrip("<") for h in header]
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return [*out, ""]


def pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f}%"


def mib(value: float | None) -> str:
    return fmt(value, 1, 2**-20)


def render_markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    s = data["summary"]
    cfg = data["config"]
    reps = cfg["reps"]
    lines = [
        "# wsrooms benchmark results",
        "",
        f"Generated by `python bench/run.py {' '.join(cfg['argv'])}` on {data['finished']}"
        f" ({reps} repetition{'s' if reps != 1 else ''}, interleaved;"
        f" {'quick smoke sizes' if cfg['quick'] else 'full sizes'}).",
        "",
        f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']};"
        f" Python {m['python']}, Node {m['node']} (ws {m['npm_ws']}). Server pinned to core"
        f" {m['server_core']}, load generator to core {m['loadgen_core']}. Shared, noisy"
        " machine: read the ratios (target / baseline within the same repetition, then the"
        " median), not the absolute figures.",
        "",
        "**Packages:** " + ", ".join(f"{k} {v}" for k, v in m["packages"].items() if v) + ".",
        "",
        "Ratios: **× loop** is against the hand-written Starlette loop and **× ws** against the"
        " `websockets` library's own server, both on the same event loop as the row (asyncio"
        " rows: `starlette-loop` on uvicorn and `websockets` on uvloop; hypercorn-asyncio rows:"
        " `starlette-loop-hca` and `websockets`; trio rows:"
        " `starlette-loop-trio` on hypercorn -k trio and `websockets-trio`). Figures are medians"
        " over repetitions; **srv CPU** / **gen CPU** are the server's and the load generator's"
        " CPU use over the measured window (100% = one core), **other** is the rest of the"
        " machine (other tenants, the harness).",
        "",
    ]
    src = m.get("wsrooms_source") or {}
    if isinstance(src, list):
        wheres = [
            f"`@{x['ref']}` = {x['from']} at {(x['commit'] or '?')[:10]}"
            + (f" with uncommitted changes (digest {x['digest']})" if x.get("dirty") else "")
            for x in src
        ]
        lines += [
            f"**wsrooms:** {m['packages'].get('wsrooms')}, at {len(src)} git refs in this one"
            f" run: {', '.join(wheres)}. Each wsrooms target runs once per ref (labelled"
            " `target@ref`); **× before** is the ratio to the same target at the first ref,"
            " per repetition, then the median.",
            "",
        ]
    elif src:
        where = src["from"] + (f" at {src['commit'][:10]}" if src.get("commit") else "")
        if src.get("dirty"):
            where += " with uncommitted changes"
        lines += [f"**wsrooms:** {m['packages'].get('wsrooms')}, from {where}.", ""]
    if data.get("broken"):
        broken = ", ".join(f"`{k}` ({v})" for k, v in data["broken"].items())
        lines += [f"**Broken (import raised):** {broken}", ""]
    if data.get("skipped"):
        skipped = ", ".join(f"`{k}` ({v})" for k, v in data["skipped"].items())
        lines += [f"**Skipped (not importable):** {skipped}", ""]

    def labels_in(*groups: dict[str, Any]) -> list[str]:
        return [t.label for t in TARGETS if any(t.label in g for g in groups)]

    def err(entry: dict[str, Any]) -> str:
        errors = entry.get("errors") or []
        return "" if not errors else f" ⚠ {len(errors)} failed: {errors[0]}"

    def ratios(e: dict[str, Any]) -> list[str]:
        return [fmt_ratio(e.get("ratio_to_loop")), fmt_ratio(e.get("ratio_to_websockets"))]

    if "fanout" in s:
        lines += [
            "## Fan-out",
            "",
            "One publisher, N subscribers in one room, 100-byte messages, a window of"
            f" {FANOUT_WINDOW} messages in flight (a message leaves the window once every"
            " subscriber has it). Latency is from send to receipt, over every delivery."
            " **µs/deliv** is server CPU time per delivery.",
            "",
        ]
        for variant, targets in s["fanout"].items():
            rows = []
            for label in labels_in(targets):
                e = targets[label]
                md = e["median"]
                rows.append(
                    [
                        label,
                        fmt(md.get("deliveries_per_s")),
                        *ratios(e),
                        fmt(md.get("p50_ms"), 1),
                        fmt(md.get("p99_ms"), 1),
                        pct(md.get("server_cpu_pct")),
                        pct(md.get("loadgen_cpu_pct")),
                        pct(md.get("other_cpu_pct")),
                        fmt(md.get("server_us_per_delivery"), 1),
                        ("none" if not e["errors"] else "") + err(e),
                    ]
                )
            header = ["target", "deliveries/s", "× loop", "× ws", "p50 ms", "p99 ms"]
            header += ["srv CPU", "gen CPU", "other", "µs/deliv", "<losses"]
            lines += [f"### {variant}", "", *table(header, rows)]
    if "slow" in s:
        base = s["slow"].get("no stuck member", {})
        stuck = s["slow"].get("one stuck member", {})
        lines += [
            "## Slow consumer",
            "",
            "100 subscribers (20 in quick mode), 4 KiB messages so that kernel buffers fill; one"
            " member completes the handshake and then stops reading its socket. Deliveries/s"
            " count the other members only; the same run without a stuck member is the"
            " reference. RSS growth is the server's over the measured window (peak in"
            " brackets). **undelivered** counts messages the publisher sent that the other"
            " members never got in time (a stalled room).",
            "",
        ]
        rows = []
        for label in labels_in(base, stuck):
            b = base.get(label, {"median": {}})
            e = stuck.get(label, {"median": {}})
            db = b["median"].get("deliveries_per_s")
            ds = e["median"].get("deliveries_per_s")
            rows.append(
                [
                    label,
                    fmt(db),
                    fmt(ds),
                    fmt_ratio(ds / db if db and ds is not None else None),
                    *ratios(e),
                    f"{mib(e['median'].get('server_rss_growth'))}"
                    f" ({mib(e['median'].get('server_peak_growth'))})",
                    fmt(median(e.get("undelivered") or [])),
                    describe_stuck(e) + err(b) + err(e),
                ]
            )
        header = ["target", "deliv/s, no stuck", "with one stuck", "stuck / no stuck"]
        header += ["× loop", "× ws", "RSS growth MiB", "undelivered", "<the stuck member"]
        lines += table(header, rows)
    if "idle" in s:
        variants = list(s["idle"])
        lines += [
            "## Idle memory",
            "",
            "C idle connections spread over 10 rooms: (server RSS after opening them − RSS"
            " before) / C. Every member then gets one message in its room, to prove it joined.",
            "",
        ]
        rows = []
        for label in labels_in(*s["idle"].values()):
            cells = [label]
            rate = None
            errors = ""
            for v in variants:
                e = s["idle"][v].get(label)
                if e is None:
                    cells += ["–", "–", "–"]
                    continue
                cells += [fmt(e["median"].get("rss_per_conn_kb"), 1), *ratios(e)]
                rate = e["median"].get("connections_per_s_open")
                errors += err(e)
            rows.append([*cells, fmt(rate) + errors])
        header = ["target"]
        for v in variants:
            header += [f"KiB/conn {v}", "× loop", "× ws"]
        lines += table([*header, "opened/s"], rows)
    if "echo" in s:
        lines += [
            "## Echo round trips",
            "",
            "Clients each keep one 100-byte message in flight and wait for its echo. wsrooms"
            " rows run a `BaseWSEndpoint` (a task per message); `starlette-loop` rows run a"
            " plain Starlette `WebSocketEndpoint`.",
            "",
        ]
        for variant, targets in s["echo"].items():
            rows = []
            for label in labels_in(targets):
                e = targets[label]
                md = e["median"]
                rows.append(
                    [
                        label,
                        fmt(md.get("round_trips_per_s")),
                        *ratios(e),
                        fmt(md.get("p50_ms"), 2),
                        fmt(md.get("p99_ms"), 2),
                        pct(md.get("server_cpu_pct")),
                        pct(md.get("loadgen_cpu_pct")),
                        pct(md.get("other_cpu_pct")) + err(e),
                    ]
                )
            header = ["target", "round trips/s", "× loop", "× ws", "p50 ms", "p99 ms"]
            header += ["srv CPU", "gen CPU", "other"]
            lines += [f"### {variant}", "", *table(header, rows)]
    if "churn" in s:
        lines += [
            "## Connect/disconnect churn",
            "",
            "Connect, join a room (one of 10), close, 50 at a time (npm `ws` client)."
            " Connections/s over the cycles after warm-up; server RSS after warm-up and after"
            " every cycle.",
            "",
        ]
        for variant, targets in s["churn"].items():
            rows = []
            for label in labels_in(targets):
                e = targets[label]
                md = e["median"]
                rows.append(
                    [
                        label,
                        fmt(md.get("connections_per_s")),
                        *ratios(e),
                        mib(md.get("rss_after_warmup")),
                        mib(md.get("rss_after_all")),
                        mib(md.get("rss_growth")),
                        pct(md.get("server_cpu_pct")),
                        pct(md.get("loadgen_cpu_pct")) + err(e),
                    ]
                )
            header = ["target", "connections/s", "× loop", "× ws", "RSS after warm-up MiB"]
            header += ["RSS after all MiB", "growth MiB", "srv CPU", "gen CPU"]
            lines += [f"### {variant}", "", *table(header, rows)]
    if "flood" in s:
        lines += [
            "## Flood",
            "",
            "One client sends 100-byte messages as fast as its socket takes them (it waits for"
            " TCP backpressure, never for replies) into a room of readers that read"
            " everything, for a bounded time and message count, then everything sent has a"
            " bounded drain to arrive. **deliveries/s** are the readers' from the first send"
            " to the last receipt (to the end of the drain if something never came);"
            " **sent/s** is the flooder's own rate; **dropped** counts readers the server"
            " closed, per repetition (the goal is none); **backlog/reader** is how many"
            " messages each reader still had to get when the flood stopped (what the server"
            " and the kernel held); **drain s** how long they took to arrive; **left** what"
            " was still missing after the drain.",
            "",
        ]
        for variant, targets in s["flood"].items():
            rows = []
            for label in labels_in(targets):
                e = targets[label]
                md = e["median"]
                per_rep = e.get("flood") or []
                dropped = "/".join(str(f["readers_dropped"]) for f in per_rep) or "–"
                codes: dict[str, int] = {}
                for f in per_rep:
                    for code, n in f["close_codes"].items():
                        codes[code] = codes.get(code, 0) + n
                if codes:
                    dropped += " (" + ", ".join(f"{c}" for c in codes) + ")"
                rows.append(
                    [
                        label,
                        BY_LABEL[label].server,
                        fmt(md.get("deliveries_per_s")),
                        *ratios(e),
                        fmt(md.get("messages_per_s")),
                        dropped,
                        fmt(md.get("backlog_per_reader_at_stop")),
                        fmt(md.get("drain_s"), 1),
                        fmt(md.get("undelivered_after_drain")),
                        fmt(md.get("p50_ms"), 1),
                        fmt(md.get("p99_ms"), 1),
                        f"{mib(md.get('server_rss_growth'))} ({mib(md.get('server_peak_growth'))})",
                        pct(md.get("server_cpu_pct")),
                        pct(md.get("loadgen_cpu_pct")),
                        pct(md.get("other_cpu_pct")) + err(e),
                    ]
                )
            header = ["target", "<server", "deliveries/s", "× loop", "× ws", "sent/s"]
            header += ["dropped", "backlog/reader", "drain s", "left", "p50 ms", "p99 ms"]
            header += ["RSS growth MiB (peak)", "srv CPU", "gen CPU", "other"]
            lines += [f"### {variant}", "", *table(header, rows)]
    if REFS:
        lines += [
            "## Before / after",
            "",
            f"Each wsrooms target at `@{REFS[-1]}` against itself at `@{REFS[0]}`, same run:"
            " the headline figure's ratio per repetition, then the median (idle memory:"
            " lower is better; every other row: higher is better). **CPU/op** columns are"
            " the same ratios of server CPU time per delivery, round trip or connection"
            " (lower is better): they hold up better than rates when other tenants take"
            " part of the server's core.",
            "",
        ]
        rows = []
        for scenario, variants in s.items():
            metric, _ = HEADLINE[scenario]
            for variant, entries in variants.items():
                for label in labels_in(entries):
                    target = BY_LABEL[label]
                    if target.ref != REFS[-1]:
                        continue
                    before = entries.get(f"{target.base}@{REFS[0]}", {"median": {}})
                    e = entries[label]
                    digits = 1 if metric == "rss_per_conn_kb" else 0
                    rows.append(
                        [
                            f"{scenario} {variant}",
                            target.base,
                            fmt(before["median"].get(metric), digits),
                            fmt(e["median"].get(metric), digits),
                            fmt_ratio(e.get("ratio_to_first_ref")),
                            fmt_ratio(before.get("ratio_to_loop")),
                            fmt_ratio(e.get("ratio_to_loop")),
                            fmt_ratio(e.get("cpu_ratio_to_first_ref")),
                            fmt_ratio(before.get("cpu_ratio_to_loop")),
                            fmt_ratio(e.get("cpu_ratio_to_loop")),
                        ]
                    )
        header = ["<scenario", "<target", f"@{REFS[0]}", f"@{REFS[-1]}", "× before"]
        header += [f"× loop @{REFS[0]}", f"× loop @{REFS[-1]}", "CPU/op × before"]
        header += [f"CPU/op × loop @{REFS[0]}", f"CPU/op × loop @{REFS[-1]}"]
        lines += table(header, rows)
    lines += table(["target", "<server", "<what"], [[t.label, t.server, t.note] for t in TARGETS])
    lines.insert(len(lines) - len(TARGETS) - 3, "## Targets\n")
    return "\n".join(lines)


def describe_stuck(entry: dict[str, Any]) -> str:
    stuck = entry.get("stuck") or []
    if not stuck:
        return "–"
    fates = [s["fate"] for s in stuck]
    fate = max(set(fates), key=fates.count)
    got = median([s["frames_after_pause"] for s in stuck])
    sent = median([s["messages_sent_while_stuck"] for s in stuck])
    text = f"{fate}" + (
        f" (reason {stuck[0]['close_reason']!r})" if stuck[0].get("close_reason") else ""
    )
    text += f"; it still got {fmt(got)} of {fmt(sent)} messages once it read again"
    stats = [s for s in entry.get("server_stats") or [] if "dropped" in s]
    if stats:
        text += f"; hub.dropped {fmt(median([s['dropped'] for s in stats]))}"
    if len(set(fates)) > 1:
        text += f" (reps: {', '.join(fates)})"
    return text


def plot(data: dict[str, Any]) -> None:
    """The plots show the statistic of the headline tables: per target, the median over
    repetitions of (target / the hand-written loop on the same server, same repetition)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = data["summary"]
    for scenario, ylabel, fname, title in [
        (
            "fanout",
            "deliveries/s, × the loop on the same server",
            "fanout.png",
            "Fan-out: deliveries/s against the hand-written loop (higher is better)",
        ),
        (
            "idle",
            "server RSS per idle connection, × the loop",
            "memory.png",
            "Idle memory per connection against the hand-written loop (lower is better)",
        ),
    ]:
        if scenario not in s:
            continue
        variants = list(s[scenario])
        labels = [t.label for t in TARGETS if any(t.label in s[scenario][v] for v in variants)]
        fig, ax = plt.subplots(figsize=(max(7, 0.75 * len(labels) + 2), 4.8))
        width = 0.8 / max(1, len(variants))
        for i, v in enumerate(variants):
            values = [(s[scenario][v].get(lb) or {}).get("ratio_to_loop") or 0 for lb in labels]
            xs = [x + i * width - 0.4 + width / 2 for x in range(len(labels))]
            bars = ax.bar(xs, values, width, label=v)
            ax.bar_label(
                bars, labels=[f"{val:.2f}" for val in values], fontsize=7, rotation=90, padding=2
            )
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
        ax.set_ylabel(ylabel)
        reps = data["config"]["reps"]
        ax.set_title(
            f"{title}\nmedian of {reps} per-repetition ratios; {data['machine']['cpu']},"
            " server on 1 core",
            fontsize=9,
        )
        ax.margins(y=0.2)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(RESULTS / fname, dpi=110)
        plt.close(fig)


# --------------------------------------------------------------------------------------


def importable(target: Target) -> tuple[str, str]:
    """ "ok", "missing" (an ImportError: the library or a name in it is not there yet, so the
    target is skipped) or "broken" (any other error at import: a failure)."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / "serve.py"), "--target", target.module, "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        env=child_env(target),
    )
    if proc.returncode == 0:
        return "ok", ""
    last = (proc.stderr.strip().splitlines() or ["?"])[-1]
    return ("missing" if proc.returncode == 3 else "broken"), last


def leftover_children() -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process().children(recursive=True)]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 repetition, small sizes")
    parser.add_argument(
        "--scenarios", default=",".join(SCENARIOS), help="comma-separated: " + ",".join(SCENARIOS)
    )
    parser.add_argument(
        "--targets", default="", help="comma-separated labels (default: all importable)"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3, quick 1)")
    parser.add_argument(
        "--setup", action="store_true", help="create/refresh the bench venv and node deps"
    )
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument(
        "--require-all",
        action="store_true",
        help="fail when a target cannot be imported (instead of skipping it)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: bench/results for a full run of every scenario and"
        " target, bench/results/partial for --quick or a subset, so that a smoke or partial"
        " run never overwrites the committed results)",
    )
    parser.add_argument(
        "--member-client",
        choices=["raw", "ws"],
        default="raw",
        help="client of the fan-out members: the lean raw-socket reader (default) or the npm"
        " `ws` client, to check that the load generator does not set the pace",
    )
    parser.add_argument(
        "--wsrooms-ref",
        action="append",
        default=[],
        help="measure wsrooms as committed at this git ref (e.g. HEAD) instead of the"
        " working tree, so that edits during a long run do not leak into it; give it twice"
        " or more (e.g. --wsrooms-ref 5359757 --wsrooms-ref core) to measure each ref in the"
        " same run, as targets named <target>@<ref>; ratios to the first ref are reported",
    )
    parser.add_argument(
        "--rerender",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="only rebuild results.md and the plots from a results.json (next to it), e.g."
        " after a change to the report; nothing is run",
    )
    args = parser.parse_args()
    global RESULTS, RAW, WSROOMS_SRC, REFS

    if args.rerender:
        ensure_venv(args)
        return rerender(args.rerender)

    if args.setup:
        setup(args.venv)
        if len(sys.argv) == 2:
            return 0
    ensure_venv(args)
    if not (BENCH / "node_modules" / "ws").exists():
        sys.exit(
            "node client missing: run `npm ci --prefix bench` (or `python bench/run.py --setup`)"
        )

    full_run = (
        not args.quick
        and args.member_client == "raw"
        and set(args.scenarios.split(",")) >= set(SCENARIOS)
        and not args.targets
    )
    RESULTS = args.out or (BENCH / "results" if full_run else BENCH / "results" / "partial")
    RAW = RESULTS / "raw"
    RESULTS.mkdir(parents=True, exist_ok=True)
    raise_nofile()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {LOADGEN_CORE})  # keep the harness off the server's core

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    # Explicit handlers: a background job may start with SIGINT ignored; either signal
    # must unwind through the `finally` blocks that stop the children.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)

    # Each --wsrooms-ref is REF or NAME=REF (NAME labels the targets, e.g. core=/work/core).
    specs = {spec.partition("=")[0]: spec.partition("=")[2] or spec for spec in args.wsrooms_ref}
    infos: dict[str, dict[str, Any]] = {}
    for name, ref in specs.items():
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="wsrooms-bench-src-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        infos[name] = snapshot_wsrooms(ref, tmp) | {"ref": name}
        REF_SRC[name] = tmp / "src"
        info = infos[name]
        print(
            f"wsrooms {name}: {info['from']} at {(info['commit'] or '?')[:10]}"
            + (f", uncommitted changes (digest {info['digest']})" if info.get("dirty") else "")
        )
    source: Any
    if len(specs) == 1:
        WSROOMS_SRC = next(iter(REF_SRC.values()))
        source = next(iter(infos.values()))
    elif specs:
        REFS = list(specs)
        expand_refs(REF_SRC)
        source = list(infos.values())
    else:
        source = wsrooms_source()

    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    scenarios = [s for s in args.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            parser.error(f"unknown scenario {s!r}")
    wanted = [t for t in args.targets.split(",") if t]
    bases = {t.base for t in TARGETS if t.base}
    for label in wanted:
        if label not in BY_LABEL and label not in bases:
            parser.error(f"unknown target {label!r}; known: {', '.join(BY_LABEL)}")
    # A target named without "@ref" stands for its copy at every ref.
    targets = [t for t in TARGETS if not wanted or t.label in wanted or t.base in wanted]

    skipped: dict[str, str] = {}
    broken: dict[str, str] = {}
    checked: dict[tuple[str, str | None], tuple[str, str]] = {}
    usable = []
    for t in targets:
        if (t.module, t.ref) not in checked:
            checked[t.module, t.ref] = importable(t)
        state, why = checked[t.module, t.ref]
        if state == "ok":
            usable.append(t)
        elif state == "missing":
            skipped[t.label] = why
            print(f"skip {t.label}: {why}", flush=True)
        else:
            broken[t.label] = why
            print(f"BROKEN {t.label}: {why}", flush=True)
    machine = machine_info()
    machine["wsrooms_source"] = source
    plan = scenario_plan(args.quick)
    if args.member_client != "raw":
        for variants in plan.values():
            for variant in variants:
                variant["memberClient"] = args.member_client
    runs: list[dict[str, Any]] = []
    jobs = [
        (rep, scenario, variant, target)
        for rep in range(1, reps + 1)
        for scenario in scenarios
        for variant in plan[scenario]
        for target in usable
        if target_runs_scenario(target, scenario)
    ]
    if args.quick:
        # Smoke run: one server per target serves every scenario (saves a start per run).
        order = {t.label: i for i, t in enumerate(usable)}
        jobs.sort(key=lambda job: order[job[3].label])
    t0 = time.monotonic()
    shared: Server | None = None
    try:
        for n, (rep, scenario, variant, target) in enumerate(jobs, 1):
            if args.quick and (shared is None or shared.target is not target):
                if shared is not None:
                    shared.stop()
                shared = Server(target, slug_of("quick", target.label))
                try:
                    shared.start()
                except Exception:  # reported by run_one below
                    pass
            r = run_one(target, scenario, variant, rep, shared)
            runs.append(r)
            print(f"[{n}/{len(jobs)} {time.monotonic() - t0:5.0f}s] {describe_run(r)}", flush=True)
    finally:
        if shared is not None:
            shared.stop()

    data = {
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "config": {
            "argv": sys.argv[1:],
            "quick": args.quick,
            "reps": reps,
            "scenarios": scenarios,
            "targets": [t.label for t in usable],
            "fanout_window": FANOUT_WINDOW,
            "wsrooms_refs": REFS,
            "send_queue_size": SEND_QUEUE_SIZE,
            "plan": {s: plan[s] for s in scenarios},
        },
        "machine": machine,
        "skipped": skipped,
        "broken": broken,
        "summary": summarize(runs),
        "runs": runs,
    }
    (RESULTS / "results.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    markdown = render_markdown(data)
    (RESULTS / "results.md").write_text(markdown)
    try:
        plot(data)
    except Exception as exc:
        print(f"plotting failed: {exc!r}", flush=True)
    print()
    print(markdown)

    failed = [r for r in runs if not r["ok"]]
    left = leftover_children()
    if left:
        print(f"stray child processes {left}: stopping them", flush=True)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if broken:
        print(f"FAILED: targets that raise on import: {', '.join(broken)}")
        return 1
    if args.require_all and skipped:
        print(f"FAILED: targets not importable: {', '.join(skipped)}")
        return 1
    if failed:
        print(f"FAILED: {len(failed)} of {len(runs)} runs:")
        for r in failed:
            print(f"  {r['scenario']} {r['variant']} {r['target']} rep {r['rep']}: {r['error']}")
        return 1
    print(f"all {len(runs)} runs passed in {time.monotonic() - t0:.0f} s")
    return 0


def rerender(path: Path) -> int:
    """Rebuild results.md and the plots from a results.json: medians and ratios are taken
    again from its runs, with this version of the report."""
    global RESULTS, REFS
    data = json.loads(path.read_text())
    RESULTS = path.resolve().parent
    REFS = list(data["config"].get("wsrooms_refs") or [])
    if REFS:
        expand_refs({ref: Path() for ref in REFS})
    data["summary"] = summarize(data["runs"])
    (RESULTS / "results.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    (RESULTS / "results.md").write_text(render_markdown(data))
    plot(data)
    print(f"rebuilt {RESULTS / 'results.md'} and the plots from {len(data['runs'])} runs")
    return 0


def describe_run(r: dict[str, Any]) -> str:
    head = f"{r['scenario']:6} {r['variant']:16} {r['target']:22} rep {r['rep']}"
    if r.get("error"):
        return f"{head} FAILED: {r['error']}"
    bits = []
    for key, label, digits in [
        ("deliveries_per_s", "deliv/s", 0),
        ("round_trips_per_s", "rt/s", 0),
        ("connections_per_s", "conn/s", 0),
        ("rss_per_conn_kb", "KiB/conn", 1),
        ("p99_ms", "p99 ms", 1),
        ("server_cpu_pct", "srv%", 0),
        ("loadgen_cpu_pct", "gen%", 0),
        ("other_cpu_pct", "other%", 0),
    ]:
        if r.get(key) is not None:
            bits.append(f"{label} {fmt(r[key], digits)}")
    if r.get("stuck_fate"):
        bits.append(f"stuck: {r['stuck_fate']}")
    if r.get("server_rss_growth") is not None and r["scenario"] == "slow":
        bits.append(f"RSS +{r['server_rss_growth'] / 2**20:.1f} MiB")
    return f"{head} ok  " + ", ".join(bits) + f"  ({r['seconds']} s)"


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); every child process was stopped", file=sys.stderr)
        sys.exit(130)
