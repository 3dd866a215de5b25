"""mercy behind a real nginx (`uwsgi_pass` to `--socket`), as deployed.

Each test starts the Debian nginx on loopback with a generated config in
its temp folder (`daemon off; master_process off;`, pid, error log and
temp paths there too, `include /etc/nginx/uwsgi_params`) in front of one
mercy instance that also listens with `--http`, in threads and in gevent
mode. A request through nginx must reach the echo app exactly as the same
request sent straight to mercy's HTTP socket does.

nginx comes from `bash scripts/setup.sh` (Debian package nginx-light). When
it is missing the tests fail, saying so: they are never skipped.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import (APPS, REQUEST_TIMEOUT, START_TIMEOUT, client_loops, free_port,
                      wait_answered, wait_until)

ECHO_APP = APPS / "uwsgi_echo.py"
UWSGI_PARAMS = Path("/etc/nginx/uwsgi_params")
RELOADS = 3
# mercy's --buffer-size in these tests: the largest uwsgi packet (and HTTP head).
BUFFER_SIZE = 8192

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;

events {{
    worker_connections 512;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;

    client_max_body_size 16m;
    large_client_header_buffers 4 32k;
    keepalive_timeout 60s;

    server {{
        listen 127.0.0.1:{port};
        server_name localhost;

        location / {{
            include {params};
            uwsgi_pass {upstream};
            uwsgi_request_buffering on;
            uwsgi_read_timeout 60s;
            uwsgi_send_timeout 60s;
        }}
    }}
}}
"""


def nginx_binary() -> str:
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and os.access(candidate, os.X_OK):
            break
    else:
        pytest.fail("nginx is not installed: run `bash scripts/setup.sh` (it installs "
                    "the Debian package nginx-light) or `apt-get install nginx-light`")
    if not UWSGI_PARAMS.exists():
        pytest.fail(f"{UWSGI_PARAMS} is missing: install the Debian package nginx-common")
    return candidate


class Nginx:
    """One nginx process in front of `upstream` (`host:port` or `unix:PATH`)."""

    def __init__(self, workdir: Path, upstream: str):
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.upstream = upstream
        self.conf = workdir / "nginx.conf"
        self.conf.write_text(NGINX_CONF.format(
            dir=workdir, port=self.port, upstream=upstream, params=UWSGI_PARAMS))
        self.error_log = workdir / "error.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Nginx":
        command = [nginx_binary(), "-p", str(self.workdir), "-c", str(self.conf),
                   "-e", str(self.error_log)]
        with open(self.workdir / "nginx.out", "ab") as out:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=out, start_new_session=True)
        wait_until(self._accepting, START_TIMEOUT, f"nginx to listen on {self.port}")
        return self

    def _accepting(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"nginx exited with status {self.proc.returncode}:\n{self.logs()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def logs(self) -> str:
        parts = []
        for name in ("nginx.out", "error.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"--- {path} ---\n" + path.read_text(errors="replace")[-6000:])
        return "\n".join(parts)

    def errors(self) -> list[str]:
        """Lines of nginx's error log at level error or worse."""
        if not self.error_log.exists():
            return []
        return [line for line in self.error_log.read_text(errors="replace").splitlines()
                if any(f"[{level}]" in line for level in ("error", "crit", "alert", "emerg"))]

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGQUIT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def nginx(tmp_path):
    """Starts nginx instances in front of an upstream; stops them at the end
    and prints their logs (shown when the test failed)."""
    started: list[Nginx] = []

    def start(upstream: str) -> Nginx:
        instance = Nginx(tmp_path / f"nginx-{len(started)}", upstream)
        started.append(instance)
        return instance.start()

    yield start
    for instance in started:
        instance.stop()
        print(instance.logs())


@pytest.fixture
def short_dir():
    """A short folder for unix sockets (sun_path holds 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mercy-nginx-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def request(port: int, method: str, path: str, body=None, headers=None,
            chunked: bool = False):
    """One request on a new connection: (status, headers, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers or {},
                           encode_chunked=chunked)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def echoed(port: int, method: str, path: str, **kwargs) -> dict:
    status, _, body = request(port, method, path, **kwargs)
    assert status == 200, (status, body[:500])
    return json.loads(body)


# Headers that are about the hop, not the request: nginx speaks its own
# connection management and framing to the client.
HOP_HEADERS = {"HTTP_CONNECTION", "HTTP_TRANSFER_ENCODING", "HTTP_KEEP_ALIVE"}
# nginx passes every request header as HTTP_*, Content-Type and
# Content-Length too, besides the CONTENT_TYPE and CONTENT_LENGTH of
# uwsgi_params (uWSGI apps see the same); they must agree.
DUPLICATES = {"HTTP_CONTENT_TYPE": "CONTENT_TYPE", "HTTP_CONTENT_LENGTH": "CONTENT_LENGTH"}


def comparable(answer: dict, framing: bool = True) -> dict:
    """What must be the same whichever way the request came: method, path,
    query, the body, and the request headers (empty CONTENT_TYPE /
    CONTENT_LENGTH, which nginx always sends, count as absent)."""
    for duplicate, name in DUPLICATES.items():
        if duplicate in answer["headers"]:
            assert answer["headers"][duplicate] == answer["headers"].get(name), answer
    headers = {
        key: value for key, value in answer["headers"].items()
        if key not in HOP_HEADERS and key not in DUPLICATES and value != ""
        and (framing or key != "CONTENT_LENGTH")
    }
    return {
        "method": answer["method"],
        "path": answer["path"],
        "query": answer["query"],
        "scheme": answer["scheme"],
        "headers": headers,
        "body": base64.b64decode(answer["body_b64"]),
    }


def calls(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# The two ways a worker runs the app: every test runs in both.
MODES = {
    "threads": ["--threads", "4"],
    "gevent": ["--gevent", "100"],
}


def start_stack(mercy, nginx, tmp_path, short_dir, transport: str, mode: str, *extra):
    """mercy (echo app, --http and --socket, in `mode`) and nginx in front
    of it. Returns (mercy, nginx, calls file)."""
    calls_file = tmp_path / "calls.jsonl"
    if transport == "tcp":
        port = free_port()
        socket_arg, upstream = f"127.0.0.1:{port}", f"127.0.0.1:{port}"
    else:
        path = short_dir / "mercy.sock"
        socket_arg, upstream = str(path), f"unix:{path}"
    server = mercy("--wsgi-file", ECHO_APP, "--socket", socket_arg,
                   "--processes", "2", *MODES[mode], "--buffer-size", str(BUFFER_SIZE),
                   *extra, env={"COMPAT_CALLS": str(calls_file)})
    front = nginx(upstream)
    return server, front, calls_file


def both_ways(server, front, method, path, **kwargs) -> tuple[dict, dict]:
    """The same request through nginx and straight to mercy's --http."""
    via_nginx = echoed(front.port, method, path, **kwargs)
    direct = echoed(server.port, method, path, **kwargs)
    return via_nginx, direct


TRANSPORTS = ["tcp", "unix"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_get_with_query_through_nginx(mercy, nginx, tmp_path, short_dir, transport, mode):
    """GET with a query string, an encoded path and custom headers: the app
    sees the same method, path, query and headers through nginx as
    directly."""
    server, front, calls_file = start_stack(mercy, nginx, tmp_path, short_dir, transport, mode)
    headers = {"Host": "example.test", "X-Request-Id": "r-42", "Accept": "text/plain",
               "Cookie": "a=1; b=2", "User-Agent": "mercy-tests"}
    path = "/items/caf%C3%A9%20x?a=1&b=two%20words&c=%2F&empty="
    via_nginx, direct = both_ways(server, front, "GET", path, headers=headers)
    assert comparable(via_nginx) == comparable(direct)
    assert via_nginx["path"] == "/items/caf\u00c3\u00a9 x"
    assert via_nginx["query"] == "a=1&b=two%20words&c=%2F&empty="
    assert via_nginx["headers"]["HTTP_X_REQUEST_ID"] == "r-42"
    assert len([c for c in calls(calls_file) if c["event"] == "call"]) == 2
    server.assert_no_events("bad_request")
    assert front.errors() == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_post_body_through_nginx(mercy, nginx, tmp_path, short_dir, transport, mode):
    """POSTs with bodies (empty, small JSON, 300 KB of binary that nginx
    buffers to a temp file): the app reads the same bytes, with the same
    CONTENT_TYPE and CONTENT_LENGTH, through nginx as directly."""
    server, front, _ = start_stack(mercy, nginx, tmp_path, short_dir, transport, mode)
    bodies = [
        (b"", "text/plain"),
        (json.dumps({"name": "widget", "tags": ["a", "b"]}).encode(), "application/json"),
        (os.urandom(300 * 1024), "application/octet-stream"),
    ]
    for body, content_type in bodies:
        headers = {"Host": "example.test", "Content-Type": content_type}
        via_nginx, direct = both_ways(server, front, "POST", "/upload?kind=x",
                                      body=body, headers=headers)
        assert comparable(via_nginx) == comparable(direct)
        assert base64.b64decode(via_nginx["body_b64"]) == body
    assert front.errors() == []


@pytest.mark.parametrize("mode", MODES)
def test_http10_client_through_nginx(mercy, nginx, tmp_path, short_dir, mode):
    """An HTTP/1.0 client through nginx: the app sees SERVER_PROTOCOL
    HTTP/1.0, mercy's uwsgi response names HTTP/1.0 as uWSGI's does, and
    nginx reads it and answers 200 with the app's body, logging no
    error."""
    server, front, _ = start_stack(mercy, nginx, tmp_path, short_dir, "tcp", mode)
    with socket.create_connection(("127.0.0.1", front.port), timeout=REQUEST_TIMEOUT) as sock:
        sock.sendall(b"GET /old-client?v=1 HTTP/1.0\r\nHost: example.test\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.split(b"\r\n", 1)[0].split(b" ", 2)[1] == b"200", head
    answer = json.loads(body)
    assert (answer["protocol"], answer["path"], answer["query"]) == (
        "HTTP/1.0", "/old-client", "v=1")
    assert front.errors() == []
    server.assert_no_events("bad_request")


@pytest.mark.parametrize("mode", MODES)
def test_chunked_upload_through_nginx(mercy, nginx, tmp_path, short_dir, mode):
    """A chunked upload: nginx buffers it (uwsgi_request_buffering on) and
    passes it with a CONTENT_LENGTH; the app reads the same bytes as from
    the same chunked upload sent straight to mercy."""
    server, front, _ = start_stack(mercy, nginx, tmp_path, short_dir, "tcp", mode)
    pieces = [b"first piece\n", os.urandom(70000), b"", b"last piece"]
    body = b"".join(pieces)
    headers = {"Host": "example.test", "Content-Type": "application/octet-stream",
               "X-Upload": "chunked"}
    via_nginx = echoed(front.port, "PUT", "/chunked?x=1", body=iter(pieces),
                       headers=headers, chunked=True)
    direct = echoed(server.port, "PUT", "/chunked?x=1", body=iter(pieces),
                    headers=headers, chunked=True)
    assert comparable(via_nginx, framing=False) == comparable(direct, framing=False)
    assert base64.b64decode(via_nginx["body_b64"]) == body
    assert via_nginx["headers"].get("CONTENT_LENGTH") == str(len(body))
    assert front.errors() == []


@pytest.mark.parametrize("mode", MODES)
def test_large_headers_near_the_buffer_size(mercy, nginx, tmp_path, short_dir, mode):
    """Headers that bring the request close to --buffer-size (8192) reach
    the app unchanged both ways; headers beyond it are refused both ways
    (431 directly; through nginx mercy refuses the packet, logging why, and
    nginx answers 502), and the app is never called for them."""
    server, front, calls_file = start_stack(mercy, nginx, tmp_path, short_dir, "tcp", mode)
    big = {"Host": "example.test", "X-Big": "b" * 3500, "X-Other": "o" * 3000}
    via_nginx, direct = both_ways(server, front, "GET", "/big?q=1", headers=big)
    assert comparable(via_nginx) == comparable(direct)
    assert via_nginx["headers"]["HTTP_X_BIG"] == "b" * 3500
    assert via_nginx["headers"]["HTTP_X_OTHER"] == "o" * 3000
    called = len(calls(calls_file))

    too_big = {"Host": "example.test", "X-Big": "b" * 4200, "X-Other": "o" * 4200}
    status, _, _ = request(server.port, "GET", "/too-big", headers=too_big)
    assert status == 431
    status, _, _ = request(front.port, "GET", "/too-big", headers=too_big)
    assert status == 502
    server.wait_event("bad_request", count=2)
    [refused] = [r for r in server.events("bad_request") if "uwsgi packet" in r["message"]]
    assert "larger than --buffer-size (8192)" in refused["message"], refused
    assert len(calls(calls_file)) == called, "the app was called for a refused request"
    server.assert_no_events("respawned")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_graceful_reloads_behind_nginx_give_no_502(mercy, nginx, tmp_path, short_dir,
                                                   transport, mode):
    """Two clients loop through nginx (one keep-alive, one a new connection
    per request) while mercy gets SIGHUP 3 times: every request is answered
    200 (no 502 from nginx, no reset), every reload replaces every worker,
    and nginx logs no upstream error."""
    server, front, _ = start_stack(mercy, nginx, tmp_path, short_dir, transport,
                                   mode, "--disable-logging")
    generations = [set(server.worker_pids().values())]
    with client_loops(front.port, True, False, path="/loop") as loops:
        wait_answered(loops, what="a first answer through nginx")
        for number in range(1, RELOADS + 1):
            server.send_signal(signal.SIGHUP)
            server.wait_event("reload_done", count=number)
            pids = set(server.worker_pids().values())
            assert len(pids) == 2
            for earlier in generations:
                assert pids.isdisjoint(earlier)
            generations.append(pids)
        wait_answered(loops, generations[-1], "an answer from the last generation")

    assert front.errors() == [], "\n".join(front.errors()[:10])
    server.assert_no_events("reload_failed", "mercy_expired", "killed", "bad_request")
