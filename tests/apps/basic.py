"""A plain WSGI app for lifecycle tests (no dependencies).

Routes:
    /                 "hello"
    /pid              JSON: this worker's pid and mercy.worker_id()
    /slow?...         holds the request, then answers 200 "slow done":
                      marker=PATH  write this worker's pid to PATH on entry
                      release=PATH wait (at most 60 s) until PATH exists
                      seconds=N    then sleep N seconds
    /exit             ends the worker process at once with os._exit(1)
"""

import json
import os
import time
from urllib.parse import parse_qs

import mercy

RELEASE_WAIT_SECONDS = 60.0


def _respond(start_response, status, body, content_type="text/plain"):
    start_response(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    )
    return [body]


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
            time.sleep(0.02)

    time.sleep(seconds)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))

    if path == "/":
        return _respond(start_response, "200 OK", b"hello")
    if path == "/pid":
        body = json.dumps({"pid": os.getpid(), "worker_id": mercy.worker_id()})
        return _respond(start_response, "200 OK", body.encode(), "application/json")
    if path == "/slow":
        _slow(query)
        return _respond(start_response, "200 OK", b"slow done")
    if path == "/exit":
        os._exit(1)
    return _respond(start_response, "404 Not Found", b"not found")
