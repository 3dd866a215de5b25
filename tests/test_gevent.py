"""gevent mode: the founding scenario (pymongo's monitor greenlets on a
graceful reload), tracked work, concurrency, and in-flight requests across
signals; driven by the real binary over real sockets with real signals.

pymongo talks to tests/mongo_standin.py (a stand-in MongoDB server on
loopback) or to a loopback address where nothing listens; the app finds it
through `--env MONGO_URL=...`.
"""

import hashlib
import http.client
import json
import re
import shutil
import signal
import socket
import threading
import time
from collections import Counter

import pytest

from conftest import (APPS, EXAMPLES, REQUEST_TIMEOUT, client_loops, free_port, wait_answered,
                      wait_for_file, wait_replaced, wait_until)
from mongo_standin import MongoStandin

PYMONGO_APP = APPS / "gevent_pymongo.py"
BASIC_APP = APPS / "gevent_basic.py"
MONGO_EXAMPLE = EXAMPLES / "gevent_pymongo.py"

# The events that say an old worker has left: it retired, or it was killed.
GONE_EVENTS = ("retired", "killed")
# The names pymongo 4 gives its background threads (greenlets once patched).
PYMONGO_MONITOR = "pymongo_server_monitor_thread"


# --- helpers -----------------------------------------------------------------------


@pytest.fixture
def standin():
    """A stand-in MongoDB server on 127.0.0.1, stopped when the test ends."""
    server = MongoStandin().start()
    yield server
    server.stop()


def unreachable_mongo_url() -> str:
    """A loopback address where nothing listens: pymongo's monitors keep
    trying to connect, as they do while a real server is down."""
    return f"mongodb://127.0.0.1:{free_port()}/"


def wait_gone(server, pids) -> dict:
    """Waits until every pid has left, retired or killed; returns
    pid -> the name of the event that says how it left. Waiting for either
    event means a killed worker fails the test at once, with the log."""

    def gone():
        states = {}
        for pid in pids:
            for name in GONE_EVENTS:
                if server.events(name, worker_pid=pid):
                    states[pid] = name
                    break
        return states if len(states) == len(pids) else None

    try:
        return wait_until(gone, 60, f"workers {sorted(pids)} to retire or be killed")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{server.tail()}") from None


def assert_retired(server, pids):
    states = wait_gone(server, pids)
    assert states == {pid: "retired" for pid in pids}, f"{states}\n{server.tail()}"


def read_events(path) -> list:
    return path.read_text().splitlines() if path.exists() else []


def in_background(function, *args, **kwargs):
    """Runs function in a thread; returns (thread, result dict with
    "value" or "error")."""
    result = {}

    def run():
        try:
            result["value"] = function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - reported by the test
            result["error"] = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def thread_blocks(diagnostic: str) -> dict:
    """Splits a `mercy_expired` threads text into name -> list of blocks
    (the header line and the stack below it, up to the next header)."""
    blocks: dict = {}
    header = re.compile(r'^(Thread|Greenlet)\b[^"\n]*"([^"]*)":\s*$', re.MULTILINE)
    matches = list(header.finditer(diagnostic))
    for index, match in enumerate(matches):
        end = matches[index + 1].start() if index + 1 < len(matches) else len(diagnostic)
        blocks.setdefault(match.group(2), []).append(diagnostic[match.start():end])
    return blocks


def pids_answering(server, path: str, pids: set, attempts: int = 400) -> set:
    """Sends GET path on new connections until every pid has answered at
    least once (requests spread over the workers); returns the pids seen."""
    seen = set()
    for _ in range(attempts):
        response = server.get(path)
        assert response.status == 200, (response.status, response.body)
        seen.add(response.json()["pid"])
        if pids <= seen:
            return seen
    raise AssertionError(f"only {sorted(seen)} of {sorted(pids)} answered {path}")


# --- the founding scenario --------------------------------------------------------------


def test_founding_scenario_reload_and_stop_kill_no_worker(standin, mercy):
    """gevent mode, 2 workers, an app that monkey-patches and creates a real
    MongoClient at import (connected to the stand-in server). Two client
    loops run /ping (a real round trip to the server) across SIGHUP: none of
    their requests fails and they get answers from the new workers. Every
    old worker retires without a kill; SIGTERM then stops mercy with status
    0, again with no kill and no expired mercy. pymongo's own atexit handler
    is unregistered, so its monitor greenlets are still alive when the
    workers exit: untracked daemon greenlets never delay an exit."""
    server = mercy("--wsgi-file", PYMONGO_APP, "--processes", "2", "--gevent", "100",
                   "--worker-reload-mercy", "10",
                   "--env", f"MONGO_URL={standin.url}",
                   "--env", "MERCY_TEST_NO_DRIVER_ATEXIT=1")
    first = set(server.worker_pids().values())
    assert len(first) == 2

    info = server.get("/pid").json()
    assert info["threading_patched"] is True
    assert PYMONGO_MONITOR in info["threads"], info["threads"]
    assert server.get("/ping").json()["ping"] == "ok"

    with client_loops(server.port, False, True, path="/ping") as loops:
        wait_answered(loops)
        server.send_signal(signal.SIGHUP)
        server.wait_event("reload_done")
        second = set(server.worker_pids().values())
        assert len(second) == 2 and second.isdisjoint(first)
        wait_answered(loops, second, "an answer from a new worker")

    assert_retired(server, first)
    assert pids_answering(server, "/ping", second) == second

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert_retired(server, second)
    server.wait_event("shutdown_done")
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


def test_wait_for_hub_without_hook_pymongo_exit_handler_ends_its_greenlets(mercy):
    """--gevent-wait-for-hub, no closing hook, mercy 3 s, the stock app:
    the reload and the stop complete with no `mercy_expired` and no kill.
    mercy runs Python's atexit handlers (step 4) before it waits for the hub
    (step 5), and pymongo registers one that stops its monitors, so the hub
    empties: the uWSGI trap of the founding story does not happen."""
    server = mercy("--wsgi-file", PYMONGO_APP, "--processes", "2", "--gevent", "100",
                   "--gevent-wait-for-hub", "--worker-reload-mercy", "3",
                   "--env", f"MONGO_URL={unreachable_mongo_url()}")
    first = set(server.worker_pids().values())
    assert len(first) == 2
    assert PYMONGO_MONITOR in server.get("/pid").json()["threads"]

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    second = set(server.worker_pids().values())
    assert len(second) == 2 and second.isdisjoint(first)
    assert_retired(server, first)
    assert pids_answering(server, "/pid", second) == second

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert_retired(server, second)
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


def test_wait_for_hub_without_hook_expires_naming_pymongo_greenlets(mercy):
    """The founding story's trap, reproduced on purpose: --gevent-wait-for-hub,
    no closing hook, mercy 3 s, and pymongo's own atexit handler unregistered
    (so nothing the worker runs stops the monitors, as under uWSGI). The
    reload still completes and the new workers serve; each old worker, whose
    hub never empties because of pymongo's monitor greenlets, logs
    `mercy_expired` in step 5 naming those greenlets with a pymongo stack
    line, and only then is it killed."""
    server = mercy("--wsgi-file", PYMONGO_APP, "--processes", "2", "--gevent", "100",
                   "--gevent-wait-for-hub", "--worker-reload-mercy", "3",
                   "--env", f"MONGO_URL={unreachable_mongo_url()}",
                   "--env", "MERCY_TEST_NO_DRIVER_ATEXIT=1")
    first = set(server.worker_pids().values())
    assert len(first) == 2

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    second = set(server.worker_pids().values())
    assert len(second) == 2 and second.isdisjoint(first)
    assert pids_answering(server, "/pid", second) == second

    for pid in first:
        [expired] = server.wait_event("mercy_expired", worker_pid=pid)
        [killed] = server.wait_event("killed", worker_pid=pid)
        assert server.event_index(expired) < server.event_index(killed)
        assert str(expired["step"]).startswith("5"), expired["step"]
        diagnostic = str(expired["threads"])
        blocks = thread_blocks(diagnostic)
        assert PYMONGO_MONITOR in blocks, diagnostic
        for block in blocks[PYMONGO_MONITOR]:
            assert block.startswith("Greenlet"), block
            assert re.search(r'File "[^"]*pymongo[^"]*", line \d+, in \w+', block), block
        assert not server.events("retired", worker_pid=pid)
    server.assert_no_events("reload_failed")


def test_wait_for_hub_with_closing_hook_retires_without_kill(mercy, tmp_path):
    """The same app and options (--gevent-wait-for-hub, mercy 3 s, pymongo's
    atexit handler unregistered) with a `mercy.on_shutdown` hook that closes
    the client: pymongo's greenlets end, the hub empties, and every worker
    retires, on SIGHUP and on SIGTERM, with no `mercy_expired` and no
    `killed` event. The hook ran exactly once in each worker."""
    events_log = tmp_path / "events.log"
    server = mercy("--wsgi-file", PYMONGO_APP, "--processes", "2", "--gevent", "100",
                   "--gevent-wait-for-hub", "--worker-reload-mercy", "3",
                   "--env", f"MONGO_URL={unreachable_mongo_url()}",
                   "--env", "MERCY_TEST_NO_DRIVER_ATEXIT=1",
                   "--env", f"MERCY_TEST_DIR={tmp_path}",
                   "--env", "MERCY_TEST_CLOSE_HOOK=1")
    first = set(server.worker_pids().values())
    assert len(first) == 2

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    second = set(server.worker_pids().values())
    assert len(second) == 2 and second.isdisjoint(first)
    assert_retired(server, first)
    assert Counter(read_events(events_log)) == Counter(f"closed {pid}" for pid in first)
    assert pids_answering(server, "/pid", second) == second

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert_retired(server, second)
    assert Counter(read_events(events_log)) == Counter(
        f"closed {pid}" for pid in first | second)
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


def test_closing_hook_closes_every_server_connection_cleanly(standin, mercy, tmp_path):
    """Against the stand-in server, with --gevent-wait-for-hub and the
    closing hook: after a reload, every connection the old workers opened
    (told apart by the client's appName, which carries the worker pid) was
    closed by the client between two messages, none reset, and each old
    worker sent `endSessions` first, which only `MongoClient.close()` does.
    The new workers' connections stay open until SIGTERM, which closes them
    the same way."""
    server = mercy("--wsgi-file", PYMONGO_APP, "--processes", "2", "--gevent", "100",
                   "--gevent-wait-for-hub", "--worker-reload-mercy", "10",
                   "--env", f"MONGO_URL={standin.url}",
                   "--env", f"MERCY_TEST_DIR={tmp_path}",
                   "--env", "MERCY_TEST_CLOSE_HOOK=1")
    first = set(server.worker_pids().values())
    # Each old worker runs a command: a pooled connection and a server
    # session, besides its monitor's connection.
    pids_answering(server, "/ping", first)

    def owners():
        return {conn.app_name for conn in standin.connections()}

    wait_until(lambda: {f"mercy-test-{pid}" for pid in first} <= owners(), 60,
               "a connection from every worker")

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    second = set(server.worker_pids().values())
    assert len(second) == 2 and second.isdisjoint(first)
    assert_retired(server, first)
    pids_answering(server, "/ping", second)

    def check_closed(pids):
        for pid in pids:
            connections = standin.connections(f"mercy-test-{pid}")
            assert len(connections) >= 2, connections  # monitor + pool
            wait_until(lambda: all(c.closed for c in standin.connections(f"mercy-test-{pid}")),
                       60, f"the connections of worker {pid} to close")
            connections = standin.connections(f"mercy-test-{pid}")
            assert [(c.number, c.close_kind) for c in connections] == [
                (c.number, "eof") for c in connections], connections
            assert any("endSessions" in c.commands for c in connections), connections

    check_closed(first)
    for pid in second:
        connections = standin.connections(f"mercy-test-{pid}")
        assert connections and not any(c.closed for c in connections), connections

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert_retired(server, second)
    check_closed(second)
    assert Counter(read_events(tmp_path / "events.log")) == Counter(
        f"closed {pid}" for pid in first | second)
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


def test_gevent_pymongo_example_serves_and_reloads_without_kill(standin, mercy):
    """examples/gevent_pymongo.py, as its docstring runs it (2 workers,
    --gevent-wait-for-hub) against the stand-in: / and /ping answer, and a
    reload and a stop finish with no expired mercy and no kill, thanks to its
    closing hook."""
    server = mercy("--wsgi-file", MONGO_EXAMPLE, "--processes", "2", "--gevent", "100",
                   "--gevent-wait-for-hub", "--worker-reload-mercy", "10",
                   "--env", f"MONGO_URL={standin.url}")
    first = set(server.worker_pids().values())

    index = server.get("/")
    assert index.status == 200
    assert index.json()["servers"] == [f"127.0.0.1:{standin.port}"]
    ping = server.get("/ping")
    assert ping.status == 200
    assert ping.json()["ping"] == "ok"

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    assert_retired(server, first)
    assert server.get("/ping").status == 200
    second = set(server.worker_pids().values())

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert_retired(server, second)
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


# --- tracked work ------------------------------------------------------------------------


@pytest.mark.parametrize("route, tasks", [("spawn", ["spawn"]),
                                          ("group", ["group-a", "group-b"])])
def test_reload_waits_for_tracked_work(mercy, tmp_path, route, tasks):
    """A request starts tracked work (`mercy.spawn`, or two tasks of a
    `mercy.TaskGroup` that nobody joins) and returns at once; the work is
    held until its worker was told to retire by SIGHUP, then runs for 1 s
    more. The worker retires only after the work is done: every task file
    is complete, each task finished before the worker's shutdown hook ran,
    and no worker was killed."""
    release = tmp_path / "release"
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "2", "--gevent", "10",
                   "--env", f"MERCY_TEST_DIR={tmp_path}")
    first = set(server.worker_pids().values())

    started = server.get(f"/{route}?seconds=1&release={release}")
    assert started.status == 200
    task_pid = started.json()["pid"]
    assert task_pid in first
    server.send_signal(signal.SIGHUP)
    server.wait_event("retiring", worker_pid=task_pid)
    release.touch()
    server.wait_event("reload_done")
    assert_retired(server, first)

    lines = read_events(tmp_path / "events.log")
    assert Counter(line for line in lines if line.startswith("shutdown ")) == Counter(
        f"shutdown {pid}" for pid in first)
    for task in tasks:
        expected = [f"start {task_pid}"] + [f"step {n}" for n in range(20)] + [f"done {task_pid}"]
        assert (tmp_path / f"task-{task}.txt").read_text().splitlines() == expected
        assert lines.index(f"task-done {task} {task_pid}") < lines.index(f"shutdown {task_pid}")
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


def test_cpu_bound_greenlet_sees_the_shutdown_and_its_worker_retires(mercy, tmp_path):
    """A request that loops on gevent.sleep(0) until
    `mercy.is_shutting_down()`: after SIGHUP it sees the flag, answers 200,
    and its worker retires without a kill."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "10")
    marker = tmp_path / "spinning"
    thread, result = in_background(server.get, f"/spin?marker={marker}", timeout=120)
    worker_pid = int(wait_for_file(marker).read_text())

    server.send_signal(signal.SIGHUP)
    thread.join(timeout=120)

    assert "error" not in result, result
    assert result["value"].json() == {"pid": worker_pid, "saw_shutdown": True}
    server.wait_event("reload_done")
    assert_retired(server, {worker_pid})
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


# --- concurrency ---------------------------------------------------------------------------


def concurrent_gets(server, paths, timeout=90) -> list:
    """GETs every path at once, one thread and connection each; returns
    (status, body) or an error string per path, in order."""
    outcomes = [None] * len(paths)
    start = threading.Barrier(len(paths), timeout=60)

    def client(number):
        try:
            start.wait()
            response = server.get(paths[number], timeout=timeout)
            outcomes[number] = (response.status, response.body)
        except Exception as error:  # noqa: BLE001 - every failure is reported
            outcomes[number] = f"{type(error).__name__}: {error}"

    threads = [threading.Thread(target=client, args=(n,), daemon=True)
               for n in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout + 60)
    return outcomes


def test_300_requests_run_at_once_in_one_greenlet_pool(mercy):
    """One worker with --gevent 500: 300 concurrent requests to a route
    that waits on a gevent barrier until all 300 have arrived (or answers
    504 after 60 s) all complete with 200, from the same worker: they ran at
    the same time. mercy logs 300 request lines."""
    parties = 300
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "500")
    [worker_pid] = server.worker_pids().values()

    outcomes = concurrent_gets(
        server, [f"/barrier?name=all&parties={parties}&timeout=60"] * parties)

    failures = [o for o in outcomes if not (isinstance(o, tuple) and o[0] == 200)]
    assert failures == [], f"{len(failures)} failed, first: {failures[:3]}"
    answers = [json.loads(body) for _, body in outcomes]
    assert {answer["pid"] for answer in answers} == {worker_pid}
    assert sorted(answer["arrived"] for answer in answers) == list(range(1, parties + 1))
    server.wait_event("request", count=parties, path="/barrier")


def test_sustained_keep_alive_load_is_answered_to_the_last_request(mercy):
    """One worker, --gevent 64; three bursts of 64 keep-alive clients, each
    sending 200 requests without pause, half of them yielding to the hub
    for 1 ms: every request is answered 200 and logged. Wake-ups of the hub
    that cross each other (a request queued while the hub takes the
    previous wake-up) must never be lost: a lost one leaves requests queued
    with no greenlet to run them, and the clients time out."""
    bursts, clients, per_client = 3, 64, 200
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "64")

    for burst in range(bursts):
        failures: list = []
        answered = Counter()

        def client(number):
            connection = http.client.HTTPConnection(
                "127.0.0.1", server.port, timeout=REQUEST_TIMEOUT)
            try:
                for index in range(per_client):
                    path = "/slow?seconds=0.001" if index % 2 else "/pid"
                    connection.request("GET", path)
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        failures.append(f"client {number}: {path} gave {response.status}")
                        return
                    answered[number] += 1
            except Exception as error:  # noqa: BLE001 - every failure is reported
                failures.append(f"client {number}, request {answered[number] + 1}: "
                                f"{type(error).__name__}: {error}")
            finally:
                connection.close()

        threads = [threading.Thread(target=client, args=(n,), daemon=True)
                   for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=per_client * REQUEST_TIMEOUT)

        assert failures == [], (
            f"burst {burst + 1}: {len(failures)} clients failed, first: {failures[:3]}\n"
            f"{server.tail()}")
        assert sum(answered.values()) == clients * per_client
    server.wait_event("request", count=bursts * clients * per_client)


def test_greenlet_limit_makes_extra_requests_wait_their_turn(mercy):
    """--gevent 2 and three concurrent requests to a barrier of 3 that
    gives up after 2 s: only two requests can be inside the app at once, so
    the third can only arrive at the barrier after one of the first two gave
    up (504, having seen at most 2 arrivals); it arrives third and answers
    200. Without the limit all three would meet and answer 200."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "2")

    outcomes = concurrent_gets(server, ["/barrier?name=limit&parties=3&timeout=2"] * 3)

    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    answers = [(status, json.loads(body)) for status, body in outcomes]
    gave_up = [answer for status, answer in answers if status == 504]
    assert gave_up, outcomes
    assert all(answer["arrived"] <= 2 for answer in gave_up), outcomes
    [last] = [(status, answer) for status, answer in answers if answer["arrived"] == 3]
    assert last[0] == 200, outcomes


def test_each_request_runs_in_a_greenlet_of_its_own(mercy, tmp_path):
    """--gevent 1: a request stores a value in a threading.local (gevent's
    local, once patched) and answers only when a second request is queued
    behind it. The second request, run next in the same request slot, does
    not see the value; nor does a third one later."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "1")
    marker = tmp_path / "first-running"
    thread, first = in_background(server.get, f"/local?set=first&hold=1&marker={marker}",
                                  timeout=120)
    wait_for_file(marker)

    second = server.get("/local?set=second", timeout=120)
    thread.join(timeout=120)

    assert "error" not in first, first
    assert first["value"].json() == {"seen": None}
    assert second.json() == {"seen": None}
    assert server.get("/local").json() == {"seen": None}


def test_response_stalled_by_a_client_that_stops_reading_holds_up_no_one(mercy):
    """One worker, --gevent 100. A client asks for a 1 GiB response and stops
    reading after its head: the greenlet producing it waits for the client
    once the buffers are full (production stops growing). Meanwhile 20
    other requests, all at once, complete with 200, and the stalled
    response is still far from complete."""
    chunks = 16384
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "100")
    stalled_client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    stalled_client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    stalled_client.settimeout(60)
    with stalled_client:
        stalled_client.connect(("127.0.0.1", server.port))
        stalled_client.sendall(
            f"GET /stream?chunks={chunks} HTTP/1.1\r\nHost: mercy-test\r\n\r\n".encode())
        assert stalled_client.recv(16).startswith(b"HTTP/1.1 200")

        def production_stopped():
            produced = []
            for _ in range(3):
                produced.append(server.get("/streamed").json()["bytes"])
                time.sleep(0.1)
            return produced[0] >= 4 * 65536 and len(set(produced)) == 1

        wait_until(production_stopped, 60, "the stalled response to stop growing")
        outcomes = concurrent_gets(server, ["/pid"] * 20)
        assert [o[0] if isinstance(o, tuple) else o for o in outcomes] == [200] * 20
        assert server.get("/streamed").json()["bytes"] < chunks * 65536

    assert server.get("/pid").status == 200


class Trickler(threading.Thread):
    """Sends POST /body with a `length`-byte body one byte at a time (every
    10 ms) until `finish` is set, then the rest at once; reads the answer."""

    def __init__(self, server, length: int, seed: bytes, marker):
        super().__init__(daemon=True)
        self.server = server
        self.marker = marker
        self.body = hashlib.sha256(seed).digest() * (length // 32) + b"x" * (length % 32)
        self.sent = 0
        self.lock = threading.Lock()
        self.finish = threading.Event()
        self.finished_early = False
        self.result: dict = {}

    def sent_bytes(self) -> int:
        with self.lock:
            return self.sent

    def run(self):
        try:
            with socket.create_connection(("127.0.0.1", self.server.port), timeout=60) as sock:
                head = (f"POST /body?marker={self.marker} HTTP/1.1\r\n"
                        "Host: 127.0.0.1\r\n"
                        "Content-Type: application/octet-stream\r\n"
                        f"Content-Length: {len(self.body)}\r\n"
                        "Connection: close\r\n\r\n")
                sock.sendall(head.encode())
                while not self.finish.wait(0.01):
                    if self.sent >= len(self.body) - 1:
                        self.finished_early = True
                        break
                    sock.sendall(self.body[self.sent:self.sent + 1])
                    with self.lock:
                        self.sent += 1
                sock.sendall(self.body[self.sent:])
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            self.result["response"] = b"".join(chunks)
        except Exception as error:  # noqa: BLE001 - reported by the test
            self.result["error"] = f"{type(error).__name__}: {error}"


def test_slow_sender_does_not_hold_up_other_requests(mercy, tmp_path):
    """One worker, --gevent 500. Two clients send a body one byte at a time:
    one smaller than --post-buffering, which mercy reads whole before the
    app runs (the app has not started while it trickles), and one larger,
    which the app's greenlet reads as it comes (the app has started and
    waits in wsgi.input.read). While both are still sending, 50 other
    requests, 10 at a time, complete with 200; then both slow clients send
    the rest and get back the right length and digest."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "500",
                   "--post-buffering", "65536")
    small = Trickler(server, 4000, b"small", tmp_path / "small-started")
    large = Trickler(server, 200_000, b"large", tmp_path / "large-started")
    tricklers = [small, large]
    for trickler in tricklers:
        trickler.start()
    try:
        for trickler in tricklers:
            wait_until(lambda: trickler.sent_bytes() >= 20, 60, "a slow client to be sending")
        wait_for_file(large.marker)
        for _ in range(5):
            outcomes = concurrent_gets(server, ["/pid"] * 10)
            assert all(isinstance(o, tuple) and o[0] == 200 for o in outcomes), outcomes
        # The other requests completed while both were still sending.
        for trickler in tricklers:
            assert trickler.is_alive() and not trickler.finished_early
            assert trickler.sent_bytes() < len(trickler.body)
        assert not small.marker.exists(), "the app ran before the buffered body was read"
    finally:
        for trickler in tricklers:
            trickler.finish.set()
        for trickler in tricklers:
            trickler.join(timeout=60)

    for trickler in tricklers:
        assert "error" not in trickler.result, trickler.result
        response = trickler.result["response"]
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), response[:200]
        assert json.loads(body) == {"length": len(trickler.body),
                                    "sha256": hashlib.sha256(trickler.body).hexdigest()}
    assert small.marker.exists()


@pytest.mark.parametrize("flags", [[], ["--gevent-monkey-patch"],
                                   ["--gevent-early-monkey-patch"]])
def test_app_is_imported_with_threading_already_patched(mercy, flags):
    """gevent mode patches before the app is imported, by default and with
    uWSGI's spellings --gevent-monkey-patch and --gevent-early-monkey-patch
    (accepted, same meaning): the app module finds threading patched at
    import, and still does when serving."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "10", *flags)

    info = server.get("/pid").json()

    assert (info["threading_patched"], info["threading_patched_at_import"]) == (True, True)


def test_gevent_with_threads_is_refused_at_start(mercy):
    """--gevent with --threads: refused before any worker starts, exit status
    1, and the message names both options."""
    server = mercy("--wsgi-file", BASIC_APP, "--gevent", "10", "--threads", "4", ready=0)

    assert server.wait_exit() == 1
    log = server.text()
    assert "--gevent" in log and "--threads" in log, log
    server.assert_no_events("spawned", "ready")


def test_no_monkey_patch_option_leaves_the_stdlib_alone(mercy):
    """--no-gevent-monkey-patch: the app sees an unpatched `threading`
    (the default patches it), and requests still run in greenlets at once:
    3 concurrent requests meet at a gevent barrier of 3."""
    patched = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "10")
    assert patched.get("/pid").json()["threading_patched"] is True

    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "10",
                   "--no-gevent-monkey-patch")
    info = server.get("/pid").json()
    assert (info["threading_patched"], info["threading_patched_at_import"]) == (False, False)
    outcomes = concurrent_gets(server, ["/barrier?name=plain&parties=3&timeout=60"] * 3)
    assert [o[0] if isinstance(o, tuple) else o for o in outcomes] == [200, 200, 200]


# --- in-flight requests across signals --------------------------------------------------------


def slow_request(server, tmp_path):
    """Starts GET /slow (held until the release file exists, then 1 s more)
    in a thread; returns (thread, result, marker, release)."""
    marker, release = tmp_path / "started", tmp_path / "release"
    thread, result = in_background(
        server.get, f"/slow?seconds=1&marker={marker}&release={release}", timeout=120)
    return thread, result, marker, release


def test_sighup_lets_an_in_flight_request_finish(mercy, tmp_path):
    """A request being handled in a greenlet when SIGHUP arrives, and held
    until after its worker was told to retire, completes with 200 and
    `Connection: close`; its worker retires afterwards, with no kill."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "2", "--gevent", "10")
    thread, result, marker, release = slow_request(server, tmp_path)
    worker_pid = int(wait_for_file(marker).read_text())

    server.send_signal(signal.SIGHUP)
    server.wait_event("retiring", worker_pid=worker_pid)
    release.touch()
    thread.join(timeout=120)

    assert "error" not in result, result
    response = result["value"]
    assert response.status == 200
    assert response.body == b"slow done"
    assert response.header("Connection") == "close"
    server.wait_event("reload_done")
    assert_retired(server, {worker_pid})
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


def test_sigterm_lets_an_in_flight_request_finish(mercy, tmp_path):
    """SIGTERM while a request is held in a greenlet: the request completes
    with 200 after the shutdown started, mercy exits with status 0, and no
    worker is killed."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "2", "--gevent", "10")
    thread, result, marker, release = slow_request(server, tmp_path)
    worker_pid = int(wait_for_file(marker).read_text())

    server.send_signal(signal.SIGTERM)
    server.wait_event("shutdown_started")
    release.touch()
    thread.join(timeout=120)

    assert "error" not in result, result
    assert result["value"].status == 200
    assert result["value"].body == b"slow done"
    assert server.wait_exit() == 0
    server.wait_event("shutdown_done")
    assert_retired(server, {worker_pid})
    server.assert_no_events("mercy_expired", "killed")


def test_mercy_expired_names_a_held_request_and_the_step_it_holds_up(mercy, tmp_path):
    """A request that never finishes (held by the app) when SIGTERM
    arrives, mercy 3 s: the worker logs `mercy_expired` saying it is in
    step 2 (finishing in-flight requests: it stopped accepting at once),
    naming the request (GET /slow) and the greenlet running it with the
    app's stack; then the master kills it and mercy exits with status 0."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--gevent", "10",
                   "--worker-reload-mercy", "3")
    thread, result, marker, release = slow_request(server, tmp_path)
    worker_pid = int(wait_for_file(marker).read_text())

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    thread.join(timeout=60)

    [expired] = server.wait_event("mercy_expired", worker_pid=worker_pid)
    [killed] = server.wait_event("killed", worker_pid=worker_pid)
    assert server.event_index(expired) < server.event_index(killed)
    assert "GET /slow" in str(expired["requests"]), expired["requests"]
    blocks = [block for blocks in thread_blocks(str(expired["threads"])).values()
              for block in blocks]
    assert any(block.startswith("Greenlet") and "gevent_basic.py" in block
               and "in _slow" in block for block in blocks), expired["threads"]
    assert str(expired["step"]).startswith("2"), expired["step"]
    assert "value" not in result, "the held request cannot have been answered"


def test_max_requests_recycles_gevent_workers_without_a_failed_request(mercy):
    """--max-requests 20 with --gevent 10, 2 workers, while a keep-alive
    client and a connection-per-request client send requests without pause:
    every first-generation worker is recycled (`recycling` naming
    --max-requests), its replacement is `ready` before it is `retiring`,
    and it is `retired`, never killed; replacements answer, and not one
    request fails."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "2", "--gevent", "10",
                   "--max-requests", "20")
    first = server.worker_pids()
    with client_loops(server.port, True, False) as loops:
        wait_replaced(server, loops, first.values())

    records = server.records()
    position = {id(record): index for index, record in enumerate(records)}
    for worker_id, pid in first.items():
        [recycling] = server.events("recycling", worker_pid=pid)
        assert "--max-requests (20) reached" in str(recycling["reason"]), recycling
        replacement = next(r for r in server.events("spawned", worker_id=worker_id)
                           if position[id(r)] > position[id(recycling)])
        [ready] = server.events("ready", worker_pid=replacement["worker.pid"])
        [retiring] = server.events("retiring", worker_pid=pid)
        assert position[id(ready)] < position[id(retiring)], (worker_id, ready, retiring)
    server.assert_no_events("killed", "died", "mercy_expired", "respawned")


def test_failed_reload_keeps_the_old_generation_serving(mercy, tmp_path):
    """gevent mode: the app file is broken after a good start, then SIGHUP:
    the reload fails with `reload_failed`, and the same old workers, same
    pids, keep serving, none told to retire; SIGTERM still exits 0."""
    app = tmp_path / "app.py"
    shutil.copy(BASIC_APP, app)
    server = mercy("--wsgi-file", app, "--processes", "2", "--gevent", "10")
    before = server.worker_pids()
    assert len(before) == 2

    app.write_text("import mercy_test_no_such_module\n")
    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_failed")

    assert server.worker_pids() == before
    assert pids_answering(server, "/pid", set(before.values())) == set(before.values())
    for pid in before.values():
        assert server.events("retiring", worker_pid=pid) == []
    server.assert_no_events("reload_done")
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
