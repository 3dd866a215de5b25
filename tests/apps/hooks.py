"""An app using mercy's lifecycle API, recording what ran in $MERCY_TEST_DIR.

- `mercy.on_shutdown`: appends "shutdown <pid>" to events.log.
- GET /spawn?seconds=N: starts a tracked task with `mercy.spawn` that writes
  spawn-task.txt line by line over N seconds, then appends
  "task-done <pid>" to events.log. Answers JSON with this worker's pid.
- GET /pid: JSON with this worker's pid.
"""

import json
import os
import time
from urllib.parse import parse_qs

import mercy

OUTPUT_DIR = os.environ["MERCY_TEST_DIR"]
EVENTS_LOG = os.path.join(OUTPUT_DIR, "events.log")
TASK_FILE = os.path.join(OUTPUT_DIR, "spawn-task.txt")
TASK_STEPS = 20


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


def slow_task(seconds):
    with open(TASK_FILE, "w") as file:
        file.write(f"start {os.getpid()}\n")
        for step in range(TASK_STEPS):
            file.flush()
            time.sleep(seconds / TASK_STEPS)
            file.write(f"step {step}\n")
        file.write(f"done {os.getpid()}\n")
    append_event(f"task-done {os.getpid()}")


def _json(start_response, document):
    body = json.dumps(document).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
    )
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/spawn":
        query = parse_qs(environ.get("QUERY_STRING", ""))
        seconds = float(query.get("seconds", ["2"])[0])
        mercy.spawn(slow_task, seconds)
        return _json(start_response, {"pid": os.getpid(), "spawned": True})
    return _json(start_response, {"pid": os.getpid()})
