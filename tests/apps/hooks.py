"""An app using mercy's lifecycle API, recording what ran in $MERCY_TEST_DIR.

- `mercy.on_shutdown`: appends "shutdown <pid>" to events.log.
- GET /spawn?seconds=N&release=PATH: starts a tracked task with
  `mercy.spawn` that writes spawn-task.txt: "start <pid>", then (once the
  release file exists, at most 60 s later) one line per step over N
  seconds, then "done <pid>"; at the end it appends "task-done spawn <pid>"
  to events.log. Answers JSON with this worker's pid.
- GET /group?seconds=N&release=PATH: the same with two tasks of a
  `mercy.TaskGroup` that nobody joins, writing group-a-task.txt and
  group-b-task.txt ("task-done group-a <pid>", ...).
- GET /thread?seconds=N&release=PATH: the same task in a plain
  `threading.Thread` started from the request, flags left at their
  defaults ("task-done thread <pid>"). Answers JSON with this worker's pid
  and the thread's `daemon` flag.
- GET /shutting-down: JSON with this worker's pid and
  `mercy.is_shutting_down()`. With marker=PATH, writes the pid to PATH
  first; with wait=1, polls `mercy.is_shutting_down()` until it is true
  (at most 60 s) before answering.
- GET /pid: JSON with this worker's pid.
"""

import json
import os
import threading
import time
from urllib.parse import parse_qs

import mercy

OUTPUT_DIR = os.environ["MERCY_TEST_DIR"]
EVENTS_LOG = os.path.join(OUTPUT_DIR, "events.log")
TASK_STEPS = 20
RELEASE_WAIT_SECONDS = 60.0


def append_event(line):
    # One write on an O_APPEND descriptor: lines from several workers never mix.
    fd = os.open(EVENTS_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def record_shutdown():
    append_event(f"shutdown {os.getpid()}")


mercy.on_shutdown(record_shutdown)


def wait_for(path):
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while path and not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


def slow_task(name, seconds, release):
    with open(os.path.join(OUTPUT_DIR, f"{name}-task.txt"), "w") as file:
        file.write(f"start {os.getpid()}\n")
        file.flush()
        wait_for(release)
        for step in range(TASK_STEPS):
            file.flush()
            time.sleep(seconds / TASK_STEPS)
            file.write(f"step {step}\n")
        file.write(f"done {os.getpid()}\n")
    append_event(f"task-done {name} {os.getpid()}")


def _json(start_response, document):
    body = json.dumps(document).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    seconds = float(query.get("seconds", ["2"])[0])
    release = query.get("release", [None])[0]
    if path == "/spawn":
        mercy.spawn(slow_task, "spawn", seconds, release)
        return _json(start_response, {"pid": os.getpid(), "spawned": True})
    if path == "/group":
        group = mercy.TaskGroup()
        group.spawn(slow_task, "group-a", seconds, release)
        group.spawn(slow_task, "group-b", seconds, release)
        return _json(start_response, {"pid": os.getpid(), "spawned": True})
    if path == "/thread":
        thread = threading.Thread(target=slow_task, args=("thread", seconds, release))
        thread.start()
        return _json(start_response, {"pid": os.getpid(), "daemon": thread.daemon})
    if path == "/shutting-down":
        marker = query.get("marker", [None])[0]
        if marker:
            with open(marker + ".tmp", "w") as file:
                file.write(str(os.getpid()))
            os.rename(marker + ".tmp", marker)
        deadline = time.monotonic() + RELEASE_WAIT_SECONDS
        while query.get("wait") and not mercy.is_shutting_down() \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        return _json(start_response,
                     {"pid": os.getpid(), "shutting_down": mercy.is_shutting_down()})
    return _json(start_response, {"pid": os.getpid()})
