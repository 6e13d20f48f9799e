#!/usr/bin/env python3
"""Profile one benchmark target's server under the fan-out load, with py-spy.

    bench/.venv/bin/pip install py-spy     # not in requirements.txt: only this script needs it
    python bench/profile_fanout.py --target wsrooms-endpoint-trio --subscribers 1000 \\
        --wsrooms-ref core=/work/core

It starts the target's server pinned to core 0 and the load generator pinned to core 1, as
`run.py` does, and runs `py-spy record --nonblocking` (the server is never paused) on the
server's PID for exactly the measured window. Then it prints the server's CPU time per
delivery and splits it two ways: self time by the module group of the innermost Python
frame (C code, such as the `send` syscall, is charged to the Python frame that called it),
and inclusive time of the functions on the path of a delivery. The collapsed stacks are
written to `--out` (`stacks.txt`, for speedscope or flamegraph.pl), with the table
(`profile.md`).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import run  # noqa: E402  (the harness: targets, servers, snapshots, CPU sampling)

# Self time: the innermost Python frame's file decides the group (first match wins).
GROUPS = [
    ("wsrooms", re.compile(r"wsrooms/")),
    ("hypercorn", re.compile(r"hypercorn/")),
    ("wsproto (frame encode/decode)", re.compile(r"wsproto/")),
    ("h11", re.compile(r"h11/")),
    ("trio sockets (incl. the send/recv syscalls)", re.compile(r"trio/_(socket|highlevel_socket)")),
    ("trio run loop, epoll, task switches", re.compile(r"trio/")),
    ("uvicorn", re.compile(r"uvicorn/")),
    ("websockets", re.compile(r"websockets/")),
    ("starlette", re.compile(r"starlette/")),
    ("anyio", re.compile(r"anyio/")),
    ("asyncio / uvloop", re.compile(r"asyncio/|uvloop")),
    ("other (stdlib, outcome, sniffio, ...)", re.compile(r".")),
]

# Inclusive time: samples with any frame of these functions in their stack. The rows
# overlap (a send runs inside a writer); py-spy cannot always unwind a coroutine stack to
# its root, so a row may count samples its parent row missed.
ON_PATH = [
    ("publisher: read a frame, run its task (receive path)", r"_receive_loop|_run_task"),
    ("broadcast: encode once, put into every outbox (Hub fan-out)", r"^_fanout$|^broadcast$"),
    ("Outbox.put and the writer's wake-up (unpark)", r"^put$|^unpark$"),
    ("member writers: Outbox._run, with their sends", r"^_run$"),
    ("the ASGI send: hypercorn's app_send, down to the socket", r"^app_send$"),
    ("wsproto: build the frame", r"^send$@wsproto"),
    ("trio: socket send_all (the syscall and its checkpoint)", r"^send_all$"),
]


def parse_stacks(path: Path) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy's raw (collapsed) output: `frame;frame;... count`, root first, each frame
    `function (file)` with --nolineno."""
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        body, _, count = line.rpartition(" ")
        if not body or not count.isdigit():
            continue
        frames = []
        for frame in body.split(";"):
            m = re.match(r"(.*) \((.*)\)$", frame)
            frames.append((m.group(1), m.group(2)) if m else (frame, ""))
        stacks.append((frames, int(count)))
    return stacks


def self_time(stacks: list[tuple[list[tuple[str, str]], int]]) -> Counter[str]:
    groups: Counter[str] = Counter()
    for frames, count in stacks:
        _, filename = frames[-1]
        for name, pattern in GROUPS:
            if pattern.search(filename):
                groups[name] += count
                break
    return groups


def inclusive(stacks: list[tuple[list[tuple[str, str]], int]], spec: str) -> int:
    func_pattern, _, file_part = spec.partition("@")
    func_re = re.compile(func_pattern)
    total = 0
    for frames, count in stacks:
        # py-spy names a frame by its qualified name: match the last component.
        if any(
            func_re.search(f.rpartition(".")[2]) and file_part in filename for f, filename in frames
        ):
            total += count
    return total


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default="wsrooms-endpoint-trio", help="a run.py target label")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=12, help="bound of the measured window")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--wsrooms-ref", default=None, help="REF or NAME=REF, as in run.py")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    target = run.BY_LABEL.get(args.target)
    if target is None:
        parser.error(f"unknown target {args.target!r}; known: {', '.join(run.BY_LABEL)}")
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        sys.exit("py-spy is missing: bench/.venv/bin/pip install py-spy")
    out = args.out or BENCH / "results" / "partial" / f"profile-{args.target}"
    out.mkdir(parents=True, exist_ok=True)
    run.RAW = out
    source: dict[str, Any] = {"from": "the installed working tree"}
    if args.wsrooms_ref:
        name, _, ref = args.wsrooms_ref.partition("=")
        tmp = Path(tempfile.mkdtemp(prefix="wsrooms-profile-src-"))
        atexit.register(shutil.rmtree, tmp, ignore_errors=True)
        source = run.snapshot_wsrooms(ref or name, tmp) | {"ref": name}
        run.WSROOMS_SRC = tmp / "src"
    run.raise_nofile()

    server = run.Server(target, "server")
    loadgen = spy = None
    marks: dict[str, dict[str, float]] = {}
    result: dict[str, Any] | None = None
    stacks_path = out / "stacks.txt"
    try:
        server.start()
        assert server.proc is not None
        config = dict(
            scenario="fanout",
            port=server.port,
            proto=target.proto,
            subscribers=args.subscribers,
            messages=args.messages,
            window=run.FANOUT_WINDOW,
            size=100,
            duration=args.seconds,
            hardDeadline=args.seconds + 60,
        )
        node = [shutil.which("node") or "node", str(BENCH / "loadgen.js"), json.dumps(config)]
        loadgen = subprocess.Popen(
            run.pinned(run.LOADGEN_CORE, node),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            preexec_fn=run.child_setup(run.LOADGEN_CORE),
        )
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert loadgen is not None
            assert loadgen.stdout is not None
            for line in loadgen.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + args.seconds + 90
        while True:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if line is None:
                break
            msg = json.loads(line)
            if "mark" in msg:
                if msg["mark"] == "start":
                    spy = subprocess.Popen(
                        run.pinned(
                            run.LOADGEN_CORE,
                            [
                                py_spy,
                                "record",
                                *("--pid", str(server.proc.pid), "--rate", str(args.rate)),
                                *("--nonblocking", "--nolineno", "--format", "raw"),
                                *("--output", str(stacks_path)),
                            ],
                        ),
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    time.sleep(0.3)  # py-spy attaches
                marks[msg["mark"]] = run.sample(server.proc.pid, loadgen.pid)
                if msg["mark"] == "end" and spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
                    spy.wait(30)
                assert loadgen.stdin is not None
                loadgen.stdin.write("ok\n")
                loadgen.stdin.flush()
            elif "result" in msg:
                result = msg["result"]
            elif "error" in msg:
                raise RuntimeError(msg["error"])
    finally:
        for proc in (spy, loadgen):
            run.stop(proc, grace=2.0)
        server.stop()
    if result is None or "start" not in marks or "end" not in marks:
        sys.exit("the load generator gave no result")

    window = run.window(marks["start"], marks["end"])
    rate = result["deliveries_per_s"]
    us_per_delivery = 1e6 * window["server_cpu_pct"] / 100 / rate
    stacks = parse_stacks(stacks_path)
    total = sum(count for _, count in stacks) or 1
    lines_out = [
        f"# Profile: {args.target} ({target.server}), fan-out N = {args.subscribers}",
        "",
        f"wsrooms: {source}. `python bench/profile_fanout.py {' '.join(sys.argv[1:])}`",
        "",
        f"{rate:,.0f} deliveries/s; server CPU {window['server_cpu_pct']:.0f}%, load generator"
        f" {window['loadgen_cpu_pct']:.0f}%, other tenants {window['other_cpu_pct']:.0f}%:"
        f" **{us_per_delivery:.1f} µs of server CPU per delivery**; {total:,} samples at"
        f" {args.rate} Hz.",
        "",
        "| self time, by innermost frame | share | µs/delivery |",
        "|---|---:|---:|",
    ]
    for name, count in self_time(stacks).most_common():
        share = count / total
        lines_out.append(f"| {name} | {100 * share:.1f}% | {share * us_per_delivery:.2f} |")
    lines_out += ["", "| on the path of a delivery (inclusive) | share | µs/delivery |"]
    lines_out += ["|---|---:|---:|"]
    for name, spec in ON_PATH:
        share = inclusive(stacks, spec) / total
        lines_out.append(f"| {name} | {100 * share:.1f}% | {share * us_per_delivery:.2f} |")
    text = "\n".join(lines_out) + "\n"
    (out / "profile.md").write_text(text)
    print(text)
    print(f"stacks: {stacks_path}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
