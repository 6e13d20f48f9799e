"""Benchmark targets: one small file per server under test.

Every target speaks the same tiny protocol so that one load generator drives them all:

* ``/sub/{room}``: a subscriber. The server puts it in ``room``; it never sends.
* ``/pub/{room}``: a publisher. The server broadcasts every text message it sends to
  ``room``. The publisher is not a member of the room, so it never receives.
* ``/echo``: every text message is sent back.

python-socketio cannot route by path, so there the role and the room travel in the
Engine.IO query string (``?role=sub&room=r1``) and messages are the events ``m`` (fan-out)
and ``e`` (echo).

ASGI targets export ``app``; the ``websockets`` servers export ``main(host, port)``.
"""

import os

# The harness passes options through the environment so that a target stays a plain
# module that `uvicorn module:app` could also serve.
SEND_QUEUE_SIZE = int(os.environ.get("BENCH_SEND_QUEUE_SIZE", "1024"))
SLOW_CONSUMER = os.environ.get("BENCH_SLOW_CONSUMER", "disconnect")
