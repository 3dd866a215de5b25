"""Operations: chain reloads, recycling, harakiri, stats (and uwsgitop),
Prometheus metrics, the master FIFO, log reopening, worker scaling,
systemd's notify protocol and socket activation, and mercy as PID 1.

Everything runs the real binary on loopback sockets with real signals.
Tests assert events and bytes, never durations; every wait has a generous
timeout that fails the test.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import termios
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import (
    APPS,
    EVENT_TIMEOUT,
    REPO,
    REQUEST_TIMEOUT,
    START_TIMEOUT,
    Mercy,
    _flatten,
    client_loops,
    free_port,
    post_in_pieces,
    pid_running,
    venv_python,
    wait_answered,
    wait_for_file,
    wait_replaced,
    wait_until,
)

APP = APPS / "ops_app.py"
SWITCH_APP = APPS / "startup_switch.py"
LIFECYCLE_EVENTS = ("spawned", "respawned", "retired", "killed", "died")


# --- helpers ---------------------------------------------------------------------


def held_request(port: int, path: bytes, marker: Path, release: Path) -> dict:
    """Sends GET path?marker=..&release=.. on a raw socket in a thread;
    the result dict gets `data` (the whole answer) or `error`."""
    result: dict = {}
    query = f"?marker={marker}&release={release}".encode()

    def run():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                sock.sendall(b"GET " + path + query + b" HTTP/1.1\r\nHost: x\r\n"
                             b"Connection: close\r\n\r\n")
                result["data"] = read_until_closed(sock)
        except Exception as error:  # noqa: BLE001 - reported by the test
            result["error"] = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    result["thread"] = thread
    return result


def read_json_lines(path: Path) -> list[dict]:
    """The JSON objects of a log file, flattened as conftest does."""
    if not path.exists():
        return []
    records = []
    for line in path.read_bytes().split(b"\n"):
        line = line.strip()
        if line.startswith(b"{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(_flatten(record))
    return records


def fifo_send(path: Path, letters: bytes):
    """Writes letters to the master FIFO (which the master holds open)."""
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, letters)
    finally:
        os.close(fd)


def read_until_closed(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def fetch_stats(address) -> bytes:
    """One raw `--stats` answer: a (host, port) tuple or a unix path."""
    family = socket.AF_UNIX if isinstance(address, (str, Path)) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(REQUEST_TIMEOUT)
        sock.connect(str(address) if family == socket.AF_UNIX else address)
        return read_until_closed(sock)


def http_get_raw(port: int, path: str = "/") -> tuple[int, dict, bytes]:
    """GET over HTTP/1.0; (status, headers, body) read until close."""
    with socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT) as sock:
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode())
        data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, body


def stats_document(address) -> dict:
    """Fetches and parses a stats document (strict UTF-8 JSON)."""
    raw = fetch_stats(address)
    return json.loads(raw.decode("utf-8"))


UWSGITOP_WORKER_FIELDS = {
    "id": int, "pid": int, "requests": int, "exceptions": int, "signals": int,
    "status": str, "avg_rt": (int, float), "rss": int, "vsz": int, "tx": int,
    "respawn_count": int, "harakiri_count": int, "running_time": (int, float),
    "last_spawn": int,
}


def check_uwsgi_stats_shape(document: dict, master_pid: int):
    """The fields uwsgitop reads, with the types it formats them with."""
    assert isinstance(document["version"], str)
    assert isinstance(document["listen_queue"], int)
    assert document["pid"] == master_pid
    assert isinstance(document["workers"], list) and document["workers"]
    for worker in document["workers"]:
        for field, kind in UWSGITOP_WORKER_FIELDS.items():
            assert isinstance(worker.get(field), kind), (field, worker)
        for core in worker["cores"]:
            assert isinstance(core["id"], int), core
            assert isinstance(core["requests"], int), core
            assert core["in_request"] in (0, 1, False, True), core
    for field in ("generation", "last_reload", "forced_kills"):
        assert field in document, field


_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"^(?P<name>{_METRIC_NAME})"
    rf"(?:\{{(?P<labels>(?:{_LABEL})(?:,{_LABEL})*,?)?\}})?"
    r" (?P<value>[^ ]+)(?: (?P<timestamp>-?\d+))?$"
)
_LABEL_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')


def parse_prometheus(text: str) -> dict:
    """A strict parser of Prometheus' text format 0.0.4: returns
    {family: {"type": ..., "help": ..., "samples": [(name, labels, value)]}}.
    Fails on malformed lines, a family's lines not being together, a TYPE
    after its samples or twice, unparsable values and duplicate series."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict = {}
    order: list[str] = []
    seen_series = set()
    current = None

    def family_of(name: str) -> str:
        for suffix in ("_bucket", "_sum", "_count"):
            base = name[: -len(suffix)] if name.endswith(suffix) else None
            if base and families.get(base, {}).get("type") in ("histogram", "summary"):
                return base
        return name

    def enter(name: str):
        nonlocal current
        if current != name:
            assert name not in order, f"the lines of {name} are not together"
            order.append(name)
            families.setdefault(name, {"type": None, "help": None, "samples": []})
            current = name

    for number, line in enumerate(text.split("\n")[:-1], 1):
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert re.fullmatch(_METRIC_NAME, name), f"line {number}: {line!r}"
                enter(name)
                family = families[name]
                if parts[1] == "TYPE":
                    assert family["type"] is None, f"line {number}: second TYPE for {name}"
                    assert not family["samples"], f"line {number}: TYPE after samples"
                    assert len(parts) == 4 and parts[3] in (
                        "counter", "gauge", "histogram", "summary", "untyped"), line
                    family["type"] = parts[3]
                else:
                    assert family["help"] is None, f"line {number}: second HELP for {name}"
                    family["help"] = parts[3] if len(parts) == 4 else ""
            continue
        if not line.strip():
            continue
        match = _SAMPLE.match(line)
        assert match, f"line {number} is not a sample: {line!r}"
        name = match["name"]
        labels = tuple(sorted(_LABEL_PAIR.findall(match["labels"] or "")))
        assert len({key for key, _ in labels}) == len(labels), f"line {number}: repeated label"
        value = match["value"]
        assert re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?Inf|NaN", value), (
            f"line {number}: bad value {value!r}")
        assert (name, labels) not in seen_series, f"line {number}: duplicate series {line!r}"
        seen_series.add((name, labels))
        enter(family_of(name))
        families[family_of(name)]["samples"].append((name, dict(labels), float(value)))
    return families


ANSI = re.compile(rb"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>78DEHMc])")


def run_uwsgitop(address: str, seconds: float = 4.0) -> str:
    """Runs uwsgitop (curses) on a pseudo-terminal of 60x220 for a few
    seconds, then presses `q`. Returns the screen output with terminal
    escape sequences removed (TERM=screen: no repeat-character sequences,
    so numbers appear whole)."""
    uwsgitop = shutil.which("uwsgitop", path=str(venv_python().parent)) or shutil.which("uwsgitop")
    if uwsgitop is None:
        pytest.fail("uwsgitop is not installed: pip install -r tests/requirements.txt")
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 220, 0, 0))
    env = dict(os.environ, TERM="screen", LINES="60", COLUMNS="220")
    proc = subprocess.Popen([uwsgitop, "--frequency", "1", address], stdin=terminal,
                            stdout=terminal, stderr=terminal, env=env,
                            start_new_session=True, close_fds=True)
    os.close(terminal)
    output = bytearray()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    output += os.read(controller, 65536)
                except OSError:
                    break
        os.write(controller, b"q")
        ends = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < ends:
            ready, _, _ = select.select([controller], [], [], 0.1)
            if ready:
                try:
                    output += os.read(controller, 65536)
                except OSError:
                    break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        os.close(controller)
    return ANSI.sub(b" ", bytes(output)).decode("utf-8", "replace")


def alive_counts(records: list[dict]) -> list[int]:
    """Walks the master's lifecycle events in order: a `spawned` or
    `respawned` worker is alive until its `retired`, `killed` or `died`.
    Returns the number alive after each such event."""
    alive: set[int] = set()
    counts = []
    for record in records:
        event = record.get("event")
        if event not in LIFECYCLE_EVENTS or "worker.pid" not in record:
            continue
        pid = int(record["worker.pid"])
        if event in ("spawned", "respawned"):
            alive.add(pid)
        else:
            alive.discard(pid)
        counts.append(len(alive))
    return counts


def max_not_retiring_per_slot(records: list[dict]) -> int:
    """The most workers of one slot alive at once that were not told to
    retire (a serving worker plus its loading replacement make 2)."""
    slots: dict[int, set[int]] = {}
    peak = 0
    for record in records:
        event = record.get("event")
        if event not in LIFECYCLE_EVENTS + ("retiring",) or "worker.pid" not in record:
            continue
        members = slots.setdefault(int(record["worker.id"]), set())
        if event in ("spawned", "respawned"):
            members.add(int(record["worker.pid"]))
        else:
            members.discard(int(record["worker.pid"]))
        peak = max(peak, len(members))
    return peak


def index_of(records, event, **fields) -> list[int]:
    return [
        i for i, r in enumerate(records)
        if r.get("event") == event and all(str(r.get(k)) == str(v) for k, v in fields.items())
    ]


def check_chain_reload(records: list[dict], generation: int, processes: int):
    """The chain reload to `generation` replaced slot after slot: in each,
    the new worker was ready before the old one was told to retire, and the
    next slot's worker was spawned only after the old worker of the
    previous slot was gone."""
    slots = []
    for i in index_of(records, "reload_progress", generation=generation, mode="chain"):
        if not slots or slots[-1] != records[i]["slot"]:
            slots.append(records[i]["slot"])
    assert slots == list(range(1, processes + 1)), slots
    previous_gone = None
    for slot in range(1, processes + 1):
        spawned = index_of(records, "spawned", generation=generation, **{"worker.id": slot})
        assert len(spawned) == 1, (slot, spawned)
        new_pid = records[spawned[0]]["worker.pid"]
        [ready] = index_of(records, "ready", **{"worker.pid": new_pid})
        retiring = [
            i for i in index_of(records, "retiring", **{"worker.id": slot})
            if i > spawned[0] and int(records[i]["generation"]) < generation
        ]
        assert retiring, f"no old worker of slot {slot} retired for generation {generation}"
        old_pid = records[retiring[0]]["worker.pid"]
        assert ready < retiring[0], f"slot {slot}: old worker retired before the new was ready"
        gone = index_of(records, "retired", **{"worker.pid": old_pid}) + index_of(
            records, "killed", **{"worker.pid": old_pid})
        assert gone, f"slot {slot}: old worker {old_pid} never left"
        if previous_gone is not None:
            assert spawned[0] > previous_gone, (
                f"slot {slot} started before the previous slot's old worker was gone")
        previous_gone = min(gone)


class CustomMercy(Mercy):
    """A Mercy whose process is started through a wrapper command and with
    extra Popen arguments (inherited descriptors)."""

    def start_with(self, prefix: list[str], ready: int | None = None, **popen) -> "CustomMercy":
        self.command = prefix + self.command
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, start_new_session=True, **popen)
        if ready is None:
            ready = self.expected_workers()
        if ready:
            self.wait_event("ready", count=ready, timeout=START_TIMEOUT)
        return self


@pytest.fixture
def custom_mercy(tmp_path):
    """Like conftest's `mercy`, for CustomMercy instances (not started)."""
    instances: list[CustomMercy] = []

    def make(*args, env=None, http=True):
        instance = CustomMercy(tmp_path / f"custom-{len(instances)}", list(args),
                               env=env, http=http)
        instances.append(instance)
        return instance

    yield make

    for instance in instances:
        instance.stop()
        if instance.log_path.exists():
            print(instance.tail(200))


# --- chain reload and recycling ---------------------------------------------------


def test_chain_reloads_under_load_fail_no_request_and_keep_at_most_one_extra_worker(
        mercy, tmp_path):
    """Three chain reloads (SIGUSR2, FIFO `c`, --touch-chain-reload) while two
    clients send requests without pause: no request fails; each reload
    replaces slot after slot (the next slot starts only after the previous
    slot's old worker is gone), and the master's spawned/retired events
    never show more than workers+1 workers alive."""
    processes = 3
    fifo = tmp_path / "master.fifo"
    touch = tmp_path / "chain.touch"
    touch.write_text("")
    server = mercy("--wsgi-file", APP, "--processes", str(processes), "--threads", "2",
                   "--master-fifo", fifo, "--touch-chain-reload", touch)
    wait_for_file(fifo)
    generations = [set(server.worker_pids().values())]
    with client_loops(server.port, True, False) as loops:
        wait_answered(loops)
        triggers = [
            lambda: server.send_signal(signal.SIGUSR2),
            lambda: fifo_send(fifo, b"c"),
            lambda: os.utime(touch, (time.time() + 10, time.time() + 10)),
        ]
        for number, trigger in enumerate(triggers, 1):
            trigger()
            [*_, done] = server.wait_event("reload_done", count=number, timeout=120)
            assert done.get("mode") == "chain", done
            pids = set(server.worker_pids().values())
            assert len(pids) == processes
            for earlier in generations:
                assert pids.isdisjoint(earlier)
            generations.append(pids)
        wait_answered(loops, generations[-1], "an answer from the last generation")

    started = server.events("reload_started")
    assert [r.get("mode") for r in started] == ["chain"] * 3
    causes = " | ".join(str(r.get("cause")) for r in started)
    assert "SIGUSR2" in causes and "'c'" in causes and "--touch-chain-reload" in causes, causes
    for old in generations[:-1]:
        for pid in old:
            server.wait_event("retired", worker_pid=pid)
    records = server.records()
    for record in started:
        check_chain_reload(records, int(record["generation"]), processes)
    counts = alive_counts(records)
    assert max(counts) <= processes + 1, counts
    server.assert_no_events("reload_failed", "mercy_expired", "killed", "died")


def test_a_chain_reload_that_fails_half_way_is_made_whole_by_the_next_reload(mercy, tmp_path):
    """3 workers; a deploy that only worker 2 cannot load: the chain reload
    replaces worker 1, fails at worker 2 (`reload_failed`), and workers 2
    and 3 serve on. Once the deploy is fixed, a SIGHUP starts a generation
    with a number never used before and leaves exactly 3 workers, all of
    it: the worker of the half-done chain retires too."""
    switch = tmp_path / "switch"
    server = mercy("--wsgi-file", SWITCH_APP, "--processes", "3",
                   env={"MERCY_TEST_SWITCH": str(switch)})
    first = server.worker_pids()

    switch.write_text("raise-in 2")
    server.send_signal(signal.SIGUSR2)
    [failed] = server.wait_event("reload_failed")
    assert int(failed["generation"]) == 2, failed
    server.wait_event("retired", worker_pid=first[1])
    [chained] = [int(r["worker.pid"]) for r in server.events("ready", generation=2)]
    half = {chained, first[2], first[3]}
    wait_until(lambda: server.child_pids() == half, 60,
               "worker 1 of the chain and the old workers 2 and 3, alone")

    switch.unlink()
    server.send_signal(signal.SIGHUP)
    [done] = server.wait_event("reload_done")
    assert int(done["generation"]) == 3, done
    for pid in half:
        server.wait_event("retired", worker_pid=pid)
    last = server.worker_pids()
    assert sorted(last) == [1, 2, 3] and half.isdisjoint(last.values()), last
    wait_until(lambda: server.child_pids() == set(last.values()), 60,
               f"only generation 3's workers {last} (left: {server.child_pids()})")
    server.assert_no_events("killed")


def progress_counts(server, generation: int) -> list[tuple]:
    """The (slot, ready, draining, gone, total) of each `reload_progress`
    event of the reload to `generation`, in order (slot None in a full
    reload)."""
    return [
        (r.get("slot"), int(r["ready"]), int(r["draining"]), int(r["gone"]), int(r["total"]))
        for r in server.events("reload_progress", generation=generation)
    ]


def test_reload_progress_counts_ready_draining_and_gone(mercy):
    """2 workers: a SIGHUP reload logs `reload_progress` with ready,
    draining, gone and total on each change: the new workers get ready one
    by one, then both old ones drain and go; a SIGUSR2 chain reload does
    the same slot by slot. The last progress before `reload_done` says
    ready=2, draining=0, gone=2."""
    server = mercy("--wsgi-file", APP, "--processes", "2", "--threads", "2")

    server.send_signal(signal.SIGHUP)
    [done] = server.wait_event("reload_done")
    full = progress_counts(server, 2)
    assert full == [
        (None, 0, 0, 0, 2), (None, 1, 0, 0, 2), (None, 2, 0, 0, 2),
        (None, 2, 2, 0, 2), (None, 2, 1, 1, 2), (None, 2, 0, 2, 2),
    ], full
    records = server.records()
    progress = index_of(records, "reload_progress", generation=2)
    assert progress[-1] < server.event_index(done)
    assert {records[i]["mode"] for i in progress} == {"full"}

    server.send_signal(signal.SIGUSR2)
    [*_, done] = server.wait_event("reload_done", count=2)
    assert done["mode"] == "chain"
    chain = progress_counts(server, 3)
    assert chain == [
        (1, 0, 0, 0, 2), (1, 1, 1, 0, 2), (1, 1, 0, 1, 2),
        (2, 1, 0, 1, 2), (2, 2, 1, 1, 2), (2, 2, 0, 2, 2),
    ], chain
    records = server.records()
    progress = index_of(records, "reload_progress", generation=3)
    assert progress[-1] < server.event_index(done)
    assert {records[i]["mode"] for i in progress} == {"chain"}
    server.assert_no_events("reload_failed", "killed")


def test_max_requests_recycles_every_worker_without_a_reset(mercy):
    """--max-requests 20, 2 workers, 8 keep-alive clients sending requests
    without pause, 2000 at least and on until every worker of the first
    generation was replaced: no reset, no empty reply, no error; each
    first-generation worker is recycled (`recycling` naming
    --max-requests) and `retired` once its replacement is ready; every
    worker that served 20 requests is recycled, and no slot ever has more
    than a serving worker and one loading replacement.

    The clients go on past 2000 requests when needed because which worker
    accepts a connection is the kernel's choice: 8 connections opened at
    once can all land on one worker, and a worker that reached its limit
    serves on until its replacement is ready, which can take longer than
    2000 requests. The connections it closes then land elsewhere."""
    processes = 2
    server = mercy("--wsgi-file", APP, "--processes", str(processes), "--threads", "2",
                   "--max-requests", "20")
    first = set(server.worker_pids().values())
    with client_loops(server.port, *[True] * 8) as loops:
        wait_until(lambda: sum(loop.sent for loop in loops) >= 2000, 300, "2000 requests")
        for pid in first:
            server.wait_event("retired", worker_pid=pid, timeout=120)

    answered = Counter()
    for loop in loops:
        answered.update(loop.pids)
    assert sum(answered.values()) >= 2000
    limit_reached = {pid for pid, count in answered.items() if count >= 20}
    assert limit_reached >= first, answered
    recycled = server.wait_event("recycling", count=len(limit_reached))
    assert {int(r["worker.pid"]) for r in recycled} >= limit_reached, (answered, recycled)
    assert all("max-requests" in str(r.get("reason")) for r in recycled), recycled[:3]
    assert len(set(answered) - first) >= 1, answered
    peak = max_not_retiring_per_slot(server.records())
    assert peak <= 2, f"a slot had {peak} workers not told to retire at once"
    server.assert_no_events("killed", "died", "mercy_expired", "respawned")


def test_max_requests_recycling_is_bounded_by_the_mercy_deadline(mercy, tmp_path):
    """--max-requests 1 --worker-reload-mercy 2, 1 worker of 2 threads: a
    request that never finishes holds one thread while a client sends
    requests without pause on new connections. The worker is recycled
    (`recycling` naming --max-requests), its replacement is ready before it
    is told to retire, and since the held request never ends, it logs
    `mercy_expired` naming that request, and only then is it killed. Every
    other request is answered 200; no other worker is killed or expires."""
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "2",
                   "--max-requests", "1", "--worker-reload-mercy", "2")
    marker = tmp_path / "held"
    held = held_request(server.port, b"/hold/stuck", marker, tmp_path / "never-released")
    stuck_pid = int(wait_for_file(marker).read_text())
    with client_loops(server.port, False) as loops:
        server.wait_event("killed", worker_pid=stuck_pid, timeout=120)
        wait_answered(loops, lambda: set(server.worker_pids().values()),
                      "an answer from a worker serving after the kill")
    held["thread"].join(timeout=60)

    assert not held.get("data"), f"the held request cannot have been answered: {held}"
    records = server.records()
    [recycling] = index_of(records, "recycling", **{"worker.pid": stuck_pid})
    assert "--max-requests (1) reached" in str(records[recycling]["reason"]), records[recycling]
    replacement = next(i for i in index_of(records, "spawned", **{"worker.id": 1})
                       if i > recycling)
    [ready] = index_of(records, "ready", **{"worker.pid": records[replacement]["worker.pid"]})
    [retiring] = index_of(records, "retiring", **{"worker.pid": stuck_pid})
    [expired] = index_of(records, "mercy_expired")
    [killed] = index_of(records, "killed")
    assert recycling < ready < retiring < expired < killed, (
        recycling, ready, retiring, expired, killed)
    assert int(records[expired]["worker.pid"]) == stuck_pid
    assert int(records[killed]["worker.pid"]) == stuck_pid
    assert "GET /hold/stuck" in str(records[expired]["requests"]), records[expired]
    assert str(records[expired]["step"]).startswith("2"), records[expired]
    server.assert_no_events("died", "respawned")


def test_max_requests_delta_spreads_the_limits_by_worker_id(mercy):
    """--max-requests 5 --max-requests-delta 5, 2 workers of 1 thread:
    worker i is recycled after 5 + i * 5 requests (uWSGI's formula), so
    the `recycling` reason names 10 for worker 1 and 15 for worker 2; the
    replacements keep their slot's limit; no request fails."""
    server = mercy("--wsgi-file", APP, "--processes", "2", "--threads", "1",
                   "--max-requests", "5", "--max-requests-delta", "5")
    first = server.worker_pids()
    with client_loops(server.port, False):
        for pid in first.values():
            server.wait_event("recycling", worker_pid=pid, timeout=120)
            server.wait_event("retired", worker_pid=pid, timeout=120)
        server.wait_event("recycling", count=3, timeout=120)

    expected = {1: "--max-requests (10) reached", 2: "--max-requests (15) reached"}
    for record in server.events("recycling"):
        assert record["reason"] == expected[int(record["worker.id"])], record
    server.assert_no_events("killed", "died", "mercy_expired")


def test_max_worker_lifetime_replaces_each_worker_ready_first(mercy):
    """--max-worker-lifetime 4 with --max-worker-lifetime-delta 1, 2
    workers, while a keep-alive client and a connection-per-request client
    send requests without pause: each worker of the first generation is
    recycled with a reason naming --max-worker-lifetime and its own limit
    (worker i after 4 + i seconds), its replacement is ready before it is
    told to retire, it retires (never killed), and no request fails."""
    server = mercy("--wsgi-file", APP, "--processes", "2", "--threads", "2",
                   "--max-worker-lifetime", "4", "--max-worker-lifetime-delta", "1")
    first = server.worker_pids()
    with client_loops(server.port, True, False) as loops:
        wait_replaced(server, loops, first.values())

    records = server.records()
    for worker_id, pid in first.items():
        [recycling] = index_of(records, "recycling", **{"worker.pid": pid})
        limit = f"--max-worker-lifetime ({4 + worker_id}s)"
        assert limit in str(records[recycling]["reason"]), records[recycling]
        replacement = next(
            i for i in index_of(records, "spawned", **{"worker.id": worker_id})
            if i > recycling)
        [ready] = index_of(records, "ready", **{"worker.pid": records[replacement]["worker.pid"]})
        [retiring] = index_of(records, "retiring", **{"worker.pid": pid})
        assert recycling < ready < retiring, (worker_id, recycling, ready, retiring)
    server.assert_no_events("killed", "died", "mercy_expired", "respawned")


GROWING_APP = """
import sys
sys.path.insert(0, {apps!r})
from ops_app import application as ops_application

held = []


def application(environ, start_response):
    # /grow?mb=N keeps N more megabytes resident in this worker.
    if environ["PATH_INFO"] == "/grow":
        megabytes = int(environ["QUERY_STRING"].partition("=")[2])
        held.append(b"\x01" * (megabytes << 20))
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]
    return ops_application(environ, start_response)
"""


def test_reload_on_rss_replaces_a_worker_past_the_limit(mercy, tmp_path):
    """--reload-on-rss 200 with one worker: after the app makes the worker
    hold 300 MB more, the worker is recycled with a reason naming
    --reload-on-rss, its replacement is ready before it retires, and the
    replacement (small again) serves and is not recycled."""
    app = tmp_path / "growing_app.py"
    app.write_text(GROWING_APP.format(apps=str(APPS)))
    stats_port = free_port()
    server = mercy("--wsgi-file", app, "--processes", "1", "--threads", "2",
                   "--reload-on-rss", "200", "--stats", f"127.0.0.1:{stats_port}")
    [old_pid] = server.worker_pids().values()
    [worker] = stats_document(("127.0.0.1", stats_port))["workers"]
    assert worker["rss"] < 150 << 20, f"the worker starts at {worker['rss'] >> 20} MB"
    assert server.get("/grow?mb=300").status == 200

    [recycling] = server.wait_event("recycling", worker_pid=old_pid)
    assert "--reload-on-rss" in str(recycling["reason"]), recycling
    assert "limit 200 MB" in str(recycling["reason"]), recycling
    server.wait_event("retired", worker_pid=old_pid)
    [new_pid] = server.worker_pids().values()
    assert new_pid != old_pid
    assert server.get("/pid").json()["pid"] == new_pid
    records = server.records()
    [ready] = index_of(records, "ready", **{"worker.pid": new_pid})
    [retiring] = index_of(records, "retiring", **{"worker.pid": old_pid})
    assert ready < retiring
    assert len(server.events("recycling")) == 1, server.events("recycling")
    server.assert_no_events("killed", "died", "mercy_expired", "respawned")


def test_max_requests_reached_during_a_reload_still_recycles_the_worker(mercy, tmp_path):
    """--max-requests 20, 1 worker: a SIGHUP reload whose old worker is kept
    draining by a held request, while the new worker serves 30 requests
    (past its limit); once the reload is done and 30 more requests are
    served, the new worker is recycled. A limit reached while a reload runs
    must not be forgotten."""
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "2",
                   "--max-requests", "20")
    [old_pid] = server.worker_pids().values()
    marker, release = tmp_path / "held", tmp_path / "release"
    held = held_request(server.port, b"/hold/draining", marker, release)
    wait_for_file(marker)

    server.send_signal(signal.SIGHUP)
    server.wait_event("retiring", worker_pid=old_pid)
    [new_pid] = server.worker_pids().values()
    assert new_pid != old_pid
    answered = Counter(server.get("/pid").json()["pid"] for _ in range(30))
    assert answered == Counter({new_pid: 30})
    release.touch()
    held["thread"].join(timeout=120)
    assert held.get("data", b"").startswith(b"HTTP/1.1 200 "), held
    server.wait_event("reload_done")

    for _ in range(30):
        assert server.get("/pid").status == 200
    try:
        server.wait_event("recycling", worker_pid=new_pid, timeout=20)
    except AssertionError:
        served = len([r for r in server.events("request") if r.get("path") == "/pid"])
        raise AssertionError(
            f"worker {new_pid} served {served} requests with --max-requests 20 "
            f"and was never recycled; events: "
            f"{[(r.get('event'), r.get('worker.pid')) for r in server.events() if r.get('event') not in (None, 'request')]}"
        ) from None


@pytest.mark.parametrize("processes", [1, 2])
def test_chain_reload_during_a_recycle_leaves_one_new_worker_per_slot(mercy, processes):
    """--max-requests 10, 1 or 2 workers, an app whose import takes 1.5 s:
    SIGUSR2 right after a worker asked to be recycled (its replacement
    still loading). The chain reload starts once the recycling is over and
    replaces one slot at a time; when it is done and every leaving worker
    is gone, exactly --processes workers are alive, all of the new
    generation. (With one worker, the exit that ends the recycling is the
    one that lets the chain reload start: it must not also count as the
    end of the chain's first slot.)"""
    server = mercy("--wsgi-file", APP, "--processes", str(processes), "--threads", "2",
                   "--max-requests", "10", env={"OPS_IMPORT_DELAY": "1.5"})
    first = set(server.worker_pids().values())
    with client_loops(server.port, False):
        server.wait_event("recycling", timeout=60)
    server.send_signal(signal.SIGUSR2)
    [started] = server.wait_event("reload_started")
    generation = int(started["generation"])
    server.wait_event("reload_done", timeout=120)
    for pid in first:
        server.wait_event("retired", worker_pid=pid, timeout=60)

    def settled():
        records = server.records()
        alive = {}
        for record in records:
            event = record.get("event")
            if event in ("spawned", "respawned"):
                alive[int(record["worker.pid"])] = int(record["generation"])
            elif event in ("retired", "killed", "died"):
                alive.pop(int(record["worker.pid"]), None)
        leaving = {int(r["worker.pid"]) for r in records if r.get("event") == "retiring"}
        return alive if not (set(alive) & leaving) else None
    alive = wait_until(settled, 60, "every retiring worker to be gone")

    # During the chain reload, one slot at a time: never more than one
    # worker above --processes, and reload_done only once both new
    # workers are ready.
    living, most, ready_new, reloading = set(), 0, 0, False
    for record in server.records():
        event = record.get("event")
        if event in ("spawned", "respawned"):
            living.add(int(record["worker.pid"]))
        elif event in ("retired", "killed", "died"):
            living.discard(int(record["worker.pid"]))
        elif event == "reload_started":
            reloading = True
        elif event == "ready" and reloading and int(record["generation"]) == generation:
            ready_new += 1
        elif event == "reload_done":
            assert ready_new == processes, f"reload_done after {ready_new} new workers ready"
            break
        if reloading:
            most = max(most, len(living))
    assert most <= processes + 1, f"{most} workers alive during the chain reload"
    assert sorted(alive.values()) == [generation] * processes, (
        f"alive workers (pid: generation) after chain reload to generation "
        f"{generation}: {alive}")
    live_children = {pid for pid in server.child_pids() if pid_running(pid)}
    assert len(live_children) == processes, live_children


# --- harakiri ---------------------------------------------------------------------


def slow_upload(port: int, connection: http.client.HTTPConnection | None, size: int,
                pieces: int, pause: float, chunked: bool):
    """POST /upload sending `size` bytes in `pieces` writes `pause` s apart.
    Returns (response status, JSON body, sha256 sent, connection)."""
    if connection is None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    data = os.urandom(size)
    status, body = post_in_pieces(connection, "/upload", data, pieces, pause, chunked)
    document = json.loads(body) if status == 200 else {"body": body[:300]}
    return status, document, hashlib.sha256(data).hexdigest(), connection


def test_harakiri_answers_504_logs_the_stack_and_spares_other_requests(mercy, tmp_path):
    """1 worker, 2 threads, --harakiri 3: a request running Python for 10 s
    gets `504 Gateway Timeout`; `harakiri` is logged with its method, path
    and a stack naming the app's function; mercy.HarakiriTimeout reaches
    the thread, which stops (no recycling). A client sending fast requests
    all along sees no failure. Then uploads that take less than half the
    deadline each (buffered, streamed, chunked, four in a row on one
    keep-alive connection) while the fast client goes on: none is killed."""
    stats_port = free_port()
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "2",
                   "--harakiri", "3", "--stats", f"127.0.0.1:{stats_port}")
    [worker_pid] = server.worker_pids().values()
    marker = tmp_path / "harakiri-marker"
    with client_loops(server.port, True) as [fast]:
        wait_answered([fast], what="a first fast answer")
        response = server.get(f"/spin?seconds=10&marker={marker}", timeout=60)
        assert response.status == 504
        assert b"Gateway Timeout" in response.body or b"harakiri" in response.body
        [event] = server.wait_event("harakiri")
        assert event["method"] == "GET"
        assert str(event["path"]).startswith("/spin")
        assert int(event["worker.pid"]) == worker_pid
        assert "_spin" in str(event["stack"]) and "ops_app.py" in str(event["stack"]), event
        assert wait_for_file(marker).read_text() == f"harakiri {worker_pid}"

        def counted():
            workers = stats_document(("127.0.0.1", stats_port))["workers"]
            return sum(w["harakiri_count"] for w in workers) == 1
        wait_until(counted, 30, "harakiri_count 1 in the stats")

        connection = None
        results = []
        for size, chunked in ((40_000, False), (400_000, False), (400_000, True),
                              (400_000, False)):
            status, document, digest, connection = slow_upload(
                server.port, connection, size, pieces=10, pause=0.12, chunked=chunked)
            results.append((status, document.get("size"), document.get("sha256") == digest))
        connection.close()
        assert results == [
            (200, 40_000, True), (200, 400_000, True), (200, 400_000, True), (200, 400_000, True)
        ]
        assert fast.answers() > 0

    assert len(server.events("harakiri")) == 1, server.events("harakiri")
    assert server.worker_pids() == {1: worker_pid}
    server.assert_no_events("recycling", "killed", "died", "respawned")


def test_harakiri_replaces_a_worker_whose_thread_cannot_be_stopped(mercy):
    """A request stuck in one 30 s time.sleep (HarakiriTimeout cannot stop
    it), with --harakiri 2 and --harakiri-graceful-timeout 2: the client
    gets 504; the worker is replaced (`recycling` naming the stuck request,
    a new worker ready before the old one retires), the stuck worker is
    killed after its grace; a fast client on the other thread sees no
    failure. A clean SIGTERM then logs shutdown_done with killed=0: it
    counts that shutdown's kills, not the earlier one."""
    stats_port = free_port()
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "2",
                   "--harakiri", "2", "--harakiri-graceful-timeout", "2",
                   "--stats", f"127.0.0.1:{stats_port}")
    [stuck_pid] = server.worker_pids().values()
    with client_loops(server.port, True) as [fast]:
        wait_answered([fast], what="a first fast answer")
        response = server.get("/block?seconds=30", timeout=60)
        assert response.status == 504
        [recycling] = server.wait_event("recycling", worker_pid=stuck_pid)
        assert "stuck past --harakiri" in str(recycling["reason"]), recycling
        [killed] = server.wait_event("killed", worker_pid=stuck_pid)
        new_pid = int(server.wait_event("ready", count=2)[-1]["worker.pid"])
        wait_answered([fast], {new_pid}, "an answer from the replacement")

    records = server.records()
    [ready] = index_of(records, "ready", **{"worker.pid": new_pid})
    [retiring] = index_of(records, "retiring", **{"worker.pid": stuck_pid})
    assert ready < retiring
    assert server.event_index(recycling) < server.event_index(killed)
    wait_until(lambda: not pid_running(stuck_pid), 30, "the stuck worker to be gone")
    assert len(server.events("harakiri")) == 1
    document = stats_document(("127.0.0.1", stats_port))
    assert document["forced_kills"] == 1
    counts = [(w["id"], w["harakiri_count"]) for w in document["workers"]]
    assert counts == [(1, 1)], f"one request passed --harakiri once; (id, harakiri_count): {counts}"

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    [done] = server.wait_event("shutdown_done")
    assert done["killed"] == 0, f"the shutdown killed no worker (the kill was before): {done}"


def test_request_answered_504_while_waiting_for_a_thread_is_never_run(mercy, tmp_path):
    """1 worker, 1 thread, --harakiri 2: request A blocks the only thread
    for 5 s (uninterruptible); request B, queued behind it, passes its own
    deadline while waiting and its client gets 504. B's client was told it
    failed, so the app must never run B later, when the thread frees up
    (--harakiri-graceful-timeout 10 lets the old worker finish A)."""
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "1",
                   "--harakiri", "2", "--harakiri-graceful-timeout", "10")
    [worker_pid] = server.worker_pids().values()
    marker_a, marker_b = tmp_path / "a", tmp_path / "b"
    result_a: dict = {}

    def send_a():
        result_a["response"] = server.get(f"/block?seconds=5&marker={marker_a}", timeout=60)

    thread = threading.Thread(target=send_a, daemon=True)
    thread.start()
    wait_for_file(marker_a)
    response_b = server.get(f"/hold/queued?marker={marker_b}", timeout=60)
    thread.join(timeout=60)
    assert result_a["response"].status == 504
    assert response_b.status == 504
    server.wait_event("retired", worker_pid=worker_pid, timeout=60)
    assert not marker_b.exists(), (
        f"the app ran request B (pid {marker_b.read_text()}) after its client got 504")


# --- stats, uwsgitop, metrics -----------------------------------------------------


# Control characters and invalid UTF-8 arrive percent-encoded (mercy refuses
# them raw, with a 400); quotes, backslashes and valid UTF-8 arrive raw.
WEIRD_PATHS = [
    b"/hold/%01%02%1b[31m%7f%ff%fe%c3%28%22%5c%00",
    b"/hold/\"quote\"\\back\\slash|^`%ed%a0%80%c0%af%c3%28",
    b"/hold/%e2%80%8f%f0%9f%92%a9\xe2\x80\xa8{}<>%0d%0a",
]


def test_stats_stay_valid_json_with_odd_paths_in_flight_and_uwsgitop_shows_workers(
        mercy, tmp_path):
    """--stats on a unix socket and --metrics, 2 workers x 2 threads, while
    requests whose paths hold control characters, quotes, backslashes and
    invalid UTF-8 are in flight: every stats answer is strict UTF-8 JSON
    with the fields uwsgitop reads and shows a busy core; uwsgitop run on a
    pseudo-terminal shows both worker pids and the busy status; the
    Prometheus text parses strictly and names both workers; every log line
    is a JSON object."""
    stats_path = tmp_path / "stats.sock"
    metrics_port = free_port()
    server = mercy("--wsgi-file", APP, "--processes", "2", "--threads", "3",
                   "--stats", stats_path, "--metrics", f"127.0.0.1:{metrics_port}")
    workers = set(server.worker_pids().values())
    wait_for_file(stats_path)
    release = tmp_path / "release"
    held = []
    for number, path in enumerate(WEIRD_PATHS):
        marker = tmp_path / f"held-{number}"
        held.append((marker, held_request(server.port, path, marker, release)))
    try:
        for marker, _ in held:
            wait_for_file(marker)

        def busy_cores():
            document = stats_document(stats_path)
            check_uwsgi_stats_shape(document, server.pid)
            return sum(core["in_request"] for w in document["workers"] for core in w["cores"])
        wait_until(lambda: busy_cores() == len(WEIRD_PATHS), 30,
                   f"{len(WEIRD_PATHS)} busy cores in the stats")
        document = stats_document(stats_path)
        assert {w["pid"] for w in document["workers"]} == workers
        assert {w["id"] for w in document["workers"]} == {1, 2}
        assert "busy" in {w["status"] for w in document["workers"]}

        screen = run_uwsgitop(str(stats_path))
        assert "WID" in screen and "PID" in screen, screen[-3000:]
        assert f"masterpid: {server.pid}" in screen, screen[-3000:]
        for pid in workers:
            assert str(pid) in screen, (pid, screen[-3000:])
        assert "busy" in screen, screen[-3000:]
        assert "Traceback" not in screen, screen[-3000:]

        status, headers, body = http_get_raw(metrics_port, "/metrics")
        assert status == 200
        assert headers.get("content-type", "").startswith("text/plain"), headers
        families = parse_prometheus(body.decode("utf-8"))
        requests = families["mercy_worker_requests_total"]
        assert requests["type"] == "counter"
        assert {s[1]["worker"] for s in requests["samples"]} == {"1", "2"}
        assert {int(s[1]["pid"]) for s in requests["samples"]} == workers
        for family in families.values():
            assert family["type"] is not None
    finally:
        release.touch()
        for _, result in held:
            result["thread"].join(timeout=120)

    for (_, result), path in zip(held, WEIRD_PATHS):
        assert "error" not in result, result
        assert result["data"].startswith(b"HTTP/1.1 200 "), result["data"][:200]
    document = stats_document(stats_path)
    check_uwsgi_stats_shape(document, server.pid)
    bad_lines = [
        line for line in server.log_path.read_bytes().split(b"\n")
        if line.strip() and not _is_json_object(line)
    ]
    assert bad_lines == [], bad_lines[:5]
    request_paths = [r["path"] for r in server.events("request") if "hold" in str(r["path"])]
    assert len(request_paths) == len(WEIRD_PATHS), request_paths


def _is_json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except ValueError:
        return False


def test_stats_http_serves_the_document_to_uwsgitop_over_http(mercy):
    """--stats on TCP with --stats-http: an HTTP/1.0 200 JSON answer with
    uWSGI's fields; uwsgitop given the http:// address shows every worker;
    the figures follow the requests served."""
    stats_port = free_port()
    server = mercy("--wsgi-file", APP, "--processes", "2", "--stats",
                   f"127.0.0.1:{stats_port}", "--stats-http")
    workers = set(server.worker_pids().values())
    for _ in range(10):
        assert server.get("/pid").status == 200

    status, headers, body = http_get_raw(stats_port, "/")
    assert status == 200
    assert headers.get("content-type", "").startswith("application/json"), headers
    check_uwsgi_stats_shape(json.loads(body.decode("utf-8")), server.pid)

    def requests_counted():
        _, _, body = http_get_raw(stats_port, "/")
        return sum(w["requests"] for w in json.loads(body)["workers"]) >= 10
    wait_until(requests_counted, 30, "10 requests in the stats")

    screen = run_uwsgitop(f"http://127.0.0.1:{stats_port}")
    assert "WID" in screen, screen[-3000:]
    assert f"masterpid: {server.pid}" in screen, screen[-3000:]
    for pid in workers:
        assert str(pid) in screen, (pid, screen[-3000:])
    assert "Traceback" not in screen, screen[-3000:]


def metrics(port: int) -> dict:
    """Fetches and strictly parses the Prometheus text."""
    status, headers, body = http_get_raw(port, "/metrics")
    assert status == 200
    assert headers.get("content-type", "").startswith("text/plain"), headers
    return parse_prometheus(body.decode("utf-8"))


def samples_by_worker(families: dict, name: str, **labels) -> dict[int, float]:
    """pid -> value of a per-worker family's samples (with these labels)."""
    return {
        int(sample_labels["pid"]): value
        for _, sample_labels, value in families[name]["samples"]
        if all(sample_labels.get(k) == str(v) for k, v in labels.items())
    }


def single_value(families: dict, name: str) -> float | None:
    samples = families[name]["samples"]
    assert len(samples) <= 1, samples
    return samples[0][2] if samples else None


def test_metrics_expose_the_figures_of_the_stats_document(mercy, tmp_path):
    """--metrics and --stats, 2 workers x 2 threads, one request held on a
    thread, and one worker killed from outside (so its slot was respawned
    once): for each worker the Prometheus text gives the same status, cores,
    busy cores and in_request per core, last spawn time, respawn and
    harakiri counts, requests, accepting, a vsz and a running time as the
    stats document; the top-level generation and forced kills match too.
    No reload has run yet, so the last-reload families have no sample."""
    stats_port, metrics_port = free_port(), free_port()
    server = mercy("--wsgi-file", APP, "--processes", "2", "--threads", "2",
                   "--stats", f"127.0.0.1:{stats_port}", "--metrics",
                   f"127.0.0.1:{metrics_port}")
    victim = server.worker_pids()[2]
    os.kill(victim, signal.SIGKILL)
    server.wait_event("died", worker_pid=victim)
    server.wait_event("ready", count=3)
    for _ in range(10):
        assert server.get("/pid").status == 200
    marker, release = tmp_path / "held", tmp_path / "release"
    held = held_request(server.port, b"/hold/metrics", marker, release)
    try:
        wait_for_file(marker)
        busy_pid = int(marker.read_text())

        def settled():
            document = stats_document(("127.0.0.1", stats_port))
            busy = sum(c["in_request"] for w in document["workers"] for c in w["cores"])
            requests = sum(w["requests"] for w in document["workers"])
            return document if busy == 1 and requests >= 10 else None
        document = wait_until(settled, 30, "the held request and 10 requests in the stats")
        families = metrics(metrics_port)
    finally:
        release.touch()
        held["thread"].join(timeout=120)
    assert held["data"].startswith(b"HTTP/1.1 200 "), held

    workers = {w["pid"]: w for w in document["workers"]}
    assert len(workers) == 2
    assert single_value(families, "mercy_generation") == document["generation"]
    assert single_value(families, "mercy_forced_kills_total") == document["forced_kills"] == 0
    for name in ("mercy_last_reload_success", "mercy_last_reload_timestamp_seconds"):
        assert single_value(families, name) is None, families[name]
    figures = {
        "mercy_worker_requests_total": "requests",
        "mercy_worker_last_spawn_timestamp_seconds": "last_spawn",
        "mercy_worker_respawns_total": "respawn_count",
        "mercy_worker_harakiri_total": "harakiri_count",
        "mercy_worker_accepting": "accepting",
    }
    for name, field in figures.items():
        assert samples_by_worker(families, name) == {
            pid: w[field] for pid, w in workers.items()}, name
    assert sorted(samples_by_worker(families, "mercy_worker_respawns_total").values()) == [0, 1]
    for name in ("mercy_worker_vsz_bytes", "mercy_worker_rss_bytes"):
        assert all(v > 0 for v in samples_by_worker(families, name).values()), name
    assert set(samples_by_worker(families, "mercy_worker_running_time_microseconds_total")) == (
        set(workers))
    assert samples_by_worker(families, "mercy_worker_cores") == {pid: 2 for pid in workers}
    assert samples_by_worker(families, "mercy_worker_busy_cores") == {
        pid: int(pid == busy_pid) for pid in workers}
    in_request = [(int(labels["pid"]), value)
                  for _, labels, value in families["mercy_core_in_request"]["samples"]]
    assert sorted(in_request) == sorted(
        (pid, core["in_request"]) for pid, w in workers.items() for core in w["cores"])
    for pid, worker in workers.items():
        current = samples_by_worker(families, "mercy_worker_status", status=worker["status"])
        assert current[pid] == 1, (pid, worker["status"])
        others = [value for _, labels, value in families["mercy_worker_status"]["samples"]
                  if labels["pid"] == str(pid) and labels["status"] != worker["status"]]
        assert others and set(others) == {0}, others
    assert workers[busy_pid]["status"] == "busy"


RELOADABLE_APP = """
import sys
sys.path.insert(0, {apps!r})
from ops_app import application  # noqa: E402,F401
"""


def test_last_reload_in_stats_and_metrics_after_a_good_and_a_failed_reload(mercy, tmp_path):
    """A good SIGHUP reload: the stats' last_reload says result "done",
    no error, generation 2, and Prometheus says success 1 with the same
    time. Then the app file is broken and SIGHUP again: `reload_failed`,
    last_reload says "failed" with the app's error and generation 3, and
    Prometheus success 0; generation 2 keeps serving. Repaired, a third
    reload is "done" again (generation 3: a failed generation never
    served, so its number is used again)."""
    app = tmp_path / "app.py"
    app.write_text(RELOADABLE_APP.format(apps=str(APPS)))
    stats_port, metrics_port = free_port(), free_port()
    server = mercy("--wsgi-file", app, "--processes", "2",
                   "--stats", f"127.0.0.1:{stats_port}", "--metrics",
                   f"127.0.0.1:{metrics_port}")
    assert stats_document(("127.0.0.1", stats_port))["last_reload"] is None

    def check(result: str, generation: int, error: str | None):
        last = stats_document(("127.0.0.1", stats_port))["last_reload"]
        assert last["result"] == result, last
        assert last["generation"] == generation, last
        if error is None:
            assert last["error"] is None, last
        else:
            assert error in last["error"], last
        families = metrics(metrics_port)
        assert single_value(families, "mercy_last_reload_success") == int(result == "done")
        assert single_value(families, "mercy_last_reload_timestamp_seconds") == last["at"]
        assert single_value(families, "mercy_last_reload_generation") == generation

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    check("done", 2, None)

    app.write_text('raise RuntimeError("broken deploy 4711")\n')
    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_failed")
    check("failed", 3, "broken deploy 4711")
    serving = server.worker_pids()
    assert server.get("/pid").json()["pid"] in serving.values()
    assert serving_generations(server) == {1: 2, 2: 2}

    app.write_text(RELOADABLE_APP.format(apps=str(APPS)))
    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done", count=2)
    check("done", 3, None)


def uwsgi_packet(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A uwsgi-protocol request: header (modifier 0, block size, 0) and
    the variable block."""
    block = b"".join(struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
                     for key, value in pairs)
    return struct.pack("<BHB", 0, len(block), 0) + block


def held_raw(port: int, data: bytes, marker: Path) -> dict:
    """Sends raw bytes in a thread and reads the answer until closed, like
    held_request; waits until the app wrote `marker`."""
    result: dict = {}

    def run():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
                sock.sendall(data)
                result["data"] = read_until_closed(sock)
        except Exception as error:  # noqa: BLE001 - reported by the test
            result["error"] = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    result["thread"] = thread
    wait_for_file(marker)
    return result


def test_stats_stay_valid_json_with_raw_bytes_in_paths_and_headers(mercy, tmp_path):
    """Raw bytes, not percent-encoded: a uwsgi-protocol request whose
    PATH_INFO and a header hold \\xff, \\x01, ESC, NUL, quotes and backslashes,
    and an HTTP request with \\xff\\xfe in a header value, are held in the app;
    meanwhile HTTP requests with raw \\xff and control bytes in the path and
    in a header are refused with 400, again and again. Every stats answer
    read all along is strict UTF-8 JSON, and so is every log line; the
    Prometheus text parses; the held requests get their raw path back."""
    stats_path = tmp_path / "stats.sock"
    uwsgi_port, metrics_port = free_port(), free_port()
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "4",
                   "--socket", f"127.0.0.1:{uwsgi_port}", "--stats", stats_path,
                   "--metrics", f"127.0.0.1:{metrics_port}")
    release = tmp_path / "release"
    raw_path = b"/hold/\xff\xfe\x01\x1b[31m\x00\"q\"\\b\x7f"
    query = f"marker={tmp_path / 'uwsgi'}&release={release}".encode()
    uwsgi_request = uwsgi_packet([
        (b"REQUEST_METHOD", b"GET"), (b"PATH_INFO", raw_path), (b"QUERY_STRING", query),
        (b"REQUEST_URI", raw_path + b"?" + query), (b"SERVER_PROTOCOL", b"HTTP/1.1"),
        (b"SERVER_NAME", b"localhost"), (b"SERVER_PORT", b"80"),
        (b"HTTP_X_ODD", b"\xff\x01\x1b\x00\"\\"),
    ])
    http_query = f"?marker={tmp_path / 'http'}&release={release}".encode()
    http_request = (b"GET /hold/odd-header" + http_query + b" HTTP/1.1\r\nHost: x\r\n"
                    b"X-Odd: \xff\xfe\x80\r\nConnection: close\r\n\r\n")
    refused = [
        b"GET /\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /\x01\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Odd: \x01\x7f\xff\r\n\r\n",
    ]
    held = []
    stopping = threading.Event()
    refusals: list[bytes] = []

    def send_refused():
        while not stopping.is_set():
            for data in refused:
                refusals.append(server.raw(data)[:12])

    sender = threading.Thread(target=send_refused, daemon=True)
    try:
        held.append(held_raw(uwsgi_port, uwsgi_request, tmp_path / "uwsgi"))
        held.append(held_raw(server.port, http_request, tmp_path / "http"))
        sender.start()

        def two_busy_cores():
            document = json.loads(fetch_stats(stats_path).decode("utf-8"))
            check_uwsgi_stats_shape(document, server.pid)
            return sum(c["in_request"] for w in document["workers"] for c in w["cores"]) == 2
        wait_until(two_busy_cores, 30, "2 busy cores in the stats")
        for _ in range(30):
            check_uwsgi_stats_shape(json.loads(fetch_stats(stats_path).decode("utf-8")),
                                    server.pid)
        families = metrics(metrics_port)
        assert sum(v for _, _, v in families["mercy_worker_busy_cores"]["samples"]) == 2
        wait_until(lambda: len(refusals) >= 9, 30, "refused requests")
    finally:
        stopping.set()
        release.touch()
        for result in held:
            result["thread"].join(timeout=120)
        if sender.is_alive():
            sender.join(timeout=60)

    assert set(refusals) == {b"HTTP/1.1 400"}, set(refusals)
    uwsgi_answer, http_answer = (result.get("data", b"") for result in held)
    assert uwsgi_answer.startswith(b"HTTP/1.1 200 "), held[0]
    assert uwsgi_answer.endswith(raw_path), uwsgi_answer[-100:]
    assert http_answer.startswith(b"HTTP/1.1 200 "), held[1]
    check_uwsgi_stats_shape(json.loads(fetch_stats(stats_path).decode("utf-8")), server.pid)
    bad_lines = [
        line for line in server.log_path.read_bytes().split(b"\n")
        if line.strip() and not _is_json_object(line)
    ]
    assert bad_lines == [], bad_lines[:5]


# --- master FIFO, pidfile, scaling, log reopen ------------------------------------


def test_fifo_letters_and_scaling_signals(mercy, tmp_path):
    """The master FIFO (created by mercy) and --pidfile: `P` writes the
    pidfile again after it was removed; `s` logs the stats document; `+`
    and SIGTTIN add worker 3, `-` and SIGTTOU retire it; `-` at one worker
    is refused; `r`, `R` and `w` each run a full graceful
    reload, and so does touching the --touch-reload file; an unknown letter
    is only logged; `q` stops gracefully (exit 0; the pidfile, the FIFO and
    the --stats and --metrics unix sockets are removed)."""
    fifo = tmp_path / "control.fifo"
    pidfile = tmp_path / "mercy.pid"
    stats_path = tmp_path / "stats.sock"
    metrics_path = tmp_path / "metrics.sock"
    touch = tmp_path / "reload.touch"
    touch.write_text("")
    server = mercy("--wsgi-file", APP, "--processes", "2", "--master-fifo", fifo,
                   "--pidfile", pidfile, "--touch-reload", touch, "--stats", stats_path,
                   "--metrics", metrics_path)
    assert wait_for_file(pidfile).read_text().strip() == str(server.pid)
    assert wait_for_file(fifo).is_fifo()
    assert wait_for_file(stats_path).is_socket()
    assert wait_for_file(metrics_path).is_socket()

    pidfile.unlink()
    fifo_send(fifo, b"P")
    assert wait_for_file(pidfile).read_text() == f"{server.pid}\n"

    fifo_send(fifo, b"s")

    def stats_line():
        for record in server.records():
            if "stats" in record and record.get("message") == "stats":
                return record
        return None
    logged = wait_until(stats_line, 30, "the stats document in the log")
    document = logged["stats"]
    document = json.loads(document) if isinstance(document, str) else document
    assert {w["id"] for w in document["workers"]} == {1, 2}

    fifo_send(fifo, b"+")
    [added] = server.wait_event("ready", worker_id=3)
    fifo_send(fifo, b"-")
    server.wait_event("retired", worker_pid=added["worker.pid"])
    server.send_signal(signal.SIGTTIN)
    [_, added] = server.wait_event("ready", count=2, worker_id=3)
    server.send_signal(signal.SIGTTOU)
    server.wait_event("retired", worker_pid=added["worker.pid"])
    assert sorted(server.worker_pids()) == [1, 2]

    fifo_send(fifo, b"-")
    [removed] = server.wait_event("retiring", worker_id=2)
    server.wait_event("retired", worker_pid=removed["worker.pid"])
    fifo_send(fifo, b"-")
    wait_until(lambda: "at least one worker" in server.text(), 30,
               "the refusal to go below one worker")
    assert sorted(server.worker_pids()) == [1]
    fifo_send(fifo, b"+")
    server.wait_event("ready", count=2, worker_id=2)

    for number, letter in enumerate(b"rRw", 1):
        fifo_send(fifo, bytes([letter]))
        [*_, done] = server.wait_event("reload_done", count=number)
        assert done.get("mode") != "chain"
    os.utime(touch, (time.time() + 10, time.time() + 10))
    server.wait_event("reload_done", count=4)
    starts = server.events("reload_started")
    assert [r.get("mode", "full") for r in starts] == ["full"] * 4, starts
    for letter in "rRw":
        assert any(f"'{letter}'" in str(r.get("cause")) for r in starts), (letter, starts)
    assert "--touch-reload" in str(starts[-1].get("cause")), starts[-1]

    fifo_send(fifo, b"x\n")
    wait_until(lambda: "unknown master FIFO command" in server.text(), 30,
               "the unknown letter to be logged")
    assert server.get("/pid").status == 200

    fifo_send(fifo, b"q")
    assert server.wait_exit() == 0
    [stop] = server.wait_event("shutdown_started")
    assert stop.get("mode") == "graceful"
    server.wait_event("shutdown_done")
    assert not pidfile.exists()
    assert not fifo.exists(), "the master FIFO was left behind"
    assert not stats_path.exists(), "the stats socket was left behind"
    assert not metrics_path.exists(), "the metrics socket was left behind"
    server.assert_no_events("killed", "died", "reload_failed")


@pytest.mark.parametrize("option, name, expected", [
    ("--master-fifo", "x.fifo", "--master-fifo {path}: cannot create the FIFO: "),
    ("--master-fifo", "", "--master-fifo {path}: it exists and is not a FIFO"),
    ("--stats", "stats.sock", "cannot listen for --stats on unix:{path}: "),
    ("--metrics", "metrics.sock", "cannot listen for --metrics on unix:{path}: "),
    ("--pidfile", "mercy.pid", "cannot write --pidfile {path}: "),
], ids=["fifo-no-folder", "fifo-not-a-fifo", "stats", "metrics", "pidfile"])
def test_set_up_errors_name_the_option_and_the_path(mercy, tmp_path, option, name, expected):
    """A path for --master-fifo, --stats, --metrics or --pidfile in a folder
    that does not exist (or, for the FIFO, a regular file) stops mercy at
    start (exit status 1) with a message naming the option and the path,
    and no worker starts."""
    if name:
        path = tmp_path / "no-such-folder" / name
    else:
        path = tmp_path / "plain-file"
        path.write_text("precious")
    server = mercy("--wsgi-file", APP, option, path, ready=0)
    assert server.wait_exit() == 1
    assert expected.format(path=path) in server.text(), server.tail()
    server.assert_no_events("spawned")
    if not name:
        assert path.read_text() == "precious"


@pytest.mark.parametrize("option", ["--stats", "--http"])
def test_unix_socket_paths_taken_by_others_are_refused(mercy, tmp_path, option):
    """A unix socket path (--stats, or --http) that is a regular file:
    mercy refuses to start (exit status 1) with an error that names the
    path and says it is not a socket; the file is untouched and the master
    FIFO, if it was made already, is removed again. A path where another
    process accepts connections is refused too, naming it. A stale socket
    file left by a killed instance is replaced, and removed when mercy
    stops."""
    http = option != "--http"
    taken = tmp_path / "taken.sock"
    taken.write_text("precious")
    fifo = tmp_path / "control.fifo"
    server = mercy("--wsgi-file", APP, option, taken, "--master-fifo", fifo,
                   ready=0, http=http)
    assert server.wait_exit() == 1
    assert f"{taken} exists and is not a socket" in server.text(), server.tail()
    assert taken.read_text() == "precious"
    assert not fifo.exists()
    server.assert_no_events("spawned")

    busy = tmp_path / "busy.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(str(busy))
        other.listen(8)
        server = mercy("--wsgi-file", APP, option, busy, ready=0, http=http)
        assert server.wait_exit() == 1
        assert f"another process accepts connections on {busy}" in server.text(), (
            server.tail())
        assert busy.is_socket()

    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as leftover:
        leftover.bind(str(stale))
    assert stale.is_socket()
    server = mercy("--wsgi-file", APP, option, stale, http=http)
    if option == "--stats":
        assert stats_document(stale)["pid"] == server.pid
    else:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(REQUEST_TIMEOUT)
            client.connect(str(stale))
            client.sendall(b"GET /pid HTTP/1.0\r\nHost: x\r\n\r\n")
            assert read_until_closed(client).startswith(b"HTTP/1.1 200 ")
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not stale.exists()


GATED_APP = """
import os
import sys
import time

import mercy

sys.path.insert(0, {apps!r})

# The import waits while the gate file is missing (at most 120 s), in every
# worker or only in worker GATE_WORKER: an app that is slow to load, for
# exactly as long as the test wants.
GATE = {gate!r}
GATE_WORKER = {worker!r}
if GATE_WORKER is None or mercy.worker_id() == GATE_WORKER:
    deadline = time.monotonic() + 120
    while not os.path.exists(GATE) and time.monotonic() < deadline:
        time.sleep(0.02)

from ops_app import application  # noqa: E402
"""


def gated_app(tmp_path: Path, worker: int | None = None) -> tuple[Path, Path]:
    """An ops_app whose import waits for a gate file: (app, gate). The gate
    exists at first, so that the first generation starts at once."""
    gate = tmp_path / "import.gate"
    gate.touch()
    app = tmp_path / "gated_app.py"
    app.write_text(GATED_APP.format(apps=str(APPS), gate=str(gate), worker=worker))
    return app, gate


def serving_generations(server) -> dict[int, int]:
    """worker id -> generation of the workers ready and not leaving."""
    alive: dict[int, tuple[int, int]] = {}
    for record in server.records():
        event = record.get("event")
        if event == "ready":
            alive[int(record["worker.pid"])] = (int(record["worker.id"]),
                                                int(record["generation"]))
        elif event in ("retiring", "retired", "killed", "died"):
            alive.pop(int(record["worker.pid"]), None)
    return {worker_id: generation for worker_id, generation in alive.values()}


@pytest.mark.parametrize("reload", [signal.SIGHUP, signal.SIGUSR2], ids=["full", "chain"])
def test_sigttin_during_a_reload_adds_the_worker_when_the_reload_ends(
        mercy, tmp_path, reload):
    """2 workers, an app whose import waits for a gate: SIGHUP (or SIGUSR2,
    a chain reload), then SIGTTIN while the new generation is loading. The
    reload still ends (`reload_done`), the extra worker is started after
    it, in the new generation, so 3 workers of generation 2 serve; a later
    SIGHUP reload works too. (Before, in a full reload, the extra worker
    joined the old generation, the new one never counted 3 ready workers,
    and reloads stalled for good.)"""
    app, gate = gated_app(tmp_path)
    server = mercy("--wsgi-file", app, "--processes", "2", "--threads", "2")
    first = set(server.worker_pids().values())
    gate.unlink()

    server.send_signal(reload)
    server.wait_event("spawned", generation=2)
    server.send_signal(signal.SIGTTIN)
    wait_until(lambda: "one more worker" in server.text(), 30, "SIGTTIN to be handled")
    gate.touch()
    [done] = server.wait_event("reload_done")
    assert int(done["generation"]) == 2
    [added] = server.wait_event("ready", worker_id=3)
    assert int(added["generation"]) == 2, added
    assert server.event_index(done) < server.event_index(added)
    for pid in first:
        server.wait_event("retired", worker_pid=pid)
    assert serving_generations(server) == {1: 2, 2: 2, 3: 2}
    pids = {server.get("/pid").json()["pid"] for _ in range(30)}
    assert pids <= set(server.worker_pids().values())

    server.send_signal(signal.SIGHUP)
    [*_, done] = server.wait_event("reload_done", count=2)
    assert int(done["generation"]) == 3
    server.assert_no_events("reload_failed", "killed", "died")


def test_sigttou_while_the_last_new_worker_loads_is_applied_after_the_reload(
        mercy, tmp_path):
    """2 workers, an app whose import waits for a gate in worker 2 only:
    SIGHUP, then SIGTTOU once the new worker 1 is ready and the new worker
    2 still loads. The reload ends with both new workers, then worker 2
    retires: 1 worker of generation 2 serves. A later reload reads
    --processes again and starts 2 workers. (Before, worker 2's loading
    replacement was killed, the commit was never checked again and the
    reload stalled for good.)"""
    app, gate = gated_app(tmp_path, worker=2)
    server = mercy("--wsgi-file", app, "--processes", "2", "--threads", "2")
    gate.unlink()

    server.send_signal(signal.SIGHUP)
    server.wait_event("ready", worker_id=1, generation=2)
    server.wait_event("spawned", worker_id=2, generation=2)
    server.send_signal(signal.SIGTTOU)
    wait_until(lambda: "one worker fewer" in server.text(), 30, "SIGTTOU to be handled")
    gate.touch()
    [done] = server.wait_event("reload_done")
    assert int(done["generation"]) == 2
    [new_2] = server.wait_event("ready", worker_id=2, generation=2)
    server.wait_event("retired", worker_pid=new_2["worker.pid"])
    assert serving_generations(server) == {1: 2}

    server.send_signal(signal.SIGHUP)
    [*_, done] = server.wait_event("reload_done", count=2)
    assert int(done["generation"]) == 3
    wait_until(lambda: serving_generations(server) == {1: 3, 2: 3}, 60,
               "2 workers of generation 3")
    server.assert_no_events("reload_failed", "died")


def test_reloads_requested_during_a_reload_coalesce_into_one(mercy, tmp_path):
    """1 worker, an app whose import waits for a gate: SIGHUP starts
    generation 2; three more SIGHUPs while it loads are each logged as
    following it. Once the gate opens, generation 2 is done and exactly one
    more reload follows (generation 3), then nothing: SIGWINCH's stats
    line, logged after it, finds 2 `reload_started` in all."""
    app, gate = gated_app(tmp_path)
    server = mercy("--wsgi-file", app, "--processes", "1")
    gate.unlink()

    server.send_signal(signal.SIGHUP)
    server.wait_event("spawned", generation=2)

    def follow_lines():
        return [r for r in server.records()
                if "it follows when this one ends" in str(r.get("message"))]
    for number in range(1, 4):
        # One at a time: the kernel merges a signal sent while the same
        # one is still pending.
        server.send_signal(signal.SIGHUP)
        wait_until(lambda: len(follow_lines()) == number, 30,
                   f"reload request {number} logged as following")
    gate.touch()
    [*_, done] = server.wait_event("reload_done", count=2)
    assert int(done["generation"]) == 3

    server.send_signal(signal.SIGWINCH)
    wait_until(lambda: any(r.get("message") == "stats" for r in server.records()), 30,
               "the stats line that SIGWINCH asks for")
    started = server.events("reload_started")
    assert [int(r["generation"]) for r in started] == [2, 3], started
    assert serving_generations(server) == {1: 3}


def test_second_sigterm_makes_the_shutdown_fast_and_sigquit_is_fast(mercy, tmp_path):
    """A request held in the app keeps a SIGTERM shutdown draining; a second
    SIGTERM escalates it: `shutdown_started` with mode fast, the worker is
    killed after its second, mercy exits 0. A second instance stopped with
    SIGQUIT shuts down fast at once and exits 0."""
    server = mercy("--wsgi-file", APP, "--processes", "1", "--threads", "2")
    [pid] = server.worker_pids().values()
    marker, release = tmp_path / "held", tmp_path / "release"
    held = held_request(server.port, b"/hold/shutdown", marker, release)
    wait_for_file(marker)

    server.send_signal(signal.SIGTERM)
    server.wait_event("retiring", worker_pid=pid)
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    modes = [r.get("mode") for r in server.events("shutdown_started")]
    assert modes == ["graceful", "fast"], modes
    [killed] = server.events("killed", worker_pid=pid)
    assert killed["reason"] == "fast shutdown", killed
    server.wait_event("shutdown_done")
    release.touch()
    held["thread"].join(timeout=60)

    other = mercy("--wsgi-file", APP, "--processes", "2")
    other.send_signal(signal.SIGQUIT)
    assert other.wait_exit() == 0
    assert [r.get("mode") for r in other.events("shutdown_started")] == ["fast"]
    other.wait_event("shutdown_done")


def _serve_each_worker(port: int, workers: set[int], text: str):
    """GET /print?text=.. on new connections until every worker printed."""
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while seen != workers:
        assert time.monotonic() < deadline, f"only {seen} of {workers} answered"
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            connection.request("GET", f"/print?text={text}", headers={"Connection": "close"})
            response = connection.getresponse()
            seen.add(int(json.loads(response.read())["pid"]))
        finally:
            connection.close()


def test_log_reopen_after_rotation_moves_master_and_every_worker(mercy, tmp_path):
    """--logto with 2 workers: after the log file is renamed, FIFO `l`
    (then, after a second rotation, SIGUSR1) makes the master and both
    workers write to a new file at the original path: the master's own
    lines, the workers' request lines and what the app prints on stderr.
    FIFO `Q` then stops mercy fast, logging into the newest file."""
    fifo = tmp_path / "control.fifo"
    logto = tmp_path / "app.log"
    server = mercy("--wsgi-file", APP, "--processes", "2", "--threads", "2",
                   "--master-fifo", fifo, "--logto", logto, ready=0)

    def ready_workers():
        found = {}
        for record in read_json_lines(logto):
            if record.get("event") == "ready":
                found[int(record["worker.id"])] = int(record["worker.pid"])
        return found if len(found) == 2 else None
    workers = set(wait_until(ready_workers, START_TIMEOUT, "2 ready workers in --logto").values())
    wait_for_file(fifo)
    _serve_each_worker(server.port, workers, "before-rotation")

    for rotation, trigger in (("1", lambda: fifo_send(fifo, b"l")),
                              ("2", lambda: server.send_signal(signal.SIGUSR1))):
        rotated = tmp_path / f"app.log.{rotation}"
        logto.rename(rotated)
        trigger()
        wait_until(lambda: any(r.get("message") == "log file reopened"
                               for r in read_json_lines(logto)),
                   30, f"the master's reopen line in the new log (rotation {rotation})")
        text = f"after-rotation-{rotation}"
        expected = {f"{text} pid={pid}" for pid in workers}

        def printed_in_new_file():
            _serve_each_worker(server.port, workers, text)
            content = logto.read_text(errors="replace")
            return all(line in content for line in expected)
        wait_until(printed_in_new_file, 60,
                   f"every worker printing into the new log (rotation {rotation})")

        def request_lines_from_both():
            # A request line is written just after its response is sent.
            return {
                int(r["worker.id"]) for r in read_json_lines(logto)
                if r.get("event") == "request" and r.get("path") == "/print"
            } == {1, 2}
        wait_until(request_lines_from_both, 30,
                   f"request lines of both workers in the new log (rotation {rotation})")
        fifo_send(fifo, b"s")
        wait_until(lambda: any(r.get("message") == "stats" for r in read_json_lines(logto)),
                   30, "the master's stats line in the new log")

    old_content = (tmp_path / "app.log.1").read_text(errors="replace")
    assert "before-rotation" in old_content
    fifo_send(fifo, b"Q")
    assert server.wait_exit() == 0
    final = read_json_lines(logto)
    stops = [r for r in final if r.get("event") == "shutdown_started"]
    assert [r.get("mode") for r in stops] == ["fast"], stops
    assert any(r.get("event") == "shutdown_done" for r in final)


# --- systemd ----------------------------------------------------------------------


class NotifySocket:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict] = []

    def _receive(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return False
        data = self.sock.recv(65536).decode()
        fields = {}
        for line in data.split("\n"):
            if line:
                key, _, value = line.partition("=")
                fields[key] = value
        self.messages.append(fields)
        return True

    def wait_for(self, key: str, count: int = 1, timeout: float = EVENT_TIMEOUT) -> list[dict]:
        deadline = time.monotonic() + timeout
        while sum(key in m for m in self.messages) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {count} x {key} in {self.messages}")
            self._receive(min(left, 0.5))
        return [m for m in self.messages if key in m]

    def drain(self):
        while self._receive(0.2):
            pass

    def close(self):
        self.sock.close()


def test_systemd_notify_sees_ready_reloading_ready_and_stopping(mercy, tmp_path):
    """With NOTIFY_SOCKET, the master sends READY=1 when its workers are
    ready, RELOADING=1 (with MONOTONIC_USEC) then READY=1 again around a
    SIGHUP reload and around a chain reload, and STOPPING=1 on SIGTERM.
    During each reload, STATUS= lines give the ready, draining and gone
    counts. A failed reload (a broken app file) ends with READY=1 too, its
    STATUS saying that the reload failed and which generation serves.
    Workers do not inherit NOTIFY_SOCKET."""
    notify = NotifySocket(tmp_path / "notify.sock")
    app = tmp_path / "app.py"
    app.write_text(RELOADABLE_APP.format(apps=str(APPS)))
    try:
        server = mercy("--wsgi-file", app, "--processes", "2",
                       env={"NOTIFY_SOCKET": str(notify.path)})
        [ready] = notify.wait_for("READY")
        assert ready["READY"] == "1" and "STATUS" in ready
        assert server.get("/env?name=NOTIFY_SOCKET").json() == {"value": None}

        server.send_signal(signal.SIGHUP)
        reloading = notify.wait_for("RELOADING")[0]
        assert reloading["RELOADING"] == "1"
        assert int(reloading["MONOTONIC_USEC"]) > 0
        notify.wait_for("READY", count=2)
        server.wait_event("reload_done")

        server.send_signal(signal.SIGUSR2)
        server.wait_event("reload_done", count=2)
        notify.wait_for("READY", count=3)
        statuses = [m["STATUS"] for m in notify.messages if set(m) == {"STATUS"}]
        for status in (
            "reload to generation 2: 2 of 2 new workers ready, 2 draining, 0 gone",
            "reload to generation 2: 2 of 2 new workers ready, 0 draining, 2 gone",
            "chain reload to generation 3, worker 2 of 2: "
            "2 of 2 new workers ready, 0 draining, 2 gone",
        ):
            assert status in statuses, (status, statuses)

        app.write_text('raise RuntimeError("broken deploy")\n')
        server.send_signal(signal.SIGHUP)
        server.wait_event("reload_failed")
        [*_, failed] = notify.wait_for("READY", count=4)
        assert failed["STATUS"].startswith("reload failed; generation 3 serves"), failed
        assert "broken deploy" in failed["STATUS"], failed

        server.send_signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        notify.wait_for("STOPPING")
        notify.drain()
    finally:
        notify.close()

    kinds = [next(k for k in ("READY", "RELOADING", "STOPPING", "STATUS") if k in m)
             for m in notify.messages]
    compact = [k for i, k in enumerate(kinds) if k != "STATUS" and (i == 0 or kinds[i - 1] != k)]
    assert compact == ["READY", "RELOADING", "READY", "RELOADING", "READY",
                       "RELOADING", "READY", "STOPPING"], notify.messages


ACTIVATION_WRAPPER = """
import os, sys
inherited = int(sys.argv[1])
os.dup2(inherited, 3)
os.close(inherited)
os.environ["LISTEN_PID"] = str(os.getpid())
os.environ["LISTEN_FDS"] = "1"
os.execv(sys.argv[2], sys.argv[2:])
"""


def activation_wrapper(fd: int) -> list[str]:
    """What systemd does for socket activation, as a command prefix: the
    socket `fd` moves to fd 3, LISTEN_FDS=1 and LISTEN_PID=<own pid> are set,
    then the process execs mercy (keeping its pid)."""
    return [str(venv_python()), "-c", ACTIVATION_WRAPPER, str(fd)]


def test_socket_activation_serves_on_the_inherited_socket(custom_mercy, tmp_path):
    """LISTEN_FDS=1 and LISTEN_PID=<mercy's pid> with a listening socket on
    fd 3 and no --http: mercy serves on that socket, through a reload too;
    the workers see neither LISTEN_FDS nor LISTEN_PID."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    server = custom_mercy("--wsgi-file", APP, "--processes", "2", http=False)
    server.port = port
    try:
        server.start_with(activation_wrapper(listener.fileno()), pass_fds=(listener.fileno(),))
    finally:
        listener.close()
    assert server.get("/pid").status == 200
    assert server.get("/env?name=LISTEN_FDS").json() == {"value": None}
    assert server.get("/env?name=LISTEN_PID").json() == {"value": None}
    first = set(server.worker_pids().values())

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    server.assert_no_events("reload_failed")
    second = set(server.worker_pids().values())
    assert len(second) == 2 and second.isdisjoint(first)
    pids = {server.get("/pid").json()["pid"] for _ in range(20)}
    assert pids <= second
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_activated_unix_socket_outlives_mercy_for_the_next_start(custom_mercy, tmp_path):
    """systemd owns an activated socket: a unix socket passed on fd 3 whose
    path is also given as --http (so that the same configuration works
    without systemd, as uWSGI's docs recommend) is served on; after mercy
    stops, the socket file is still there, and a second mercy started on
    the same inherited socket (`systemctl restart app.service` while
    app.socket stays) serves on that path."""
    path = tmp_path / "app.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(128)

    def get_over_unix() -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(REQUEST_TIMEOUT)
            client.connect(str(path))
            client.sendall(b"GET /pid HTTP/1.0\r\nHost: x\r\n\r\n")
            return read_until_closed(client)

    try:
        for run in range(2):
            server = custom_mercy("--wsgi-file", APP, "--processes", "1",
                                  "--http", path, http=False)
            server.start_with(activation_wrapper(listener.fileno()),
                              pass_fds=(listener.fileno(),))
            assert get_over_unix().startswith(b"HTTP/1.1 200 "), f"start {run + 1}"
            server.send_signal(signal.SIGTERM)
            assert server.wait_exit() == 0
            assert path.exists(), (
                f"mercy removed {path}, a socket it was given by systemd (start {run + 1})")
    finally:
        listener.close()


def _unshare_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    result = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"],
                            capture_output=True, timeout=30)
    return result.returncode == 0


def test_as_pid_1_mercy_reaps_orphans_and_stops_on_sigterm(custom_mercy):
    """mercy as PID 1 of a new PID namespace (as in a container): an
    orphaned grandchild of a worker is reaped when it exits (no zombie
    left), and SIGTERM makes a graceful shutdown with exit status 0."""
    if not _unshare_works():
        pytest.skip("needs root and unshare(1) for a PID namespace")
    server = custom_mercy("--wsgi-file", APP, "--processes", "1")
    server.start_with(["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"])
    assert server.get("/pid").json()["pid"] != 1
    orphan = server.get("/orphan?seconds=1").json()["pid"]

    def reaped():
        return server.get(f"/proc-state?pid={orphan}").json()["state"] == "gone"
    wait_until(reaped, 30, "the orphan to be reaped (not left a zombie)")

    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(server.pid)],
                              capture_output=True, text=True).stdout.split()
    assert len(children) == 1, children
    master = int(children[0])
    os.kill(master, signal.SIGTERM)
    assert server.wait_exit() == 0
    [stop] = server.wait_event("shutdown_started")
    assert stop.get("mode") == "graceful"
    server.wait_event("shutdown_done")
    server.assert_no_events("killed")

