"""Helpers for mercy's integration tests: start the real binary, read its
JSON log, talk HTTP to it, and always clean up its processes.

The binary is $MERCY_BIN, or target/release/mercy in this checkout
(`bash scripts/setup.sh` builds it). Every instance runs with `--log-json`
in its own process group, its standard output and error going to a file
that the tests read as a sequence of events.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
APPS = REPO / "tests" / "apps"
EXAMPLES = REPO / "examples"

# Generous: a 2-core machine may be busy building while tests run.
START_TIMEOUT = 60.0
EVENT_TIMEOUT = 60.0
EXIT_TIMEOUT = 60.0
REQUEST_TIMEOUT = 30.0
POLL_INTERVAL = 0.05

# Keyword arguments cannot contain dots; these name the dotted log fields.
FIELD_ALIASES = {"worker_id": "worker.id", "worker_pid": "worker.pid"}


def mercy_bin() -> Path:
    path = Path(os.environ.get("MERCY_BIN", REPO / "target" / "release" / "mercy"))
    if not path.is_absolute():
        path = REPO / path
    if not os.access(path, os.X_OK):
        pytest.fail(f"no mercy binary at {path}: run `bash scripts/setup.sh` first")
    return path


def venv_python() -> Path:
    """The project's virtualenv python (what mercy was built against)."""
    path = REPO / ".venv" / "bin" / "python"
    return path if path.exists() else Path(sys.executable)


def venv_dir() -> Path | None:
    """The virtualenv whose packages (Flask, pymongo) the apps import."""
    directory = venv_python().parent.parent
    return directory if (directory / "pyvenv.cfg").exists() else None


@functools.lru_cache(maxsize=None)
def python_facts() -> dict:
    """Version and libpython location of the virtualenv's base interpreter."""
    script = (
        "import json, sys, sysconfig;"
        "print(json.dumps({'version': '%d.%d' % sys.version_info[:2],"
        " 'full_version': '%d.%d.%d' % sys.version_info[:3],"
        " 'libdir': sysconfig.get_config_var('LIBDIR'),"
        " 'prefix': sys.base_prefix,"
        " 'soname': sysconfig.get_config_var('INSTSONAME')}))"
    )
    output = subprocess.run(
        [str(venv_python()), "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pid_running(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            stat = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_until(predicate, timeout: float, what: str):
    """Polls predicate until it returns a true value, which is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def wait_for_file(path: Path, timeout: float = EVENT_TIMEOUT) -> Path:
    wait_until(path.exists, timeout, f"file {path}")
    return path


def post_in_pieces(connection: http.client.HTTPConnection, path: str, data: bytes,
                   pieces: int, pause: float, chunked: bool) -> tuple[int, bytes]:
    """POSTs `data` to `path` in `pieces` writes `pause` seconds apart, with
    a Content-Length or chunked; returns the response's status and body."""
    step = -(-len(data) // pieces)
    connection.putrequest("POST", path)
    if chunked:
        connection.putheader("Transfer-Encoding", "chunked")
    else:
        connection.putheader("Content-Length", str(len(data)))
    connection.endheaders()
    for offset in range(0, len(data), step):
        piece = data[offset: offset + step]
        connection.send(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
        time.sleep(pause)
    if chunked:
        connection.send(b"0\r\n\r\n")
    response = connection.getresponse()
    return response.status, response.read()


class ClientLoop(threading.Thread):
    """Sends GET `path` to 127.0.0.1:`port` without pause until stopped,
    recording every failure (a status other than 200, a reset, an empty
    reply, a refused connection, a timeout) and how many answers each
    worker pid gave (the app answers JSON with a "pid").

    keep_alive=True reuses one connection for as long as the server keeps
    it open, and opens a new one only after a response that said
    `Connection: close` or a failed request; keep_alive=False opens a new
    connection per request. Start and stop loops with `client_loops`."""

    def __init__(self, port: int, keep_alive: bool, path: str = "/pid"):
        super().__init__(daemon=True)
        self.port = port
        self.keep_alive = keep_alive
        self.path = path
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.pids: Counter = Counter()
        self.failures: list[str] = []

    def run(self):
        connection = None
        while not self.stopping.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
            self.sent += 1
            try:
                headers = {} if self.keep_alive else {"Connection": "close"}
                connection.request("GET", self.path, headers=headers)
                response = connection.getresponse()
                body = response.read()
                closing = response.will_close
                if response.status != 200:
                    raise AssertionError(f"status {response.status}: {body[:200]!r}")
                pid = int(json.loads(body)["pid"])
                with self.lock:
                    self.pids[pid] += 1
            except Exception as error:  # noqa: BLE001 - every failure is recorded
                with self.lock:
                    self.failures.append(
                        f"request {self.sent}: {type(error).__name__}: {error}")
                closing = True
            if closing or not self.keep_alive:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def answers(self) -> int:
        with self.lock:
            return sum(self.pids.values())

    def saw(self, pids) -> bool:
        """True once one of `pids` answered this loop."""
        with self.lock:
            return not set(self.pids).isdisjoint(pids)


@contextlib.contextmanager
def client_loops(port: int, *keep_alive: bool, path: str = "/pid"):
    """Starts one ClientLoop on `port` per keep_alive value and yields the
    list. On exit it stops and joins them all; if the body did not raise, it
    asserts that every loop stopped, was answered at least once and saw no
    failure, naming the loop's keep_alive setting."""
    loops = [ClientLoop(port, each, path) for each in keep_alive]
    for loop in loops:
        loop.start()
    try:
        yield loops
    finally:
        for loop in loops:
            loop.stopping.set()
        for loop in loops:
            loop.join(timeout=REQUEST_TIMEOUT * 2)

    for loop in loops:
        label = f"client loop keep_alive={loop.keep_alive}"
        assert not loop.is_alive(), f"{label} did not stop"
        assert loop.failures == [], (
            f"{label}: {len(loop.failures)} of {loop.sent} requests failed, "
            f"e.g. {loop.failures[:10]}")
        assert loop.answers() > 0, f"{label} was never answered"


def wait_answered(loops, pids=None, what: str = "a first answer", timeout: float = 60):
    """Waits until every loop was answered: by any worker when `pids` is
    None, else by one of `pids` (a set, or a function returning the set,
    read again on each poll)."""
    for loop in loops:
        if pids is None:
            wait_until(loop.answers, timeout, f"{what} to client loop "
                       f"keep_alive={loop.keep_alive}")
        else:
            wait_until(lambda: loop.saw(pids() if callable(pids) else pids), timeout,
                       f"{what} to client loop keep_alive={loop.keep_alive}")



def wait_replaced(server, loops, pids, timeout: float = 120):
    """Waits until every worker in `pids` is retired, then until every loop
    was answered by a worker serving now (a replacement)."""
    for pid in pids:
        server.wait_event("retired", worker_pid=pid, timeout=timeout)
    wait_answered(loops, lambda: set(server.worker_pids().values()),
                  "an answer from a replacement")

def _flatten(record: dict) -> dict:
    """Puts nested fields at top level with dotted names ({"worker": {"id": 1}}
    becomes {"worker.id": 1}); fields under "fields" move to top level too."""
    flat = {}

    def walk(prefix, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        else:
            flat[prefix] = value

    for key, value in record.items():
        if key == "fields" and isinstance(value, dict):
            for inner_key, inner in value.items():
                walk(inner_key, inner)
        else:
            walk(key, value)
    return flat


def _matches(record: dict, filters: dict) -> bool:
    for key, expected in filters.items():
        key = FIELD_ALIASES.get(key, key)
        if key not in record:
            return False
        value = record[key]
        if value != expected and str(value) != str(expected):
            return False
    return True


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self):
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


class Mercy:
    """One running mercy instance and its log."""

    def __init__(self, workdir: Path, args: list, env: dict | None = None,
                 http: bool = True, virtualenv: bool = True, prefix: tuple = ()):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "mercy.log"
        self.port = free_port() if http else None
        self.args = [str(arg) for arg in args]
        self.env = dict(os.environ, **(env or {}))
        self.proc: subprocess.Popen | None = None
        self._records: list[dict] = []
        self._read_offset = 0
        self._partial = b""

        command = [*prefix, str(mercy_bin())]
        if http:
            command += ["--http", f"127.0.0.1:{self.port}"]
        command += self.args
        has_venv = any(arg in ("--virtualenv", "--home") for arg in self.args)
        if virtualenv and not has_venv and venv_dir() is not None:
            command += ["--virtualenv", str(venv_dir())]
        command.append("--log-json")
        self.command = command

    # --- process ------------------------------------------------------------

    def start(self, ready: int | None = None) -> "Mercy":
        """Starts mercy; waits for `ready` workers (default: --processes)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command,
                cwd=REPO,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if ready is None:
            ready = self.expected_workers()
        if ready:
            self.wait_event("ready", count=ready, timeout=START_TIMEOUT)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expected_workers(self) -> int:
        for flag in ("--processes", "--workers"):
            if flag in self.args:
                return int(self.args[self.args.index(flag) + 1])
        return 1

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig: int):
        """Signals the master process only."""
        os.kill(self.proc.pid, sig)

    def signal_group(self, sig: int):
        """Signals the whole process group, as a terminal does on Ctrl-C."""
        os.killpg(os.getpgid(self.proc.pid), sig)

    def wait_exit(self, timeout: float = EXIT_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"mercy did not exit within {timeout:g}s\n{self.tail()}"
            ) from None

    def child_pids(self) -> set[int]:
        """Processes whose parent is the master, as `ps --ppid` lists them."""
        output = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(self.proc.pid)],
            capture_output=True, text=True,
        ).stdout
        return {int(pid) for pid in output.split()}

    def stop(self):
        """Ends the instance whatever state it is in, and everything it started:
        fast shutdown, then SIGKILL to the process group and to any worker
        pid from the log that still runs the mercy binary."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.send_signal(signal.SIGINT)
                self.proc.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in self.logged_pids():
            if pid_running(pid) and self._runs_mercy(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def _runs_mercy(self, pid: int) -> bool:
        try:
            return os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(mercy_bin())
        except OSError:
            return False

    # --- log ------------------------------------------------------------------

    def records(self) -> list[dict]:
        """Every JSON log line so far, in order, fields flattened; lines that
        are not JSON objects are skipped."""
        with open(self.log_path, "rb") as log:
            log.seek(self._read_offset)
            data = log.read()
        self._read_offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            line = line.strip()
            if not line.startswith(b"{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                self._records.append(_flatten(record))
        return self._records

    def events(self, name: str | None = None, **filters) -> list[dict]:
        """Log records with event == name (any event if None) whose fields
        equal the filters; worker_id and worker_pid mean worker.id/.pid."""
        return [
            record for record in self.records()
            if (name is None or record.get("event") == name) and _matches(record, filters)
        ]

    def event_index(self, record: dict) -> int:
        """Position of a record in the log, to compare the order of events."""
        return next(i for i, r in enumerate(self.records()) if r is record)

    def wait_event(self, name: str, count: int = 1, timeout: float = EVENT_TIMEOUT,
                   **filters) -> list[dict]:
        """Waits until at least `count` matching events are logged; returns
        all matching events. Fails early if mercy exits without them."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.events(name, **filters)
            if len(found) >= count:
                return found
            exited = not self.running()
            if exited or time.monotonic() > deadline:
                found = self.events(name, **filters)
                if len(found) >= count:
                    return found
                reason = "mercy exited" if exited else f"timed out after {timeout:g}s"
                raise AssertionError(
                    f"{reason} waiting for {count} '{name}' event(s) {filters}, "
                    f"found {len(found)}\n{self.tail()}"
                )
            time.sleep(POLL_INTERVAL)

    def assert_no_events(self, *names: str):
        for name in names:
            found = self.events(name)
            assert found == [], f"unexpected '{name}' events: {found}\n{self.tail()}"

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, lines: int = 60) -> str:
        kept = self.text().splitlines()[-lines:]
        return f"--- last {len(kept)} lines of {self.log_path} ---\n" + "\n".join(kept)

    def logged_pids(self) -> set[int]:
        pids = set()
        for record in self.records():
            try:
                pids.add(int(record["worker.pid"]))
            except (KeyError, TypeError, ValueError):
                pass
        return pids

    # --- workers ----------------------------------------------------------------

    def worker_pids(self) -> dict[int, int]:
        """worker id -> pid of the generation now serving.

        That is the newest generation (by the `generation` field of `ready`
        events) that still has a running worker not told to retire; within
        it, the latest `ready` event of each worker id (respawns replace
        pids). A failed reload's generation has no such worker, so the old
        generation is returned."""
        records = self.records()
        leaving = {
            int(r["worker.pid"]) for r in records
            if r.get("event") in ("retiring", "retired", "killed") and "worker.pid" in r
        }
        by_generation: dict = {}
        for record in records:
            if record.get("event") == "ready":
                by_generation.setdefault(record.get("generation"), []).append(record)

        def order(generation):
            return (generation is not None, generation if generation is not None else 0)

        for generation in sorted(by_generation, key=order, reverse=True):
            workers = {}
            for record in by_generation[generation]:
                workers[int(record["worker.id"])] = int(record["worker.pid"])
            serving = {
                worker_id: pid for worker_id, pid in workers.items()
                if pid not in leaving and pid_running(pid)
            }
            if serving:
                return serving
        return {}

    # --- HTTP ---------------------------------------------------------------------

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict | None = None, timeout: float = REQUEST_TIMEOUT) -> Response:
        """One request on a new connection."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Response(response.status, response.headers, response.read())
        finally:
            connection.close()

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def post_json(self, path: str, document, **kwargs) -> Response:
        body = json.dumps(document).encode()
        headers = {"Content-Type": "application/json"}
        return self.request("POST", path, body=body, headers=headers, **kwargs)

    def connect(self, timeout: float = REQUEST_TIMEOUT) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout)

    def raw(self, data: bytes, timeout: float = REQUEST_TIMEOUT) -> bytes:
        """Sends raw bytes, then reads until the server closes the connection."""
        with self.connect(timeout) as sock:
            sock.sendall(data)
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


@pytest.fixture
def mercy(tmp_path):
    """Starts mercy instances: mercy(*args, ready=None, env=None, http=True,
    virtualenv=True, prefix=()), where `prefix` is a command that execs
    mercy (e.g. prlimit). All are stopped, with their process groups killed,
    when the test ends; the log tail is printed (shown if the test failed)."""
    instances: list[Mercy] = []

    def start(*args, ready=None, env=None, http=True, virtualenv=True, prefix=()):
        workdir = tmp_path / f"mercy-{len(instances)}"
        instance = Mercy(workdir, list(args), env=env, http=http, virtualenv=virtualenv,
                         prefix=prefix)
        instances.append(instance)
        return instance.start(ready=ready)

    yield start

    for instance in instances:
        instance.stop()
        if instance.log_path.exists():
            print(instance.tail(200))
