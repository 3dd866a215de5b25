"""Reloads, shutdowns, crashes and retirement, driven by real signals."""

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections import Counter

import pytest

from conftest import (APPS, EXIT_TIMEOUT, POLL_INTERVAL, REPO, REQUEST_TIMEOUT, Mercy,
                      client_loops, pid_running, wait_answered, wait_for_file, wait_until)

RELOADS = 5
BASIC_APP = APPS / "basic.py"
HOOKS_APP = APPS / "hooks.py"
SWITCH_APP = APPS / "startup_switch.py"
GEVENT_APP = APPS / "gevent_basic.py"

# The same shutdown guarantees hold in both concurrency modes: tests marked
# with this run once with 2 threads and once with 2 greenlets per worker.
# Both apps serve /pid and /slow alike.
BOTH_MODES = pytest.mark.parametrize(
    "app, mode", [(BASIC_APP, ("--threads", "2")), (GEVENT_APP, ("--gevent", "2"))],
    ids=["threads", "gevent"])


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


def hold_a_request(server, tmp_path, seconds=0):
    """Starts GET /slow and waits until the app holds it; returns a function
    that releases it (the app then sleeps `seconds`) and checks that it
    completed with 200 "slow done"."""
    marker, release = tmp_path / "started", tmp_path / "release"
    thread, result = slow_request(server, marker, release, seconds)
    wait_for_file(marker)

    def finish():
        release.touch()
        thread.join(timeout=120)
        assert "error" not in result, result
        assert (result["response"].status, result["response"].body) == (200, b"slow done")

    return finish


def test_reloads_under_continuous_load_lose_no_request(mercy):
    """Two clients send requests without pause (one on new connections, one
    on keep-alive connections) across 5 SIGHUP reloads: no request fails, is
    reset or refused, and every reload replaces every worker pid."""
    server = mercy("--wsgi-file", APPS / "basic.py", "--processes", "2", "--threads", "4")
    generations = [set(server.worker_pids().values())]
    assert len(generations[0]) == 2

    with client_loops(server.port, False, True) as loops:
        wait_answered(loops)
        for reload_number in range(1, RELOADS + 1):
            server.send_signal(signal.SIGHUP)
            server.wait_event("reload_done", count=reload_number)
            pids = set(server.worker_pids().values())
            assert len(pids) == 2
            for earlier in generations:
                assert pids.isdisjoint(earlier)
            generations.append(pids)
        wait_answered(loops, generations[-1], "an answer from the last generation")

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
    finish = hold_a_request(server, tmp_path, seconds=2)

    server.send_signal(signal.SIGTERM)
    server.wait_event("shutdown_started")
    finish()

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


def test_mercy_expired_lists_each_unfinished_request_in_threads_mode(mercy, tmp_path):
    """Threads mode, mercy 3 s: a GET and a POST that never finish (held by
    the app) when SIGTERM arrives. The worker logs `mercy_expired` in step 2
    (finishing in-flight requests), listing each request on a line of its
    own with its method, path and age, and the stack of the threads running
    them; then the master kills it, mercy exits with status 0, and neither
    request was answered."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--threads", "3",
                   "--worker-reload-mercy", "3")
    never = tmp_path / "never-released"
    markers = [tmp_path / "started-get", tmp_path / "started-post"]
    results = []
    for method, marker in zip(("GET", "POST"), markers):
        result = {}

        def run(method=method, marker=marker, result=result):
            try:
                result["response"] = server.request(
                    method, f"/slow?marker={marker}&release={never}", timeout=120)
            except Exception as error:  # noqa: BLE001 - reported by the test
                result["error"] = f"{type(error).__name__}: {error}"

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        results.append((thread, result))
    [worker_pid] = {int(wait_for_file(marker).read_text()) for marker in markers}

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    [expired] = server.wait_event("mercy_expired", worker_pid=worker_pid)
    [killed] = server.wait_event("killed", worker_pid=worker_pid)
    assert server.event_index(expired) < server.event_index(killed)
    assert str(expired["step"]).startswith("2"), expired["step"]
    lines = str(expired["requests"]).splitlines()
    assert len(lines) == 2, lines
    age = r"\(running for \d+\.\d+s\)"
    assert sorted(re.sub(age, "AGE", line) for line in lines) == [
        "GET /slow AGE", "POST /slow AGE"], lines
    threads = str(expired["threads"])
    assert threads.count("in _slow") == 2, threads
    assert "basic.py" in threads
    for thread, result in results:
        thread.join(timeout=60)
        assert "response" not in result, "a held request cannot have been answered"


@BOTH_MODES
def test_ctrl_c_to_the_process_group_stops_everything(mercy, app, mode):
    """SIGINT sent to the whole process group, as a terminal does on Ctrl-C:
    mercy exits with status 0 and none of its workers is left running."""
    server = mercy("--wsgi-file", app, "--processes", "2", *mode)
    workers = set(server.worker_pids().values())
    assert len(workers) == 2
    assert workers <= server.child_pids()

    server.signal_group(signal.SIGINT)
    assert server.wait_exit() == 0

    assert {pid for pid in workers if pid_running(pid)} == set()
    assert [event["mode"] for event in server.events("shutdown_started")] == ["fast"]
    # The workers ignored the SIGINT and left because the master told them.
    for pid in workers:
        [retired] = server.events("retired", worker_pid=pid)
        assert retired["status"] == "exit status 0", retired
    server.assert_no_events("died", "killed")


@pytest.mark.parametrize("route, tasks", [("spawn", ["spawn"]),
                                          ("group", ["group-a", "group-b"])])
def test_shutdown_hooks_run_once_and_tracked_work_finishes(mercy, tmp_path, route, tasks):
    """`mercy.on_shutdown` hooks run exactly once in every retired worker
    (2 retired by a reload, 2 by the stop). Tracked work (`mercy.spawn`, or
    two tasks of a `mercy.TaskGroup` that nobody joins) started before
    SIGHUP is held until its worker was told to retire, then runs for 1 s
    more: every task file is complete, and each task ended before its
    worker's hooks ran."""
    output = tmp_path / "output"
    output.mkdir()
    release = tmp_path / "release"
    server = mercy("--wsgi-file", HOOKS_APP, "--processes", "2", "--threads", "2",
                   env={"MERCY_TEST_DIR": str(output)})
    first = set(server.worker_pids().values())

    spawned = server.get(f"/{route}?seconds=1&release={release}")
    assert spawned.status == 200
    task_pid = spawned.json()["pid"]
    assert task_pid in first
    server.send_signal(signal.SIGHUP)
    server.wait_event("retiring", worker_pid=task_pid)
    release.touch()
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
    expected_task_file = (
        [f"start {task_pid}"] + [f"step {n}" for n in range(20)] + [f"done {task_pid}"]
    )
    for task in tasks:
        assert lines.index(f"task-done {task} {task_pid}") < lines.index(f"shutdown {task_pid}")
        assert (output / f"{task}-task.txt").read_text().splitlines() == expected_task_file
    server.assert_no_events("mercy_expired", "killed")


SHUTDOWN_ORDER = ["on_shutdown-1", "on_shutdown-2", "on_shutdown-3", "uwsgi.atexit",
                  "atexit-second", "atexit-first"]


@pytest.mark.parametrize("mode", [("--threads", "2"), ("--gevent", "10")],
                         ids=["threads", "gevent"])
def test_shutdown_hooks_run_in_the_documented_order_once_each(mercy, tmp_path, mode):
    """Retirement step 4, in threads and in gevent mode, for the 2 workers
    retired by a reload and the 2 retired by SIGTERM: every worker runs its
    `mercy.on_shutdown` hooks in registration order (one of them raises:
    the next still runs, and the error is logged with its traceback), then
    `uwsgi.atexit`, then the app's `atexit.register` handlers in Python's
    own order (last registered first), each exactly once."""
    output = tmp_path / "output"
    output.mkdir()
    server = mercy("--wsgi-file", APPS / "shutdown_order.py", "--processes", "2", *mode,
                   env={"MERCY_TEST_DIR": str(output)})
    first = set(server.worker_pids().values())
    assert server.get("/pid").json()["pid"] in first

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    for pid in first:
        server.wait_event("retired", worker_pid=pid)
    second = set(server.worker_pids().values())
    assert len(second) == 2 and second.isdisjoint(first)
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    lines = (output / "order.log").read_text().splitlines()
    by_pid: dict = {}
    for line in lines:
        hook, pid = line.rsplit(" ", 1)
        by_pid.setdefault(int(pid), []).append(hook)
    assert by_pid == {pid: SHUTDOWN_ORDER for pid in first | second}, lines
    for pid in first | second:
        [failed] = server.events("app_error", worker_pid=pid)
        assert "a failing on_shutdown hook" in failed["traceback"], failed
    server.assert_no_events("mercy_expired", "killed")


def test_a_thread_started_in_a_request_is_waited_for_as_python_would(mercy, tmp_path):
    """A `threading.Thread` an app starts while serving a request is not a
    daemon (as under any Python server whose request threads are not
    daemons), so retirement step 5 waits for it: its task file is complete
    and it ended before the worker exited."""
    output = tmp_path / "output"
    output.mkdir()
    release = tmp_path / "release"
    server = mercy("--wsgi-file", HOOKS_APP, env={"MERCY_TEST_DIR": str(output)})

    started = server.get(f"/thread?seconds=1&release={release}").json()
    assert started["daemon"] is False
    server.send_signal(signal.SIGTERM)
    server.wait_event("retiring", worker_pid=started["pid"])
    release.touch()
    assert server.wait_exit() == 0

    lines = (output / "events.log").read_text().splitlines()
    assert f"task-done thread {started['pid']}" in lines
    assert (output / "thread-task.txt").read_text().splitlines()[-1] == f"done {started['pid']}"
    server.assert_no_events("mercy_expired", "killed")


def test_is_shutting_down_turns_true_when_the_worker_retires(mercy, tmp_path):
    """`mercy.is_shutting_down()` is False while a worker serves; a request
    in flight when SIGHUP arrives sees it turn True, completes with 200, and
    its worker retires afterwards."""
    server = mercy("--wsgi-file", HOOKS_APP, "--processes", "1", "--threads", "2",
                   env={"MERCY_TEST_DIR": str(tmp_path)})
    assert server.get("/shutting-down").json()["shutting_down"] is False
    marker = tmp_path / "started"
    result = {}

    def waiting_request():
        result["response"] = server.get(f"/shutting-down?wait=1&marker={marker}", timeout=120)

    thread = threading.Thread(target=waiting_request, daemon=True)
    thread.start()
    worker_pid = int(wait_for_file(marker).read_text())
    server.send_signal(signal.SIGHUP)
    thread.join(timeout=120)

    response = result["response"]
    assert response.status == 200
    assert response.json() == {"pid": worker_pid, "shutting_down": True}
    server.wait_event("retired", worker_pid=worker_pid)
    server.assert_no_events("mercy_expired", "killed")


# --- signals, as the master and the workers take them ----------------------------------


def test_subprocess_started_by_the_app_can_be_terminated(mercy):
    """Workers ignore terminal signals, but the programs an app starts do
    not inherit that: `Popen.terminate()` on a `sleep 60` started in a
    request ends it with SIGTERM (return code -15)."""
    server = mercy("--wsgi-file", BASIC_APP)

    answer = server.get("/terminate-child").json()

    assert answer == {"returncode": -signal.SIGTERM}


def test_sigquit_is_a_fast_shutdown_that_exits_0(mercy):
    """SIGQUIT: a fast shutdown; mercy exits with status 0 and no worker is
    left running."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "2")
    workers = set(server.worker_pids().values())

    server.send_signal(signal.SIGQUIT)
    assert server.wait_exit() == 0

    assert [event["mode"] for event in server.events("shutdown_started")] == ["fast"]
    assert {pid for pid in workers if pid_running(pid)} == set()
    server.wait_event("shutdown_done")


def test_second_sigterm_escalates_a_graceful_shutdown_to_fast(mercy, tmp_path):
    """A request is held (mercy 120 s, so the graceful shutdown would wait for
    it); a second SIGTERM turns the shutdown fast: its worker is killed after
    the fast grace, without any `mercy_expired`, and mercy exits with 0."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--threads", "2",
                   "--worker-reload-mercy", "120")
    marker = tmp_path / "started"
    thread, _ = slow_request(server, marker, tmp_path / "never-released", 0)
    worker_pid = int(wait_for_file(marker).read_text())

    server.send_signal(signal.SIGTERM)
    server.wait_event("shutdown_started")
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    assert [event["mode"] for event in server.events("shutdown_started")] == [
        "graceful", "fast"]
    [killed] = server.events("killed", worker_pid=worker_pid)
    assert killed["reason"] == "fast shutdown", killed
    server.assert_no_events("mercy_expired")
    thread.join(timeout=60)


def test_reloads_requested_during_a_reload_coalesce_into_one(mercy, tmp_path):
    """While a reload waits for its new worker (held at import), two more
    SIGHUPs arrive: they coalesce into one more reload, so exactly 2
    `reload_started` and 2 `reload_done` are logged."""
    switch, release = tmp_path / "switch", tmp_path / "release"
    server = mercy("--wsgi-file", SWITCH_APP, "--processes", "1",
                   env={"MERCY_TEST_SWITCH": str(switch)})
    switch.write_text(f"hold {release}")

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_started")
    for count in (1, 2):
        server.send_signal(signal.SIGHUP)
        server.wait_event(None, count=count,
                          message="reload requested while another runs: "
                                  "it follows when this one ends")
    switch.unlink()
    release.touch()
    server.wait_event("reload_done", count=2)
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    assert len(server.events("reload_started")) == 2
    assert len(server.events("reload_done")) == 2
    server.assert_no_events("reload_failed", "mercy_expired", "killed")


def test_mercy_reload_from_the_app_is_a_graceful_reload(mercy):
    """mercy.reload() called in a request: the request is answered, the
    master starts generation 2 with the app's call as the cause, both old
    workers retire without being killed, and generation 2 serves."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "2")
    old = set(server.worker_pids().values())

    response = server.get("/reload")
    assert (response.status, response.body) == (200, b"reload requested")
    [started] = server.wait_event("reload_started")
    [done] = server.wait_event("reload_done")

    assert started["generation"] == done["generation"] == 2
    assert "reload()" in started["cause"], started
    for pid in old:
        server.wait_event("retired", worker_pid=pid)
    assert len(server.events("ready", generation=2)) == 2
    new = set(server.worker_pids().values())
    assert len(new) == 2 and new.isdisjoint(old)
    assert json.loads(server.get("/pid").body)["pid"] in new
    server.assert_no_events("reload_failed", "killed", "mercy_expired")


def test_reload_requested_during_a_graceful_shutdown_is_ignored(mercy, tmp_path):
    """SIGHUP while a graceful shutdown waits for an in-flight request: the
    master logs `reload_ignored` naming SIGHUP and starts no reload; the
    request completes and mercy exits 0."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--threads", "2")
    finish = hold_a_request(server, tmp_path)

    server.send_signal(signal.SIGTERM)
    server.wait_event("shutdown_started")
    server.send_signal(signal.SIGHUP)
    [ignored] = server.wait_event("reload_ignored")
    finish()

    assert ignored["cause"] == "SIGHUP", ignored
    assert server.wait_exit() == 0
    server.wait_event("shutdown_done")
    server.assert_no_events("reload_started", "killed")
    assert len(server.events("spawned")) == 1


# --- the keep-alive rule and what never delays a retirement ----------------------------


def read_response(sock: socket.socket, pending: bytearray):
    """Reads one response with a Content-Length from sock (bytes already
    received are in `pending`); returns (status, headers dict, body)."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed inside a response head: {bytes(pending)!r}")
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    length = int(headers["content-length"])
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed inside a response body")
        rest += chunk
    pending[:] = rest[length:]
    return int(status_line.split()[1]), headers, rest[:length]


@BOTH_MODES
def test_idle_keep_alive_connection_is_answered_with_close_not_cut(mercy, app, mode):
    """A keep-alive connection served one request and sits idle when SIGHUP
    retires its worker. The next request on it is served by that worker
    with 200 and `Connection: close` (the worker may need a moment to learn
    that it retires: until then its answers keep the connection open), and
    then the worker closes the connection cleanly: no reset."""
    server = mercy("--wsgi-file", app, "--processes", "1", "--keep-alive", "120", *mode)
    request = b"GET /pid HTTP/1.1\r\nHost: mercy-test\r\n\r\n"
    pending = bytearray()
    with server.connect() as sock:
        sock.sendall(request)
        status, headers, body = read_response(sock, pending)
        assert status == 200 and headers.get("connection") != "close"
        old_pid = json.loads(body)["pid"]

        server.send_signal(signal.SIGHUP)
        server.wait_event("retiring", worker_pid=old_pid)
        deadline = time.monotonic() + 60
        while True:
            sock.sendall(request)
            status, headers, body = read_response(sock, pending)
            assert status == 200
            assert json.loads(body)["pid"] == old_pid
            if headers.get("connection") == "close":
                break
            assert time.monotonic() < deadline, "no response said Connection: close"
            time.sleep(POLL_INTERVAL)
        assert sock.recv(65536) == b""

    server.wait_event("reload_done")
    server.wait_event("retired", worker_pid=old_pid)
    server.assert_no_events("mercy_expired", "killed")


def test_untracked_daemon_thread_never_delays_a_reload_or_a_stop(mercy):
    """An app whose daemon thread runs forever, with a short
    --worker-reload-mercy: the reload and the stop both complete with every
    worker retired, no `mercy_expired` and no `killed`."""
    server = mercy("--wsgi-file", APPS / "daemon_thread.py", "--processes", "2",
                   "--worker-reload-mercy", "5")
    first = set(server.worker_pids().values())
    assert "mercy-test-daemon-flusher" in server.get("/pid").json()["threads"]

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    second = set(server.worker_pids().values())
    for pid in first:
        server.wait_event("retired", worker_pid=pid)
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    for pid in second:
        server.wait_event("retired", worker_pid=pid)
    server.assert_no_events("mercy_expired", "killed")


@BOTH_MODES
def test_graceful_stop_serves_every_queued_connection(mercy, tmp_path, app, mode):
    """Both threads (or both greenlets) of the only worker are held, five
    more connections wait (one request taken, the rest in the kernel's
    queue), then SIGTERM: once the held requests are released, every queued
    connection is answered 200 by that worker, and mercy exits with status
    0 without killing anyone."""
    server = mercy("--wsgi-file", app, "--processes", "1", *mode)
    [worker_pid] = server.worker_pids().values()
    release = tmp_path / "release"
    held = [slow_request(server, tmp_path / f"started-{n}", release, 0) for n in range(2)]
    for n in range(2):
        wait_for_file(tmp_path / f"started-{n}")
    queued = []
    for _ in range(5):
        sock = server.connect(timeout=120)
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: mercy-test\r\nConnection: close\r\n\r\n")
        queued.append(sock)

    server.send_signal(signal.SIGTERM)
    server.wait_event("retiring")
    release.touch()

    answers = []
    for sock in queued:
        with sock:
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        answers.append(b"".join(chunks))
    for answer in answers:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), answer
        assert json.loads(body)["pid"] == worker_pid, answer
    for thread, result in held:
        thread.join(timeout=120)
        assert result["response"].status == 200, result
    assert server.wait_exit() == 0
    server.assert_no_events("mercy_expired", "killed")


# --- the master gone ------------------------------------------------------------------


def test_workers_retire_on_their_own_when_the_master_is_killed(mercy):
    """SIGKILL to the master: its workers see the control channel close and
    retire on their own; none is left running."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "2")
    workers = set(server.worker_pids().values())

    server.send_signal(signal.SIGKILL)
    server.wait_exit()

    wait_until(lambda: not any(pid_running(pid) for pid in workers), 60,
               f"workers {sorted(workers)} to leave")


def test_orphaned_worker_with_a_stuck_thread_keeps_its_own_mercy(mercy):
    """SIGKILL to the master of a worker whose non-daemon thread never ends
    (--worker-reload-mercy 3): nobody is left to kill the worker, so it
    keeps its mercy itself: it writes the `mercy_expired` diagnostic naming
    the thread, and exits."""
    server = mercy("--wsgi-file", APPS / "stuck_thread.py", "--processes", "1",
                   "--worker-reload-mercy", "3")
    [worker_pid] = server.worker_pids().values()

    server.send_signal(signal.SIGKILL)
    server.wait_exit()

    wait_until(lambda: not pid_running(worker_pid), 60, f"worker {worker_pid} to exit")
    [expired] = server.events("mercy_expired", worker_pid=worker_pid)
    assert "mercy-test-stuck-thread" in str(expired["threads"])
    assert str(expired["step"]).startswith("5"), expired["step"]


# --- worker deaths and loading -----------------------------------------------------------


def test_worker_failing_at_import_after_a_good_start_is_respawned_with_back_off(
        mercy, tmp_path):
    """After a good start the app's import starts failing and its worker
    dies: the master respawns it again and again, waiting 1, 2, then 4 s
    between attempts, and keeps running; once the import works again, a
    respawned worker becomes ready and serves."""
    switch = tmp_path / "switch"
    server = mercy("--wsgi-file", SWITCH_APP, "--processes", "1",
                   env={"MERCY_TEST_SWITCH": str(switch)})
    [(worker_id, first_pid)] = server.worker_pids().items()
    switch.write_text("exit")
    try:
        server.get("/exit")
    except (ConnectionError, http.client.HTTPException, OSError):
        pass  # the worker died mid-request: no answer is expected

    def delays():
        found = [int(r["delay_s"]) for r in server.records() if "delay_s" in r]
        return found if len(found) >= 3 else None

    assert wait_until(delays, 60, "three respawn back-offs")[:3] == [1, 2, 4]
    assert len(server.events("respawned", worker_id=worker_id)) >= 2
    assert server.running()
    switch.unlink()

    server.wait_event("ready", count=2, worker_id=worker_id)
    answer = server.get("/pid").json()
    assert answer["pid"] != first_pid and answer["worker_id"] == worker_id
    server.assert_no_events("start_failed")


def test_reload_whose_workers_hang_at_import_fails_at_the_spawn_timeout(mercy, tmp_path):
    """A reload whose new workers never finish importing the app
    (--spawn-timeout 5): the reload fails naming the timeout, the new
    workers are killed, and the old workers, same pids, keep serving."""
    switch = tmp_path / "switch"
    server = mercy("--wsgi-file", SWITCH_APP, "--processes", "2", "--spawn-timeout", "5",
                   env={"MERCY_TEST_SWITCH": str(switch)})
    before = server.worker_pids()
    switch.write_text(f"hold {tmp_path / 'never-released'}")

    server.send_signal(signal.SIGHUP)
    [failed] = server.wait_event("reload_failed")

    assert "--spawn-timeout" in failed["error"], failed
    server.wait_event("killed", generation=2)
    assert server.worker_pids() == before
    for _ in range(10):
        assert server.get("/pid").json()["pid"] in before.values()
    for pid in before.values():
        assert server.events("retiring", worker_pid=pid) == []
    server.assert_no_events("reload_done")


# --- what the log says -----------------------------------------------------------------


def test_app_exception_gives_500_and_a_traceback_naming_it(mercy):
    """A route raising ValueError: 500, and an `app_error` event whose
    traceback names the exception and the app's file; the worker serves on."""
    server = mercy("--wsgi-file", BASIC_APP)

    assert server.get("/raise").status == 500

    [error] = server.wait_event("app_error", path="/raise")
    assert "ValueError: basic app failure" in error["traceback"]
    assert "basic.py" in error["traceback"]
    assert server.get("/").status == 200


def test_disable_logging_removes_the_request_lines(mercy):
    """Three requests log three `request` lines; with --disable-logging,
    none (counted after the stop, when every line is written)."""
    for flags, expected in (([], 3), (["--disable-logging"], 0)):
        server = mercy("--wsgi-file", BASIC_APP, *flags)
        for _ in range(3):
            assert server.get("/").status == 200
        server.send_signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        assert len(server.events("request")) == expected, flags


def test_wsgi_errors_writes_are_log_events(mercy):
    """Text the app writes to wsgi.errors (one write with its line break,
    and print(), which writes the line break apart) becomes two `app_log`
    events with the worker's fields: under --log-json, no line of the log
    carries that text outside a JSON object."""
    server = mercy("--wsgi-file", BASIC_APP)
    [(worker_id, worker_pid)] = server.worker_pids().items()

    assert server.get("/errors?text=disk+almost+full").body == b"logged"
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    logged = server.events("app_log")
    assert [record["message"] for record in logged] == ["disk almost full"] * 2
    for record in logged:
        assert (record["worker.id"], record["worker.pid"]) == (worker_id, worker_pid)
    lines = [line for line in server.text().splitlines() if "disk almost full" in line]
    assert len(lines) == 2 and all(json.loads(line)["event"] == "app_log" for line in lines)


def test_printed_lines_are_log_events_under_log_json(mercy):
    """Under --log-json, each line the app prints to sys.stdout or
    sys.stderr (at import, in a request, in pieces, from a thread of its
    own) is one `app_log` event naming the stream, at INFO for standard
    output and WARN for standard error: every line of the log is a JSON
    object."""
    server = mercy("--wsgi-file", APPS / "printing.py")
    assert server.get("/?x1").body == b"printed"
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    logged = [(r["stream"], r["level"], r["message"]) for r in server.events("app_log")]
    assert logged == [
        ("stdout", "INFO", "printed at import"),
        ("stdout", "INFO", "stdout says x1"),
        ("stderr", "WARN", "stderr says x1"),
        ("stderr", "WARN", "second line"),
        ("stdout", "INFO", "thread says x1"),
    ]
    for line in server.text().splitlines():
        json.loads(line)


def test_programs_the_app_starts_inherit_no_listening_socket(mercy):
    """A shell started with close_fds=False inherits every descriptor the
    worker did not mark close-on-exec: neither the listening sockets nor
    the control channel are among them, so a child outliving its worker
    cannot keep the port or the master's channel open."""
    server = mercy("--wsgi-file", BASIC_APP)

    fds = server.get("/child-fds").json()["fds"]

    assert {fd: target for fd, target in fds.items() if target.startswith("socket:")} == {}


def test_a_low_open_file_limit_still_starts_workers(mercy):
    """Under `ulimit -n 256` the master still hands each worker its
    sockets, and the workers serve."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "2",
                   prefix=("prlimit", "--nofile=256:256", "--"))

    assert server.get("/pid").status == 200
    assert server.events("start_failed") == []


def test_a_log_reader_that_goes_away_stops_no_request(tmp_path):
    """mercy logs to a pipe whose reader closes it: the lines are lost, but
    the master and workers keep serving and stop cleanly (status 0)."""
    server = Mercy(tmp_path / "mercy", ["--wsgi-file", BASIC_APP, "--processes", "2"])
    proc = subprocess.Popen(server.command, cwd=REPO, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        ready = 0
        for line in proc.stdout:
            ready += json.loads(line).get("event") == "ready"
            if ready == 2:
                break
        proc.stdout.close()

        for _ in range(20):
            connection = http.client.HTTPConnection("127.0.0.1", server.port,
                                                    timeout=REQUEST_TIMEOUT)
            connection.request("GET", "/pid")
            assert connection.getresponse().status == 200
            connection.close()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT_TIMEOUT) == 0
    finally:
        # The whole group: workers outlive a master that died of the bug.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def test_a_connection_arriving_after_the_workers_stopped_accepting_is_refused(mercy, tmp_path):
    """During a graceful stop, once every worker has taken the connections
    queued for it, the listening socket is closed: a new client is refused
    at once (so a load balancer tries elsewhere) rather than queued, never
    answered, and reset when mercy exits. The request in flight still
    completes."""
    server = mercy("--wsgi-file", BASIC_APP, "--processes", "1", "--threads", "2")
    finish = hold_a_request(server, tmp_path)

    server.send_signal(signal.SIGTERM)
    server.wait_event("retiring")

    def refused() -> bool:
        try:
            socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT).close()
        except ConnectionRefusedError:
            return True
        return False

    wait_until(refused, 60, "a refused connection while the worker finishes its request")
    finish()
    assert server.wait_exit() == 0
    server.assert_no_events("killed")
