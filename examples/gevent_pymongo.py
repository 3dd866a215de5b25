"""mercy's founding scenario as an app: gevent, and a pymongo client made at
import.

    mercy --http 127.0.0.1:8000 --wsgi-file examples/gevent_pymongo.py \\
        --processes 2 --gevent 100 --gevent-wait-for-hub --virtualenv .venv

No MongoDB at hand? `.venv/bin/python tests/mongo_standin.py --port 27017`
runs the small stand-in server the tests use. `--env MONGO_URL=mongodb://...`
points the app elsewhere.

The story (DESIGN.md section 1): under uWSGI's gevent loop with
`gevent-wait-for-hub`, a graceful reload waited for every greenlet in the
worker. Once gevent has patched `threading`, pymongo's background monitor
threads are greenlets too, and they run for as long as the client is open,
so every worker stayed up until uWSGI's reload mercy ran out and it killed
them ("NO MERCY").

The app need not monkey-patch: with `--gevent N` mercy patches the
standard library before the app (and before its own Python code) is
imported, so the `threading`, `socket` and `time` that pymongo uses are
already gevent's when this module runs. Apps written for uWSGI often call
`monkey.patch_all()` at their top anyway; that is harmless (shown below).
"""

from gevent import monkey

monkey.patch_all()  # already done by mercy: this call changes nothing

import json  # noqa: E402
import os  # noqa: E402

import pymongo  # noqa: E402
from pymongo.errors import PyMongoError  # noqa: E402

import mercy  # noqa: E402

MONGO_URL = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")

# Made at import, in each worker: mercy never forks a process that holds
# Python state, so this client, its sockets and its monitor greenlets belong
# to this worker alone (uWSGI without lazy-apps forked them and hung).
client = pymongo.MongoClient(MONGO_URL, serverSelectionTimeoutMS=2000)

# The closing hook. A retiring worker (reload or stop) finishes its
# requests and its tracked work (`mercy.spawn`, `mercy.TaskGroup`), runs the
# `mercy.on_shutdown` hooks, then `uwsgi.atexit` and Python's `atexit`
# handlers, then waits for non-daemon threads and, with
# `--gevent-wait-for-hub`, until the gevent hub has nothing left to run.
#
# - Without `--gevent-wait-for-hub` the hook is good manners, not speed:
#   mercy never waits for untracked daemon greenlets such as pymongo's
#   monitors, so the worker exits right after its last request either way.
# - With `--gevent-wait-for-hub` it is what makes the reload fast, whatever
#   the driver does at exit: closing the client stops pymongo's greenlets
#   (`pymongo_server_monitor_thread`, `pymongo_kill_cursors_thread`, ...),
#   so the hub empties and the worker exits a moment after its last
#   request. Without anything that stops them the hub never empties: the
#   worker waits until `--worker-reload-mercy` runs out, logs
#   `mercy_expired` naming each of those greenlets with its Python stack,
#   and the master kills it. (Current pymongo versions also register an
#   `atexit` handler that stops their monitors, which mercy runs before the
#   hub wait; the hook does not rely on it, and covers clients and
#   libraries that have none.)
#
# Closing also ends the client's server sessions (`endSessions`) and closes
# each connection between two messages: the server is told goodbye instead
# of keeping the old workers' sessions until they time out.
mercy.on_shutdown(client.close)


def _json(start_response, status, document):
    body = json.dumps(document).encode()
    start_response(
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")

    if path == "/":
        # Answered from the client's local state: needs no server.
        servers = sorted(
            f"{host}:{port}"
            for host, port in client.topology_description.server_descriptions()
        )
        return _json(
            start_response,
            "200 OK",
            {"pymongo": pymongo.version, "servers": servers, "pid": os.getpid(),
             "worker_id": mercy.worker_id()},
        )

    if path == "/ping":
        # A round trip to the server; this greenlet yields to the hub while
        # it waits, so the worker's other requests go on meanwhile.
        try:
            client.admin.command("ping")
        except PyMongoError as error:
            return _json(start_response, "503 Service Unavailable", {"error": str(error)})
        return _json(start_response, "200 OK", {"ping": "ok", "pid": os.getpid()})

    return _json(start_response, "404 Not Found", {"error": "not found"})
