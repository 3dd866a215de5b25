"""An app with every kind of shutdown hook, recording the order they run in.

Written to $MERCY_TEST_DIR/order.log, one line "<hook> <pid>" per call (a
single O_APPEND write, so lines from several workers never mix):
- `mercy.on_shutdown`: "on_shutdown-1", then "on_shutdown-2", which then
  raises RuntimeError (the hooks after it must still run), then
  "on_shutdown-3";
- `uwsgi.atexit`: "uwsgi.atexit";
- `atexit.register`: "atexit-first" and "atexit-second", registered in that
  order, so Python runs "atexit-second" first (last in, first out).

No gevent import: the same app serves in threads and in gevent mode.

GET /pid answers JSON with this worker's pid.
"""

import atexit
import json
import os

import mercy
import uwsgi

ORDER_LOG = os.path.join(os.environ["MERCY_TEST_DIR"], "order.log")


def record(hook):
    fd = os.open(ORDER_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{hook} {os.getpid()}\n".encode())
    finally:
        os.close(fd)


# Registered before the mercy hooks: registration order must not matter
# across the three kinds, only within each kind.
atexit.register(record, "atexit-first")


@mercy.on_shutdown
def first_hook():
    record("on_shutdown-1")


@mercy.on_shutdown
def failing_hook():
    record("on_shutdown-2")
    raise RuntimeError("shutdown_order app: a failing on_shutdown hook")


@mercy.on_shutdown
def third_hook():
    record("on_shutdown-3")


def uwsgi_goodbye():
    record("uwsgi.atexit")


uwsgi.atexit = uwsgi_goodbye
atexit.register(record, "atexit-second")


def application(environ, start_response):
    body = json.dumps({"pid": os.getpid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
