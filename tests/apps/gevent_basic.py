"""A plain WSGI app for gevent-mode tests (gevent only, no other dependency).

Environment: MERCY_TEST_DIR, a folder for events.log and task files
(optional; without it /spawn and /group answer 500).

`mercy.on_shutdown` appends "shutdown <pid>" to events.log.

Routes:
    /pid                JSON: this worker's pid, mercy.worker_id(), and whether
                        threading is monkey-patched
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
    /spawn?seconds=N    starts a tracked task with mercy.spawn that writes
                        task-spawn.txt line by line over N seconds, then
                        appends "task-done spawn <pid>" to events.log
    /group?seconds=N    the same with a mercy.TaskGroup of two tasks, writing
                        task-group-a.txt and task-group-b.txt
"""

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

import gevent
import gevent.event
from gevent import monkey

import mercy

OUTPUT_DIR = os.environ.get("MERCY_TEST_DIR")
TASK_STEPS = 20
RELEASE_WAIT_SECONDS = 60.0

_barriers = {}


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


def slow_task(name, seconds):
    """Tracked work: a file written over `seconds`, complete only at the end."""
    with open(os.path.join(OUTPUT_DIR, f"task-{name}.txt"), "w") as file:
        file.write(f"start {os.getpid()}\n")
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
    marker = query.get("marker", [None])[0]
    release = query.get("release", [None])[0]
    seconds = float(query.get("seconds", ["0"])[0])
    if marker:
        with open(marker + ".tmp", "w") as file:
            file.write(str(os.getpid()))
        os.rename(marker + ".tmp", marker)
    if release:
        deadline = time.monotonic() + RELEASE_WAIT_SECONDS
        while not os.path.exists(release) and time.monotonic() < deadline:
            gevent.sleep(0.02)
    gevent.sleep(seconds)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))

    if path == "/pid":
        return _json(start_response, "200 OK",
                     {"pid": os.getpid(), "worker_id": mercy.worker_id(),
                      "threading_patched": monkey.is_module_patched("threading")})
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
        if path == "/spawn":
            mercy.spawn(slow_task, "spawn", seconds)
        else:
            group = mercy.TaskGroup()
            group.spawn(slow_task, "group-a", seconds)
            group.spawn(slow_task, "group-b", seconds)
        return _json(start_response, "200 OK", {"pid": os.getpid()})
    return _respond(start_response, "404 Not Found", b"not found")
