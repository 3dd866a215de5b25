"""Harakiri, the per-request deadline (`--harakiri S`), in threads and in
gevent mode: the 504 (or the cut connection once a response has started),
the `harakiri` event with the request's Python stack, mercy.HarakiriTimeout
in the request's thread or greenlet, the replacement of a worker whose
request cannot be stopped (blocked in C code, a greenlet that never
yields, a C call that keeps the GIL), harakiri_count in the stats, and
requests that must never be touched by another request's deadline.

Everything runs the real binary on loopback sockets. Tests assert events
and bytes, never durations; every wait has a generous timeout.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
from collections import Counter

import pytest

from conftest import (APPS, REQUEST_TIMEOUT, free_port, pid_running, post_in_pieces,
                      wait_for_file, wait_until)

APP = APPS / "harakiri_app.py"
FIRST_CHUNK = b"first chunk of a response that stalls\n"
GIL_HELD = "stack unavailable: the GIL is held"


# --- helpers -----------------------------------------------------------------------


class FastClient(threading.Thread):
    """Sends GET /pid on one keep-alive connection (a new one after a
    `Connection: close`) until stopped, recording every failure and the
    worker pid of every answer."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.pids: Counter = Counter()
        self.failures: list[str] = []

    def run(self):
        connection = None
        sent = 0
        while not self.stopping.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            sent += 1
            closing = True
            try:
                connection.request("GET", "/pid")
                response = connection.getresponse()
                body = response.read()
                closing = response.will_close
                if response.status != 200:
                    raise AssertionError(f"status {response.status}: {body[:200]!r}")
                with self.lock:
                    self.pids[int(json.loads(body)["pid"])] += 1
            except Exception as error:  # noqa: BLE001 - every failure is recorded
                with self.lock:
                    self.failures.append(f"request {sent}: {type(error).__name__}: {error}")
            if closing:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def answers(self, pid: int | None = None) -> int:
        with self.lock:
            return self.pids[pid] if pid is not None else sum(self.pids.values())

    def stop(self):
        self.stopping.set()
        self.join(timeout=REQUEST_TIMEOUT * 2)
        assert not self.is_alive(), "the fast client did not stop"


def stats_document(port: int) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return json.loads(b"".join(chunks).decode("utf-8"))


def harakiri_counts(stats_port: int) -> list[tuple[int, int]]:
    """(worker id, harakiri_count) of every worker slot in the stats."""
    return [(w["id"], w["harakiri_count"]) for w in stats_document(stats_port)["workers"]]


def wait_harakiri_counts(stats_port: int, expected: list[tuple[int, int]]):
    wait_until(lambda: harakiri_counts(stats_port) == expected, 30,
               f"(worker id, harakiri_count) {expected} in the stats")


def index_of(records: list[dict], event: str, pid: int) -> int:
    [index] = [i for i, r in enumerate(records)
               if r.get("event") == event and str(r.get("worker.pid")) == str(pid)]
    return index


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def slow_upload(connection: http.client.HTTPConnection, size: int, pieces: int,
                pause: float, chunked: bool):
    """POST /upload sending `size` random bytes in `pieces` writes `pause`
    seconds apart. Returns (status, the size the app read, whether it read
    exactly the bytes sent), or ("cut", the error) if the connection broke."""
    try:
        return _slow_upload(connection, size, pieces, pause, chunked)
    except (OSError, http.client.HTTPException) as error:
        return "cut", f"{type(error).__name__}: {error}"


def _slow_upload(connection, size, pieces, pause, chunked):
    data = os.urandom(size)
    status, body = post_in_pieces(connection, "/upload", data, pieces, pause, chunked)
    if status != 200:
        return status, body[:300]
    document = json.loads(body)
    return 200, document["size"], document["sha256"] == hashlib.sha256(data).hexdigest()


def assert_stack_names(event: dict, function: str):
    stack = str(event.get("stack"))
    assert function in stack and "harakiri_app.py" in stack, (
        f"the harakiri stack should name {function}() of harakiri_app.py: {event}")


def check_replaced_then_killed(server, stuck_pid: int) -> int:
    """The worker whose request could not be stopped was replaced: a
    `recycling` naming the stuck request, the new worker ready before the
    stuck one was told to retire, the stuck one killed after the recycling
    (its grace over). Returns the new worker's pid."""
    [recycling] = server.wait_event("recycling", worker_pid=stuck_pid)
    assert "stuck past --harakiri" in str(recycling["reason"]), recycling
    [killed] = server.wait_event("killed", worker_pid=stuck_pid)
    assert "--harakiri-graceful-timeout" in str(killed["reason"]), killed
    for expired in server.events("mercy_expired", worker_pid=stuck_pid):
        assert "--harakiri-graceful-timeout" in expired["message"], expired
    ready = server.wait_event("ready", count=2)
    new_pid = int(ready[-1]["worker.pid"])
    assert new_pid != stuck_pid
    records = server.records()
    assert index_of(records, "ready", new_pid) < index_of(records, "retiring", stuck_pid)
    assert index_of(records, "recycling", stuck_pid) < index_of(records, "killed", stuck_pid)
    wait_until(lambda: not pid_running(stuck_pid), 30, "the stuck worker to be gone")
    server.assert_no_events("died", "respawned")
    return new_pid


# --- threads mode ---------------------------------------------------------------------


def test_uploads_running_while_another_request_passes_its_deadline_are_never_killed(
        mercy, tmp_path):
    """1 worker, 3 threads, --harakiri 4. A fast client runs all along on
    one thread; /spin (10 s of Python) runs on another; one keep-alive
    connection sends four uploads in a row, each taking less than half the
    deadline, starting while /spin runs, so that /spin passes its deadline
    in the middle of them and the four together outlast it. The deadline is
    per request: /spin alone gets 504 and HarakiriTimeout; every upload
    arrives whole and is answered 200, the fast client sees no failure, the
    worker is not replaced. A deadline kept per worker, per thread slot
    across requests, or per connection, or a harakiri raised in any thread
    but the request's, fails this."""
    stats_port = free_port()
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "3",
                   "--harakiri", "4", "--stats", f"127.0.0.1:{stats_port}")
    [worker_pid] = server.worker_pids().values()
    fast = FastClient(server.port)
    fast.start()
    marker, entered = tmp_path / "spin-harakiri", tmp_path / "spin-entered"
    spin: dict = {}

    def run_spin():
        spin["response"] = server.get(f"/spin?seconds=10&marker={marker}&entered={entered}",
                                      timeout=60)

    spin_thread = threading.Thread(target=run_spin, daemon=True)
    try:
        wait_until(fast.answers, 60, "a first fast answer")
        spin_thread.start()
        wait_for_file(entered)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        results = []
        for size, chunked in ((40_000, False), (400_000, False), (400_000, True),
                              (400_000, False)):
            results.append(slow_upload(connection, size, pieces=10, pause=0.15,
                                       chunked=chunked))
        connection.close()
        spin_thread.join(timeout=60)
        assert results == [(200, 40_000, True), (200, 400_000, True), (200, 400_000, True),
                           (200, 400_000, True)]
        assert spin["response"].status == 504
        [event] = server.wait_event("harakiri")
        assert str(event["path"]).startswith("/spin"), event
        assert_stack_names(event, "_spin_in_python")
        assert wait_for_file(marker).read_text() == f"harakiri {worker_pid}"
        wait_harakiri_counts(stats_port, [(1, 1)])
    finally:
        fast.stop()
    assert fast.failures == [], fast.failures[:10]
    assert len(server.events("harakiri")) == 1, server.events("harakiri")
    assert server.worker_pids() == {1: worker_pid}
    server.assert_no_events("recycling", "killed", "died", "respawned")


def test_a_request_holding_the_gil_in_c_code_still_gets_its_worker_replaced(mercy, tmp_path):
    """--harakiri 2, --harakiri-graceful-timeout 2, threads: a request in a
    C call that keeps the GIL for 30 s (libc sleep through ctypes.PyDLL)
    cannot give its stack nor be interrupted. Everything that needs no
    Python still happens: 504, a `harakiri` event saying the stack is
    unavailable, harakiri_count, the worker replaced and killed after its
    grace. A second request past the deadline, on the new worker, gets the
    whole treatment (stack, HarakiriTimeout)."""
    stats_port = free_port()
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "2",
                   "--harakiri", "2", "--harakiri-graceful-timeout", "2",
                   "--stats", f"127.0.0.1:{stats_port}")
    [stuck_pid] = server.worker_pids().values()
    response = server.get("/hold-gil?seconds=30", timeout=60)
    assert response.status == 504
    [event] = server.wait_event("harakiri")
    assert event["method"] == "GET" and str(event["path"]).startswith("/hold-gil"), event
    assert int(event["worker.pid"]) == stuck_pid
    assert str(event["stack"]) == GIL_HELD, event
    new_pid = check_replaced_then_killed(server, stuck_pid)

    marker = tmp_path / "second-harakiri"
    response = server.get(f"/spin?seconds=10&marker={marker}", timeout=60)
    assert response.status == 504
    second = server.wait_event("harakiri", count=2)[1]
    assert int(second["worker.pid"]) == new_pid, second
    assert_stack_names(second, "_spin_in_python")
    assert wait_for_file(marker).read_text() == f"harakiri {new_pid}"
    wait_harakiri_counts(stats_port, [(1, 2)])
    assert stats_document(stats_port)["forced_kills"] == 1


# --- gevent mode ----------------------------------------------------------------------


def test_gevent_harakiri_stops_a_yielding_greenlet_and_spares_the_others(mercy, tmp_path):
    """--gevent 8, --harakiri 3: a greenlet looping on gevent.sleep(0.05)
    for 10 s gets 504; `harakiri` is logged with its method, path and a
    stack naming the app's function; mercy.HarakiriTimeout reaches the
    greenlet; the worker is not replaced; a fast client running all along
    sees no failure; harakiri_count is 1."""
    stats_port = free_port()
    server = mercy("--wsgi-file", APP, "--processes", "1", "--gevent", "8",
                   "--harakiri", "3", "--stats", f"127.0.0.1:{stats_port}")
    [worker_pid] = server.worker_pids().values()
    fast = FastClient(server.port)
    fast.start()
    marker = tmp_path / "harakiri-marker"
    try:
        wait_until(fast.answers, 60, "a first fast answer")
        response = server.get(f"/gevent-sleep?seconds=10&marker={marker}", timeout=60)
        assert response.status == 504
        [event] = server.wait_event("harakiri")
        assert event["method"] == "GET" and str(event["path"]).startswith("/gevent-sleep")
        assert int(event["worker.pid"]) == worker_pid
        assert_stack_names(event, "_loop_on_gevent_sleep")
        assert wait_for_file(marker).read_text() == f"harakiri {worker_pid}"
        wait_harakiri_counts(stats_port, [(1, 1)])
        answered = fast.answers()
        wait_until(lambda: fast.answers() > answered, 30, "fast answers after the harakiri")
    finally:
        fast.stop()
    assert fast.failures == [], fast.failures[:10]
    assert len(server.events("harakiri")) == 1, server.events("harakiri")
    assert server.worker_pids() == {1: worker_pid}
    server.assert_no_events("recycling", "killed", "died", "respawned")


@pytest.mark.parametrize("route, function", [
    ("/block", "_block_in_c_sleep"),
    ("/cpu", "_burn_cpu_without_yielding"),
])
def test_gevent_harakiri_replaces_a_worker_whose_greenlet_never_yields(
        mercy, route, function):
    """--gevent 4, --harakiri 2, --harakiri-graceful-timeout 2: a greenlet
    in an unpatched time.sleep(30), or in a CPU loop, never yields, so the
    hub cannot raise HarakiriTimeout in it. The client gets 504; the
    `harakiri` stack, taken from the hub's thread since the greenlet is
    the one running, names the app's function; the worker is replaced (a
    new worker ready before the stuck one stops accepting) and killed after
    its grace; the new worker serves; harakiri_count is 1."""
    stats_port = free_port()
    server = mercy("--wsgi-file", APP, "--processes", "1", "--gevent", "4",
                   "--harakiri", "2", "--harakiri-graceful-timeout", "2",
                   "--stats", f"127.0.0.1:{stats_port}")
    [stuck_pid] = server.worker_pids().values()
    response = server.get(f"{route}?seconds=30", timeout=60)
    assert response.status == 504
    [event] = server.wait_event("harakiri")
    assert event["method"] == "GET" and str(event["path"]).startswith(route), event
    assert_stack_names(event, function)
    new_pid = check_replaced_then_killed(server, stuck_pid)
    assert server.get("/pid").json()["pid"] == new_pid
    wait_harakiri_counts(stats_port, [(1, 1)])
    assert stats_document(stats_port)["forced_kills"] == 1


def test_gevent_stuck_worker_serves_its_other_requests_within_its_grace(mercy):
    """--harakiri 6 with --harakiri-graceful-timeout 30: request A blocks
    the hub in an unpatched time.sleep(10). Request B arrives at the same
    worker, on a keep-alive connection opened before (and kept open by
    --keep-alive 60), once A's `harakiri` is logged. A makes its worker be replaced (a new worker ready before
    the stuck one stops accepting), but the stuck worker gets its grace:
    when A's sleep ends, B is served by it (200, before B's own deadline),
    and the worker then retires by itself: it is not killed."""
    server = mercy("--wsgi-file", APP, "--processes", "1", "--gevent", "4",
                   "--harakiri", "6", "--harakiri-graceful-timeout", "30",
                   "--keep-alive", "60")
    [stuck_pid] = server.worker_pids().values()
    kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    kept.request("GET", "/pid")
    first = kept.getresponse()
    assert json.loads(first.read())["pid"] == stuck_pid and not first.will_close
    blocked: dict = {}

    def run_blocked():
        blocked["response"] = server.get("/block?seconds=10", timeout=60)

    thread = threading.Thread(target=run_blocked, daemon=True)
    thread.start()
    server.wait_event("harakiri", worker_pid=stuck_pid)
    kept.request("GET", "/pid")
    other = kept.getresponse()
    assert other.status == 200
    assert json.loads(other.read())["pid"] == stuck_pid
    kept.close()
    thread.join(timeout=60)
    assert blocked["response"].status == 504
    [recycling] = server.wait_event("recycling", worker_pid=stuck_pid)
    assert "stuck past --harakiri" in str(recycling["reason"]), recycling
    server.wait_event("retired", worker_pid=stuck_pid, timeout=60)
    new_pid = int(server.wait_event("ready", count=2)[-1]["worker.pid"])
    records = server.records()
    assert index_of(records, "ready", new_pid) < index_of(records, "retiring", stuck_pid)
    server.assert_no_events("killed", "died")
    assert server.get("/pid").json()["pid"] == new_pid


# --- a response that started before the deadline -------------------------------------


@pytest.mark.parametrize("mode", [["--threads", "2"], ["--gevent", "4"]],
                         ids=["threads", "gevent"])
def test_a_stalled_response_whose_head_was_sent_is_cut_at_the_deadline(
        mercy, tmp_path, mode):
    """--harakiri 2: the app sends its head and a first chunk, then runs
    past the deadline. The status line is gone, so no 504: the client sees
    the head, the chunk, then the connection closed without the end of the
    chunked body. `harakiri` is logged with the request's stack, and
    mercy.HarakiriTimeout stops the app (no replacement)."""
    server = mercy("--wsgi-file", APP, "--processes", "1", *mode, "--harakiri", "2")
    [worker_pid] = server.worker_pids().values()
    marker = tmp_path / "harakiri-marker"
    with server.connect(timeout=60) as sock:
        sock.sendall(f"GET /stall?seconds=10&marker={marker} HTTP/1.1\r\n"
                     f"Host: 127.0.0.1\r\n\r\n".encode())
        data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), data[:300]
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert body == b"%x\r\n%s\r\n" % (len(FIRST_CHUNK), FIRST_CHUNK), data[:300]
    assert b"504" not in data and b"Gateway Timeout" not in data
    [event] = server.wait_event("harakiri")
    assert str(event["path"]).startswith("/stall"), event
    assert_stack_names(event, "_stall_after_first_chunk")
    assert wait_for_file(marker).read_text() == f"harakiri {worker_pid}"
    assert server.get("/pid").json()["pid"] == worker_pid
    server.assert_no_events("recycling", "killed", "died", "respawned")
