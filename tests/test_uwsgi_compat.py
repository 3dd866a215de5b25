"""uWSGI compatibility: the uwsgi binary protocol over raw sockets, ini files
as uWSGI deployments write them, `UWSGI_*` environment variables, and apps
that `import uwsgi` / `uwsgidecorators`.

Every test starts the real binary; requests go over loopback TCP or unix
sockets, lifecycle changes are driven by real signals, and what is asserted
is events in mercy's JSON log and bytes on the wire.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import tempfile
from pathlib import Path

import pytest

from conftest import (APPS, REPO, REQUEST_TIMEOUT, free_port, mercy_bin, pid_running,
                      python_facts, wait_until)

CONFIGS = REPO / "tests" / "configs"
ECHO_APP = APPS / "uwsgi_echo.py"
API_APP = APPS / "uwsgi_api.py"

# The two ways a worker runs the app; tests of the protocol and of the
# uwsgi module run in both.
MODES = {
    "threads": ["--threads", "4"],
    "gevent": ["--gevent", "100"],
}


# --- the uwsgi protocol, client side --------------------------------------------


def encode_vars(pairs) -> bytes:
    """The variable block: u16le key length, key, u16le value length, value."""
    block = b""
    for key, value in pairs:
        key = key.encode("latin-1") if isinstance(key, str) else key
        value = value.encode("latin-1") if isinstance(value, str) else value
        block += struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
    return block


def uwsgi_packet(pairs, modifier1: int = 0, modifier2: int = 0,
                 size: int | None = None) -> bytes:
    """Header (modifier1, u16le size of the block, modifier2) and block;
    `size` overrides the size field to forge a lying header."""
    block = encode_vars(pairs)
    return struct.pack("<BHB", modifier1, len(block) if size is None else size,
                       modifier2) + block


def request_vars(method="GET", path="/", query="", body=b"", headers=(),
                 content_type=None, extra=(), content_length=None):
    """The variables nginx's uwsgi_params sends for a request."""
    uri = path + ("?" + query if query else "")
    if content_length is None:
        content_length = str(len(body)) if body else ""
    pairs = [
        ("QUERY_STRING", query),
        ("REQUEST_METHOD", method),
        ("CONTENT_TYPE", content_type or ""),
        ("CONTENT_LENGTH", content_length),
        ("REQUEST_URI", uri),
        ("PATH_INFO", path),
        ("DOCUMENT_ROOT", "/usr/share/nginx/html"),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("REMOTE_PORT", "40000"),
        ("SERVER_PORT", "80"),
        ("SERVER_NAME", "localhost"),
        ("HTTP_HOST", "localhost"),
    ]
    pairs += [("HTTP_" + name.upper().replace("-", "_"), value) for name, value in headers]
    pairs += list(extra)
    return pairs


def connect(address, timeout: float = REQUEST_TIMEOUT) -> socket.socket:
    """A TCP (host, port) or unix (path) connection."""
    if isinstance(address, (str, Path)):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(str(address))
        return sock
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_to_close(sock: socket.socket) -> tuple[bytes, bool]:
    """Reads until the server closes; returns (bytes, whether it was a
    reset). A timeout fails the test: the server must close."""
    chunks = []
    reset = False
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            reset = True
            break
        except socket.timeout:
            raise AssertionError(
                f"the server did not close the connection within {REQUEST_TIMEOUT:g}s; "
                f"received so far: {b''.join(chunks)!r}") from None
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks), reset


def exchange(address, *pieces: bytes) -> bytes:
    """Sends the pieces (in separate writes), then reads until close."""
    with connect(address) as sock:
        for piece in pieces:
            sock.sendall(piece)
        data, _ = read_to_close(sock)
    return data


def parse_response(raw: bytes):
    """(status, headers with lower-case names, body) of a close-delimited
    HTTP response."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    assert separator, f"no complete response head in {raw[:300]!r}"
    lines = head.split(b"\r\n")
    version, status, _ = lines[0].split(b" ", 2)
    assert version.startswith(b"HTTP/"), lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
    if "content-length" in headers:
        assert len(body) == int(headers["content-length"]), (headers, body[:200])
    return int(status), headers, body


def echo(address, pairs, body: bytes = b"", split: bool = False) -> dict:
    """One uwsgi request to the echo app; returns its JSON answer."""
    packet = uwsgi_packet(pairs)
    pieces = [packet[:3], packet[3:20], packet[20:], body] if split else [packet + body]
    status, _, payload = parse_response(exchange(address, *[p for p in pieces if p]))
    assert status == 200, payload
    return json.loads(payload)


def calls(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@pytest.fixture
def short_dir():
    """A short folder for unix sockets (sun_path holds 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="mercy-uwsgi-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def start_echo(mercy, tmp_path, *extra, **kwargs):
    """mercy with the echo app on --http and --socket 127.0.0.1:PORT;
    returns (server, uwsgi address, calls file)."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    calls_file = tmp_path / "calls.jsonl"
    env = dict(kwargs.pop("env", {}), COMPAT_CALLS=str(calls_file))
    server = mercy("--wsgi-file", ECHO_APP, "--socket", f"127.0.0.1:{port}", *extra,
                   env=env, **kwargs)
    return server, ("127.0.0.1", port), calls_file


# --- protocol -----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_uwsgi_round_trip(mercy, tmp_path, mode):
    """A POST with a query, headers and a body over the uwsgi socket reaches
    the app with exactly those variables and bytes; the answer is a plain
    HTTP response (no uwsgi header) and the connection is closed. The
    same packet written in pieces gives the same answer. In threads and in
    gevent mode."""
    server, address, calls_file = start_echo(mercy, tmp_path, *MODES[mode])
    body = bytes(range(256)) * 40  # binary, 10 KiB, larger than one read
    pairs = request_vars("POST", "/submit/é", "a=1&b=%20x", body,
                         headers=[("X-Trace", "abc"), ("Accept", "*/*")],
                         content_type="application/octet-stream")

    for split in (False, True):
        answer = echo(address, pairs, body, split=split)
        assert answer["method"] == "POST"
        assert answer["path"] == "/submit/é"
        assert answer["query"] == "a=1&b=%20x"
        assert answer["protocol"] == "HTTP/1.1"
        assert answer["scheme"] == "http"
        assert answer["headers"]["HTTP_X_TRACE"] == "abc"
        assert answer["headers"]["HTTP_ACCEPT"] == "*/*"
        assert answer["headers"]["CONTENT_TYPE"] == "application/octet-stream"
        assert answer["headers"]["CONTENT_LENGTH"] == str(len(body))
        assert base64.b64decode(answer["body_b64"]) == body
        assert answer["uwsgi_keys"] == []

    raw = exchange(address, uwsgi_packet(request_vars("GET", "/plain")))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n"), raw[:80]

    # HTTPS=on from the front end gives wsgi.url_scheme https.
    answer = echo(address, request_vars("GET", "/tls", extra=[("HTTPS", "on")]))
    assert answer["scheme"] == "https"

    server.wait_event("request", count=4)
    assert [c["path"] for c in calls(calls_file) if c["event"] == "call"] == [
        "/submit/é", "/submit/é", "/plain", "/tls"]
    server.assert_no_events("bad_request")


def test_uwsgi_socket_alone_without_http(mercy, tmp_path):
    """`--socket` instead of `--http` (as behind nginx): mercy starts and
    serves the uwsgi protocol."""
    port = free_port()
    server = mercy("--wsgi-file", ECHO_APP, "--socket", f"127.0.0.1:{port}", http=False)
    answer = echo(("127.0.0.1", port), request_vars("GET", "/only", "q=1"))
    assert (answer["path"], answer["query"]) == ("/only", "q=1")
    server.wait_event("request", path="/only")


@pytest.mark.parametrize("mode", MODES)
def test_response_names_the_request_protocol(mercy, tmp_path, mode):
    """The status line of a uwsgi response names the request's
    SERVER_PROTOCOL, as uWSGI's does: HTTP/1.0 for an HTTP/1.0 request (as
    nginx passes on an HTTP/1.0 client's), HTTP/1.1 for HTTP/1.1, HTTP/2.0
    for nginx's HTTP/2 clients, and HTTP/1.0 when the packet has none. A
    value that cannot stand in a status line (one carrying CR LF and a
    header) is refused as a bad request, the app not called. In threads
    and in gevent mode."""
    server, address, calls_file = start_echo(mercy, tmp_path, *MODES[mode])
    plain = [(key, value) for key, value in request_vars("GET", "/protocol")
             if key != "SERVER_PROTOCOL"]

    def status_line(*protocol) -> bytes:
        pairs = plain + [("SERVER_PROTOCOL", value) for value in protocol]
        raw = exchange(address, uwsgi_packet(pairs))
        parse_response(raw)
        return raw.split(b"\r\n", 1)[0]

    assert status_line("HTTP/1.0") == b"HTTP/1.0 200 OK"
    assert status_line("HTTP/1.1") == b"HTTP/1.1 200 OK"
    assert status_line("HTTP/2.0") == b"HTTP/2.0 200 OK"
    assert status_line() == b"HTTP/1.0 200 OK"
    assert len([c for c in calls(calls_file) if c["event"] == "call"]) == 4

    forged = plain + [("SERVER_PROTOCOL", "HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\nX:")]
    assert exchange(address, uwsgi_packet(forged)) == b""
    [refused] = server.wait_event("bad_request")
    assert "SERVER_PROTOCOL" in refused["message"], refused
    assert len([c for c in calls(calls_file) if c["event"] == "call"]) == 4


MALFORMED = {
    # name: (extra options, bytes sent, substring of the logged reason)
    "too_big_for_buffer_size": (
        ["--buffer-size", "4096"],
        struct.pack("<BHB", 0, 5000, 0) + encode_vars([("X", "y" * 4990)]),
        "--buffer-size",
    ),
    "truncated_vars": (
        [],
        # The block says 9 bytes, but its first key claims 200.
        struct.pack("<BHB", 0, 9, 0) + struct.pack("<H", 200) + b"abcdefg",
        "past the end",
    ),
    "empty_key": (
        [],
        uwsgi_packet([("REQUEST_METHOD", "GET"), ("", "value"), ("PATH_INFO", "/x")]),
        "empty name",
    ),
    "too_many_vars": (
        ["--max-vars", "20"],
        uwsgi_packet([(f"HTTP_X_{i}", str(i)) for i in range(21)]),
        "--max-vars",
    ),
    "http_on_uwsgi_socket": (
        [],
        b"GET /via-http HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "HTTP request",
    ),
    "modifier1_not_wsgi": (
        [],
        uwsgi_packet(request_vars("GET", "/psgi"), modifier1=5),
        "modifier1",
    ),
    "bad_content_length": (
        [],
        uwsgi_packet(request_vars("POST", "/cl", content_length="12x")) + b"x" * 12,
        "CONTENT_LENGTH",
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_packet_is_logged_and_closed(mercy, tmp_path, kind, mode):
    """Each kind of bad packet, in threads and in gevent mode: mercy logs
    `bad_request` with the reason, sends nothing, closes the connection,
    and never calls the app; the worker then serves a valid request as
    usual."""
    options, wire, reason = MALFORMED[kind]
    server, address, calls_file = start_echo(mercy, tmp_path, *options, *MODES[mode])

    with connect(address) as sock:
        sock.sendall(wire)
        answer, _ = read_to_close(sock)
    assert answer == b"", f"mercy answered a malformed packet: {answer[:200]!r}"

    [event] = server.wait_event("bad_request")
    assert reason in event["message"], event
    assert event["level"] in ("WARN", "WARNING", "ERROR"), event
    assert calls(calls_file) == [], "the app was called for a malformed packet"
    server.assert_no_events("request")

    good = echo(address, request_vars("GET", "/after"))
    assert good["path"] == "/after"
    assert [c["path"] for c in calls(calls_file) if c["event"] == "call"] == ["/after"]
    assert len(server.events("bad_request")) == 1
    server.assert_no_events("respawned")


def padded_vars(block_size: int) -> list:
    """request_vars plus one HTTP_X_PAD variable, so that the block is
    exactly `block_size` bytes."""
    pairs = request_vars("GET", "/pad")
    base = len(encode_vars(pairs)) + len(encode_vars([("HTTP_X_PAD", "")]))
    assert block_size >= base
    pairs.append(("HTTP_X_PAD", "p" * (block_size - base)))
    assert len(encode_vars(pairs)) == block_size
    return pairs


def test_buffer_size_is_the_largest_variable_block(mercy, tmp_path):
    """With the default --buffer-size (4096) a block of exactly 4096 bytes
    is served and one of 4097 is refused (bad_request, app not called);
    --buffer-size 65535, the most a 16-bit size can say, serves a block of
    65535 bytes."""
    server, address, calls_file = start_echo(mercy, tmp_path)
    answer = echo(address, padded_vars(4096))
    assert len(answer["headers"]["HTTP_X_PAD"]) > 3000
    assert exchange(address, uwsgi_packet(padded_vars(4097))) == b""
    [refused] = server.wait_event("bad_request")
    assert "4097" in refused["message"] and "4096" in refused["message"], refused
    assert len([c for c in calls(calls_file) if c["event"] == "call"]) == 1

    server, address, _ = start_echo(mercy, tmp_path / "big", "--buffer-size", "65535")
    answer = echo(address, padded_vars(65535))
    assert answer["path"] == "/pad"
    server.assert_no_events("bad_request")


def test_buffer_size_over_16_bits_with_socket_is_refused(mercy, tmp_path):
    """--buffer-size 65536 with --socket: a uwsgi packet cannot say such a
    size, so mercy refuses the value at start (exit 1), never wraps it."""
    server = mercy("--wsgi-file", ECHO_APP, "--socket", f"127.0.0.1:{free_port()}",
                   "--buffer-size", "65536", ready=0)
    assert server.wait_exit() == 1
    assert "--buffer-size" in server.text() and "65535" in server.text(), server.tail()


def test_packet_cut_short_by_the_client_is_logged(mercy, tmp_path):
    """A client that sends half a packet and closes: the app is not
    called and the cut packet is logged as a bad request."""
    server, address, calls_file = start_echo(mercy, tmp_path)
    packet = uwsgi_packet(request_vars("GET", "/cut"))
    with connect(address) as sock:
        sock.sendall(packet[: len(packet) // 2])
        sock.shutdown(socket.SHUT_WR)
        answer, _ = read_to_close(sock)
    assert answer == b""
    echo(address, request_vars("GET", "/after-cut"))
    assert [c["path"] for c in calls(calls_file) if c["event"] == "call"] == ["/after-cut"]
    server.wait_event("bad_request", timeout=10)


@pytest.mark.parametrize("mode", MODES)
def test_body_that_is_a_uwsgi_packet_is_only_a_body(mercy, tmp_path, mode):
    """A POST whose body is itself a valid uwsgi packet carrying magic
    variables, followed on the same connection by one more whole packet,
    in threads and in gevent mode: exactly one request reaches the app,
    with that body byte for byte; the body is never parsed as a packet, the
    trailing packet is never served, and no UWSGI_* variable is
    reported."""
    server, address, calls_file = start_echo(mercy, tmp_path, *MODES[mode])
    inner = uwsgi_packet(request_vars(
        "GET", "/smuggled",
        extra=[("UWSGI_SCRIPT", "evil:app"), ("UWSGI_CHDIR", "/"),
               ("UWSGI_FILE", "/tmp/evil.py"), ("UWSGI_SETENV", "X=1")]))
    outer = uwsgi_packet(request_vars("POST", "/outer", body=inner,
                                      content_type="application/octet-stream"))
    trailing = uwsgi_packet(request_vars("GET", "/trailing"))

    with connect(address) as sock:
        sock.sendall(outer + inner + trailing)
        raw, _ = read_to_close(sock)
    status, _, payload = parse_response(raw)
    assert status == 200
    answer = json.loads(payload)
    assert answer["path"] == "/outer"
    assert base64.b64decode(answer["body_b64"]) == inner
    assert answer["uwsgi_keys"] == []
    assert payload.count(b'"method"') == 1, "more than one response on the connection"

    server.wait_event("request", path="/outer")
    echo(address, request_vars("GET", "/sentinel"))
    server.wait_event("request", path="/sentinel")
    assert [c["path"] for c in calls(calls_file) if c["event"] == "call"] == [
        "/outer", "/sentinel"]
    assert [r.get("path") for r in server.events("request")] == ["/outer", "/sentinel"]
    server.assert_no_events("bad_request")
    assert "UWSGI_" not in server.text(), "a body byte was read as a variable"


def test_duplicate_variables_frame_the_body_the_app_sees(mercy, tmp_path):
    """A packet that names CONTENT_LENGTH (and REQUEST_METHOD) twice: mercy
    must either refuse it (bad_request, app not called) or frame the body
    with the same value the app finds in its environ, and log the method
    the app saw. uWSGI takes the last value for both."""
    server, address, calls_file = start_echo(mercy, tmp_path)
    pairs = request_vars("GET", "/dup", content_length="") + [
        ("CONTENT_LENGTH", "5"), ("REQUEST_METHOD", "POST")]
    with connect(address) as sock:
        sock.sendall(uwsgi_packet(pairs) + b"hello")
        raw, _ = read_to_close(sock)
    if raw == b"":
        server.wait_event("bad_request")
        assert calls(calls_file) == []
        return
    status, _, payload = parse_response(raw)
    answer = json.loads(payload)
    body = base64.b64decode(answer["body_b64"])
    assert answer["headers"]["CONTENT_LENGTH"] == str(len(body)), (
        f"the app sees CONTENT_LENGTH {answer['headers']['CONTENT_LENGTH']!r} "
        f"but wsgi.input gave {body!r}")
    [logged] = server.wait_event("request", path="/dup")
    assert logged["method"] == answer["method"], (logged, answer["method"])


def test_magic_uwsgi_variables_are_ignored_and_logged_once(mercy, tmp_path):
    """UWSGI_SCRIPT, UWSGI_CHDIR and UWSGI_SETENV sent by the front end on
    three requests: the app (still the configured one) never sees them,
    and each name is logged once."""
    server, address, calls_file = start_echo(mercy, tmp_path)
    magic = [("UWSGI_SCRIPT", "other_app:application"), ("UWSGI_CHDIR", "/"),
             ("UWSGI_SETENV", "EVIL=1")]
    for number in range(3):
        answer = echo(address, request_vars("GET", f"/magic/{number}", extra=magic))
        assert answer["path"] == f"/magic/{number}"
        assert answer["uwsgi_keys"] == []
    server.wait_event("request", count=3)
    for name, _ in magic:
        logged = [r for r in server.records()
                  if r.get("variable") == name or name in r.get("message", "")]
        assert len(logged) == 1, (name, logged)
        assert "ignor" in logged[0]["message"], logged[0]
    assert len([c for c in calls(calls_file) if c["event"] == "call"]) == 3


@pytest.mark.parametrize("mode_option, expected_mode", [
    (["--chmod-socket", "660"], 0o660),
    (["--chmod-socket"], 0o666),
], ids=["660", "flag-alone-666"])
def test_chmod_socket_and_socket_removed_at_exit(mercy, tmp_path, short_dir,
                                                mode_option, expected_mode):
    """A unix uwsgi socket gets the --chmod-socket mode (660; the flag alone
    means 666), serves requests, and the socket file is removed when the
    instance stops after SIGTERM."""
    path = short_dir / "app.sock"
    server = mercy("--wsgi-file", ECHO_APP, "--socket", path, *mode_option, http=False)
    info = os.stat(path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == expected_mode, oct(stat.S_IMODE(info.st_mode))

    answer = echo(path, request_vars("POST", "/unix", body=b"over a unix socket"),
                  body=b"over a unix socket")
    assert base64.b64decode(answer["body_b64"]) == b"over a unix socket"

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists(), "the unix socket file was left behind"


def test_chown_socket(mercy, short_dir):
    """--chown-socket nobody:nogroup gives the unix socket that owner (needs
    root, as changing a file's owner does)."""
    if os.geteuid() != 0:
        pytest.skip("changing a socket's owner to another user needs root")
    import grp
    import pwd
    user, group = pwd.getpwnam("nobody"), grp.getgrnam("nogroup")
    path = short_dir / "owned.sock"
    mercy("--wsgi-file", ECHO_APP, "--socket", path, "--chown-socket", "nobody:nogroup",
          http=False)
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (user.pw_uid, group.gr_gid)
    assert echo(path, request_vars("GET", "/owned"))["path"] == "/owned"


# --- the uwsgi module ------------------------------------------------------------------


def hook_records(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def hooks_of(path: Path, hook: str) -> dict[int, int]:
    """pid -> how many times `hook` ran in it."""
    counts: dict[int, int] = {}
    for record in hook_records(path):
        if record["hook"] == hook:
            counts[record["pid"]] = counts.get(record["pid"], 0) + 1
    return counts


def mercy_version() -> str:
    """The version `mercy --version` prints (its first line: mercy X.Y.Z)."""
    output = subprocess.run([str(mercy_bin()), "--version"], capture_output=True,
                            text=True, check=True, timeout=REQUEST_TIMEOUT).stdout
    name, version = output.splitlines()[0].split()
    assert name == "mercy", output
    return version


API_MODES = {
    "threads": ("threads", "2"),
    "gevent": ("gevent", "10"),
}


@pytest.mark.parametrize("mode", API_MODES)
def test_uwsgi_module_api(mercy, tmp_path, mode):
    """An app written for uWSGI runs unchanged, in threads and in gevent
    mode: worker_id, numproc, masterpid (the master's pid), opt (bytes
    values, True for flags, a list for a repeated option), version (bytes:
    mercy's version, then -mercy) and version_info, and uwsgi.cache_get
    raising an AttributeError that names it."""
    option, value = API_MODES[mode]
    extra_paths = [tmp_path / "lib1", tmp_path / "lib2"]
    for path in extra_paths:
        path.mkdir()
    server = mercy("--wsgi-file", API_APP, "--processes", "2", f"--{option}", value,
                   "--pythonpath", extra_paths[0], "--pythonpath", extra_paths[1],
                   "--max-requests", "1000", "--disable-logging")
    workers = server.worker_pids()
    assert sorted(workers) == [1, 2]

    seen = {}
    for _ in range(40):
        info = server.get("/info").json()
        seen[info["worker_id"]] = info
        if len(seen) == 2:
            break
    for worker_id, info in seen.items():
        assert workers[worker_id] == info["pid"]
        assert info["masterpid"] == server.pid
        assert info["numproc"] == 2
    info = next(iter(seen.values()))
    opt = info["opt"]
    assert opt["processes"] == {"bytes": "2"}
    assert opt[option] == {"bytes": value}
    assert info["gevent"] is (mode == "gevent")
    assert opt["max-requests"] == {"bytes": "1000"}
    assert opt["wsgi-file"] == {"bytes": str(API_APP)}
    assert opt["disable-logging"] == {"true": True}
    assert opt["pythonpath"] == {"list": [{"bytes": str(p)} for p in extra_paths]}
    assert info["opt_key_types"] == ["str"]
    assert info["version_type"] == "bytes"
    version = mercy_version()
    assert info["version"] == f"{version}-mercy"
    assert info["version_info"] == [int(part) for part in version.split(".")[:3]] + ["mercy", 0]
    assert info["has_cache_get"] is False
    assert "cache_get" in info["cache_get_error"]
    assert "mercy" in info["cache_get_error"]


@pytest.mark.parametrize("mode", API_MODES)
def test_postfork_and_atexit_hooks(mercy, tmp_path, mode):
    """uwsgi.post_fork_hook (assigned directly) and @postfork run once in
    every worker after the app is imported, also in a worker respawned
    after SIGKILL and in every worker of a reload; uwsgi.atexit runs once
    in every retired worker (reload, then shutdown) and never in the
    killed one. In threads and in gevent mode."""
    option, value = API_MODES[mode]
    record = tmp_path / "hooks.jsonl"
    server = mercy("--wsgi-file", API_APP, "--processes", "2", f"--{option}", value,
                   env={"COMPAT_RECORD": str(record)})
    assert server.get("/info").json()["gevent"] is (mode == "gevent")
    first = server.worker_pids()
    assert sorted(first) == [1, 2]
    wait_until(lambda: set(hooks_of(record, "postfork")) >= set(first.values()), 60,
               "postfork in both workers")

    # SIGKILL worker 1: its replacement runs the hooks once as well.
    killed = first[1]
    os.kill(killed, signal.SIGKILL)
    [respawn] = server.wait_event("respawned")
    respawned = int(respawn["worker.pid"])
    server.wait_event("ready", worker_pid=respawned)
    wait_until(lambda: respawned in hooks_of(record, "postfork"), 60,
               "postfork in the respawned worker")
    wait_until(lambda: not pid_running(killed), 60, "the killed worker to be gone")

    # A reload retires the two serving workers; the new ones run the hooks.
    before_reload = set(server.worker_pids().values())
    assert before_reload == {first[2], respawned}
    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    for pid in before_reload:
        server.wait_event("retired", worker_pid=pid)
    second = set(server.worker_pids().values())
    assert len(second) == 2 and second.isdisjoint(before_reload)
    wait_until(lambda: set(hooks_of(record, "postfork")) >= second, 60,
               "postfork in the new generation")

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0

    all_workers = set(first.values()) | {respawned} | second
    imported = hooks_of(record, "import")
    assert set(imported) == all_workers
    for hook in ("postfork", "direct"):
        counts = hooks_of(record, hook)
        assert counts == {pid: 1 for pid in all_workers}, (hook, counts)
    atexit = hooks_of(record, "atexit")
    assert atexit == {pid: 1 for pid in all_workers - {killed}}, atexit

    # In each worker: import, then the post-fork hooks, atexit last.
    for pid in all_workers:
        order = [r["hook"] for r in hook_records(record) if r["pid"] == pid]
        assert order[0] == "import", order
        assert sorted(order[1:3]) == ["direct", "postfork"], order
        if pid != killed:
            assert order[3:] == ["atexit"], order
    for entry in hook_records(record):
        if entry["hook"] != "import":
            assert entry["worker_id"] in (1, 2), entry


@pytest.mark.parametrize("mode", API_MODES)
def test_setprocname_and_accepting(mercy, mode):
    """uwsgi.setprocname(NAME) names the worker process as the kernel shows
    it (/proc/PID/comm, which `ps -o comm` and `top` read; the kernel keeps
    15 bytes); uwsgi.accepting() and uwsgi.accepting(True) return None, as
    in uWSGI, and the worker stays ready: it serves on and the stats
    document shows it accepting. In threads and in gevent mode."""
    option, value = API_MODES[mode]
    stats_port = free_port()
    server = mercy("--wsgi-file", API_APP, f"--{option}", value,
                   "--stats", f"127.0.0.1:{stats_port}")
    [pid] = server.worker_pids().values()
    before = Path(f"/proc/{pid}/comm").read_text().strip()
    assert before != "api-worker", before

    answer = server.get("/setprocname?api-worker").json()
    assert (answer["pid"], answer["result"]) == (pid, "None")
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "api-worker"
    answer = server.get("/setprocname?a-name-longer-than-fifteen-bytes").json()
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "a-name-longer-t"

    answer = server.get("/accepting").json()
    assert answer == {"pid": pid, "results": ["None", "None"]}
    assert server.get("/").body == b"hello"
    with socket.create_connection(("127.0.0.1", stats_port), timeout=REQUEST_TIMEOUT) as sock:
        document = json.loads(read_to_close(sock)[0])
    [worker] = document["workers"]
    assert (worker["pid"], worker["accepting"]) == (pid, 1), worker


def test_uwsgi_reload_from_the_app(mercy, tmp_path):
    """uwsgi.reload() called by the app is a graceful reload."""
    server = mercy("--wsgi-file", API_APP, "--processes", "1",
                   env={"COMPAT_RECORD": str(tmp_path / "hooks.jsonl")})
    old = set(server.worker_pids().values())
    assert server.get("/reload").status == 200
    server.wait_event("reload_done")
    for pid in old:
        server.wait_event("retired", worker_pid=pid)
    assert set(server.worker_pids().values()).isdisjoint(old)
    server.assert_no_events("reload_failed", "killed")


# --- ini files, placeholders, environment ---------------------------------------------


def info_until_workers(server, count: int, address=None) -> dict[int, dict]:
    """GET /info until `count` distinct worker ids answered (at most 60
    requests); returns worker id -> answer."""
    seen: dict[int, dict] = {}
    for _ in range(60):
        if address is None:
            info = server.get("/info").json()
        else:
            info = uwsgi_info(address)
        seen[info["worker_id"]] = info
        if len(seen) >= count:
            break
    return seen


def uwsgi_info(address) -> dict:
    status, _, payload = parse_response(
        exchange(address, uwsgi_packet(request_vars("GET", "/info"))))
    assert status == 200, payload
    return json.loads(payload)


def test_plain_ini(mercy):
    """tests/configs/plain.ini, as a uWSGI deployment writes it (master,
    chdir + module, processes 2, threads 4, flags that mercy has by
    default, env, `disable-logging = false`): mercy serves with 2 workers
    of 4 threads, logs each request, and notes the no-op options."""
    port = free_port()
    server = mercy(CONFIGS / "plain.ini", "--socket", f"127.0.0.1:{port}", ready=2)
    assert sorted(server.worker_pids()) == [1, 2]
    info = server.get("/info").json()
    assert info["numproc"] == 2
    assert info["multithread"] is True
    assert info["greeting"] == "plain"
    assert info["masterpid"] == server.pid
    assert uwsgi_info(("127.0.0.1", port))["greeting"] == "plain"
    server.wait_event("request", count=2)  # disable-logging = false: logging stays on
    notes = [r["message"] for r in server.records() if "has no effect in mercy" in r.get("message", "")]
    assert any("--master" in note for note in notes), notes
    server.assert_no_events("unsupported_option")


def test_plain_ini_options_are_in_uwsgi_opt(mercy):
    """uWSGI puts every option of the ini file in uwsgi.opt (apps read their
    settings from it); mercy's uwsgi.opt must hold the ini's options, not
    only the command line's."""
    server = mercy(CONFIGS / "plain.ini", ready=2)
    opt = server.get("/info").json()["opt"]
    assert opt.get("processes") == {"bytes": "2"}, opt
    assert opt.get("threads") == {"bytes": "4"}, opt
    assert opt.get("module") == {"bytes": "uwsgi_api:application"}, opt
    assert opt.get("env") == {"list": [{"bytes": "GREETING=plain"},
                                       {"bytes": "CONFIG_DIR=none"}]}, opt


def test_placeholders_ini(mercy):
    """tests/configs/placeholders.ini: unknown keys as placeholders,
    %(option set earlier), %d, %n, %%, $(ENV) for the socket port, and
    --set-ph for the number of workers and the greeting."""
    port = free_port()
    server = mercy(CONFIGS / "placeholders.ini",
                   "--set-ph", "workers=3", "--set-ph", "greeting=hello",
                   env={"COMPAT_UWSGI_PORT": str(port)}, ready=3)
    assert sorted(server.worker_pids()) == [1, 2, 3]
    seen = info_until_workers(server, 3, address=("127.0.0.1", port))
    for info in seen.values():
        assert info["numproc"] == 3
        assert info["greeting"] == "hello from placeholders at 100%"
        assert info["config_dir"] == str(CONFIGS) + "/"
        assert info["multithread"] is True
    server.assert_no_events("unsupported_option")


def test_placeholders_ini_is_refused_without_its_placeholders(mercy):
    """Without --set-ph workers=..., %(workers) names nothing and stays as
    it is (as in uWSGI), so `processes = %(workers)` is not a number:
    mercy exits 1 with an error naming the value and the option."""
    server = mercy(CONFIGS / "placeholders.ini", env={"COMPAT_UWSGI_PORT": str(free_port())},
                   ready=0)
    assert server.wait_exit() == 1
    text = server.text()
    assert "%(workers)" in text and "--processes" in text, server.tail()
    server.assert_no_events("spawned")


UNSUPPORTED_INI_OPTIONS = (
    "master-as-root", "daemonize", "static-map", "cheaper", "cheaper-algo",
    "cheaper-busyness-max", "offload-threads", "py-tracebacker", "route",
    "log-x-forwarded-for",
)


def test_unsupported_ini_warns_and_serves(mercy):
    """tests/configs/unsupported.ini (master-as-root, daemonize, static-map, the
    cheaper family, offload-threads, routes...): without --strict mercy
    logs one `unsupported_option` warning per option (static-map is there
    twice), with what to do instead, notes the no-op ones, and serves with
    the configured processes."""
    server = mercy(CONFIGS / "unsupported.ini", ready=2)
    warnings = {r["option"]: r for r in server.events("unsupported_option")}
    assert sorted(warnings) == sorted(UNSUPPORTED_INI_OPTIONS)
    for option in UNSUPPORTED_INI_OPTIONS:
        assert option in warnings, (option, sorted(warnings))
        message = warnings[option]["message"]
        assert message.startswith(f"option --{option} is not supported by mercy and is ignored: "), message
        assert len(message.split("ignored: ", 1)[1]) > 5, message
    assert "use --uid and --gid" in warnings["master-as-root"]["message"]
    assert "run mercy under a supervisor" in warnings["daemonize"]["message"]
    assert len(server.events("unsupported_option")) == len(warnings)
    notes = [r["message"] for r in server.records() if "has no effect in mercy" in r.get("message", "")]
    for option in ("master", "vacuum", "enable-threads", "harakiri-verbose"):
        assert any(f"option --{option} has no effect in mercy: " in n for n in notes), (option, notes)
    assert sorted(server.worker_pids()) == [1, 2]
    assert server.get("/info").json()["numproc"] == 2


def test_unsupported_ini_under_strict_fails(mercy):
    """The same file under --strict: exit status 1, and the message names
    the first unsupported option with what to do instead; no worker starts."""
    server = mercy(CONFIGS / "unsupported.ini", "--strict", ready=0)
    assert server.wait_exit() == 1
    text = server.text()
    assert "configuration error: --strict: option --master-as-root is not supported by mercy (" in text, text
    server.assert_no_events("spawned")


def test_logformat_with_uwsgi_variables_is_not_a_placeholder_error(mercy, tmp_path):
    """uWSGI leaves an unknown %(name) unexpanded, so real ini files carry
    `logformat = %(addr) ... %(status)` (uWSGI's request variables). mercy
    classifies logformat as unsupported: it must warn and start, not refuse
    the file because %(addr) names no placeholder."""
    ini = tmp_path / "logformat.ini"
    ini.write_text(
        "[uwsgi]\n"
        f"wsgi-file = {API_APP}\n"
        'logformat = %(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size)\n'
    )
    server = mercy(ini, ready=0)
    server.wait_event("ready", timeout=60)
    [warning] = server.events("unsupported_option")
    assert warning["option"] == "logformat"


def test_uwsgi_processes_environment_variable(mercy):
    """UWSGI_PROCESSES=3 means --processes 3 (and MERCY_THREADS=2 means
    --threads 2)."""
    server = mercy("--wsgi-file", API_APP,
                   env={"UWSGI_PROCESSES": "3", "MERCY_THREADS": "2"}, ready=3)
    assert sorted(server.worker_pids()) == [1, 2, 3]
    seen = info_until_workers(server, 3)
    for info in seen.values():
        assert info["numproc"] == 3
        assert info["multithread"] is True


@pytest.mark.parametrize("variable", ["UWSGI_INI", "MERCY_INI"])
def test_ini_file_from_the_environment(mercy, tmp_path, variable):
    """UWSGI_INI=path (or MERCY_INI) reads that ini file, as uWSGI does. The
    command line overrides it (`--processes 3` wins over `processes = 2`);
    the file is read after the other variables, so its `threads = 4` wins
    over UWSGI_THREADS=2, and uwsgi.opt shows both in that order."""
    ini = tmp_path / "from-env.ini"
    ini.write_text("[uwsgi]\n"
                   f"wsgi-file = {API_APP}\n"
                   "processes = 2\n"
                   "threads = 4\n"
                   "env = GREETING=from the environment's ini\n")
    server = mercy("--processes", "3",
                   env={variable: str(ini), "UWSGI_THREADS": "2"}, ready=3)
    assert sorted(server.worker_pids()) == [1, 2, 3]
    seen = info_until_workers(server, 3)
    for info in seen.values():
        assert info["numproc"] == 3
        assert info["greeting"] == "from the environment's ini"
        assert info["multithread"] is True
    assert server.get("/info").json()["opt"]["threads"] == {"list": [{"bytes": "2"},
                                                                    {"bytes": "4"}]}


def test_command_line_overrides_the_environment(mercy):
    """UWSGI_PROCESSES=3 with --processes 1 on the command line: one worker,
    as in uWSGI, where the command line is read after the environment."""
    server = mercy("--wsgi-file", API_APP, "--processes", "1",
                   env={"UWSGI_PROCESSES": "3"}, ready=1)
    assert server.get("/info").json()["numproc"] == 1
    assert sorted(server.worker_pids()) == [1]


@pytest.mark.parametrize("variable, value", [
    ("UWSGI_PROCESSES", "four"),
    ("MERCY_HARAKIRI", "-5"),
    ("UWSGI_LISTEN", "lots"),
])
def test_bad_environment_value_names_the_variable(mercy, variable, value):
    """A value the option cannot take, set by an environment variable, stops
    mercy at start (exit status 1) with a message naming the variable and
    its value; no worker starts."""
    server = mercy("--wsgi-file", API_APP, env={variable: value}, ready=0)
    assert server.wait_exit() == 1
    assert f"configuration error: environment variable {variable}={value}: " in server.text(), \
        server.tail()
    server.assert_no_events("spawned")


@pytest.mark.parametrize("source, option, value, allowed", [
    ("args", "--processes", "99999999999", "between 1 and 4096"),
    ("args", "--harakiri", "1e20", "between 0 and 31536000 seconds"),
    ("args", "--max-worker-lifetime", "18446744073709551616", "between 0 and 31536000 seconds"),
    ("args", "--reload-on-rss", "17592186044416", "between 0 and 16777216 MB"),
    ("env", "--worker-reload-mercy", "99999999999999999999", "between 1 and 31536000 seconds"),
    ("ini", "--max-requests", "18446744073709551615", "between 0 and 1099511627776"),
])
def test_numbers_too_large_are_refused_with_their_range(mercy, tmp_path, source, option,
                                                       value, allowed):
    """A number too large for its option (or for any integer), from the
    command line, a UWSGI_* variable or an ini file, stops mercy at start
    with exit status 1 and a config_error naming the option, its allowed
    range and the value; no worker starts, nothing wraps or panics."""
    name = option[2:]
    args, env = ["--wsgi-file", API_APP], None
    if source == "args":
        args += [option, value]
    elif source == "env":
        env = {"UWSGI_" + name.upper().replace("-", "_"): value}
    else:
        ini = tmp_path / "large.ini"
        ini.write_text(f"[uwsgi]\n{name} = {value}\n")
        args.append(ini)
    server = mercy(*args, env=env, ready=0)
    assert server.wait_exit() == 1
    text = server.text()
    assert f"{option} must be a whole number {allowed}" in text, server.tail()
    assert value in text and "panicked" not in text, server.tail()
    if source == "args":
        [error] = server.events("config_error")
        assert error["message"].startswith(f"configuration error: {option} must be"), error
    server.assert_no_events("spawned")


@pytest.mark.parametrize("text, args, expected", [
    ("[uwsgi]\n; workers\nmaster = true\n\nprocesses = many\n", [],
     "line 5: processes = many: --processes must be a whole number between 1 and 4096, "
     "got \"many\""),
    ("[uwsgi]\nthreads = 2\n[mercy]\nthreads = 3\nthreads = 1e9\n", [],
     "line 5: threads = 1e9: --threads must be a whole number between 1 and 4096"),
    ("[uwsgi]\nmaster = true\nmy-setting = 1\n", ["--strict"],
     "line 3: unknown option \"my-setting\""),
    ("[uwsgi]\nset-ph = no-equals-sign\n", [],
     "line 2: set-ph = no-equals-sign: a placeholder is NAME=VALUE"),
    ("[uwsgi]\nmaster = true\n[broken\n", [], "line 3: [broken: a section header ends with ]"),
], ids=["not-a-number", "out-of-range", "strict-unknown-key", "placeholder", "syntax"])
def test_ini_errors_name_the_file_and_line(mercy, tmp_path, text, args, expected):
    """A bad value, an unknown key under --strict, a placeholder without
    `=` or a syntax error in an ini file stops mercy at start (exit status
    1) with a message naming the file and the line."""
    ini = tmp_path / "site.ini"
    ini.write_text(text)
    server = mercy("--wsgi-file", API_APP, ini, *args, ready=0)
    assert server.wait_exit() == 1
    assert f"configuration error: ini file {ini}, {expected}" in server.text(), server.tail()
    server.assert_no_events("spawned")


def proc_ids(pid: int) -> tuple[str, str]:
    """The real, effective, saved and filesystem uid and gid of a process."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    ids = {line.split(":")[0]: line.split(":", 1)[1].split() for line in status
           if line.startswith(("Uid:", "Gid:"))}
    return " ".join(ids["Uid"]), " ".join(ids["Gid"])


def readable_by_nobody(path: Path) -> bool:
    """Whether every folder above `path` lets others in (the embedded
    Python's home under /root does not on some machines)."""
    return all(parent.stat().st_mode & 0o001 for parent in path.resolve().parents)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs a start as root")
@pytest.mark.parametrize("args", [["--gid", "nogroup"], ["--uid", "nobody", "--gid", "nogroup"]],
                         ids=["gid", "uid-and-gid"])
def test_uid_and_gid_drop_privileges_after_binding(mercy, args):
    """Started as root with --gid nogroup (and --uid nobody) and a unix
    socket in a folder only root can write: mercy binds first (the socket
    is root's), then the master and every worker run as that group (and
    user), all four ids, with no other group; requests are served."""
    import grp
    import pwd
    uid = pwd.getpwnam("nobody").pw_uid if "--uid" in args else 0
    gid = grp.getgrnam("nogroup").gr_gid
    python_home = Path(python_facts()["prefix"])
    if uid and not readable_by_nobody(python_home / "lib"):
        pytest.skip(f"nobody cannot read the embedded Python under {python_home}")
    private = Path(tempfile.mkdtemp(prefix="mercy-uid-"))
    private.chmod(0o755)
    socket_path = private / "app.sock"
    try:
        server = mercy("--wsgi-file", API_APP, "--processes", "2", "--socket", socket_path,
                       *args, ready=2)
        assert server.get("/").body == b"hello"
        expected = (" ".join([str(uid)] * 4), " ".join([str(gid)] * 4))
        for pid in [server.pid, *server.worker_pids().values()]:
            assert proc_ids(pid) == expected, pid
            groups = [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                      if line.startswith("Groups:")]
            assert groups[0].split()[1:] == [str(gid)], groups
        assert socket_path.stat().st_uid == 0
        [record] = [r for r in server.records() if r["message"].startswith("running as uid")]
        assert record["message"] == f"running as uid {uid} gid {gid}"
    finally:
        shutil.rmtree(private, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs a start as root")
def test_files_the_dropped_user_cannot_remove_are_named_at_exit(mercy):
    """Started as root with --uid nobody, a unix socket and a pidfile in a
    folder only root can write: at exit the master (now nobody) cannot
    remove them; each is named in a warning saying permission was denied
    and why, and mercy still exits 0."""
    import pwd
    uid = pwd.getpwnam("nobody").pw_uid
    python_home = Path(python_facts()["prefix"])
    if not readable_by_nobody(python_home / "lib"):
        pytest.skip(f"nobody cannot read the embedded Python under {python_home}")
    private = Path(tempfile.mkdtemp(prefix="mercy-uid-"))
    private.chmod(0o755)
    socket_path, pidfile = private / "app.sock", private / "mercy.pid"
    try:
        server = mercy("--wsgi-file", API_APP, "--socket", socket_path, "--pidfile", pidfile,
                       "--vacuum", "--uid", str(uid), ready=1)
        assert server.get("/").body == b"hello"
        server.send_signal(signal.SIGTERM)
        assert server.wait_exit() == 0
        warnings = [r["message"] for r in server.records() if r.get("level") == "WARN"]
        for path in (socket_path, pidfile):
            assert path.exists()
            [warning] = [w for w in warnings if w.startswith(f"cannot remove {path} at exit: ")]
            assert "Permission denied" in warning and "--uid" in warning, warning
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_a_pidfile_that_cannot_be_removed_is_named_at_exit(mercy, tmp_path):
    """A --pidfile path that became a folder with a file in it while mercy
    ran cannot be removed at exit: a warning names the path and the error,
    and mercy still exits 0 (the same warning names files that --uid left
    the master no right to remove)."""
    pidfile = tmp_path / "mercy.pid"
    server = mercy("--wsgi-file", API_APP, "--pidfile", pidfile, "--vacuum")
    assert pidfile.read_text() == f"{server.pid}\n"
    pidfile.unlink()
    pidfile.mkdir()
    (pidfile / "kept").write_text("kept")
    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    warnings = [r["message"] for r in server.records()
                if r["message"].startswith(f"cannot remove {pidfile} at exit: ")]
    assert len(warnings) == 1 and "remove it by hand" in warnings[0], server.tail()
    assert (pidfile / "kept").read_text() == "kept"


def test_unknown_uid_is_refused(mercy):
    """--uid naming no user stops mercy at start with a message naming the
    option and the value."""
    server = mercy("--wsgi-file", API_APP, "--uid", "no-such-user-here", ready=0)
    assert server.wait_exit() == 1
    assert "--uid must be an existing user (--uid) or group (--gid), by name or number, " \
        "got no-such-user-here (no such user)" in server.text(), server.tail()
    server.assert_no_events("spawned")


def test_options_mercy_has_no_use_for_say_what_to_do(mercy):
    """--reaper, --binary-path and --mode are harmless: mercy starts and says
    why each has no effect. --profiler, --backtrace-depth, --use-abort,
    --min-worker-lifetime, --umask and --ssl-session-use-cache are named
    with what to do instead; mercy still serves."""
    server = mercy("--wsgi-file", API_APP, "--reaper", "--binary-path", "/usr/bin/uwsgi",
                   "--mode", "production", "--profiler", "pycall", "--backtrace-depth", "32",
                   "--use-abort", "--min-worker-lifetime", "60", "--umask", "022",
                   "--ssl-session-use-cache")
    assert server.get("/").body == b"hello"
    notes = no_effect_notes(server)
    for option, why in [("reaper", "the master always reaps its workers"),
                        ("binary-path", "/proc/self/exe"), ("mode", "changes nothing")]:
        assert any(n.startswith(f"option --{option} has no effect in mercy: ") and why in n
                   for n in notes), (option, notes)
    warnings = {r["option"]: r["message"] for r in server.events("unsupported_option")}
    instead = {"profiler": "py-spy", "backtrace-depth": "whole Python stack",
               "use-abort": "LimitCORE=", "min-worker-lifetime": "replacement is ready",
               "umask": "systemd UMask=", "ssl-session-use-cache": "terminate it in the front proxy"}
    assert sorted(warnings) == sorted(instead)
    for option, words in instead.items():
        assert words in warnings[option], warnings[option]


def test_reload_reads_the_edited_ini(mercy, tmp_path):
    """SIGHUP after editing the ini file (the env value the app reports, and
    the number of processes): the new generation serves the new value."""
    ini = tmp_path / "site.ini"
    original = (CONFIGS / "plain.ini").read_text()
    assert "GREETING=plain" in original
    ini.write_text(original)
    server = mercy(ini, ready=2)
    assert server.get("/info").json()["greeting"] == "plain"
    old = set(server.worker_pids().values())

    ini.write_text(original.replace("GREETING=plain", "GREETING=edited"))
    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    for pid in old:
        server.wait_event("retired", worker_pid=pid)
    for _ in range(10):
        info = server.get("/info").json()
        assert info["greeting"] == "edited"
        assert info["pid"] not in old
    server.assert_no_events("reload_failed")


def http_get(port: int, path: str = "/") -> tuple[int, bytes]:
    """One GET on a new connection to 127.0.0.1:port; (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_reload_with_a_changed_socket_says_a_restart_is_needed(mercy, tmp_path):
    """The ini file's http-socket is changed, then SIGHUP: the master warns
    `restart_needed`, the reload still completes with new workers, and they
    serve on the old port while nothing listens on the new one."""
    old_port, new_port = free_port(), free_port()
    ini = tmp_path / "site.ini"
    text = f"[uwsgi]\nwsgi-file = {API_APP}\nhttp-socket = 127.0.0.1:{old_port}\n"
    ini.write_text(text)
    server = mercy(ini, http=False)
    old = set(server.worker_pids().values())
    server.assert_no_events("restart_needed")

    ini.write_text(text.replace(str(old_port), str(new_port)))
    server.send_signal(signal.SIGHUP)
    [warning] = server.wait_event("restart_needed")
    server.wait_event("reload_done")

    assert warning["level"] == "WARN"
    assert "restart" in warning["message"]
    for pid in old:
        server.wait_event("retired", worker_pid=pid)
    assert http_get(old_port) == (200, b"hello")
    assert set(server.worker_pids().values()).isdisjoint(old)
    with pytest.raises(ConnectionRefusedError):
        http_get(new_port)
    server.assert_no_events("reload_failed")


def test_reload_with_the_same_sockets_needs_no_restart(mercy, tmp_path):
    """SIGHUP with the ini file unchanged: no `restart_needed` warning."""
    ini = tmp_path / "site.ini"
    ini.write_text(f"[uwsgi]\nwsgi-file = {API_APP}\nhttp-socket = 127.0.0.1:{free_port()}\n")
    server = mercy(ini, http=False)

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    server.assert_no_events("restart_needed", "reload_failed")


# --- uWSGI's names for mercy's options -------------------------------------------------


def test_workers_is_processes(mercy):
    """`--workers 3` starts three workers (ids 1, 2 and 3), as --processes 3
    would, and each of them answers requests."""
    server = mercy("--wsgi-file", API_APP, "--workers", "3")

    assert sorted(server.worker_pids()) == [1, 2, 3]
    assert sorted(info_until_workers(server, 3)) == [1, 2, 3]


def test_uwsgi_socket_is_socket(mercy, tmp_path):
    """`--uwsgi-socket ADDR` listens for the uwsgi protocol as --socket does:
    a uwsgi packet gets the app's answer."""
    port = free_port()
    server = mercy("--wsgi-file", ECHO_APP, "--uwsgi-socket", f"127.0.0.1:{port}", http=False)

    answer = echo(("127.0.0.1", port), request_vars("GET", "/alias", "q=2"))
    assert (answer["path"], answer["query"]) == ("/alias", "q=2")
    server.wait_event("request", path="/alias")


# --- every uWSGI option is classified ------------------------------------------------


def unsupported_named(server) -> dict[str, int]:
    """option -> how many `unsupported_option` warnings name it."""
    counts: dict[str, int] = {}
    for record in server.events("unsupported_option"):
        counts[record["option"]] = counts.get(record["option"], 0) + 1
    return counts


def no_effect_notes(server) -> list[str]:
    return [r["message"] for r in server.records()
            if "has no effect in mercy" in r.get("message", "")]


def test_uwsgi_options_are_named_from_every_source(mercy, tmp_path):
    """uWSGI options that mercy does not support are named at start once
    each, wherever they come from: the command line (uWSGI's one-letter
    -M, an option with its value, --set NAME=VALUE), the ini file, and
    UWSGI_* variables. A `UWSGI_*` variable that names no uWSGI option
    defines a placeholder (as in uWSGI) and is noted; an ini key that is
    no uWSGI option stays a placeholder without a word; MERCY_* variables
    that name no option are the app's own and are left alone. mercy then
    serves: each option's value was taken with it."""
    touched = tmp_path / "touch-me"
    touched.write_text("")
    ini = tmp_path / "site.ini"
    ini.write_text(
        "[uwsgi]\n"
        f"wsgi-file = {API_APP}\n"
        "master = true\n"
        "cheaper-algo = spare\n"
        "route-host = ^example\\.com$ redirect:https://example.com\n"
        "project = demo\n"
        "env = INI_PROJECT=%(project)\n"
        "env = INI_SETTING=%(my-setting)\n"
        "env = INI_ALGO=%(cheaper-algo)\n"
    )
    server = mercy(ini, "-M", "--touch-workers-reload", touched, "--set", "cheaper-initial=2",
                   "--set", "reload-on-exception=true", "--set", "enable-threads=true",
                   env={"UWSGI_LOG_X_FORWARDED_FOR": "1", "UWSGI_MY_SETTING": "hello",
                        "MERCY_APP_SETTING": "left alone"})

    assert unsupported_named(server) == {
        "cheaper-algo": 1, "route-host": 1, "touch-workers-reload": 1, "cheaper-initial": 1,
        "reload-on-exception": 1, "log-x-forwarded-for": 1}
    for record in server.events("unsupported_option"):
        assert record["level"] in ("WARN", "WARNING"), record
    notes = no_effect_notes(server)
    assert len([n for n in notes if "--master " in n]) == 1, notes
    assert len([n for n in notes if "--enable-threads " in n]) == 1, notes
    placeholder_notes = [r for r in server.records() if r.get("variable") == "UWSGI_MY_SETTING"]
    assert len(placeholder_notes) == 1, placeholder_notes
    assert "%(my-setting)" in placeholder_notes[0]["message"]
    for record in server.records():
        named = f"{record.get('option', '')} {record.get('variable', '')} {record['message']}"
        assert "project" not in named and "MERCY_APP_SETTING" not in named, record

    info = server.get("/info").json()
    assert info["ini_env"] == {"INI_PROJECT": "demo", "INI_SETTING": "hello",
                               "INI_ALGO": "spare"}
    assert info["opt"]["my-setting"] == {"bytes": "hello"}
    assert info["opt"]["cheaper-algo"] == {"bytes": "spare"}


@pytest.mark.parametrize("source, expected", [
    ({"args": ["--set", "cheaper=2"]}, "--strict: option --cheaper is not supported by mercy ("),
    ({"env": {"UWSGI_CHEAPER": "2"}}, "--strict: option --cheaper is not supported by mercy ("),
    ({"args": ["--ttl-cache", "9"]}, "unexpected argument '--ttl-cache'"),
    ({"env": {"UWSGI_MY_SETTING": "x"}},
     "--strict: environment variable UWSGI_MY_SETTING names no uWSGI or mercy option"),
    ({"env": {"UWSGI_STRICT": "1", "UWSGI_DAEMONIZE": "/tmp/x.log"}, "strict": False},
     "--strict: option --daemonize is not supported by mercy ("),
], ids=["set", "env", "not-an-option", "env-not-an-option", "strict-from-env"])
def test_strict_refuses_unsupported_options_from_every_source(mercy, source, expected):
    """Under --strict (also given as UWSGI_STRICT) an unsupported uWSGI
    option refuses the start (exit status 1) with a message naming it,
    whether it comes from --set or a UWSGI_* variable; a UWSGI_* variable
    that names no option is refused too, as uWSGI's strict mode refuses
    unknown names; an option uWSGI does not have either is a usage error
    on the command line, with or without --strict."""
    strict = ["--strict"] if source.get("strict", True) else []
    server = mercy("--wsgi-file", API_APP, *strict, *source.get("args", []),
                   env=source.get("env"), ready=0)
    assert server.wait_exit() == 1
    assert expected in server.text(), server.tail()
    server.assert_no_events("spawned")


def test_strict_accepts_options_with_no_effect(mercy):
    """--strict refuses only what mercy does not support: uWSGI options
    that need no effect (-M, --enable-threads, --vacuum) start as usual."""
    server = mercy("--wsgi-file", API_APP, "--strict", "-M", "--enable-threads", "--vacuum",
                   "--set", "die-on-term=true")
    assert server.get("/").body == b"hello"
    server.assert_no_events("unsupported_option")
    assert len(no_effect_notes(server)) == 4


def test_magic_variables_k_and_h(mercy, tmp_path):
    """%k is the number of CPUs online and %h the host name, as uWSGI
    expands them in ini files."""
    ini = tmp_path / "magic.ini"
    ini.write_text(f"[uwsgi]\nwsgi-file = {API_APP}\n"
                   "env = INI_CPUS=%k\nenv = INI_HOST=%h\nenv = INI_BOTH=%h:%k\n")
    server = mercy(ini)
    env = server.get("/info").json()["ini_env"]
    cpus = str(os.sysconf("SC_NPROCESSORS_ONLN"))
    assert env == {"INI_CPUS": cpus, "INI_HOST": socket.gethostname(),
                   "INI_BOTH": f"{socket.gethostname()}:{cpus}"}


SECTIONS_INI = """\
[uwsgi]
wsgi-file = {app}
processes = 1
env = INI_SECTION=uwsgi

[staging]
wsgi-file = {app}
processes = 2
env = INI_SECTION=staging
"""


def test_ini_file_and_section(mercy, tmp_path):
    """--ini FILE:SECTION reads that section only (here 2 processes and its
    env), --ini FILE reads [uwsgi], and a section the file lacks is an
    error that names it."""
    ini = tmp_path / "site.ini"
    ini.write_text(SECTIONS_INI.format(app=API_APP))

    staging = mercy("--ini", f"{ini}:staging", ready=2)
    assert sorted(staging.worker_pids()) == [1, 2]
    for info in info_until_workers(staging, 2).values():
        assert info["ini_env"] == {"INI_SECTION": "staging"}
        assert info["numproc"] == 2

    default = mercy("--ini", ini, ready=1)
    info = default.get("/info").json()
    assert (info["ini_env"], info["numproc"]) == ({"INI_SECTION": "uwsgi"}, 1)

    missing = mercy("--ini", f"{ini}:production", ready=0)
    assert missing.wait_exit() == 1
    assert "it has no [production] section" in missing.text(), missing.tail()


def test_ini_file_with_a_byte_order_mark(mercy, tmp_path):
    """An ini file saved with a UTF-8 byte order mark (as Windows editors
    write it) is read like one without: its [uwsgi] section is found, its
    options apply (2 processes, its env) and its errors keep their line
    numbers."""
    ini = tmp_path / "bom.ini"
    ini.write_bytes(b"\xef\xbb\xbf" + SECTIONS_INI.format(app=API_APP)
                    .replace("processes = 1", "processes = 2").encode())
    server = mercy(ini, ready=2)
    for info in info_until_workers(server, 2).values():
        assert (info["ini_env"], info["numproc"]) == ({"INI_SECTION": "uwsgi"}, 2)

    broken = tmp_path / "broken.ini"
    broken.write_bytes(b"\xef\xbb\xbf[uwsgi]\nprocesses = many\n")
    refused = mercy("--wsgi-file", API_APP, broken, ready=0)
    assert refused.wait_exit() == 1
    assert f"configuration error: ini file {broken}, line 2: processes = many: " \
        in refused.text(), refused.tail()


def test_http_socket_and_http_in_an_ini_file(mercy, tmp_path):
    """An ini file's `http-socket` and uWSGI's `http` (its router, which
    mercy's workers replace) both serve HTTP."""
    ports = [free_port(), free_port()]
    ini = tmp_path / "http.ini"
    ini.write_text(f"[uwsgi]\nwsgi-file = {API_APP}\n"
                   f"http-socket = 127.0.0.1:{ports[0]}\nhttp = 127.0.0.1:{ports[1]}\n")
    server = mercy(ini, http=False)
    for port in ports:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
        try:
            connection.request("GET", "/")
            response = connection.getresponse()
            assert (response.status, response.read()) == (200, b"hello")
        finally:
            connection.close()
    server.assert_no_events("unsupported_option")


def test_vacuum_removes_the_socket_and_pidfile_at_exit_only(mercy, short_dir):
    """--vacuum (noted: mercy always cleans up): the unix socket and the
    pidfile stay through a graceful reload, and the socket serves after
    it; both are removed when mercy exits."""
    path = short_dir / "app.sock"
    pidfile = short_dir / "mercy.pid"
    server = mercy("--wsgi-file", ECHO_APP, "--socket", path, "--pidfile", pidfile,
                   "--vacuum", http=False)
    assert any("--vacuum" in note for note in no_effect_notes(server))
    assert pidfile.read_text().strip() == str(server.pid)
    assert echo(path, request_vars("GET", "/before"))["path"] == "/before"

    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_done")
    assert stat.S_ISSOCK(os.stat(path).st_mode) and pidfile.exists()
    assert echo(path, request_vars("GET", "/after-reload"))["path"] == "/after-reload"

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0
    assert not path.exists() and not pidfile.exists()


def connect_within(port: int, seconds: float) -> socket.socket | None:
    """A TCP connection whose handshake completed within `seconds`, or
    None. While the listen queue is full the kernel drops the SYN, so the
    handshake never completes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    _, writable, _ = select.select([], [sock], [], seconds)
    if writable and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
        sock.setblocking(True)
        sock.settimeout(REQUEST_TIMEOUT)
        return sock
    sock.close()
    return None


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of the process is stopped by a signal (T)."""
    tasks = Path(f"/proc/{pid}/task")
    states = []
    for task in tasks.iterdir():
        stat = (task / "stat").read_text()
        states.append(stat[stat.rindex(")") + 2])
    return bool(states) and all(state == "T" for state in states)


def test_listen_backlog_is_applied(mercy):
    """--listen 3 is the socket's accept queue: with the only worker
    stopped (SIGSTOP), the kernel completes exactly 4 handshakes (Linux
    queues backlog + 1) and holds the next one back; once the worker runs
    again (SIGCONT), every queued connection is served."""
    server = mercy("--wsgi-file", API_APP, "--listen", "3")
    [pid] = server.worker_pids().values()
    queued = []
    os.kill(pid, signal.SIGSTOP)
    try:
        # kill() returns before the worker's threads have stopped: one still
        # running could accept a connection or two.
        wait_until(lambda: all_threads_stopped(pid), 30, "the worker's threads to stop")
        for _ in range(10):
            sock = connect_within(server.port, 3)
            if sock is None:
                break
            queued.append(sock)
    finally:
        os.kill(pid, signal.SIGCONT)
    try:
        assert len(queued) == 4
        for sock in queued:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        for sock in queued:
            answer, _ = read_to_close(sock)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"hello")
    finally:
        for sock in queued:
            sock.close()


def test_listen_above_somaxconn_is_refused(mercy):
    """A backlog above the kernel's net.core.somaxconn would be lowered by
    the kernel without a word: mercy refuses it at start (exit status 1)
    naming both numbers, as uWSGI does; somaxconn itself is accepted."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    server = mercy("--wsgi-file", API_APP, "--listen", str(somaxconn + 1), ready=0)
    assert server.wait_exit() == 1
    text = server.text()
    assert f"--listen {somaxconn + 1} is larger than the kernel's net.core.somaxconn " \
           f"({somaxconn})" in text, server.tail()
    server.assert_no_events("spawned")

    accepted = mercy("--wsgi-file", API_APP, "--listen", str(somaxconn))
    assert accepted.get("/").body == b"hello"


# --- mount and manage-script-name ----------------------------------------------------------


MOUNT_INI = """\
[uwsgi]
mount = {mountpoint}={app}
manage-script-name = {manage}
socket = 127.0.0.1:{port}
"""


@pytest.mark.parametrize("mountpoint", ["/app", "/app/"])
def test_mount_with_manage_script_name(mercy, tmp_path, mountpoint):
    """`mount = /app=app.py` with `manage-script-name`, as a uWSGI ini
    has them: a request for /app or under /app/ reaches the app with
    SCRIPT_NAME /app and PATH_INFO the rest, over HTTP and over the uwsgi
    protocol (where nginx's SCRIPT_NAME is replaced); other paths, /apps
    included, keep SCRIPT_NAME as it was and PATH_INFO whole."""
    port = free_port()
    ini = tmp_path / "mount.ini"
    ini.write_text(MOUNT_INI.format(mountpoint=mountpoint, app=ECHO_APP, manage="true",
                                    port=port))
    server = mercy(ini)
    cases = {
        "/app/items/7?x=1": ("/app", "/items/7"),
        "/app/": ("/app", "/"),
        "/app": ("/app", ""),
        "/apps/x": ("", "/apps/x"),
        "/other": ("", "/other"),
    }
    for target, expected in cases.items():
        answer = server.get(target).json()
        assert (answer["script_name"], answer["path"]) == expected, target

    answer = echo(("127.0.0.1", port), request_vars(
        "GET", "/app/api", extra=[("SCRIPT_NAME", "")]))
    assert (answer["script_name"], answer["path"]) == ("/app", "/api")
    answer = echo(("127.0.0.1", port), request_vars(
        "GET", "/elsewhere", extra=[("SCRIPT_NAME", "/front")]))
    assert (answer["script_name"], answer["path"]) == ("/front", "/elsewhere")


def test_mount_without_manage_script_name_leaves_the_path(mercy, tmp_path):
    """`mount` alone (as in uWSGI with one app) serves that app for every
    path and leaves SCRIPT_NAME and PATH_INFO as they came; a module
    `module:callable` can be mounted too."""
    port = free_port()
    ini = tmp_path / "mount.ini"
    ini.write_text(MOUNT_INI.format(mountpoint="/app", app="uwsgi_echo:application",
                                    manage="false", port=port)
                   + f"pythonpath = {APPS}\n")
    server = mercy(ini)
    answer = server.get("/app/x").json()
    assert (answer["script_name"], answer["path"]) == ("", "/app/x")
    answer = echo(("127.0.0.1", port), request_vars(
        "GET", "/app/x", extra=[("SCRIPT_NAME", "/app")]))
    assert (answer["script_name"], answer["path"]) == ("/app", "/app/x")


@pytest.mark.parametrize("args, expected", [
    (["--mount", str(ECHO_APP)], "expected MOUNTPOINT=APP"),
    (["--mount", f"app={ECHO_APP}"], "the mountpoint must be a URL path starting with /"),
    (["--mount", "/app=uwsgi_echo"], "the app must be a .py or .wsgi file, or module:callable"),
    (["--mount", f"/a={ECHO_APP}", "--mount", f"/b={API_APP}"], "mercy serves one"),
    (["--mount", f"/a={ECHO_APP}", "--wsgi-file", str(API_APP)], "mercy serves one"),
], ids=["no-mountpoint", "relative", "bare-module", "two-mounts", "mount-and-file"])
def test_bad_mount_is_refused(mercy, args, expected):
    """A --mount mercy cannot serve is refused at start (exit status 1)
    with the reason: mercy serves one app, under a URL path."""
    server = mercy(*args, ready=0)
    assert server.wait_exit() == 1
    assert expected in server.text(), server.tail()
    server.assert_no_events("spawned")
