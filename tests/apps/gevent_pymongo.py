"""The founding scenario (DESIGN.md section 1): a gevent app that
monkey-patches and creates a real pymongo MongoClient at import.

Environment (set with mercy's `--env`):
    MONGO_URL               the server (default mongodb://127.0.0.1:27017/);
                            a stand-in, or an address where nothing listens
    MERCY_TEST_DIR          folder for events.log
    MERCY_TEST_CLOSE_HOOK   "1": register `mercy.on_shutdown` that closes the
                            client, then appends "closed <pid>" to events.log
    MERCY_TEST_NO_DRIVER_ATEXIT
                            "1": unregister pymongo's own atexit handler,
                            which otherwise stops its monitors when mercy
                            runs Python's atexit handlers (retirement step
                            4, before the hub wait of step 5). Without it,
                            nothing but the closing hook ends them: the
                            situation of the founding story, where the
                            server waited for the hub before any exit code
                            of the app ran.

The client's appName is "mercy-test-<pid>", so the stand-in server can tell
which worker opened each connection.

Routes:
    /pid    JSON: pid, worker_id, whether threading is monkey-patched, and the
            names of the live threads (pymongo's monitors among them)
    /ping   runs the `ping` command on the server: 200 {"ping": "ok", "pid"},
            or 503 with the error
"""

from gevent import monkey

# What gevent apps written for uWSGI do at the top of their module. mercy has
# already patched the standard library; patching again must change nothing.
monkey.patch_all()

import json  # noqa: E402
import os  # noqa: E402
import threading  # noqa: E402

import pymongo  # noqa: E402
from pymongo.errors import PyMongoError  # noqa: E402

import mercy  # noqa: E402

MONGO_URL = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")
OUTPUT_DIR = os.environ.get("MERCY_TEST_DIR")
APP_NAME = f"mercy-test-{os.getpid()}"

client = pymongo.MongoClient(MONGO_URL, appname=APP_NAME, serverSelectionTimeoutMS=5000)


def append_event(line):
    if not OUTPUT_DIR:
        return
    # One write on an O_APPEND descriptor: lines from several workers never mix.
    fd = os.open(os.path.join(OUTPUT_DIR, "events.log"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def close_client():
    client.close()
    append_event(f"closed {os.getpid()}")


if os.environ.get("MERCY_TEST_NO_DRIVER_ATEXIT") == "1":
    import atexit  # noqa: E402

    from pymongo import periodic_executor  # noqa: E402

    try:
        from pymongo.synchronous import monitor as _monitor  # pymongo >= 4.9
    except ImportError:
        from pymongo import monitor as _monitor
    atexit.unregister(_monitor._shutdown_resources)
    atexit.unregister(periodic_executor._shutdown_executors)

if os.environ.get("MERCY_TEST_CLOSE_HOOK") == "1":
    mercy.on_shutdown(close_client)


def _json(start_response, status, document):
    body = json.dumps(document).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/pid":
        return _json(start_response, "200 OK", {
            "pid": os.getpid(),
            "worker_id": mercy.worker_id(),
            "threading_patched": monkey.is_module_patched("threading"),
            "threads": sorted(t.name for t in threading.enumerate()),
        })
    if path == "/ping":
        try:
            client.admin.command("ping")
        except PyMongoError as error:
            return _json(start_response, "503 Service Unavailable", {"error": str(error)})
        return _json(start_response, "200 OK", {"ping": "ok", "pid": os.getpid()})
    return _json(start_response, "404 Not Found", {"error": "not found"})
