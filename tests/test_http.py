"""PEP 3333 and HTTP/1.1 on the wire: raw sockets, exact bytes.

Each test starts the real binary with `tests/apps/pep3333.py` (or the echo
app), writes bytes to a loopback socket and asserts the bytes that come
back, the app's own record of what it saw (a JSON-lines file named by
MERCY_TEST_EVENTS) and mercy's JSON log. Tests where the concurrency mode
matters run in threads mode and in gevent mode (`--gevent 50`).

The raw-HTTP helpers at the top are shared with tests/test_corpus.py.
"""

from __future__ import annotations

import base64
import json
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import APPS, EVENT_TIMEOUT, REQUEST_TIMEOUT, wait_until

# --- raw HTTP helpers (also used by test_corpus.py) ------------------------------


@dataclass
class WireResponse:
    """One response as it came off the wire."""

    status: int
    reason: str
    version: str
    # (lower-cased name, value) in wire order.
    headers: list = field(default_factory=list)
    body: bytes = b""
    # The exact bytes of this response, head and body.
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.headers_named(name)
        return values[0] if values else None

    def headers_named(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key == name.lower()]

    def json(self):
        return json.loads(self.body)


class Incomplete(Exception):
    """The bytes end before the response does."""


def parse_response(data: bytes, eof: bool, head_request: bool = False):
    """Parses one response at the start of `data`; returns it and how many
    bytes it used. Raises Incomplete when more bytes are needed (a body
    delimited by the connection's end needs `eof`). Interim (1xx) responses
    are returned like any other."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        raise Incomplete
    head = data[:end].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    version, status, reason = (status_line.split(" ", 2) + [""])[:3]
    headers = []
    for line in header_lines:
        name, _, value = line.partition(":")
        headers.append((name.lower(), value.strip(" \t")))
    response = WireResponse(int(status), reason, version, headers)
    position = end + 4

    lengths = response.headers_named("content-length")
    chunked = "chunked" in ",".join(response.headers_named("transfer-encoding")).lower()
    if head_request or response.status < 200 or response.status in (204, 304):
        pass
    elif chunked:
        body = bytearray()
        while True:
            line_end = data.find(b"\r\n", position)
            if line_end < 0:
                raise Incomplete
            size = int(data[position:line_end].split(b";")[0], 16)
            position = line_end + 2
            if size == 0:
                trailer_end = data.find(b"\r\n\r\n", position - 2)
                if trailer_end < 0:
                    raise Incomplete
                position = trailer_end + 4
                break
            if len(data) < position + size + 2:
                raise Incomplete
            body += data[position:position + size]
            assert data[position + size:position + size + 2] == b"\r\n", data
            position += size + 2
        response.body = bytes(body)
    elif lengths:
        length = int(lengths[0])
        if len(data) < position + length:
            raise Incomplete
        response.body = data[position:position + length]
        position += length
    else:
        if not eof:
            raise Incomplete
        response.body = data[position:]
        position = len(data)
    response.raw = data[:position]
    return response, position


def parse_responses(data: bytes, eof: bool = True, head_request: bool = False):
    """Every complete response in `data`, and the bytes left after them."""
    responses = []
    while data:
        try:
            response, used = parse_response(data, eof, head_request)
        except Incomplete:
            break
        responses.append(response)
        data = data[used:]
    return responses, data


class Wire:
    """A raw client connection to mercy."""

    def __init__(self, port: int, timeout: float = REQUEST_TIMEOUT):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.local_port = self.sock.getsockname()[1]
        self.received = b""
        self.eof = False
        self.reset = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data: bytes):
        self.sock.sendall(data)

    def send_pieces(self, data: bytes, sizes, pause: float = 0.0) -> bool:
        """Sends `data` in pieces of the given sizes (cycled), pausing between
        them so the server reads them separately. Returns False if the
        server closed before everything was sent."""
        position = 0
        sizes = list(sizes) or [len(data)]
        index = 0
        while position < len(data):
            size = sizes[index % len(sizes)]
            index += 1
            try:
                self.sock.sendall(data[position:position + size])
            except (BrokenPipeError, ConnectionResetError):
                return False
            position += size
            if pause and position < len(data):
                time.sleep(pause)
        return True

    def half_close(self):
        """Tells the server nothing more will be sent."""
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def receive_some(self) -> bool:
        """Reads once; False at the end of the stream (or a reset)."""
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            self.eof = True
            return False
        if not chunk:
            self.eof = True
            return False
        self.received += chunk
        return True

    def read_head(self):
        """Reads until a response head has arrived (its body may not have)."""
        while b"\r\n\r\n" not in self.received:
            assert self.receive_some(), f"the connection ended: {self.received!r:.300}"

    def read_until_close(self) -> bytes:
        """Everything until the server closes; a timeout fails the test."""
        try:
            while self.receive_some():
                pass
        except socket.timeout:
            raise AssertionError(
                f"the server did not close the connection; got {self.received!r:.600}"
            ) from None
        return self.received

    def read_response(self, head_request: bool = False) -> WireResponse:
        """The next whole response (interim 1xx responses included)."""
        while True:
            try:
                response, used = parse_response(self.received, self.eof, head_request)
            except Incomplete:
                if self.eof:
                    raise AssertionError(
                        f"the connection ended inside a response: {self.received!r:.600}"
                    ) from None
                try:
                    self.receive_some()
                except socket.timeout:
                    raise AssertionError(
                        f"no whole response arrived; got {self.received!r:.600}"
                    ) from None
                continue
            self.received = self.received[used:]
            return response

    def read_final_response(self, head_request: bool = False) -> WireResponse:
        """The next response that is not interim."""
        while True:
            response = self.read_response(head_request)
            if response.status >= 200:
                return response

    def closed_by_server(self) -> bool:
        """True if the server closed its side and nothing else arrives."""
        self.read_until_close()
        return self.received == b""

    def answered(self) -> bool:
        """True if the server sent something or closed (or reset) the
        connection: a peek that would block means neither happened yet."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except ConnectionResetError:
            return True
        finally:
            self.sock.settimeout(REQUEST_TIMEOUT)
        return True

    def still_open(self) -> bool:
        """True if the server has not closed (or reset) the connection so
        far: a peek that would block means it is open and silent."""
        self.sock.setblocking(False)
        try:
            chunk = self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return True
        except ConnectionResetError:
            return False
        finally:
            self.sock.settimeout(REQUEST_TIMEOUT)
        return chunk != b""


# --- running the app -------------------------------------------------------------------

MODES = {
    "threads": ["--threads", "4"],
    "gevent": ["--gevent", "50"],
}
# Longer than the client's timeout: a close the test sees is mercy's
# decision on the bytes, never one of its timers.
LONG_TIMEOUTS = ["--socket-timeout", "120", "--keep-alive", "120"]
INTERNAL_ERROR_BODY = b"Internal Server Error\n"


class AppEvents:
    """The JSON lines tests/apps/pep3333.py writes."""

    def __init__(self, path: Path):
        self.path = path

    def all(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def named(self, event: str, request_id: str | None = None) -> list[dict]:
        return [entry for entry in self.all() if entry["event"] == event
                and (request_id is None or entry["id"] == request_id)]

    def calls(self, request_id: str) -> list[dict]:
        return self.named("call", request_id)

    def wait(self, event: str, request_id: str, count: int = 1,
             timeout: float = 60) -> list[dict]:
        return wait_until(lambda: len(self.named(event, request_id)) >= count
                          and self.named(event, request_id), timeout,
                          f"{count} '{event}' event(s) for request {request_id}")


class App:
    """A running mercy serving tests/apps/pep3333.py."""

    def __init__(self, server, events: AppEvents):
        self.server = server
        self.events = events
        self.port = server.port

    def wire(self) -> Wire:
        return Wire(self.port)

    def exchange(self, data: bytes, head_request: bool = False) -> WireResponse:
        """One request on a new connection; the response."""
        with self.wire() as wire:
            wire.send(data)
            return wire.read_final_response(head_request)

    def send_and_read_all(self, data: bytes) -> bytes:
        """Sends, then reads until mercy closes the connection (it must)."""
        with self.wire() as wire:
            wire.send(data)
            return wire.read_until_close()

    def hello_still_works(self):
        """A later request on a new connection is served."""
        response = self.exchange(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
        assert (response.status, response.body) == (200, b"hello")


def serve(mercy, tmp_path, mode, *extra, app="pep3333.py", env=None) -> App:
    """mercy serving `app` in `mode`; options in `extra` come last, so they
    override LONG_TIMEOUTS."""
    events = tmp_path / "events.jsonl"
    env = {"MERCY_TEST_EVENTS": str(events), "MERCY_ECHO_CALLS": str(events), **(env or {})}
    server = mercy("--wsgi-file", APPS / app, *MODES[mode], *LONG_TIMEOUTS, *extra, env=env)
    return App(server, AppEvents(events))


def get(path: str, *headers: str, version: str = "1.1") -> bytes:
    lines = [f"GET {path} HTTP/{version}", "Host: t", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, body: bytes, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: t", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def chunked(path: str, chunks, *headers: str, trailers: bytes = b"") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: t", "Transfer-Encoding: chunked", *headers]
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body + b"0\r\n" + trailers + b"\r\n"


def app_errors(app: App, path: str) -> list[dict]:
    return [record for record in app.server.events("app_error") if record.get("path") == path]


# --- start_response and write ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_write_callable_bytes_come_before_the_iterable_and_the_head_once(mercy, tmp_path, mode):
    """The `write` callable from start_response sends its bytes first, the
    head exactly once, then the iterable's bytes: chunked without a
    Content-Length, plain with one, close-delimited for HTTP/1.0."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(get("/write"))
        assert wire.read_response().raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"6\r\nfirst-\r\n6\r\nsecond\r\n0\r\n\r\n")
        wire.send(get("/write?length=1"))
        assert wire.read_response().raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
            b"first-second")
        wire.send(get("/write-generator", "Connection: close"))
        assert wire.read_until_close() == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n6\r\nfirst-\r\n6\r\nsecond\r\n6\r\n-third\r\n0\r\n\r\n")

    assert app.send_and_read_all(get("/write", version="1.0")) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
        b"first-second")


@pytest.mark.parametrize("mode", MODES)
def test_exc_info_replaces_an_unsent_head_and_reraises_after_it_was_sent(
        mercy, tmp_path, mode):
    """start_response with exc_info before anything was sent replaces the
    status and headers; after the head went out it re-raises the app's own
    exception, mercy logs it and closes the connection without a second
    head; a second call without exc_info raises and gives a 500."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(get("/exc-info-before"))
        assert wire.read_response().raw == (
            b"HTTP/1.1 500 Replaced\r\nContent-Type: text/plain\r\nContent-Length: 8\r\n\r\n"
            b"replaced")
        # The connection goes on: the app answered normally.
        wire.send(get("/hello"))
        assert wire.read_response().body == b"hello"

    received = app.send_and_read_all(get("/exc-info-after?id=late"))
    assert received == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\npartial\r\n")
    [reraised] = app.events.named("reraised", "late")
    assert reraised["same"] is True
    app.server.wait_event("app_error", path="/exc-info-after")

    received = app.send_and_read_all(get("/twice?id=twice"))
    [response], rest = parse_responses(received)
    assert (response.status, response.body, rest) == (500, INTERNAL_ERROR_BODY, b"")
    assert app.events.named("second_start_refused", "twice")
    app.server.wait_event("app_error", path="/twice")


@pytest.mark.parametrize("mode", MODES)
def test_internal_error_response_is_exactly_delimited(mercy, tmp_path, mode):
    """The 500 mercy sends for an app that raised before responding has a
    Content-Length and `Connection: close`: a client can tell a whole error
    page from a cut one."""
    app = serve(mercy, tmp_path, mode)
    received = app.send_and_read_all(get("/twice"))
    assert received == (
        b"HTTP/1.1 500 Internal Server Error\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: 22\r\n"
        b"Connection: close\r\n\r\n"
        b"Internal Server Error\n")


# --- close() -----------------------------------------------------------------------------


def assert_closed_once(app: App, request_id: str) -> dict:
    """Waits for the iterable's close(), lets the worker serve another
    request, then checks close() ran exactly once."""
    app.events.wait("close", request_id, timeout=30)
    app.hello_still_works()
    closes = app.events.named("close", request_id)
    assert len(closes) == 1, closes
    return closes[0]


@pytest.mark.parametrize("mode", MODES)
def test_iterable_close_is_called_exactly_once_on_every_path(mercy, tmp_path, mode):
    """close() of the app's iterable runs exactly once: after a complete
    response, when the iterable raises after its first chunk (the response
    is cut: no final chunk, the connection closes), and when it raises
    before any byte (500)."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(get("/close?id=ok&mode=ok"))
        assert wire.read_response().raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"6\r\nfirst;\r\n6\r\nsecond\r\n0\r\n\r\n")
    assert assert_closed_once(app, "ok")["produced"] == 2

    received = app.send_and_read_all(get("/close?id=later&mode=raise-later"))
    assert received == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nfirst;\r\n")
    assert_closed_once(app, "later")
    app.server.wait_event("app_error", path="/close")

    received = app.send_and_read_all(get("/close?id=first&mode=raise-first"))
    [response], _ = parse_responses(received)
    assert (response.status, response.body) == (500, INTERNAL_ERROR_BODY)
    assert_closed_once(app, "first")


def wait_until_blocked(app: App, request_id: str) -> int:
    """Waits until the app stops producing chunks for `request_id` (it waits
    for mercy to write, which waits for the client) and returns how many it
    produced. Seen still across a second of polling means blocked; the
    wait itself has a generous deadline."""
    seen = {"count": -1, "since": time.monotonic()}

    def settled():
        count = len(app.events.named("chunk", request_id))
        now = time.monotonic()
        if count != seen["count"]:
            seen.update(count=count, since=now)
            return None
        return count if count > 0 and now - seen["since"] >= 1.0 else None

    return wait_until(settled, 60, f"the app producing {request_id} to block")


@pytest.mark.parametrize("mode", MODES)
def test_close_runs_once_when_the_client_goes_away_and_no_chunk_follows(
        mercy, tmp_path, mode):
    """A client that stops reading a long streamed response, then goes
    away: the app, held back by flow control, produces no further chunk;
    close() runs exactly once, only after the client left, and no chunk is
    produced after it (the iterable is never advanced again). Every event
    is in the app's own ordered record."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(get("/close?id=gone&mode=forever"))
        wire.read_head()
        # Reading no more, the client lets the socket buffers fill, so that
        # the app waits for mercy to write.
        produced = wait_until_blocked(app, "gone")
        assert app.events.named("close", "gone") == []
    app.events.wait("close", "gone", timeout=60)
    app.hello_still_works()

    events = [entry for entry in app.events.all() if entry["id"] == "gone"]
    kinds = [entry["event"] for entry in events]
    assert kinds.count("close") == 1, kinds
    assert kinds.index("close") == len(kinds) - 1, "a chunk was produced after close()"
    chunks = [entry["index"] for entry in events if entry["event"] == "chunk"]
    assert chunks == list(range(produced)), "the app went on after the client left"
    assert events[-1]["produced"] == produced < 4096

@pytest.mark.parametrize("mode", MODES)
def test_clients_gone_mid_response_do_not_use_up_request_slots(mercy, tmp_path, mode):
    """With 2 request threads or 2 greenlets, two clients go away while the
    app waits for its large response to be written: both requests end, and
    a third, normal request is served."""
    events = tmp_path / "events.jsonl"
    slots = ["--threads", "2"] if mode == "threads" else ["--gevent", "2"]
    server = mercy("--wsgi-file", APPS / "pep3333.py", *slots, *LONG_TIMEOUTS,
                   env={"MERCY_TEST_EVENTS": str(events)})
    app = App(server, AppEvents(events))
    for index in range(2):
        with app.wire() as wire:
            wire.send(get(f"/close?id=gone{index}&mode=forever"))
            wire.read_head()
            time.sleep(1)  # the socket buffers fill; the app waits to write
    with app.wire() as wire:
        wire.send(get("/hello"))
        assert wire.read_response().body == b"hello"
    for index in range(2):
        assert len(app.events.wait("close", f"gone{index}", timeout=30)) == 1


def stop_without_mercy_expired(app: App):
    """SIGTERM: the worker has no request left running, so the shutdown
    completes without --worker-reload-mercy expiring."""
    app.server.send_signal(signal.SIGTERM)
    assert app.server.wait_exit() == 0
    app.server.wait_event("shutdown_done")
    app.server.assert_no_events("mercy_expired", "killed")


@pytest.mark.parametrize("mode", MODES)
def test_head_on_an_endless_stream_stops_iterating_after_the_head(mercy, tmp_path, mode):
    """HEAD on a body that never ends (1 KiB every 10 ms): no body byte will
    be written, so the app's iterable is advanced once (for the head), then
    closed exactly once; the connection goes on with the pipelined GET, and
    a SIGTERM finds no request left running."""
    app = serve(mercy, tmp_path, mode, "--worker-reload-mercy", "60")
    head = b"HEAD /close?id=head&mode=trickle HTTP/1.1\r\nHost: t\r\n\r\n"
    with app.wire() as wire:
        wire.send(head + get("/hello"))
        assert wire.read_response(head_request=True).raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
        assert wire.read_response().body == b"hello"
    assert assert_closed_once(app, "head")["produced"] == 1
    stop_without_mercy_expired(app)


@pytest.mark.parametrize("mode", MODES)
def test_client_gone_during_empty_chunks_ends_the_iteration(mercy, tmp_path, mode):
    """A GET whose body yields only empty chunks (SSE-style keep-alives,
    which write nothing): once the client closes its connection, iteration
    stops and close() runs exactly once; a SIGTERM then finds no request
    left running."""
    app = serve(mercy, tmp_path, mode, "--worker-reload-mercy", "60")
    with app.wire() as wire:
        wire.send(get("/close?id=idle&mode=keep-alive"))
        app.events.wait("call", "idle")
    assert_closed_once(app, "idle")
    stop_without_mercy_expired(app)


@pytest.mark.parametrize("mode", MODES)
def test_request_log_of_an_aborted_stream_has_the_status_and_bytes_written(
        mercy, tmp_path, mode):
    """A client reads 20 KiB of an endless stream of 1 KiB chunks, then
    resets the connection: the request log line says 200 and the body bytes
    written to the socket before a write failed (whole chunks, at least what
    the client read), not 0 and 0."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(get("/close?id=abort&mode=trickle"))
        wire.read_head()
        while len(wire.received) < 20 * 1024:
            assert wire.receive_some()
        wire.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    assert_closed_once(app, "abort")
    [record] = app.server.wait_event("request", path="/close")
    assert record["status"] == 200, record
    assert record["size"] >= 19 * 1024 and record["size"] % 1024 == 0, record


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("status", ["100 Continue", "101 Switching Protocols", "999 Odd", "abc"])
def test_status_outside_200_to_599_gets_500_before_anything_is_sent(
        mercy, tmp_path, mode, status):
    """An app status that is not a final response (1xx), or not a known
    class (999), or not a code at all: refused before anything is sent, so
    the client gets the 500 and nothing else (the 500 closes the
    connection, so the GET pipelined behind is never answered as this one,
    and never run), and an app_error names the status."""
    app = serve(mercy, tmp_path, mode)
    code = status.replace(" ", "+")
    received = app.send_and_read_all(get(f"/status?id=bad&code={code}") + get("/hello?id=next"))
    [response], rest = parse_responses(received)
    assert (response.status, response.body, rest) == (500, INTERNAL_ERROR_BODY, b"")
    [error] = app.server.wait_event("app_error", path="/status")
    assert repr(status) in error["traceback"], error
    assert app.events.calls("next") == []
    app.hello_still_works()


@pytest.mark.parametrize("mode", MODES)
def test_app_returning_none_gets_500_and_a_message_saying_so(mercy, tmp_path, mode):
    """An app that returns None: a 500 and an app_error that says the app
    returned None instead of an iterable of bytes."""
    app = serve(mercy, tmp_path, mode)
    response = app.exchange(get("/none"))
    assert (response.status, response.body) == (500, INTERNAL_ERROR_BODY)
    [error] = app.server.wait_event("app_error", path="/none")
    assert "the app returned None instead of an iterable of bytes" in error["traceback"], error
    assert "NoneType" not in error["traceback"], error


# --- Content-Length ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["list", "generator"])
def test_response_shorter_than_its_content_length_closes_and_logs_an_error(
        mercy, tmp_path, mode, kind):
    """An app that declares Content-Length 10 and sends 5 bytes: the client
    gets exactly those bytes, then the connection closes (a pipelined second
    request is never run), and mercy logs an error naming the shortfall."""
    app = serve(mercy, tmp_path, mode)
    received = app.send_and_read_all(
        get(f"/short?id=short&kind={kind}") + get("/hello?id=next"))
    assert received == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\nshort")
    assert app.events.calls("next") == []

    def shortfall_logged():
        return [record for record in app.server.records()
                if "Content-Length" in str(record.get("message", ""))]

    [record] = wait_until(shortfall_logged, 60, "a log line about the short response")
    assert record["level"] == "ERROR", record
    # The operator must be able to tell which request it was.
    assert "/short" in json.dumps(record), record


@pytest.mark.parametrize("mode", MODES)
def test_bytes_beyond_the_content_length_are_dropped_and_the_connection_closes(
        mercy, tmp_path, mode):
    """An app that declares Content-Length 5 and gives 11 bytes: exactly 5
    go out, then the connection closes; the pipelined request never runs."""
    app = serve(mercy, tmp_path, mode)
    received = app.send_and_read_all(get("/long") + get("/hello?id=next"))
    assert received == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    assert app.events.calls("next") == []


@pytest.mark.parametrize("mode", MODES)
def test_conflicting_content_lengths_from_the_app_never_reach_the_wire(mercy, tmp_path, mode):
    """An app that sets Content-Length twice with different values (5 and
    11) must not make mercy send both: a proxy in front would frame the
    response one way and mercy the other. The answer is mercy's 500."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(get("/two-lengths"))
        response = wire.read_response()
    assert len(response.headers_named("content-length")) <= 1, response.raw
    assert response.status == 500, response.raw


@pytest.mark.parametrize("mode", MODES)
def test_no_content_response_has_no_content_length_and_no_body(mercy, tmp_path, mode):
    """204 from an app that set Content-Length and returned bytes: mercy
    sends neither the body nor the Content-Length (RFC 9110 section 8.6: a
    server must not send Content-Length in a 204), and the next request on
    the connection is served."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(get("/no-content") + get("/hello"))
        first = wire.read_response()
        assert first.raw == b"HTTP/1.1 204 No Content\r\n\r\n"
        assert wire.read_response().body == b"hello"


# --- wsgi.file_wrapper ---------------------------------------------------------------------

FILE_BYTES = bytes(range(256)) * 1024  # as tests/apps/pep3333.py serves it
OCTETS = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
# mercy's debug lines name each sendfile(2) it made.
SENDFILE_LOG = {"MERCY_LOG": "info,mercy::worker::connection=debug"}


def sendfiles(app: App) -> list[tuple[int, int]]:
    """(offset, bytes) of every sendfile mercy logged so far."""
    return [(record["offset"], record["bytes"]) for record in app.server.events("sendfile")]


@pytest.mark.parametrize("mode", MODES)
def test_file_wrapper_sends_from_the_files_current_offset_with_sendfile(mercy, tmp_path, mode):
    """A wsgi.file_wrapper around a real file the app moved into (seek, or
    a buffered read that read ahead): the body is the file from its current
    offset on, with a Content-Length, sent with sendfile (mercy logs each
    call; the app's file object is never read through Python) and closed
    once. A file-like object without a descriptor is iterated instead."""
    app = serve(mercy, tmp_path, mode, env=SENDFILE_LOG)
    size = len(FILE_BYTES)
    with app.wire() as wire:
        wire.send(get("/file?id=seek&seek=1000"))
        assert wire.read_response().raw == (
            OCTETS + b"Content-Length: %d\r\n\r\n" % (size - 1000) + FILE_BYTES[1000:])
        wire.send(get("/file?id=read&read=3"))
        assert wire.read_response().raw == (
            OCTETS + b"Content-Length: %d\r\n\r\n" % (size - 3) + FILE_BYTES[3:])
        wire.send(get("/file?id=memory&source=bytesio&size=5000&seek=5"))
        iterated = wire.read_response()
        assert (iterated.header("transfer-encoding"), iterated.body) == (
            "chunked", FILE_BYTES[5:5000])

    assert app.events.named("file_read", "seek") == []
    assert app.events.named("file_read", "read") == []
    assert app.events.named("file_read", "memory")
    for request_id in ("seek", "read", "memory"):
        assert len(app.events.wait("file_close", request_id)) == 1
    app.server.wait_event("sendfile", count=2)
    assert sendfiles(app) == [(1000, size - 1000), (3, size - 3)]


@pytest.mark.parametrize("mode", MODES)
def test_file_wrapper_never_sends_past_the_content_length(mercy, tmp_path, mode):
    """The app's Content-Length bounds the file: exactly that many bytes go
    out, counting what write() sent before the file; without one, write()'s
    bytes and the file are chunks. The connection is reused each time: not
    one byte too many."""
    app = serve(mercy, tmp_path, mode, env=SENDFILE_LOG)
    with app.wire() as wire:
        wire.send(get("/file?id=bounded&seek=10&length=100") + get("/hello"))
        assert wire.read_response().raw == (
            OCTETS + b"Content-Length: 100\r\n\r\n" + FILE_BYTES[10:110])
        assert wire.read_response().body == b"hello"

        wire.send(get("/file?id=written&write=1&length=50") + get("/hello"))
        assert wire.read_response().raw == (
            OCTETS + b"Content-Length: 50\r\n\r\nbefore-" + FILE_BYTES[:43])
        assert wire.read_response().body == b"hello"

        wire.send(get("/file?id=chunked&write=1&size=1000&seek=500") + get("/hello"))
        assert wire.read_response().raw == (
            OCTETS + b"Transfer-Encoding: chunked\r\n\r\n7\r\nbefore-\r\n"
            b"1f4\r\n" + FILE_BYTES[500:1000] + b"\r\n0\r\n\r\n")
        assert wire.read_response().body == b"hello"
    app.server.wait_event("sendfile", count=3)
    assert sendfiles(app) == [(10, 100), (0, 43), (500, 500)]


@pytest.mark.parametrize("mode", MODES)
def test_file_shorter_than_its_content_length_closes_and_logs_an_error(mercy, tmp_path, mode):
    """A 100-byte file under a Content-Length of 150: the client gets the
    100 bytes, then the connection closes (the request pipelined behind it
    never runs), and mercy logs the shortfall as an error naming the
    request."""
    app = serve(mercy, tmp_path, mode)
    received = app.send_and_read_all(
        get("/file?id=short&size=100&length=150") + get("/hello?id=next"))
    assert received == OCTETS + b"Content-Length: 150\r\n\r\n" + FILE_BYTES[:100]
    [short] = app.server.wait_event("response_short", path="/file")
    assert (short["level"], short["missing"]) == ("ERROR", 50)
    assert app.events.calls("next") == []


@pytest.mark.parametrize("mode", MODES)
def test_file_wrapper_over_a_uwsgi_unix_socket(mercy, tmp_path, mode):
    """Over the uwsgi protocol on a unix socket (a different transport and
    a response delimited by the close): the file from its offset with a
    Content-Length, sent with sendfile; after write(), without a length,
    the bytes run to the close."""
    from test_uwsgi_compat import request_vars, uwsgi_packet

    path = tmp_path / "uwsgi.sock"
    app = serve(mercy, tmp_path, mode, "--socket", path, env=SENDFILE_LOG)

    def uwsgi_get(query: str) -> bytes:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect(str(path))
            sock.sendall(uwsgi_packet(request_vars("GET", "/file", query)))
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
            return received

    assert uwsgi_get("id=u1&seek=7&size=3000") == (
        OCTETS + b"Content-Length: 2993\r\nConnection: close\r\n\r\n" + FILE_BYTES[7:3000])
    assert uwsgi_get("id=u2&write=1&size=3000&seek=2000") == (
        OCTETS + b"Connection: close\r\n\r\nbefore-" + FILE_BYTES[2000:3000])
    app.server.wait_event("sendfile", count=2)
    assert sendfiles(app) == [(7, 2993), (2000, 1000)]
    assert app.events.named("file_read", "u1") == app.events.named("file_read", "u2") == []


# --- wsgi.input ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("buffering", ["buffered", "streamed"])
def test_input_never_blocks_past_the_body_and_returns_empty_bytes(
        mercy, tmp_path, mode, buffering):
    """wsgi.input.read(100000) on a 10-byte body returns its 10 bytes at
    once on a connection kept open (mercy's socket timeout is longer than
    the test's); read(), read(5), readline() and read(0) then return b"",
    and a request pipelined right behind the body is served next."""
    extra = ["--post-buffering", "4"] if buffering == "streamed" else []
    app = serve(mercy, tmp_path, mode, *extra)
    with app.wire() as wire:
        wire.send(post("/input?id=one", b"0123456789"))
        answer = wire.read_response().json()
        assert base64.b64decode(answer["first"]) == b"0123456789"
        assert answer["after"] == ["", "", "", ""]
        assert answer["lines"] == 0
        assert answer["content_length"] == "10"

        wire.send(post("/input?id=two", b"abc\ndef") + get("/hello"))
        answer = wire.read_response().json()
        assert base64.b64decode(answer["first"]) == b"abc\ndef"
        assert answer["after"] == ["", "", "", ""]
        assert wire.read_response().raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")


@pytest.mark.parametrize("mode", MODES)
def test_chunked_request_bodies_are_terminated_input(mercy, tmp_path, mode):
    """A chunked body (with an extension and trailers) reaches the app
    whole through wsgi.input, with wsgi.input_terminated true and no
    CONTENT_LENGTH; read in 3-byte pieces from a body sent in small pieces,
    it is the same; the next pipelined request parses cleanly."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(chunked("/input?id=c", [b"Wiki", b"pedia", b" in\r\n\r\nchunks."],
                          trailers=b"X-Trailer: dropped\r\n") + get("/hello"))
        answer = wire.read_response().json()
        assert base64.b64decode(answer["first"]) == b"Wikipedia in\r\n\r\nchunks."
        assert answer["after"] == ["", "", "", ""]
        assert answer["input_terminated"] is True
        assert answer["content_length"] is None
        assert wire.read_response().body == b"hello"

        request = chunked("/input-chunks?size=3", [b"hello ", b"world", b"!" * 40])
        request = request.replace(b"6\r\n", b"6;name=value\r\n", 1)
        assert wire.send_pieces(request, [1, 2, 3, 5, 7], pause=0.001)
        answer = wire.read_response().json()
        assert base64.b64decode(answer["body"]) == b"hello world" + b"!" * 40
        assert answer["largest"] <= 3
        assert answer["input_terminated"] is True


@pytest.mark.parametrize("options", [["--threads", "4"], ["--gevent", "10"]],
                         ids=["threads", "gevent"])
def test_wsgiref_validator_finds_nothing_wrong(mercy, options):
    """The app wrapped in wsgiref.validate.validator (its warnings made
    errors) is sent a GET with a query, a POST with a body, a chunked POST,
    a POST with an empty body and an empty chunked POST, its input read by
    read(size), readline() and iteration: each is answered 200 with the
    bytes sent, so no check of the environ, wsgi.input, wsgi.errors or
    start_response failed; no app_error is logged, and no iterable was
    left unclosed (/problems is empty)."""
    server = mercy("--wsgi-file", APPS / "validated.py", *options, *LONG_TIMEOUTS)
    app = App(server, AppEvents(Path("/nonexistent")))
    binary = bytes(range(256)) * 10
    cases = [
        (get("/read?q=1&r=%20"), "GET", None, b"", 0),
        (post("/read", binary, "Content-Type: application/octet-stream"),
         "POST", str(len(binary)), binary, 3),
        (post("/readline", b"one\ntwo\nthree"), "POST", "13", b"one\ntwo\nthree", 3),
        (chunked("/iter", [b"one\nt", b"wo\n", b"three"]), "POST", None, b"one\ntwo\nthree", 3),
        (chunked("/read", [b"x" * 1500, b"y" * 10]), "POST", None, b"x" * 1500 + b"y" * 10, 2),
        (post("/read", b""), "POST", "0", b"", 0),
        (chunked("/readline", []), "POST", None, b"", 0),
    ]

    for request, method, content_length, body, pieces in cases:
        response = app.exchange(request)
        assert response.status == 200, (request[:40], response.body)
        answer = response.json()
        assert (answer["method"], answer["content_length"]) == (method, content_length), answer
        assert answer["body"].encode("latin-1") == body
        assert answer["pieces"] == pieces, answer

    response = app.exchange(get("/problems"))
    assert (response.status, response.json()) == (200, {"problems": []})
    server.assert_no_events("app_error")


@pytest.mark.parametrize("mode", MODES)
def test_malformed_chunked_body_gets_400_and_the_connection_closes(mercy, tmp_path, mode):
    """A chunk size that is not hexadecimal, found while the app reads:
    wsgi.input.read() raises OSError, the client gets 400 (DESIGN section
    6) with `Connection: close`, the connection closes, and the request
    pipelined behind it never runs."""
    app = serve(mercy, tmp_path, mode, app="echo.py")
    request = (b"POST /bad HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\nzz\r\n" + get("/after"))
    received = app.send_and_read_all(request)
    responses, rest = parse_responses(received)
    assert [response.status for response in responses] == [400], received
    assert responses[0].header("connection") == "close"
    paths = [entry.get("path") for entry in app.events.all() if entry["event"] == "call"]
    assert paths == ["/bad"]
    [error] = [entry for entry in app.events.all() if entry["event"] == "body_error"]
    assert "chunk" in error["error"]


# --- response headers ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["nonlatin", "crlf", "lf", "nul", "name", "colon", "status"])
def test_invalid_response_headers_give_500_never_a_split_response(mercy, tmp_path, mode, kind):
    """A header value outside latin-1, CR or LF or NUL in a value, a name
    that is not a token, CR LF in the status: the app's start_response
    raises, the client gets one 500 and a close (the request pipelined
    behind it never runs), nothing the app wrote reaches the wire, and the
    log has the app error."""
    app = serve(mercy, tmp_path, mode)
    received = app.send_and_read_all(get(f"/bad-header?kind={kind}") + get("/hello?id=after"))
    responses, rest = parse_responses(received)
    assert [response.status for response in responses] == [500], received
    assert responses[0].body == INTERNAL_ERROR_BODY
    assert b"Injected" not in received and b"must not be sent" not in received
    assert rest == b""
    assert app.events.calls("after") == []
    app.server.wait_event("app_error", path="/bad-header")


# --- request bytes -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_request_bytes_round_trip_through_latin1_environ_strings(mercy, tmp_path, mode):
    """Header values with obs-text (0x80-0xFF), a percent-encoded path with
    non-ASCII bytes and a raw UTF-8 query reach the app as latin-1 strings
    whose code points are exactly the bytes."""
    app = serve(mercy, tmp_path, mode)
    request = (b"GET /environ/caf%E9/%C3%A9%2F?q=%FF&r=\xc3\xa9 HTTP/1.1\r\nHost: t\r\n"
               b"X-Latin: caf\xe9 \x80\xff\xa0end\r\nX-Tab: a\tb\r\n\r\n")
    environ = app.exchange(request).json()
    assert environ["PATH_INFO"].encode("latin-1") == b"/environ/caf\xe9/\xc3\xa9/"
    assert environ["QUERY_STRING"].encode("latin-1") == b"q=%FF&r=\xc3\xa9"
    assert environ["RAW_URI"].encode("latin-1") == b"/environ/caf%E9/%C3%A9%2F?q=%FF&r=\xc3\xa9"
    assert environ["HTTP_X_LATIN"].encode("latin-1") == b"caf\xe9 \x80\xff\xa0end"
    assert environ["HTTP_X_TAB"] == "a\tb"
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert environ["REQUEST_METHOD"] == "GET"


@pytest.mark.parametrize("mode", MODES)
def test_absolute_form_target_names_the_host(mercy, tmp_path, mode):
    """RFC 9112 section 3.2.2: with an absolute-form target the server must
    ignore the Host header and use the target's authority, so the app sees
    the host a proxy in front routed by (HTTP_HOST), not a second one."""
    app = serve(mercy, tmp_path, mode)
    environ = app.exchange(
        b"GET http://example.com:8080/environ?x=1 HTTP/1.1\r\nHost: other.test\r\n\r\n").json()
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/environ", "x=1")
    assert environ["HTTP_HOST"] == "example.com:8080"


@pytest.mark.parametrize("mode", MODES)
def test_repeated_header_lines_join_cookies_with_a_semicolon(mercy, tmp_path, mode):
    """A header sent on several lines is one environ string: Cookie lines
    joined with `; ` (RFC 6265 section 5.4; a comma would merge two cookies
    into one value), any other field's lines with `, ` (RFC 9110 section
    5.3), in wire order."""
    app = serve(mercy, tmp_path, mode)
    environ = app.exchange(get("/environ", "Cookie: a=1", "X-Tag: one", "cookie: b=2, c",
                               "X-Tag: two", "Cookie: d=4")).json()
    assert environ["HTTP_COOKIE"] == "a=1; b=2, c; d=4"
    assert environ["HTTP_X_TAG"] == "one, two"


# --- Expect: 100-continue ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_100_continue_only_when_the_app_reads_the_body(mercy, tmp_path, mode):
    """HTTP/1.1 with `Expect: 100-continue`: `100 Continue` comes when the
    app reads the body (Content-Length or chunked), and the connection is
    reused; an app that never reads gets no `100 Continue` sent."""
    app = serve(mercy, tmp_path, mode)
    with app.wire() as wire:
        wire.send(b"POST /input-chunks?size=100 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        assert wire.read_response().raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        wire.send(b"hello")
        response = wire.read_response()
        assert response.status == 200
        assert base64.b64decode(response.json()["body"]) == b"hello"

        wire.send(b"POST /input-chunks?size=100 HTTP/1.1\r\nHost: t\r\n"
                  b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        assert wire.read_response().raw == b"HTTP/1.1 100 Continue\r\n\r\n"
        wire.send(b"5\r\nworld\r\n0\r\n\r\n")
        assert base64.b64decode(wire.read_response().json()["body"]) == b"world"

    with app.wire() as wire:
        wire.send(b"POST /noread HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
                  b"Expect: 100-continue\r\n\r\n")
        response = wire.read_response()
        assert (response.status, response.body) == (200, b"ignored")
        if response.header("connection") == "close":
            assert wire.closed_by_server()
        else:
            wire.send(b"hello" + get("/hello"))
            assert wire.read_response().body == b"hello"
    assert b"100 Continue" not in response.raw


@pytest.mark.parametrize("mode", MODES)
def test_100_continue_is_never_sent_to_http10(mercy, tmp_path, mode):
    """HTTP/1.0 has no interim responses: with `Expect: 100-continue` the app
    reads the body and the only response is the final one."""
    app = serve(mercy, tmp_path, mode)
    received = app.send_and_read_all(
        b"POST /input-chunks?size=100 HTTP/1.0\r\nContent-Length: 5\r\n"
        b"Expect: 100-continue\r\n\r\nhello")
    assert b"100 Continue" not in received
    [response], rest = parse_responses(received)
    assert response.status == 200 and rest == b""
    assert base64.b64decode(response.json()["body"]) == b"hello"


# --- HEAD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_head_sends_no_body_bytes_and_keeps_the_apps_content_length(mercy, tmp_path, mode):
    """HEAD: the app's headers, its Content-Length included, and not one
    body byte: the GET pipelined behind it parses as the next response."""
    app = serve(mercy, tmp_path, mode)
    head = b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n"
    with app.wire() as wire:
        wire.send(head + get("/hello"))
        assert wire.read_response(head_request=True).raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n")
        assert wire.read_response().raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")

        wire.send(b"HEAD /generator HTTP/1.1\r\nHost: t\r\n\r\n" + get("/hello"))
        first = wire.read_response(head_request=True)
        assert first.status == 200 and b"generated" not in first.raw
        assert wire.read_response().body == b"hello"


@pytest.mark.parametrize("mode", MODES)
def test_head_carries_the_framing_the_get_would_have(mercy, tmp_path, mode):
    """RFC 9110 section 9.3.2: HEAD gets the header fields GET would, its
    framing included, and no body bytes even though the app returns a body:
    a whole body without Content-Length gets its length, a streamed one
    `Transfer-Encoding: chunked` (HTTP/1.1) or nothing (HTTP/1.0, where GET
    would be delimited by the close, but HEAD needs no close). Each
    connection goes on with the request pipelined behind."""
    app = serve(mercy, tmp_path, mode)
    hello = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    cases = [
        (b"HEAD /unsized HTTP/1.1\r\nHost: t\r\n\r\n" + get("/hello"),
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"),
        (b"HEAD /generator HTTP/1.1\r\nHost: t\r\n\r\n" + get("/hello"),
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
         b"Transfer-Encoding: chunked\r\n\r\n"),
        (b"HEAD /generator HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" + get("/hello"),
         b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n\r\n"),
    ]
    for request, head in cases:
        with app.wire() as wire:
            wire.send(request)
            assert wire.read_response(head_request=True).raw == head
            assert wire.read_response().raw == hello

    # The GETs these HEADs stand for, framed as promised.
    assert app.exchange(get("/unsized")).raw == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n\r\n"
        b"unsized body")
    assert app.exchange(get("/generator")).header("transfer-encoding") == "chunked"
    heads = [r for r in app.server.events("request") if r["method"] == "HEAD"]
    assert [(r["path"], r["size"]) for r in heads] == [
        ("/unsized", 0), ("/generator", 0), ("/generator", 0)]


@pytest.mark.parametrize("mode", MODES)
def test_request_log_duration_is_milliseconds_to_the_microsecond(mercy, tmp_path, mode):
    """Each request log line has duration_ms as a JSON number (not a
    string) with at most three decimals: microseconds, without the float
    noise of a product like 0.31653200000000004."""
    app = serve(mercy, tmp_path, mode)
    for _ in range(20):
        assert app.exchange(get("/hello")).status == 200
    records = wait_until(lambda: len(app.server.events("request", path="/hello")) == 20,
                         EVENT_TIMEOUT, "20 request log lines")
    records = app.server.events("request", path="/hello")
    for record in records:
        duration = record["duration_ms"]
        assert isinstance(duration, (int, float)) and not isinstance(duration, bool), record
        assert duration >= 0 and round(duration, 3) == duration, record


# --- unread bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_unread_request_bodies_are_drained_for_the_next_request(mercy, tmp_path, mode):
    """An app that ignores the body: buffered (10 bytes), streamed (200 KiB,
    over --post-buffering) or chunked; the next request on the connection
    parses cleanly and is served."""
    app = serve(mercy, tmp_path, mode)
    big = bytes(range(256)) * 800
    for request in (post("/noread", b"0123456789"),
                    post("/noread", big),
                    chunked("/noread", [b"hello", b"GET /smuggled HTTP/1.1\r\n\r\n"])):
        with app.wire() as wire:
            wire.send(request + get("/hello"))
            assert wire.read_response().body == b"ignored"
            assert wire.read_response().raw == (
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
                b"hello")
    paths = [entry["path"] for entry in app.events.all() if entry["event"] == "call"]
    assert paths == ["/noread", "/hello"] * 3


# --- HTTP/1.0 and Connection: close -----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_http10_and_connection_close_are_honoured(mercy, tmp_path, mode):
    """HTTP/1.0 closes after the response unless it asked for keep-alive;
    an HTTP/1.0 body without a length is delimited by the close; a request
    or an app response with `Connection: close` ends the connection, and
    the request pipelined behind it never runs."""
    app = serve(mercy, tmp_path, mode)
    assert app.send_and_read_all(get("/hello", version="1.0")) == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello")

    with app.wire() as wire:
        wire.send(get("/hello", "Connection: keep-alive", version="1.0"))
        assert wire.read_response().raw == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
            b"Connection: keep-alive\r\n\r\nhello")
        wire.send(get("/generator", "Connection: keep-alive", version="1.0"))
        assert wire.read_until_close() == (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
            b"generated")

    received = app.send_and_read_all(
        get("/hello?id=c1", "Connection: close") + get("/hello?id=c2"))
    assert received == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello")

    received = app.send_and_read_all(get("/app-close") + get("/hello?id=c3"))
    assert received == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n"
        b"Connection: close\r\n\r\nbye")
    assert app.events.calls("c1") and not app.events.calls("c2")
    assert not app.events.calls("c3")


# --- refused framings ----------------------------------------------------------------------------

REFUSED_FRAMINGS = {
    "content-length-and-chunked": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "conflicting-content-length": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
             b"Content-Length: 6\r\n\r\nhello!"),
    "content-length-list": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\nContent-Length: 5, 5\r\n\r\nhello"),
    "signed-content-length": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\nContent-Length: +5\r\n\r\nhello"),
    "hex-content-length": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\nContent-Length: 0x5\r\n\r\nhello"),
    "gzip-chunked": (
        501, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\n"
             b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
    "identity-chunked": (
        501, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\n"
             b"Transfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n"),
    "chunked-not-final": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\n"
             b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
    "whitespace-before-colon": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\nContent-Length : 5\r\n\r\nhello"),
    "obs-fold": (
        400, b"GET /hello?id=first HTTP/1.1\r\nHost: t\r\nX-Long: one\r\n two\r\n\r\n"),
    "bare-lf": (
        400, b"GET /hello?id=first HTTP/1.1\nHost: t\n\n"),
    "bare-lf-in-header": (
        400, b"GET /hello?id=first HTTP/1.1\r\nX-A: a\nContent-Length: 5\r\n\r\n"),
    "connect": (
        501, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
    "duplicate-content-length": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
             b"Content-Length: 5\r\n\r\nhello"),
    "chunked-chunked": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\n"
             b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"),
    "two-chunked-lines": (
        400, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "unknown-coding-alone": (
        501, b"POST /hello?id=first HTTP/1.1\r\nHost: t\r\n"
             b"Transfer-Encoding: x-unknown\r\n\r\n0\r\n\r\n"),
    "transfer-encoding-in-http10": (
        400, b"POST /hello?id=first HTTP/1.0\r\nHost: t\r\nConnection: keep-alive\r\n"
             b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("framing", REFUSED_FRAMINGS)
def test_refused_framing_gets_one_answer_and_the_smuggled_request_never_runs(
        mercy, tmp_path, mode, framing):
    """Each ambiguous or unsupported framing with a second request pipelined
    behind it: exactly one response, the expected 4xx/5xx with
    `Connection: close`, then the connection closes; the app never ran,
    neither for the first request nor the smuggled one."""
    status, request = REFUSED_FRAMINGS[framing]
    app = serve(mercy, tmp_path, mode)
    received = app.send_and_read_all(request + get("/hello?id=smuggled"))
    responses, rest = parse_responses(received)
    assert [response.status for response in responses] == [status], received
    assert responses[0].header("connection") == "close"
    assert rest == b""
    app.hello_still_works()
    assert app.events.calls("first") == [] and app.events.calls("smuggled") == []
    app.server.wait_event("bad_request", status=status)


# --- slow clients ------------------------------------------------------------------------------

SLOW_CLIENTS = 100
SLOW_ROUNDS = 3
SLOW_INTERVAL = 2.0


@pytest.mark.parametrize("mode", MODES)
def test_slow_clients_do_not_delay_normal_requests(mercy, tmp_path, mode):
    """100 connections each send a header byte every 2 seconds (mercy's
    --socket-timeout is longer than the test). Meanwhile normal requests
    on new connections are all served (by 4 request threads, or up to 50
    greenlets: far fewer than the slow connections); then every slow
    connection is verifiably still open: it finishes its head and gets its
    own answer."""
    app = serve(mercy, tmp_path, mode)
    slow = [app.wire() for _ in range(SLOW_CLIENTS)]
    served = []
    try:
        for wire in slow:
            wire.send(b"GET /hello?id=slow HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        for _ in range(SLOW_ROUNDS):
            for wire in slow:
                wire.send(b"a")
            for _ in range(3):
                response = app.exchange(get("/hello?id=normal"))
                served.append((response.status, response.body))
            time.sleep(SLOW_INTERVAL)
        assert served == [(200, b"hello")] * (3 * SLOW_ROUNDS)
        assert app.events.calls("slow") == []

        for wire in slow:
            assert wire.still_open()
            wire.send(b"\r\nConnection: close\r\n\r\n")
        for wire in slow:
            assert wire.read_until_close().endswith(b"\r\n\r\nhello")
    finally:
        for wire in slow:
            wire.close()
    assert len(app.events.calls("slow")) == SLOW_CLIENTS


# --- limits and timeouts -----------------------------------------------------------------------

OUT_OF_RANGE = {
    "--post-buffering": ("16777217", "between 0 and 16777216"),
    "--keep-alive": ("3601", "between 0 and 3600"),
    "--socket-timeout": ("0", "between 1 and 3600"),
    "--limit-request-line": ("16777217", "between 0 and 16777216"),
    "--limit-request-fields": ("32769", "between 0 and 32768"),
    "--limit-request-field-size": ("16777217", "between 0 and 16777216"),
}


@pytest.mark.parametrize("option", OUT_OF_RANGE)
def test_out_of_range_limits_are_refused_at_start(mercy, tmp_path, option):
    """A limit or timeout outside its range stops mercy at start with exit
    status 1 and a message naming the option and the allowed range; no
    worker is started."""
    value, allowed = OUT_OF_RANGE[option]
    server = mercy("--wsgi-file", APPS / "pep3333.py", option, value, ready=0)
    assert server.wait_exit() == 1
    [error] = server.events("config_error")
    assert option in error["message"] and allowed in error["message"], error
    assert value in error["message"], error
    server.assert_no_events("spawned")


def test_limits_the_buffer_size_makes_unreachable_are_named_at_start(mercy, tmp_path):
    """--buffer-size 1024 with --limit-request-line 2048 and
    --limit-request-field-size 2048: a warning names each limit that no
    request can reach, and mercy serves; the limits a head can reach (the
    header count here) are not named."""
    app = serve(mercy, tmp_path, "threads", "--buffer-size", "1024",
                "--limit-request-line", "2048", "--limit-request-field-size", "2048")
    app.hello_still_works()
    warnings = [record["message"] for record in app.server.events("unreachable_limit")]
    assert len(warnings) == 2, warnings
    assert "--limit-request-line 2048" in warnings[0] and "--buffer-size 1024" in warnings[0]
    assert "--limit-request-field-size 2048" in warnings[1]

    (tmp_path / "defaults").mkdir()
    defaults = serve(mercy, tmp_path / "defaults", "threads")
    defaults.hello_still_works()
    defaults.server.assert_no_events("unreachable_limit")


@pytest.mark.parametrize("mode", MODES)
def test_stalled_head_gets_408_after_the_socket_timeout(mercy, tmp_path, mode):
    """A client that sends half a head and stops: after --socket-timeout
    mercy answers 408 with `Connection: close`, closes, and logs a line
    naming the limit; the app is never called."""
    app = serve(mercy, tmp_path, mode, "--socket-timeout", "2")
    with app.wire() as wire:
        wire.send(b"GET /hello?id=stalled HTTP/1.1\r\nHost: t\r\nX-Half: ")
        received = wire.read_until_close()
    [response], rest = parse_responses(received)
    assert (response.status, response.header("connection"), rest) == (408, "close", b"")
    [logged] = app.server.wait_event("bad_request", status=408)
    assert "--socket-timeout (2s)" in logged["message"], logged
    assert app.events.calls("stalled") == []


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("expect", [False, True])
def test_stalled_body_gets_408_whatever_the_app_answers(mercy, tmp_path, mode, expect):
    """A client that sends 3 of its 10 body bytes and stops (or, having
    asked for `100 Continue`, none): once --socket-timeout passes the
    client gets a 408 with `Connection: close` (its own delay, not the
    app's fault), never a 500 or the app's answer, whether mercy was
    reading the body before calling the app or the app was reading it."""
    app = serve(mercy, tmp_path, mode, "--socket-timeout", "1")
    head = b"POST /input-chunks?size=4 HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n"
    with app.wire() as wire:
        wire.send(head + (b"Expect: 100-continue\r\n\r\n" if expect else b"\r\nabc"))
        received = wire.read_until_close()
    if expect:
        continued, _, received = received.partition(b"\r\n\r\n")
        assert continued == b"HTTP/1.1 100 Continue", continued
    [response], rest = parse_responses(received)
    assert (response.status, response.header("connection"), rest) == (408, "close", b""), \
        received
    assert b"--socket-timeout" in response.body, response.body


@pytest.mark.parametrize("mode", MODES)
def test_socket_timeout_bounds_the_whole_head_not_each_read(mercy, tmp_path, mode):
    """A client that trickles its head one byte a second makes progress on
    every read, yet --socket-timeout (3 s) runs from the head's first byte:
    mercy answers 408 and closes long before the 60 bytes are sent."""
    app = serve(mercy, tmp_path, mode, "--socket-timeout", "3")
    trickle = 60
    with app.wire() as wire:
        wire.send(b"GET /hello?id=trickle HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        sent = 0
        while sent < trickle and not wire.answered():
            try:
                wire.send(b"a")
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            time.sleep(1)
        assert sent < trickle, "mercy kept a trickling head past --socket-timeout"
        received = wire.read_until_close()
    [response], _ = parse_responses(received)
    assert response.status == 408
    app.server.wait_event("bad_request", status=408)
    assert app.events.calls("trickle") == []


@pytest.mark.parametrize("mode", MODES)
def test_keep_alive_idle_timeout_closes_an_idle_connection(mercy, tmp_path, mode):
    """After a response, a connection that sends nothing is closed by mercy
    once --keep-alive (1 s) passes, with no bytes sent; --socket-timeout
    (120 s) is not what closed it."""
    app = serve(mercy, tmp_path, mode, "--keep-alive", "1")
    with app.wire() as wire:
        wire.send(get("/hello"))
        assert wire.read_response().body == b"hello"
        assert wire.closed_by_server()
        assert not wire.reset


@pytest.mark.parametrize("mode", MODES)
def test_keep_alive_zero_closes_after_each_response(mercy, tmp_path, mode):
    """--keep-alive 0 turns keep-alive off: the response says
    `Connection: close` and the request pipelined behind it never runs."""
    app = serve(mercy, tmp_path, mode, "--keep-alive", "0")
    received = app.send_and_read_all(get("/hello") + get("/hello?id=next"))
    assert received == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
        b"Connection: close\r\n\r\nhello")
    assert app.events.calls("next") == []


@pytest.mark.parametrize("mode", MODES)
def test_request_limits_give_431_and_414_with_a_close_and_a_log_line(mercy, tmp_path, mode):
    """Four header fields over --limit-request-fields 3 get 431, a request
    line over --limit-request-line 40 gets 414: each with
    `Connection: close`, then the connection closes, the request pipelined
    behind never runs, and the log line names the limit and its value."""
    app = serve(mercy, tmp_path, mode, "--limit-request-fields", "3",
                "--limit-request-line", "40")
    received = app.send_and_read_all(
        get("/hello?id=fields", "A: 1", "B: 2", "C: 3") + get("/hello?id=after"))
    [response], rest = parse_responses(received)
    assert (response.status, response.header("connection"), rest) == (431, "close", b"")
    [logged] = app.server.wait_event("bad_request", status=431)
    assert "--limit-request-fields (3)" in logged["message"], logged

    received = app.send_and_read_all(get("/hello?id=line&" + "x" * 40) + get("/hello?id=after"))
    [response], rest = parse_responses(received)
    assert (response.status, response.header("connection"), rest) == (414, "close", b"")
    [logged] = app.server.wait_event("bad_request", status=414)
    assert "--limit-request-line (40)" in logged["message"], logged
    assert app.events.calls("fields") == app.events.calls("line") == []
    assert app.events.calls("after") == []
    app.hello_still_works()


# --- request bodies read before the app ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_slow_chunked_upload_does_not_hold_the_only_request_slot(mercy, tmp_path, mode):
    """With one request thread (or one greenlet), a client trickles a small
    chunked body: mercy reads it before calling the app, so meanwhile
    another request is served on the one slot, while the slow connection
    is verifiably still open. The upload then gets its whole body, as
    terminated input."""
    slots = ["--threads", "1"] if mode == "threads" else ["--gevent", "1"]
    events = tmp_path / "events.jsonl"
    server = mercy("--wsgi-file", APPS / "pep3333.py", *slots, *LONG_TIMEOUTS,
                   env={"MERCY_TEST_EVENTS": str(events)})
    app = App(server, AppEvents(events))
    pieces = [b"slow ", b"upload ", b"in ", b"pieces"]
    with app.wire() as slow:
        slow.send(b"POST /input-chunks?id=slow&size=100 HTTP/1.1\r\nHost: t\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for piece in pieces:
            slow.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            response = app.exchange(get("/hello?id=meanwhile"))
            assert (response.status, response.body) == (200, b"hello")
            assert not slow.answered(), "the slow upload was answered or closed early"
        assert app.events.calls("slow") == []
        slow.send(b"0\r\n\r\n")
        answer = slow.read_response().json()
    assert base64.b64decode(answer["body"]) == b"".join(pieces)
    assert answer["input_terminated"] is True
    assert len(app.events.calls("meanwhile")) == len(pieces)


@pytest.mark.parametrize("mode", MODES)
def test_chunked_body_over_post_buffering_streams_its_rest(mercy, tmp_path, mode):
    """--post-buffering 8 and a 30-byte chunked body: the first bytes are
    read before the app runs, the rest streams as the app reads; the app
    gets every byte, in order, as terminated input, and the next request
    on the connection parses cleanly."""
    app = serve(mercy, tmp_path, mode, "--post-buffering", "8")
    body = [b"0123456789", b"abcdefghij", b"ABCDEFGHIJ"]
    with app.wire() as wire:
        wire.send(chunked("/input-chunks?size=4", body) + get("/hello"))
        answer = wire.read_response().json()
        assert base64.b64decode(answer["body"]) == b"".join(body)
        assert answer["input_terminated"] is True
        assert wire.read_response().body == b"hello"


@pytest.mark.parametrize("mode", MODES)
def test_unread_body_over_the_drain_bound_gets_connection_close(mercy, tmp_path, mode):
    """An app that never reads a 2 MiB body (over the 1 MiB mercy drains to
    reach the next request): the response itself says `Connection: close`,
    so the client knows not to send another request on it; the request
    pipelined behind the body never runs."""
    app = serve(mercy, tmp_path, mode)
    body = b"z" * (2 * 1024 * 1024)
    request = post("/noread?id=big", body) + get("/hello?id=next")
    with app.wire() as wire:
        def send():
            try:
                wire.send(request)
            except OSError:
                pass  # mercy closed the connection: it read what it needed

        sender = threading.Thread(target=send)
        sender.start()
        try:
            response = wire.read_response()
            assert (response.status, response.body) == (200, b"ignored")
            assert response.header("connection") == "close", response.raw
            wire.read_until_close()
        finally:
            wire.close()
            sender.join(timeout=60)
    assert app.events.calls("big") and app.events.calls("next") == []
