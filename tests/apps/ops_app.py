"""A plain WSGI app for the operations tests (tests/test_operations.py).

Routes:
    /pid              JSON: this worker's pid and mercy.worker_id()
    /env?name=N       JSON: {"value": os.environ.get(N)}
    /print?text=T     writes T and this worker's pid as one line to
                      sys.stderr (the log file with --logto); answers /pid
    /spin?seconds=N   runs Python code for N seconds (short sleeps in a
                      loop), so that mercy.HarakiriTimeout can stop it;
                      with marker=PATH, writes "harakiri <pid>" to PATH when
                      that exception arrives (and lets it propagate)
    /block?seconds=N  one time.sleep(N): a thread that cannot be stopped;
                      with marker=PATH, writes this worker's pid to PATH first
    /upload           reads the body in pieces; JSON: size, sha256, pid
    /hold...          any path under /hold (the query carries the options):
                      marker=PATH  write this worker's pid to PATH on entry
                      release=PATH wait (at most 60 s) until PATH exists;
                      answers 200 with the PATH_INFO it got (latin-1 bytes)
    /orphan?seconds=N starts `sleep N` in the background from a shell that
                      exits at once, so the sleep is orphaned (re-parented
                      to PID 1, or the nearest subreaper); JSON: its pid
    /proc-state?pid=P the state letter of process P from /proc, or "gone"
    anything else     200 "ok"

With OPS_IMPORT_DELAY=S in the environment, importing the app takes S more
seconds (a slow app start, to widen the window in which a worker loads).
"""

import hashlib
import json
import os
import subprocess
import sys
import time
from urllib.parse import parse_qs

import mercy

RELEASE_WAIT_SECONDS = 60.0

time.sleep(float(os.environ.get("OPS_IMPORT_DELAY", "0")))


def _respond(start_response, status, body, content_type="text/plain"):
    start_response(
        status, [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    )
    return [body]


def _json(start_response, document):
    return _respond(start_response, "200 OK", json.dumps(document).encode(),
                    "application/json")


def _write_atomically(path, text):
    with open(path + ".tmp", "w") as file:
        file.write(text)
    os.rename(path + ".tmp", path)


def _spin(seconds, marker):
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            time.sleep(0.01)
    except mercy.HarakiriTimeout:
        if marker:
            _write_atomically(marker, "harakiri %d" % os.getpid())
        raise


def _hold(query):
    marker = query.get("marker", [None])[0]
    release = query.get("release", [None])[0]
    if marker:
        _write_atomically(marker, str(os.getpid()))
    if release:
        deadline = time.monotonic() + RELEASE_WAIT_SECONDS
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.02)


def _proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as file:
            return file.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))

    def arg(name, default=None):
        return query.get(name, [default])[0]

    if path == "/pid":
        return _json(start_response, {"pid": os.getpid(), "worker_id": mercy.worker_id()})
    if path == "/env":
        return _json(start_response, {"value": os.environ.get(arg("name", ""))})
    if path == "/print":
        sys.stderr.write("%s pid=%d\n" % (arg("text", ""), os.getpid()))
        sys.stderr.flush()
        return _json(start_response, {"pid": os.getpid(), "worker_id": mercy.worker_id()})
    if path == "/spin":
        _spin(float(arg("seconds", "0")), arg("marker"))
        return _respond(start_response, "200 OK", b"spun")
    if path == "/block":
        if arg("marker"):
            _write_atomically(arg("marker"), str(os.getpid()))
        time.sleep(float(arg("seconds", "0")))
        return _respond(start_response, "200 OK", b"blocked")
    if path == "/upload":
        stream = environ["wsgi.input"]
        digest = hashlib.sha256()
        size = 0
        while True:
            piece = stream.read(16384)
            if not piece:
                break
            digest.update(piece)
            size += len(piece)
        return _json(start_response,
                     {"size": size, "sha256": digest.hexdigest(), "pid": os.getpid()})
    if path.startswith("/hold"):
        _hold(query)
        return _respond(start_response, "200 OK", path.encode("latin-1"),
                        "application/octet-stream")
    if path == "/orphan":
        seconds = float(arg("seconds", "1"))
        output = subprocess.run(
            ["/bin/sh", "-c", "sleep %s >/dev/null 2>&1 & echo $!" % seconds],
            capture_output=True, text=True, check=True,
        ).stdout
        return _json(start_response, {"pid": int(output.split()[0])})
    if path == "/proc-state":
        return _json(start_response, {"state": _proc_state(int(arg("pid", "0")))})
    return _respond(start_response, "200 OK", b"ok")
