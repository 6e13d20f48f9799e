"""Start one benchmark target on one server, in this process (so the harness has its PID).

    python bench/serve.py --target starlette_loop --server uvicorn --port 8000
    python bench/serve.py --target starlette_loop --check      # import only

Servers:
  uvicorn         uvloop, httptools, websockets-sansio, permessage-deflate off
  hypercorn-trio  hypercorn's trio worker (the ``hypercorn -k trio`` code path)
  hypercorn-asyncio  hypercorn's asyncio worker on uvloop (the ``hypercorn -k uvloop`` code path)
  native          the target's own ``main(host, port)`` (the ``websockets`` servers)
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import resource
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 1_048_576:
        hard = 1_048_576
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--server", default="uvicorn")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="import the target and exit")
    args = parser.parse_args()

    sys.path.insert(0, HERE)
    raise_nofile()
    logging.basicConfig(level=logging.WARNING)
    if args.check:
        try:
            importlib.import_module(f"targets.{args.target}")
        except ImportError as exc:  # the library (or a name in it) is not there: skip
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 3
        return 0
    module = importlib.import_module(f"targets.{args.target}")

    if args.server == "native":
        module.main(args.host, args.port)
    elif args.server == "uvicorn":
        import uvicorn

        uvicorn.run(
            module.app,
            host=args.host,
            port=args.port,
            loop="uvloop",
            http="httptools",
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            lifespan="on" if args.target == "broadcaster_memory" else "auto",
            log_level="warning",
            access_log=False,
            backlog=4096,
        )
    elif args.server in ("hypercorn-trio", "hypercorn-asyncio"):
        from hypercorn.config import Config

        config = Config()
        config.bind = [f"{args.host}:{args.port}"]
        config.backlog = 4096
        config.accesslog = None
        config.loglevel = "WARNING"
        if args.server == "hypercorn-trio":
            import trio
            from hypercorn.trio import serve as trio_serve

            trio.run(trio_serve, module.app, config)
        else:
            import uvloop
            from hypercorn.asyncio import serve as asyncio_serve

            uvloop.run(asyncio_serve(module.app, config))
    else:
        parser.error(f"unknown server {args.server!r}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(0)
