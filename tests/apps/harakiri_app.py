"""A WSGI app for the harakiri tests (tests/test_harakiri.py), in threads
and in gevent mode. Each way of running too long has its own function, so
that the tests can look for its name in the logged stack.

Routes (N is a number of seconds; with marker=PATH, a request that
mercy.HarakiriTimeout reaches writes "harakiri <pid>" to PATH and lets the
exception propagate):
    /pid              JSON: this worker's pid
    /spin?seconds=N   runs Python code for N seconds (time.sleep(0.01) in a
                      loop: monkey-patched in gevent mode, so it yields)
    /gevent-sleep?seconds=N
                      loops on gevent.sleep(0.05) for N seconds
    /block?seconds=N  one time.sleep(N), unpatched in gevent mode: the thread
                      (or the whole gevent hub) blocks in C code
    /cpu?seconds=N    a CPU loop that never yields to gevent for N seconds
    /hold-gil?seconds=N
                      libc's sleep(N) through ctypes.PyDLL, which keeps the
                      GIL for the whole call
    /stall?seconds=N  answers 200 with a streamed (chunked) body: sends
                      FIRST_CHUNK, then runs Python code for N seconds
                      (yielding in gevent mode) before the rest
    /upload           reads the body in pieces; JSON: size, sha256, pid
    with entered=PATH, every route first writes this worker's pid to PATH.
"""

import ctypes
import hashlib
import json
import os
import sys
import time
from urllib.parse import parse_qs

import mercy

FIRST_CHUNK = b"first chunk of a response that stalls\n"


def _respond(start_response, body, content_type="text/plain"):
    start_response("200 OK", [("Content-Type", content_type),
                              ("Content-Length", str(len(body)))])
    return [body]


def _write_atomically(path, text):
    with open(path + ".tmp", "w") as file:
        file.write(text)
    os.rename(path + ".tmp", path)


def _gevent_mode():
    return "gevent" in sys.modules and _monkey_patched()


def _monkey_patched():
    from gevent import monkey

    return monkey.is_module_patched("time")


def _original_sleep():
    """time.sleep as Python has it, even when gevent patched it."""
    if _gevent_mode():
        from gevent import monkey

        return monkey.get_original("time", "sleep")
    return time.sleep


def _until_harakiri(marker, run):
    try:
        return run()
    except mercy.HarakiriTimeout:
        if marker:
            _write_atomically(marker, "harakiri %d" % os.getpid())
        raise


def _spin_in_python(seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)


def _loop_on_gevent_sleep(seconds):
    import gevent

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        gevent.sleep(0.05)


def _block_in_c_sleep(seconds):
    _original_sleep()(seconds)


def _burn_cpu_without_yielding(seconds):
    deadline = time.monotonic() + seconds
    count = 0
    while time.monotonic() < deadline:
        count += 1
    return count


def _sleep_holding_the_gil(seconds):
    libc = ctypes.PyDLL(None)
    libc.sleep.argtypes = [ctypes.c_uint]
    libc.sleep(int(seconds))


def _stall_after_first_chunk(seconds, marker):
    yield FIRST_CHUNK
    _until_harakiri(marker, lambda: _spin_in_python(seconds))
    yield b"the rest, never sent\n"


def _upload(environ, start_response):
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while True:
        piece = stream.read(16384)
        if not piece:
            break
        digest.update(piece)
        size += len(piece)
    document = {"size": size, "sha256": digest.hexdigest(), "pid": os.getpid()}
    return _respond(start_response, json.dumps(document).encode(), "application/json")


LONG_RUNNING = {
    "/spin": _spin_in_python,
    "/gevent-sleep": _loop_on_gevent_sleep,
    "/block": _block_in_c_sleep,
    "/cpu": _burn_cpu_without_yielding,
    "/hold-gil": _sleep_holding_the_gil,
}


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))

    def arg(name, default=None):
        return query.get(name, [default])[0]

    if arg("entered"):
        _write_atomically(arg("entered"), str(os.getpid()))
    seconds = float(arg("seconds", "0"))
    marker = arg("marker")
    if path == "/pid":
        document = {"pid": os.getpid(), "worker_id": mercy.worker_id()}
        return _respond(start_response, json.dumps(document).encode(), "application/json")
    if path in LONG_RUNNING:
        _until_harakiri(marker, lambda: LONG_RUNNING[path](seconds))
        return _respond(start_response, b"done")
    if path == "/stall":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _stall_after_first_chunk(seconds, marker)
    if path == "/upload":
        return _upload(environ, start_response)
    return _respond(start_response, b"ok")
