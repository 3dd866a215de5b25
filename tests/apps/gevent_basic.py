"""A plain WSGI app for gevent-mode tests (gevent only, no other dependency).

Environment: MERCY_TEST_DIR, a folder for events.log and task files
(optional; without it /spawn and /group answer 500).

`mercy.on_shutdown` appends "shutdown <pid>" to events.log.

Routes:
    /pid                JSON: this worker's pid, mercy.worker_id(), whether
                        threading is monkey-patched now and whether it was
                        when this module was imported
    /barrier?name=B&parties=N&timeout=S
                        waits on the gevent barrier B until N requests have
                        arrived at it: 200 JSON {"arrived": k, "pid"}; if S
                        seconds pass first (default 60), 504 JSON with how many
                        had arrived
    /body?marker=PATH   creates PATH on entry (the app is running), then reads
                        wsgi.input to its end: JSON {"length", "sha256"}
    /slow?marker=PATH&release=PATH&seconds=N
                        writes this worker's pid to PATH, waits (at most 60 s)
                        until the release PATH exists, sleeps N seconds, then
                        answers 200 "slow done"
    /spawn?seconds=N&release=PATH
                        starts a tracked task with mercy.spawn that writes
                        task-spawn.txt: "start <pid>", then (once the release
                        file exists, at most 60 s later) a line per step over
                        N seconds, then "done <pid>"; at the end it appends
                        "task-done spawn <pid>" to events.log
    /group?seconds=N&release=PATH
                        the same with a mercy.TaskGroup of two tasks, writing
                        task-group-a.txt and task-group-b.txt
    /local?set=V&hold=1&marker=PATH
                        writes this worker's pid to PATH; JSON {"seen": the
                        value a threading.local held when the request began},
                        then stores V in it. With hold=1, answers only once
                        another request is queued behind this one (at most
                        60 s), so that the next request could reuse this
                        greenlet if mercy let it
    /stream?chunks=N    N chunks of 64 KiB, produced as they are sent; the
                        bytes produced so far are counted
    /streamed           JSON {"bytes": bytes /stream has produced so far}
    /spin?marker=PATH   writes this worker's pid to PATH, then loops on
                        gevent.sleep(0) until mercy.is_shutting_down() (at most
                        60 s): JSON {"pid", "saw_shutdown"}
"""

import hashlib
import json
import os
import threading
import time
from urllib.parse import parse_qs

import gevent
import gevent.event
from gevent import monkey

import _mercy  # mercy's native module: only for /local?hold=1
import mercy

# Recorded at import: mercy monkey-patches before the app is imported.
THREADING_PATCHED_AT_IMPORT = monkey.is_module_patched("threading")

OUTPUT_DIR = os.environ.get("MERCY_TEST_DIR")
TASK_STEPS = 20
RELEASE_WAIT_SECONDS = 60.0
STREAM_CHUNK = b"s" * 65536

_barriers = {}
_local = threading.local()
_streamed = {"bytes": 0}


def append_event(line):
    # One write on an O_APPEND descriptor: lines from several workers never mix.
    fd = os.open(os.path.join(OUTPUT_DIR, "events.log"),
                 os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@mercy.on_shutdown
def record_shutdown():
    if OUTPUT_DIR:
        append_event(f"shutdown {os.getpid()}")


def wait_for(path):
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        gevent.sleep(0.02)


def slow_task(name, seconds, release):
    """Tracked work: a file written over `seconds` once `release` exists,
    complete only at the end."""
    with open(os.path.join(OUTPUT_DIR, f"task-{name}.txt"), "w") as file:
        file.write(f"start {os.getpid()}\n")
        file.flush()
        wait_for(release)
        for step in range(TASK_STEPS):
            file.flush()
            time.sleep(seconds / TASK_STEPS)  # patched: yields to the hub
            file.write(f"step {step}\n")
        file.write(f"done {os.getpid()}\n")
    append_event(f"task-done {name} {os.getpid()}")


def _respond(start_response, status, body, content_type="text/plain"):
    start_response(status, [("Content-Type", content_type),
                            ("Content-Length", str(len(body)))])
    return [body]


def _json(start_response, status, document):
    return _respond(start_response, status, json.dumps(document).encode(), "application/json")


def _barrier(start_response, query):
    name = query["name"][0]
    parties = int(query["parties"][0])
    timeout = float(query.get("timeout", ["60"])[0])
    barrier = _barriers.setdefault(name, {"arrived": 0, "event": gevent.event.Event()})
    barrier["arrived"] += 1
    arrived = barrier["arrived"]
    if arrived >= parties:
        # The last to arrive does not wait. (Calling wait() on an Event just
        # set, while its notification is still pending, can strand the caller
        # forever in gevent 26.9 if the other waiters time out meanwhile.)
        barrier["event"].set()
        released = True
    else:
        released = barrier["event"].wait(timeout)
    if not released:
        return _json(start_response, "504 Gateway Timeout",
                     {"arrived": arrived, "arrived_in_all": barrier["arrived"],
                      "parties": parties})
    return _json(start_response, "200 OK", {"arrived": arrived, "pid": os.getpid()})


def _body(start_response, environ, query):
    marker = query.get("marker", [None])[0]
    if marker:
        open(marker, "w").close()
    digest, length = hashlib.sha256(), 0
    stream = environ["wsgi.input"]
    while True:
        block = stream.read(65536)
        if not block:
            break
        digest.update(block)
        length += len(block)
    return _json(start_response, "200 OK", {"length": length, "sha256": digest.hexdigest()})


def _slow(query):
    _write_pid(query.get("marker", [None])[0])
    wait_for(query.get("release", [None])[0])
    gevent.sleep(float(query.get("seconds", ["0"])[0]))


def _write_pid(marker):
    if marker:
        with open(marker + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)


def _local_route(start_response, query):
    _write_pid(query.get("marker", [None])[0])
    seen = getattr(_local, "value", None)
    if "set" in query:
        _local.value = query["set"][0]
    if query.get("hold"):
        deadline = time.monotonic() + RELEASE_WAIT_SECONDS
        while not _mercy.requests_waiting() and time.monotonic() < deadline:
            gevent.sleep(0.01)
    return _json(start_response, "200 OK", {"seen": seen})


def _stream(start_response, query):
    chunks = int(query["chunks"][0])
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(chunks * len(STREAM_CHUNK)))])
    for _ in range(chunks):
        _streamed["bytes"] += len(STREAM_CHUNK)
        yield STREAM_CHUNK


def _spin(start_response, query):
    _write_pid(query.get("marker", [None])[0])
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while not mercy.is_shutting_down() and time.monotonic() < deadline:
        gevent.sleep(0)
    return _json(start_response, "200 OK",
                 {"pid": os.getpid(), "saw_shutdown": mercy.is_shutting_down()})


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))

    if path == "/pid":
        return _json(start_response, "200 OK",
                     {"pid": os.getpid(), "worker_id": mercy.worker_id(),
                      "threading_patched": monkey.is_module_patched("threading"),
                      "threading_patched_at_import": THREADING_PATCHED_AT_IMPORT})
    if path == "/local":
        return _local_route(start_response, query)
    if path == "/stream":
        return _stream(start_response, query)
    if path == "/streamed":
        return _json(start_response, "200 OK", dict(_streamed))
    if path == "/spin":
        return _spin(start_response, query)
    if path == "/barrier":
        return _barrier(start_response, query)
    if path == "/body":
        return _body(start_response, environ, query)
    if path == "/slow":
        _slow(query)
        return _respond(start_response, "200 OK", b"slow done")
    if path in ("/spawn", "/group"):
        if not OUTPUT_DIR:
            return _respond(start_response, "500 Internal Server Error", b"no MERCY_TEST_DIR")
        seconds = float(query.get("seconds", ["2"])[0])
        release = query.get("release", [None])[0]
        if path == "/spawn":
            mercy.spawn(slow_task, "spawn", seconds, release)
        else:
            group = mercy.TaskGroup()
            group.spawn(slow_task, "group-a", seconds, release)
            group.spawn(slow_task, "group-b", seconds, release)
        return _json(start_response, "200 OK", {"pid": os.getpid()})
    return _respond(start_response, "404 Not Found", b"not found")
