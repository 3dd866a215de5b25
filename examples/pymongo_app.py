"""A WSGI app holding a pymongo client, the way most Mongo-backed apps do.

    mercy --http 127.0.0.1:8000 --wsgi-file examples/pymongo_app.py \\
        --processes 2 --virtualenv .venv

Why this example exists: mercy was started because of this app's shape.
Under uWSGI's gevent loop with `gevent-wait-for-hub`, the background
monitor threads that pymongo starts for every MongoClient (greenlets, once
gevent has patched threading) kept each worker alive on a graceful reload
until uWSGI's reload mercy ran out and it killed the worker ("NO MERCY").
A reload must not wait on a driver's housekeeping threads: they are daemon
threads nobody asked to finish. mercy retires a worker once its requests,
the work the app tracks with `mercy.spawn`, its shutdown hooks and its
non-daemon threads are done; the driver's monitors never hold it up.

No MongoDB server is needed: the client is created at import and its
monitor threads run (and keep failing to connect to the loopback address)
all the same, which is exactly what a reload has to cope with.
"""

import json
import os

import pymongo
from pymongo.errors import PyMongoError

MONGODB_URI = os.environ.get("MONGODB_URI", "mongodb://127.0.0.1:27017/")

# Created at import, in each worker: mercy never forks a process holding
# Python state, so the client and its threads belong to this worker alone.
client = pymongo.MongoClient(MONGODB_URI, serverSelectionTimeoutMS=2000)


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
            {"pymongo": pymongo.version, "servers": servers, "pid": os.getpid()},
        )

    if path == "/ping":
        # Needs a server: 503 within serverSelectionTimeoutMS without one.
        try:
            client.admin.command("ping")
        except PyMongoError as error:
            return _json(start_response, "503 Service Unavailable", {"error": str(error)})
        return _json(start_response, "200 OK", {"ping": "ok"})

    return _json(start_response, "404 Not Found", {"error": "not found"})
