#!/usr/bin/env python3
"""Cross-process fan-out: rooms that span two server processes on one Redis.

    bench/.venv/bin/python bench/cross_process.py --wsrooms-ref HEAD    # 3 reps (~8 min)
    bench/.venv/bin/python bench/cross_process.py --quick               # smoke: 1 rep, small

One redis-server (loopback, ``--save '' --appendonly no``), two server processes of the
same target on two loopback ports, N members of one room split evenly over the two (member
i on server i mod 2), and one publisher on server 1. The publisher keeps a window of W
messages that not every member has received yet (W = 10, as bench/run.py's fan-out): it
sends as fast as the room delivers, closed loop, no fixed offered rate. Deliveries/s =
deliveries to all members / (first send -> last receipt); every member's sequence is
checked for gaps, order and what never came (losses).

Targets, interleaved (rep 1: A B C ..., rep 2: A B C ...), medians of the repetitions,
ratios taken within each repetition, then the median:

  wsrooms-memory         RoomEndpoint, in-memory Hub, ONE server (uvicorn), every member on
                         it: the reference
  wsrooms-redis          RoomEndpoint, Hub("redis://..."), two uvicorn servers
  wsrooms-redis-trio     the same app, two hypercorn trio servers (hypercorn -k trio)
  wsrooms-memory-trio    the reference on hypercorn trio (one server)
  socketio-redis         python-socketio AsyncServer + AsyncRedisManager, two uvicorn servers
  broadcaster-redis      encode/broadcaster Broadcast("redis://..."), two uvicorn servers

The machine has 2 cores, shared with other tenants. Layout: every server process on core
0 (both servers of a pair share it, as the one reference server has it alone: the same CPU
budget for the servers of every target), and the client (Node.js), redis-server and this
harness on core 1. The CPU time of every process is sampled at the edges of the measured
window, so the report gives the servers' CPU microseconds per delivery too.

The client is a Node.js script kept in this file (CLIENT_JS, written to a temporary file
at start-up): bench/loadgen.js dials one port, this scenario needs two. Its members are the
same lean raw-socket WebSocket reader as loadgen.js's (Engine.IO v4 framing for
python-socketio), and so is its publisher. Every loop is bounded in count and in time,
only 127.0.0.1 is dialled, and every process started here is stopped by its PID.
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
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
SERVER_CORE = 0
CLIENT_CORE = 1  # the client, redis-server and this harness
SEND_QUEUE_SIZE = 256  # wsrooms targets, as in bench/run.py
WINDOW = 10
VENV_CANDIDATES = [
    Path(p) for p in (os.environ.get("BENCH_VENV"), BENCH / ".venv", "/work/bench-venv") if p
]


@dataclass(frozen=True)
class Target:
    label: str
    module: str  # bench/targets/<module>.py
    server: str  # uvicorn | hypercorn-trio
    redis: bool  # two servers on one Redis; False: one server, in memory
    proto: str = "ws"  # ws | sio
    stats: bool = False  # serves GET /stats
    ordered: bool = True  # promises each sender's order: a reordering fails the run
    note: str = ""


TARGETS = [
    Target(
        "wsrooms-memory",
        "xproc_wsrooms",
        "uvicorn",
        False,
        stats=True,
        note="RoomEndpoint, in-memory Hub(), one uvicorn server: the reference",
    ),
    Target(
        "wsrooms-redis",
        "xproc_wsrooms",
        "uvicorn",
        True,
        stats=True,
        note='RoomEndpoint, Hub("redis://…"), two uvicorn servers',
    ),
    Target(
        "wsrooms-redis-trio",
        "xproc_wsrooms",
        "hypercorn-trio",
        True,
        stats=True,
        note="the same app, two hypercorn trio servers (hypercorn -k trio)",
    ),
    Target(
        "wsrooms-memory-trio",
        "xproc_wsrooms",
        "hypercorn-trio",
        False,
        stats=True,
        note="in-memory Hub(), one hypercorn trio server: the trio reference",
    ),
    Target(
        "socketio-redis",
        "xproc_socketio",
        "uvicorn",
        True,
        proto="sio",
        ordered=False,  # async_handlers=True (its default): a task per event
        note="python-socketio AsyncServer + AsyncRedisManager, two uvicorn servers",
    ),
    Target(
        "broadcaster-redis",
        "xproc_broadcaster",
        "uvicorn",
        True,
        note='encode/broadcaster Broadcast("redis://…"), two uvicorn servers',
    ),
]
BY_LABEL = {t.label: t for t in TARGETS}
REFERENCE = "wsrooms-memory"
PEERS = ("socketio-redis", "broadcaster-redis")


def plan(quick: bool) -> list[dict[str, Any]]:
    if quick:
        return [dict(variant="N=20", members=20, messages=300, duration=3, drainMs=2000)]
    return [
        dict(variant="N=100", members=100, messages=6000, duration=10, drainMs=5000),
        dict(variant="N=500", members=500, messages=1500, duration=10, drainMs=5000),
    ]


# --------------------------------------------------------------------------------------
# Serving one target (this file re-run as a child: --serve)


def serve(module_name: str, server: str, port: int) -> None:
    import importlib
    import logging

    sys.path.insert(0, str(BENCH))
    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    module = importlib.import_module(f"targets.{module_name}")
    if server == "uvicorn":
        import uvicorn

        uvicorn.run(
            module.app,
            host=HOST,
            port=port,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            lifespan="on",  # every target here has one: a failing start-up fails loudly
            log_level="warning",
            access_log=False,
            backlog=4096,
        )
    elif server == "hypercorn-trio":
        import trio
        from hypercorn.config import Config
        from hypercorn.trio import serve as trio_serve

        config = Config()
        config.bind = [f"{HOST}:{port}"]
        config.backlog = 4096
        config.accesslog = None
        config.loglevel = "WARNING"
        trio.run(trio_serve, module.app, config)  # the code path of `hypercorn -k trio`
    else:
        raise SystemExit(f"unknown server {server!r}")


# --------------------------------------------------------------------------------------
# Processes


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1_048_576
    target = min(target, 1_048_576)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def pinned(core: int, argv: list[str]) -> list[str]:
    taskset = shutil.which("taskset")
    return [taskset, "-c", str(core), *argv] if taskset else argv


def child_setup(core: int) -> Any:
    """Before exec: die with the harness (PR_SET_PDEATHSIG); pin without `taskset`."""
    has_taskset = shutil.which("taskset") is not None

    def fn() -> None:
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGTERM)
        if not has_taskset:
            with contextlib.suppress(AttributeError, OSError):
                os.sched_setaffinity(0, {core})

    return fn


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any] | None, grace: float = 3.0) -> None:
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


def wait_listening(port: int, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port} after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def system_busy() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


class Redis:
    """One redis-server on a free loopback port, pinned with the client; stopped by PID."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen[Any] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> Redis:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server not found (apt-get install -y redis-server)")
        argv = [exe, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly"]
        argv += ["no", "--daemonize", "no", "--loglevel", "warning"]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                pinned(CLIENT_CORE, argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=child_setup(CLIENT_CORE),
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within 10 s")

    def stop(self) -> None:
        stop(self.proc)


class Server:
    """One server process of a target, pinned to the server core; stopped by its PID."""

    def __init__(self, target: Target, redis_url: str | None, log: Path, src: Path | None):
        self.target = target
        self.port = free_port()
        self.redis_url = redis_url
        self.log = log
        self.src = src
        self.proc: subprocess.Popen[Any] | None = None

    def start(self) -> Server:
        env = dict(os.environ, PYTHONUNBUFFERED="1", BENCH_SEND_QUEUE_SIZE=str(SEND_QUEUE_SIZE))
        env.pop("BENCH_REDIS_URL", None)
        if self.redis_url:
            env["BENCH_REDIS_URL"] = self.redis_url
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(self.src), env.get("PYTHONPATH", "")) if p
            )
        argv = [sys.executable, str(Path(__file__).resolve()), "--serve", self.target.module]
        argv += ["--server", self.target.server, "--port", str(self.port)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                pinned(SERVER_CORE, argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=child_setup(SERVER_CORE),
            )
        wait_listening(self.port, self.proc, 30)
        return self

    def alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            code = None if self.proc is None else self.proc.returncode
            raise RuntimeError(f"server on {self.port} exited with {code} during the run")

    def stats(self) -> Any:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.port}/stats", timeout=5) as r:
                return json.loads(r.read())
        except Exception as exc:
            return {"error": repr(exc)}

    def tail(self, n: int = 6) -> list[str]:
        try:
            return self.log.read_text(errors="replace").strip().splitlines()[-n:]
        except OSError:
            return []

    def stop(self) -> None:
        stop(self.proc)


# --------------------------------------------------------------------------------------
# One run


def run_one(
    target: Target,
    variant: dict[str, Any],
    rep: int,
    client_js: Path,
    raw: Path,
    src: Path | None,
    window: int = 10,
) -> dict[str, Any]:
    record: dict[str, Any] = {
        "target": target.label,
        "variant": variant["variant"],
        "rep": rep,
        "ok": False,
        "error": None,
    }
    slug = f"{variant['variant']}-{target.label}-rep{rep}".replace("=", "")
    redis: Redis | None = None
    servers: list[Server] = []
    client: subprocess.Popen[str] | None = None
    hard_deadline = float(variant["duration"]) + 90
    started = time.monotonic()
    try:
        if target.redis:
            redis = Redis(raw / f"{slug}.redis.log").start()
        count = 2 if target.redis else 1
        for i in range(count):
            servers.append(
                Server(
                    target,
                    redis.url if redis else None,
                    raw / f"{slug}.server{i + 1}.log",
                    src,
                ).start()
            )
        config = dict(
            variant,
            ports=[s.port for s in servers],
            proto=target.proto,
            window=window,
            size=100,
            hardDeadline=hard_deadline - 10,
        )
        node = [shutil.which("node") or "node", str(client_js), json.dumps(config)]
        with open(raw / f"{slug}.client.log", "w") as client_log:
            client = subprocess.Popen(
                pinned(CLIENT_CORE, node),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=client_log,
                text=True,
                bufsize=1,
                preexec_fn=child_setup(CLIENT_CORE),
            )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump(stdout: Any) -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, args=(client.stdout,), daemon=True).start()
        marks: dict[str, dict[str, Any]] = {}
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
                for s in servers:
                    s.alive()
                marks[msg["mark"]] = {
                    "t": time.monotonic(),
                    "servers_cpu": [cpu_seconds(s.proc.pid) for s in servers if s.proc],
                    "servers_rss": [rss(s.proc.pid) for s in servers if s.proc],
                    "client_cpu": cpu_seconds(client.pid),
                    "redis_cpu": cpu_seconds(redis.proc.pid) if redis and redis.proc else 0.0,
                    "system_busy": system_busy(),
                }
                assert client.stdin is not None
                client.stdin.write("ok\n")
                client.stdin.flush()
            elif "result" in msg:
                result = msg["result"]
            elif "error" in msg:
                raise RuntimeError(f"client: {msg['error'].splitlines()[0]}")
        client.wait(10)
        if result is None:
            raise RuntimeError(f"client exited with {client.returncode} and no result")
        for s in servers:
            s.alive()
        record["client"] = result
        record["samples"] = marks
        if target.stats:
            record["server_stats"] = [s.stats() for s in servers]
        record.update(derive(result, marks))
        problem = check(result, target)
        if problem:
            record["error"] = problem
        else:
            record["ok"] = True
    except Exception as exc:
        record["error"] = str(exc)
    finally:
        stop(client, grace=1.0)
        for s in servers:
            s.stop()
        if redis is not None:
            redis.stop()
    record["seconds"] = round(time.monotonic() - started, 2)
    if not record["ok"]:
        record["server_log_tail"] = [s.tail() for s in servers]
    return record


def derive(result: dict[str, Any], marks: dict[str, dict[str, Any]]) -> dict[str, Any]:
    a, b = marks["start"], marks["end"]
    wall = max(b["t"] - a["t"], 1e-9)
    servers = sum(b["servers_cpu"]) - sum(a["servers_cpu"])
    client = b["client_cpu"] - a["client_cpu"]
    redis = b["redis_cpu"] - a["redis_cpu"]
    other = b["system_busy"] - a["system_busy"] - servers - client - redis
    out: dict[str, Any] = {
        "deliveries_per_s": result["deliveries_per_s"],
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "servers_cpu_pct": 100 * servers / wall,
        "server_cpu_pct_each": [
            100 * (y - x) / wall for x, y in zip(a["servers_cpu"], b["servers_cpu"], strict=True)
        ],
        "client_cpu_pct": 100 * client / wall,
        "redis_cpu_pct": 100 * redis / wall,
        "other_cpu_pct": max(0.0, 100 * other / wall),
        "lost": result["lost"],
        "out_of_order": result["order_violations"],
        "timed_out": result["timed_out"],
    }
    if result["deliveries_per_s"]:
        out["servers_us_per_delivery"] = 1e6 * servers / wall / result["deliveries_per_s"]
    return out


def check(r: dict[str, Any], target: Target) -> str | None:
    problems = []
    if r["messages_sent"] == 0:
        problems.append("nothing sent")
    if r["lost"]:
        problems.append(
            f"{r['lost']} of {r['expected_deliveries']} deliveries lost "
            f"(by server: {r['lost_by_server']})"
        )
    if r["order_violations"] and target.ordered:
        problems.append(f"{r['order_violations']} out of order")
    if r["duplicates"]:
        problems.append(f"{r['duplicates']} duplicates")
    if r["members_closed"]:
        problems.append(f"{r['members_closed']} members closed by the server")
    return "; ".join(problems) or None


# --------------------------------------------------------------------------------------
# Report


def median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per variant and target: medians over repetitions; ratios to the reference and to
    each peer taken within each repetition (runs seconds apart), then the median."""
    summary: dict[str, Any] = {}
    by: dict[tuple[str, str, int], dict[str, Any]] = {
        (r["variant"], r["target"], r["rep"]): r for r in runs
    }
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    labels = list(dict.fromkeys(r["target"] for r in runs))
    for v in variants:
        summary[v] = {}
        for label in labels:
            rs = [r for r in runs if r["variant"] == v and r["target"] == label]
            good = [r for r in rs if r.get("deliveries_per_s") is not None]
            entry: dict[str, Any] = {
                "runs": len(rs),
                "ok": sum(1 for r in rs if r["ok"]),
                "errors": [r["error"] for r in rs if r["error"]],
                "lost": [r.get("lost") for r in rs],
                "out_of_order": [r.get("out_of_order") for r in rs],
            }
            for key in (
                "deliveries_per_s",
                "p50_ms",
                "p99_ms",
                "servers_cpu_pct",
                "servers_us_per_delivery",
                "client_cpu_pct",
                "redis_cpu_pct",
                "other_cpu_pct",
            ):
                entry[key] = median([r.get(key) for r in good])
            for base in (REFERENCE, "wsrooms-memory-trio", *PEERS):
                ratios = []
                for r in good:
                    other = by.get((v, base, r["rep"]))
                    if other and other.get("deliveries_per_s"):
                        ratios.append(r["deliveries_per_s"] / other["deliveries_per_s"])
                entry[f"x_{base}"] = median(ratios)
                entry[f"x_{base}_reps"] = ratios
            summary[v][label] = entry
    return summary


def other_range(runs: list[dict[str, Any]]) -> str:
    values = [r["other_cpu_pct"] for r in runs if r.get("other_cpu_pct") is not None]
    if not values:
        return ""
    return f": {min(values):.0f}–{max(values):.0f}% in this run's measured windows"


def fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def ratio(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}×"


def render(data: dict[str, Any]) -> str:
    s = data["summary"]
    m = data["machine"]
    cfg = data["config"]
    lines = [
        "# Cross-process fan-out: two servers on one Redis",
        "",
        f"Run {data['finished']}, {cfg['reps']} interleaved repetitions, medians; "
        f"`{cfg['command']}`. wsrooms: {m['wsrooms_source']}.",
        "",
        "One redis-server (loopback, `--save '' --appendonly no`); two server processes of "
        "the target on two loopback ports, the N members of one room split evenly over "
        "them (member i on server i mod 2), one publisher on server 1. The publisher keeps "
        f"W = {cfg['window']} messages in flight (sent, not yet received by every member): "
        "closed loop, as fast as the room delivers, no fixed offered rate. 100-byte text "
        "messages. **deliveries/s** = messages × members received / (first send → last "
        "receipt), all members of both servers. The in-memory references run ONE server "
        "with every member on it.",
        "",
        f"**Machine layout** ({m['cores']} cores, {m['cpu']}, shared with other tenants): "
        f"every server process on core {SERVER_CORE} (the two servers of a pair share it; "
        "the one in-memory server has it alone, so every target's servers get the same one "
        f"core), the client (Node.js), redis-server and the harness on core {CLIENT_CORE}. "
        "**srv µs/deliv** is the servers' CPU time (both) per delivery: it depends far less "
        "than a rate on how much of the core other tenants took. **other** is CPU used "
        "outside the measured processes during the window (of the machine's "
        f"{100 * (m['cores'] or 1)}%)" + other_range(data["runs"]) + ".",
        "",
        "Ratios are per repetition (runs seconds apart), then the median: **× mem** to "
        "in-memory wsrooms (uvicorn), **× sio** to python-socketio + AsyncRedisManager, "
        "**× bc** to broadcaster's Redis backend.",
        "",
    ]
    for v, entries in s.items():
        lines += [
            f"## {v}",
            "",
            "| target | deliveries/s | × mem | × sio | × bc | p50 ms | p99 ms "
            "| srv µs/deliv | servers CPU | client | redis | other | lost | out of order |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        ]
        for t in TARGETS:
            e = entries.get(t.label)
            if e is None:
                continue
            lost = ", ".join("–" if x is None else str(x) for x in e["lost"])
            disorder = ", ".join("–" if x is None else str(x) for x in e["out_of_order"])
            flag = "" if not e["errors"] else " ⚠"
            lines.append(
                f"| {t.label}{flag} | {fmt(e['deliveries_per_s'])} "
                f"| {ratio(e['x_' + REFERENCE])} | {ratio(e['x_socketio-redis'])} "
                f"| {ratio(e['x_broadcaster-redis'])} | {fmt(e['p50_ms'], 1)} "
                f"| {fmt(e['p99_ms'], 1)} | {fmt(e['servers_us_per_delivery'], 2)} "
                f"| {fmt(e['servers_cpu_pct'])}% | {fmt(e['client_cpu_pct'])}% "
                f"| {fmt(e['redis_cpu_pct'])}% | {fmt(e['other_cpu_pct'])}% | {lost} "
                f"| {disorder} |"
            )
        trio = entries.get("wsrooms-redis-trio", {}).get("x_wsrooms-memory-trio")
        if trio is not None:
            lines += [
                "",
                f"wsrooms-redis-trio against the trio reference (wsrooms-memory-trio): "
                f"{ratio(trio)}.",
            ]
        lines.append("")
    errors = [
        f"- {r['variant']} {r['target']} rep {r['rep']}: {r['error']}"
        for r in data["runs"]
        if r["error"]
    ]
    lines += [
        "## Losses and order",
        "",
        "**lost** lists, per repetition, the deliveries that never reached a member: for "
        "every member, the messages sent in the measured window that it had not received "
        "once the window closed (after a bounded drain when a run hit its time bound), "
        "counted by the client. "
        + (
            "Every member got every message in every run."
            if not any(r.get("lost") for r in data["runs"])
            else "Some runs lost deliveries (see below)."
        ),
        "",
        "**out of order** counts, per repetition, messages that reached a member after a "
        "later one from the same publisher. wsrooms and broadcaster keep each sender's order "
        "(a reordering fails the run); python-socketio handles each incoming event in a task "
        "of its own (`async_handlers=True`, its default), so two messages of one client can "
        "be emitted, locally and through Redis, in either order: counted here, not a failure.",
        "",
        *(["Problems:", "", *errors, ""] if errors else []),
        "## Targets",
        "",
        "| target | what |",
        "|---|---|",
        *[f"| {t.label} | {t.note} |" for t in TARGETS if t.label in cfg["targets"]],
        "",
        "Servers: uvicorn with uvloop, httptools, websockets-sansio, permessage-deflate off; "
        "hypercorn trio as `trio.run(hypercorn.trio.serve, app, config)` (the code path of "
        "`hypercorn -k trio`). wsrooms targets use `send_queue_size = 256`. "
        "Apps: `bench/targets/xproc_*.py`.",
        "",
        "Two work-arounds for broadcaster 0.3.1's Redis backend (with redis-py 8.1), without "
        "which it delivers nothing or loses members: its app holds one subscription to a "
        "keep-alive channel from the lifespan on (its listener task otherwise gives up for "
        "good when it wakes before redis-py has recorded the first SUBSCRIBE), and the client "
        "opens one member per server alone and waits for a message through each before the "
        "others join at once (members that join a channel while its first subscribe to "
        "Redis is in flight each record the channel's queue set anew, and all but the last "
        "are never fed). The client does the latter for every target alike.",
        "",
        "## Machine",
        "",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, Node.js {m['node']}, {m['redis']}.",
        "",
        "Packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


def machine_info(source: dict[str, Any]) -> dict[str, Any]:
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
        "coredis",
        "starlette",
        "anyio",
        "trio",
        "uvicorn",
        "uvloop",
        "hypercorn",
        "python-socketio",
        "python-engineio",
        "broadcaster",
        "redis",
    ]:
        try:
            packages[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            packages[name] = None
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    redis = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"],
        capture_output=True,
        text=True,
    ).stdout.split(" sha=")[0]
    src = source
    desc = f"{src['from']} at {(src.get('commit') or '?')[:10]}" + (
        " (uncommitted changes)" if src.get("dirty") else ""
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "redis": redis.strip(),
        "packages": packages,
        "wsrooms_source": desc,
        "wsrooms_source_raw": source,
        "server_core": SERVER_CORE,
        "client_core": CLIENT_CORE,
    }


def git(*args: str) -> str:
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def snapshot(ref: str, into: Path) -> dict[str, Any]:
    """wsrooms as committed at `ref` (git archive), so edits during the run do not leak in."""
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    if not sha:
        sys.exit(f"--wsrooms-ref {ref!r} is not a commit of {REPO}")
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", sha, "src/wsrooms"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return {"from": f"git {ref}", "commit": sha, "dirty": False}


def ensure_venv() -> None:
    """Re-run under the bench venv's Python if this one lacks the peers."""
    try:
        import coredis  # noqa: F401
        import redis  # noqa: F401
        import socketio  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        pass
    else:
        return
    python = next(
        (p / "bin" / "python" for p in VENV_CANDIDATES if (p / "bin" / "python").exists()), None
    )
    if python is None or os.environ.get("BENCH_REEXEC"):
        sys.exit(
            "this Python lacks the bench's packages (coredis, redis, python-socketio, ...):"
            " run `bash bench/setup.sh` first"
        )
    os.environ["BENCH_REEXEC"] = "1"
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", metavar="MODULE", help=argparse.SUPPRESS)
    parser.add_argument("--server", default="uvicorn", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 rep, N=20")
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--targets", default="", help="comma-separated labels (default: all)")
    parser.add_argument("--variants", default="", help="comma-separated, e.g. N=100 (default: all)")
    parser.add_argument(
        "--window",
        type=int,
        default=WINDOW,
        help=f"messages in flight (default {WINDOW}); keep it below the wsrooms targets'"
        f" send_queue_size ({SEND_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--wsrooms-ref",
        default=None,
        help="measure wsrooms as committed at this git ref (e.g. HEAD) rather than the"
        " working tree",
    )
    parser.add_argument(
        "--rerender",
        type=Path,
        default=None,
        metavar="JSON",
        help="only rebuild the .md (and the summary) from a cross_process.json; runs nothing",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default bench/results for a full run, bench/results/partial"
        " otherwise)",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.server, args.port)
        return 0
    if args.rerender:
        data = json.loads(args.rerender.read_text())
        data["summary"] = summarize(data["runs"])
        args.rerender.write_text(json.dumps(data, indent=1, default=str) + "\n")
        args.rerender.with_suffix(".md").write_text(render(data))
        print(f"rebuilt {args.rerender.with_suffix('.md')} from {len(data['runs'])} runs")
        return 0
    ensure_venv()
    raise_nofile()
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, {CLIENT_CORE})  # keep the harness off the servers' core

    def interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)

    wanted = [t for t in args.targets.split(",") if t]
    for label in wanted:
        if label not in BY_LABEL:
            parser.error(f"unknown target {label!r}; known: {', '.join(BY_LABEL)}")
    targets = [t for t in TARGETS if not wanted or t.label in wanted]
    reps = args.reps if args.reps is not None else (1 if args.quick else 3)
    full = (
        not args.quick and not wanted and not args.variants and reps >= 3 and args.window == WINDOW
    )
    out = args.out or (BENCH / "results" if full else BENCH / "results" / "partial")
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "raw" / "cross_process"
    raw.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix="wsrooms-xproc-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    client_js = tmp / "xproc_client.js"
    client_js.write_text(CLIENT_JS)
    src: Path | None = None
    if args.wsrooms_ref:
        source = snapshot(args.wsrooms_ref, tmp)
        src = tmp / "src"
    else:
        source = {
            "from": "the working tree",
            "commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--", "src/wsrooms")),
        }
    machine = machine_info(source)
    print(f"wsrooms: {machine['wsrooms_source']}", flush=True)

    variants = plan(args.quick)
    if args.variants:
        variants = [v for v in variants if v["variant"] in args.variants.split(",")]
        if not variants:
            parser.error(f"no variant among {args.variants!r}")
    jobs = [(rep, v, t) for rep in range(1, reps + 1) for v in variants for t in targets]
    runs: list[dict[str, Any]] = []
    t0 = time.monotonic()
    for n, (rep, v, t) in enumerate(jobs, 1):
        r = run_one(t, v, rep, client_js, raw, src, args.window)
        runs.append(r)
        head = f"[{n}/{len(jobs)} {time.monotonic() - t0:4.0f}s] {v['variant']:6} {t.label:20}"
        head += f" rep {rep}"
        if r.get("deliveries_per_s") is not None:
            print(
                f"{head} {'ok' if r['ok'] else 'FAIL'} deliv/s {r['deliveries_per_s']:,.0f}"
                f" srv {r['servers_cpu_pct']:.0f}% cli {r['client_cpu_pct']:.0f}%"
                f" redis {r['redis_cpu_pct']:.0f}% other {r['other_cpu_pct']:.0f}%"
                f" lost {r['lost']}" + (f"  {r['error']}" if r["error"] else ""),
                flush=True,
            )
        else:
            print(f"{head} FAILED: {r['error']}", flush=True)

    command = "bench/.venv/bin/python bench/cross_process.py " + " ".join(sys.argv[1:])
    data = {
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "config": {
            "command": command.strip(),
            "reps": reps,
            "window": args.window,
            "send_queue_size": SEND_QUEUE_SIZE,
            "targets": [t.label for t in targets],
            "plan": variants,
            "layout": {
                "servers": f"core {SERVER_CORE}",
                "client, redis-server, harness": f"core {CLIENT_CORE}",
            },
        },
        "machine": machine,
        "summary": summarize(runs),
        "runs": runs,
    }
    (out / "cross_process.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    markdown = render(data)
    (out / "cross_process.md").write_text(markdown)
    print()
    print(markdown)
    failed = [r for r in runs if not r["ok"]]
    if failed:
        print(f"FAILED: {len(failed)} of {len(runs)} runs")
        return 1
    print(f"all {len(runs)} runs passed in {time.monotonic() - t0:.0f} s")
    return 0


# --------------------------------------------------------------------------------------
# The client (Node.js): N raw-socket members over the servers' ports, one publisher.

CLIENT_JS = r"""
'use strict';
// Cross-process fan-out client (written out by bench/cross_process.py).
//   node xproc_client.js '<json config>'
// Member i dials ports[i % ports.length]; the publisher dials ports[0]. JSON lines on
// stdout: {"mark": NAME} (the harness samples CPU, answers a line on stdin), then
// {"result": {...}}. Every loop is bounded in count and time; only 127.0.0.1 is dialled.
const net = require('net');
const crypto = require('crypto');
const readline = require('readline');
const { performance } = require('perf_hooks');

const cfg = JSON.parse(process.argv[2] || '{}');
const HOST = '127.0.0.1';
const SIO = cfg.proto === 'sio';
const now = () => performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

const hardTimer = setTimeout(() => {
  emit({ error: `client hit its hard deadline (${cfg.hardDeadline}s)` });
  process.exit(3);
}, (cfg.hardDeadline || 120) * 1000);
hardTimer.unref();

const waiters = [];
readline.createInterface({ input: process.stdin }).on('line', () => {
  const w = waiters.shift();
  if (w) w();
});
function mark(name) {
  emit({ mark: name, t: now() });
  return new Promise((resolve) => waiters.push(resolve));
}

const PAD = 'x'.repeat(1 << 16);
function payload(seq, size) {
  const head = `${seq}|${now().toFixed(3)}|`;
  return head + PAD.slice(0, Math.max(0, size - head.length));
}
function warmPayload(size) {
  const head = `w|${now().toFixed(3)}|`;
  return head + PAD.slice(0, Math.max(0, size - head.length));
}
function parseSeq(buf, off) {
  let n = 0;
  for (let i = off; i < buf.length; i++) {
    const c = buf[i];
    if (c === 124) return n;
    if (c < 48 || c > 57) return -1;
    n = n * 10 + (c - 48);
  }
  return -1;
}

function pathFor(role, room) {
  if (SIO) return `/socket.io/?EIO=4&transport=websocket&role=${role}&room=${room}`;
  return `/${role}/${room}`;
}
const SIO_PREFIX_LEN = 8; // 42["m","

const SHARED_READ = Buffer.allocUnsafe(1 << 18);
function maskedFrame(opcode, text) {
  const body = Buffer.from(text);
  const len = body.length;
  let head;
  if (len < 126) head = Buffer.from([0x80 | opcode, 0x80 | len]);
  else {
    if (len > 0xffff) throw new Error('frame too large for this client');
    head = Buffer.alloc(4);
    head[0] = 0x80 | opcode;
    head[1] = 0x80 | 126;
    head.writeUInt16BE(len, 2);
  }
  const mask = crypto.randomBytes(4);
  for (let i = 0; i < len; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

// A lean WebSocket client on a raw TCP socket (as bench/loadgen.js's openRawClient): frames
// are parsed out of one shared read buffer; Engine.IO open/connect/ping handled for SIO.
function openRawClient(port, role, room, onPayload) {
  return new Promise((resolve, reject) => {
    const key = crypto.randomBytes(16).toString('base64');
    const state = { handshaken: false, ready: false, ended: false, closeCode: null };
    let pending = null;
    let endResolve;
    const ended = new Promise((r) => (endResolve = r));
    const timer = setTimeout(() => {
      if (!state.ready) {
        sock.destroy();
        reject(new Error('client not ready after 15 s'));
      }
    }, 15000);
    const markReady = () => {
      state.ready = true;
      clearTimeout(timer);
      resolve(client);
    };
    const sendRaw = (opcode, text) => !sock.destroyed && sock.write(maskedFrame(opcode, text));
    const onFrame = (opcode, buf, start, end) => {
      if (opcode === 8) {
        state.closeCode = end - start >= 2 ? buf.readUInt16BE(start) : 1005;
        return;
      }
      if (opcode !== 1 && opcode !== 2) return;
      if (SIO) {
        const c0 = buf[start];
        if (c0 === 52) {
          const c1 = buf[start + 1];
          if (c1 === 50) {
            if (onPayload) onPayload(buf, start + SIO_PREFIX_LEN);
          } else if (c1 === 48 && !state.ready) markReady();
        } else if (c0 === 48) sendRaw(1, '40');
        else if (c0 === 50) sendRaw(1, '3');
      } else if (onPayload) onPayload(buf, start);
    };
    const parse = (buf, n) => {
      let pos = 0;
      for (;;) {
        if (n - pos < 2) return pos;
        const opcode = buf[pos] & 0x0f;
        let len = buf[pos + 1] & 0x7f;
        let off = pos + 2;
        if (len === 126) {
          if (n - pos < 4) return pos;
          len = buf.readUInt16BE(pos + 2);
          off = pos + 4;
        } else if (len === 127) {
          if (n - pos < 10) return pos;
          len = Number(buf.readBigUInt64BE(pos + 2));
          off = pos + 10;
        }
        if (off + len > n) return pos;
        onFrame(opcode, buf, off, off + len);
        pos = off + len;
      }
    };
    const feed = (nread, buf) => {
      let data = buf;
      let n = nread;
      if (pending !== null) {
        data = Buffer.concat([pending, buf.subarray(0, nread)]);
        n = data.length;
        pending = null;
      }
      let pos = 0;
      if (!state.handshaken) {
        const end = data.indexOf('\r\n\r\n');
        if (end < 0 || end >= n) {
          pending = Buffer.from(data.subarray(0, n));
          return;
        }
        const head = data.toString('latin1', 0, end);
        if (!head.startsWith('HTTP/1.1 101')) {
          sock.destroy();
          reject(new Error(`handshake refused: ${head.split('\r\n')[0]}`));
          return;
        }
        state.handshaken = true;
        pos = end + 4;
        if (!SIO) markReady();
      }
      if (pos > 0) {
        data = data.subarray(pos, n);
        n -= pos;
      }
      const rest = parse(data, n);
      if (rest < n) pending = Buffer.from(data.subarray(rest, n));
    };
    const sock = net.connect({ host: HOST, port, onread: { buffer: SHARED_READ, callback: feed } });
    sock.setNoDelay(true);
    sock.on('error', (err) => {
      if (!state.ready) {
        clearTimeout(timer);
        reject(err);
      }
    });
    sock.on('close', () => {
      state.ended = true;
      clearTimeout(timer);
      endResolve();
      if (!state.ready) reject(new Error('closed before ready'));
    });
    sock.on('connect', () => {
      sock.write(
        `GET ${pathFor(role, room)} HTTP/1.1\r\nHost: ${HOST}:${port}\r\n` +
          `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
          'Sec-WebSocket-Version: 13\r\n\r\n',
      );
    });
    const client = {
      state,
      ended,
      send: SIO ? (text) => sendRaw(1, `42["m","${text}"]`) : (text) => sendRaw(1, text),
      close() {
        if (!sock.destroyed && !state.ended) {
          const body = Buffer.alloc(2);
          body.writeUInt16BE(1000);
          const mask = crypto.randomBytes(4);
          for (let i = 0; i < 2; i++) body[i] ^= mask[i & 3];
          sock.write(Buffer.concat([Buffer.from([0x88, 0x82]), mask, body]));
        }
        return ended;
      },
      destroy() {
        sock.destroy();
      },
    };
  });
}

async function pool(n, concurrency, fn) {
  let next = 0;
  const worker = async () => {
    while (next < n) await fn(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
}

async function main() {
  const ports = cfg.ports;
  const N = cfg.members;
  const M = cfg.messages;
  const W = cfg.window;
  const size = cfg.size;
  const room = 'bench';
  const sendTime = new Float64Array(M);
  const recvCount = new Uint32Array(M);
  const latCap = Math.min(M * N, 4_000_000);
  const lat = new Float64Array(latCap);
  let latN = 0;
  let sent = 0;
  let completed = 0;
  let deliveries = 0;
  let lastRecv = 0;
  let stopped = false;
  let gaps = 0;
  let orderViolations = 0;
  let duplicates = 0;
  let warmSeen = 0;
  let wake = () => {};
  let pump = () => {};
  const members = [];
  const deliveriesByServer = ports.map(() => 0);

  const handler = (index) => {
    const server = index % ports.length;
    const m = { index, server, next: 0, received: 0, warm: false, seen: new Uint8Array(M) };
    members.push(m);
    return (buf, off) => {
      const seq = parseSeq(buf, off);
      if (seq < 0) {
        if (!m.warm) {
          m.warm = true;
          warmSeen++;
        }
        return;
      }
      if (seq >= M) return;
      if (m.seen[seq]) {
        duplicates++;
        return;
      }
      m.seen[seq] = 1;
      const t = now();
      if (seq !== m.next) {
        if (seq > m.next) gaps += seq - m.next;
        else orderViolations++;
      }
      if (seq >= m.next) m.next = seq + 1;
      m.received++;
      deliveries++;
      deliveriesByServer[server]++;
      lastRecv = t;
      if (latN < latCap) lat[latN++] = t - sendTime[seq];
      if (++recvCount[seq] === N) {
        completed++;
        pump();
      }
    };
  };

  // Warm-up: publish until `count` members have seen a message (bounded in time).
  let warmSent = 0;
  const warmUp = async (count, pub) => {
    const warmDeadline = now() + 20000;
    while (warmSeen < count && now() < warmDeadline) {
      pub.send(warmPayload(size));
      warmSent++;
      await sleep(20);
    }
    if (warmSeen < count) throw new Error(`only ${warmSeen} of ${count} members got the warm-up`);
  };
  // First one member per server, alone, and a warm-up message through each: so that every
  // server has subscribed the room before the rest join at once. (broadcaster 0.3.1 loses
  // subscribers that join a channel concurrently while its first subscribe to Redis is in
  // flight: each of them records its queue set anew. Done for every target alike.)
  const openedAt = now();
  const subs = new Array(N);
  const first = Math.min(N, ports.length);
  for (let i = 0; i < first; i++) {
    subs[i] = await openRawClient(ports[i % ports.length], 'sub', room, handler(i));
  }
  const pub = await openRawClient(ports[0], 'pub', room, null);
  await warmUp(first, pub);
  await pool(N - first, 100, async (k) => {
    const i = first + k;
    subs[i] = await openRawClient(ports[i % ports.length], 'sub', room, handler(i));
  });
  const openSeconds = (now() - openedAt) / 1000;
  // Then until every member, on either server, has seen one: every join is in place.
  await warmUp(N, pub);
  await sleep(cfg.warmSettleMs || 500);

  await mark('start');
  const t0 = now();
  const deadline = t0 + cfg.duration * 1000;
  let finished = new Promise((resolve) => (wake = resolve));
  pump = () => {
    while (!stopped && sent < M && sent - completed < W) {
      sendTime[sent] = now();
      pub.send(payload(sent, size));
      sent++;
    }
    if (completed === (stopped ? sent : M)) wake();
  };
  let timer = setTimeout(() => wake(), Math.max(0, deadline - now()));
  pump();
  await finished;
  stopped = true;
  clearTimeout(timer);
  const tStop = now();
  const timedOut = completed < M;
  const deliveriesAtStop = deliveries;
  if (completed < sent) {
    // bounded drain: let what is on its way arrive, so that only what is lost counts
    finished = new Promise((resolve) => (wake = resolve));
    timer = setTimeout(() => wake(), cfg.drainMs || 5000);
    await finished;
    clearTimeout(timer);
  }
  const elapsed = ((timedOut ? tStop : lastRecv) - t0) / 1000;
  await mark('end');

  let undelivered = 0;
  let lost = 0;
  let membersClosed = 0;
  const lostByServer = ports.map(() => 0);
  for (const m of members) {
    undelivered += Math.max(0, sent - m.next);
    const missing = sent - m.received;
    lost += missing;
    lostByServer[m.server] += missing;
  }
  for (const s of subs) if (s.state.ended || s.state.closeCode !== null) membersClosed++;
  const sorted = lat.subarray(0, latN).sort();
  const at = (q) => (latN ? sorted[Math.min(latN - 1, Math.floor(q * latN))] : null);
  const result = {
    members: N,
    members_by_server: ports.map((_, k) => members.filter((m) => m.server === k).length),
    window: W,
    size,
    warm_messages: warmSent,
    messages_sent: sent,
    messages_completed: completed,
    deliveries,
    deliveries_by_server: deliveriesByServer,
    expected_deliveries: sent * N,
    elapsed_s: elapsed,
    deliveries_per_s: (timedOut ? deliveriesAtStop : deliveries) / elapsed,
    latency_ms: { p50: at(0.5), p99: at(0.99), max: latN ? sorted[latN - 1] : null },
    gaps,
    undelivered,
    lost,
    lost_by_server: lostByServer,
    order_violations: orderViolations,
    duplicates,
    members_closed: membersClosed,
    timed_out: timedOut,
    open_s: openSeconds,
  };
  const all = subs.concat([pub]);
  await Promise.race([Promise.all(all.map((c) => c.close())), sleep(3000)]);
  for (const c of all) c.destroy();
  return result;
}

main()
  .then((result) => {
    emit({ result });
    process.exit(0);
  })
  .catch((err) => {
    emit({ error: String((err && err.stack) || err) });
    process.exit(1);
  });
"""


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc}); every child process was stopped", file=sys.stderr)
        sys.exit(130)
