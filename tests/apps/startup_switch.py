"""An app whose import a test can change while mercy runs, to make later
workers fail or hang while loading (no dependencies).

$MERCY_TEST_SWITCH names a file read at import (absent: a normal start):
    exit          the worker ends itself at import with os._exit(1)
    hold PATH     the import waits until PATH exists (at most 60 s)
    raise-in N    worker N (mercy.worker_id()) raises RuntimeError at import

Routes:
    /pid    JSON: this worker's pid and mercy.worker_id()
    /exit   ends the worker process at once with os._exit(1)
"""

import json
import os
import time

import mercy

HOLD_SECONDS = 60.0


def _obey_switch():
    try:
        with open(os.environ["MERCY_TEST_SWITCH"]) as file:
            command = file.read().split()
    except FileNotFoundError:
        return
    if command[0] == "exit":
        os._exit(1)
    if command[0] == "raise-in" and mercy.worker_id() == int(command[1]):
        raise RuntimeError(f"worker {command[1]} cannot load this deploy")
    if command[0] == "hold":
        deadline = time.monotonic() + HOLD_SECONDS
        while not os.path.exists(command[1]) and time.monotonic() < deadline:
            time.sleep(0.02)


_obey_switch()


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/exit":
        os._exit(1)
    body = json.dumps({"pid": os.getpid(), "worker_id": mercy.worker_id()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
