"""A plain WSGI app for lifecycle tests (no dependencies).

Routes:
    /                 "hello"
    /pid              JSON: this worker's pid and mercy.worker_id()
    /slow?...         holds the request, then answers 200 "slow done":
                      marker=PATH  write this worker's pid to PATH on entry
                      release=PATH wait (at most 60 s) until PATH exists
                      seconds=N    then sleep N seconds
    /exit             ends the worker process at once with os._exit(1)
    /reload           mercy.reload(): asks the master for a graceful reload;
                      answers "reload requested"
    /raise            raises ValueError("basic app failure") (mercy answers 500)
    /errors?text=T    writes T to wsgi.errors twice: once as one write with
                      a line break, once as print(T, file=...) (two
                      writes); answers "logged"
    /terminate-child  starts `sleep 60`, calls Popen.terminate() and waits
                      (at most 10 s); JSON: "returncode" (None if the child
                      ignored SIGTERM, then it is killed)
    /child-fds        runs a shell that inherits every descriptor not marked
                      close-on-exec; JSON: "fds", its descriptors from 3 on
                      with what each points at
"""

import json
import os
import subprocess
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


def _terminate_child():
    child = subprocess.Popen(["sleep", "60"])
    child.terminate()
    try:
        returncode = child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        returncode = None
        child.kill()
        child.wait()
    return {"returncode": returncode}


def _child_fds():
    listing = subprocess.run(
        ["sh", "-c", 'for f in /proc/$$/fd/*; do echo "${f##*/} $(readlink "$f")"; done'],
        close_fds=False, capture_output=True, text=True, check=True,
    ).stdout
    fds = {}
    for line in listing.splitlines():
        number, _, target = line.partition(" ")
        if int(number) >= 3:
            fds[number] = target
    return {"fds": fds}


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
    if path == "/reload":
        mercy.reload()
        return _respond(start_response, "200 OK", b"reload requested")
    if path == "/raise":
        raise ValueError("basic app failure")
    if path == "/errors":
        text = query.get("text", [""])[0]
        environ["wsgi.errors"].write(text + "\n")
        print(text, file=environ["wsgi.errors"])
        return _respond(start_response, "200 OK", b"logged")
    if path == "/child-fds":
        body = json.dumps(_child_fds()).encode()
        return _respond(start_response, "200 OK", body, "application/json")
    if path == "/terminate-child":
        body = json.dumps(_terminate_child()).encode()
        return _respond(start_response, "200 OK", body, "application/json")
    return _respond(start_response, "404 Not Found", b"not found")
