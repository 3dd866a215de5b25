"""Reloads, shutdowns, crashes and retirement, driven by real signals."""

import http.client
import json
import signal
import threading
from collections import Counter

from conftest import APPS, REQUEST_TIMEOUT, pid_running, wait_for_file, wait_until

RELOADS = 5


class ClientLoop(threading.Thread):
    """Sends GET /pid without pause until stopped, recording every failure
    (error status, reset, refused, timeout) and the pids that answered.

    keep_alive=False opens a new connection per request; keep_alive=True
    reuses one connection for as long as the server keeps it open, and opens
    a new one only after a response that said `Connection: close`."""

    def __init__(self, server, keep_alive: bool):
        super().__init__(daemon=True)
        self.server = server
        self.keep_alive = keep_alive
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.answered = 0
        self.pids: set[int] = set()
        self.failures: list[str] = []

    def run(self):
        connection = None
        while not self.stopping.is_set():
            if connection is None:
                connection = http.client.HTTPConnection(
                    "127.0.0.1", self.server.port, timeout=REQUEST_TIMEOUT)
            try:
                headers = {} if self.keep_alive else {"Connection": "close"}
                connection.request("GET", "/pid", headers=headers)
                response = connection.getresponse()
                body = response.read()
                closing = response.will_close
                if response.status != 200:
                    raise AssertionError(f"status {response.status}: {body!r}")
                pid = int(json.loads(body)["pid"])
                with self.lock:
                    self.answered += 1
                    self.pids.add(pid)
            except Exception as error:  # noqa: BLE001 - every failure is recorded
                with self.lock:
                    self.failures.append(f"{type(error).__name__}: {error}")
                closing = True
            if closing or not self.keep_alive:
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def answers(self) -> int:
        with self.lock:
            return self.answered

    def saw_any(self, pids) -> bool:
        with self.lock:
            return not self.pids.isdisjoint(pids)


def slow_request(server, marker, release, seconds):
    """Starts GET /slow in a thread; returns (thread, result dict)."""
    result = {}

    def run():
        try:
            result["response"] = server.get(
                f"/slow?seconds={seconds}&marker={marker}&release={release}",
                timeout=120)
        except Exception as error:  # noqa: BLE001 - reported by the test
            result["error"] = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_reloads_under_continuous_load_lose_no_request(mercy):
    """Two clients send requests without pause (one on new connections, one
    on keep-alive connections) across 5 SIGHUP reloads: no request fails, is
    reset or refused, and every reload replaces every worker pid."""
    server = mercy("--wsgi-file", APPS / "basic.py", "--processes", "2", "--threads", "4")
    loops = [ClientLoop(server, keep_alive=False), ClientLoop(server, keep_alive=True)]
    for loop in loops:
        loop.start()
    generations = [set(server.worker_pids().values())]
    assert len(generations[0]) == 2

    try:
        for loop in loops:
            wait_until(loop.answers, 60, "a first answer to the client loop")
        for reload_number in range(1, RELOADS + 1):
            server.send_signal(signal.SIGHUP)
            server.wait_event("reload_done", count=reload_number)
            pids = set(server.worker_pids().values())
            assert len(pids) == 2
            for earlier in generations:
                assert pids.isdisjoint(earlier)
            generations.append(pids)
        for loop in loops:
            wait_until(lambda: loop.saw_any(generations[-1]), 60,
                       "an answer from the last generation")
    finally:
        for loop in loops:
            loop.stopping.set()
        for loop in loops:
            loop.join(timeout=60)

    for loop in loops:
        assert loop.failures == [], f"keep_alive={loop.keep_alive}"
    assert len(server.events("reload_started")) == RELOADS
    assert len(server.events("reload_done")) == RELOADS
    for old_pids in generations[:-1]:
        for pid in old_pids:
            server.wait_event("retired", worker_pid=pid)
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


def test_reload_lets_an_in_flight_request_finish(mercy, tmp_path):
    """A request that is being handled when SIGHUP arrives, and goes on for
    2 more seconds after its worker was told to retire, completes with 200
    and `Connection: close`; its worker retires only afterwards."""
    server = mercy("--wsgi-file", APPS / "basic.py", "--processes", "2", "--threads", "2")
    marker, release = tmp_path / "started", tmp_path / "release"
    thread, result = slow_request(server, marker, release, seconds=2)
    worker_pid = int(wait_for_file(marker).read_text())

    server.send_signal(signal.SIGHUP)
    server.wait_event("retiring", worker_pid=worker_pid)
    release.touch()
    thread.join(timeout=120)

    assert "error" not in result, result
    response = result["response"]
    assert response.status == 200
    assert response.body == b"slow done"
    assert response.header("Connection") == "close"
    server.wait_event("reload_done")
    server.wait_event("retired", worker_pid=worker_pid)
    server.assert_no_events("mercy_expired", "killed")


def test_sigterm_lets_an_in_flight_request_finish(mercy, tmp_path):
    """SIGTERM while a request is in flight: the request completes with 200
    (2 s after the shutdown started), mercy exits with status 0, and no
    worker is killed."""
    server = mercy("--wsgi-file", APPS / "basic.py", "--processes", "1", "--threads", "2")
    marker, release = tmp_path / "started", tmp_path / "release"
    thread, result = slow_request(server, marker, release, seconds=2)
    wait_for_file(marker)

    server.send_signal(signal.SIGTERM)
    server.wait_event("shutdown_started")
    release.touch()
    thread.join(timeout=120)

    assert "error" not in result, result
    assert result["response"].status == 200
    assert result["response"].body == b"slow done"
    assert server.wait_exit() == 0
    server.wait_event("shutdown_done")
    server.assert_no_events("mercy_expired", "killed")


def test_stuck_thread_expires_mercy_with_a_diagnostic_then_is_killed(mercy):
    """An app whose non-daemon thread never ends, with --worker-reload-mercy 3:
    SIGTERM still ends mercy (status 0); the worker first logs
    `mercy_expired` naming the thread with its Python stack, and only then
    does the master log `killed` for that worker."""
    server = mercy("--wsgi-file", APPS / "stuck_thread.py", "--processes", "1",
                   "--worker-reload-mercy", "3")
    [worker_pid] = server.worker_pids().values()
    assert server.get("/").body == b"stuck"

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    [expired] = server.wait_event("mercy_expired", worker_pid=worker_pid)
    assert str(expired.get("step", "")).strip() != ""
    threads = str(expired["threads"])
    assert "mercy-test-stuck-thread" in threads
    assert "never_ending_loop" in threads
    assert "stuck_thread.py" in threads
    [killed] = server.wait_event("killed", worker_pid=worker_pid)
    assert server.event_index(expired) < server.event_index(killed)
    assert not pid_running(worker_pid)


def test_crashed_worker_is_respawned(mercy):
    """A request that ends its worker with os._exit(1): the master logs
    `respawned`, a new worker with a new pid becomes ready, and later
    requests are served by it."""
    server = mercy("--wsgi-file", APPS / "basic.py", "--processes", "1")
    [(worker_id, crashed_pid)] = server.worker_pids().items()

    try:
        server.get("/exit")
    except (ConnectionError, http.client.HTTPException, OSError):
        pass  # the worker died mid-request: no answer is expected

    server.wait_event("respawned")
    server.wait_event("ready", count=2, worker_id=worker_id)
    wait_until(lambda: not pid_running(crashed_pid), 60, "the crashed worker to be gone")
    [(_, new_pid)] = server.worker_pids().items()
    assert new_pid != crashed_pid
    for _ in range(5):
        response = server.get("/pid")
        assert response.status == 200
        assert response.json()["pid"] == new_pid


def test_ctrl_c_to_the_process_group_stops_everything(mercy):
    """SIGINT sent to the whole process group, as a terminal does on Ctrl-C:
    mercy exits with status 0 and none of its workers is left running."""
    server = mercy("--wsgi-file", APPS / "basic.py", "--processes", "2")
    workers = set(server.worker_pids().values())
    assert len(workers) == 2
    assert workers <= server.child_pids()

    server.signal_group(signal.SIGINT)
    assert server.wait_exit() == 0

    assert {pid for pid in workers if pid_running(pid)} == set()


def test_shutdown_hooks_run_once_and_spawned_task_finishes(mercy, tmp_path):
    """`mercy.on_shutdown` hooks run exactly once in every retired worker
    (2 retired by a reload, 2 by the stop), and a 2-second `mercy.spawn`
    task started just before SIGHUP writes its file completely before its
    worker's hooks run."""
    output = tmp_path / "output"
    output.mkdir()
    server = mercy("--wsgi-file", APPS / "hooks.py", "--processes", "2", "--threads", "2",
                   env={"MERCY_TEST_DIR": str(output)})
    first = set(server.worker_pids().values())

    spawned = server.get("/spawn?seconds=2")
    assert spawned.status == 200
    task_pid = spawned.json()["pid"]
    assert task_pid in first
    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    second = set(server.worker_pids().values())
    assert len(second) == 2 and second.isdisjoint(first)
    for pid in first:
        server.wait_event("retired", worker_pid=pid)

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    lines = (output / "events.log").read_text().splitlines()
    shutdowns = Counter(int(line.split()[1]) for line in lines if line.startswith("shutdown "))
    assert shutdowns == Counter({pid: 1 for pid in first | second})
    assert lines.index(f"task-done {task_pid}") < lines.index(f"shutdown {task_pid}")
    expected_task_file = (
        [f"start {task_pid}"] + [f"step {n}" for n in range(20)] + [f"done {task_pid}"]
    )
    assert (output / "spawn-task.txt").read_text().splitlines() == expected_task_file
    server.assert_no_events("mercy_expired", "killed")
