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
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import APPS, REQUEST_TIMEOUT, wait_until

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


def serve(mercy, tmp_path, mode, *extra, app="pep3333.py") -> App:
    events = tmp_path / "events.jsonl"
    server = mercy("--wsgi-file", APPS / app, *MODES[mode], *LONG_TIMEOUTS, *extra,
                   env={"MERCY_TEST_EVENTS": str(events), "MERCY_ECHO_CALLS": str(events)})
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
    is cut: no final chunk, the connection closes), when it raises before
    any byte (500), and when the client goes away mid-response (the app
    stops producing long before its 4096 chunks)."""
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

    with app.wire() as wire:
        wire.send(get("/close?id=gone&mode=forever"))
        wire.read_head()
        # Reading no more, the client lets the socket buffers fill, so that
        # the app waits for mercy to write (flow control); then it goes away
        # while the app still has most of its body to send.
        time.sleep(1)
    closed = assert_closed_once(app, "gone")
    assert closed["produced"] < 4096


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


# --- Content-Length ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["list", "generator"])
def test_response_shorter_than_its_content_length_closes_and_logs_an_error(
        mercy, tmp_path, kind):
    """An app that declares Content-Length 10 and sends 5 bytes: the client
    gets exactly those bytes, then the connection closes (a pipelined second
    request is never run), and mercy logs an error naming the shortfall."""
    app = serve(mercy, tmp_path, "threads")
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


def test_conflicting_content_lengths_from_the_app_never_reach_the_wire(mercy, tmp_path):
    """An app that sets Content-Length twice with different values (5 and
    11) must not make mercy send both: a proxy in front would frame the
    response one way and mercy the other. The answer is mercy's 500."""
    app = serve(mercy, tmp_path, "threads")
    with app.wire() as wire:
        wire.send(get("/two-lengths"))
        response = wire.read_response()
    assert len(response.headers_named("content-length")) <= 1, response.raw
    assert response.status == 500, response.raw


def test_no_content_response_has_no_content_length_and_no_body(mercy, tmp_path):
    """204 from an app that set Content-Length and returned bytes: mercy
    sends neither the body nor the Content-Length (RFC 9110 section 8.6: a
    server must not send Content-Length in a 204), and the next request on
    the connection is served."""
    app = serve(mercy, tmp_path, "threads")
    with app.wire() as wire:
        wire.send(get("/no-content") + get("/hello"))
        first = wire.read_response()
        assert first.raw == b"HTTP/1.1 204 No Content\r\n\r\n"
        assert wire.read_response().body == b"hello"


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


def test_absolute_form_target_names_the_host(mercy, tmp_path):
    """RFC 9112 section 3.2.2: with an absolute-form target the server must
    ignore the Host header and use the target's authority, so the app sees
    the host a proxy in front routed by (HTTP_HOST), not a second one."""
    app = serve(mercy, tmp_path, "threads")
    environ = app.exchange(
        b"GET http://example.com:8080/environ?x=1 HTTP/1.1\r\nHost: other.test\r\n\r\n").json()
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == ("/environ", "x=1")
    assert environ["HTTP_HOST"] == "example.com:8080"


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
