"""A WSGI app that exercises PEP 3333 corner cases, for tests/test_http.py.

Every call, and what the app saw on each path, is appended as one JSON line
to the file named by the environment variable MERCY_TEST_EVENTS (one write
per line, so lines never interleave). Each line has "event" and the
request's "id" (its `id` query parameter, if any).

Routes (PATH_INFO; parameters in the query string):
    /hello            200 "hello" with Content-Length
    /write            write(b"first-") then returns [b"second"];
                      length=1 adds Content-Length: 12
    /write-generator  write(b"first-") then a generator: b"second", b"-third"
    /exc-info-before  start_response 200, then again with exc_info: 500 "replaced"
    /exc-info-after   write(b"partial"), then start_response with exc_info:
                      records whether the same exception came back, re-raises it
    /twice            start_response twice without exc_info
    /close            a closing iterable; mode=ok|raise-first|raise-later|forever|
                      trickle|keep-alive; each chunk of mode=forever is recorded
                      before it is given; trickle yields b"x" * 1024 every 10 ms
                      and keep-alive b"" every 10 ms, both without end
    /status           start_response with the status `code` (any text), then
                      returns [b"body"]
    /none             start_response 200, then returns None
    /file             wsgi.file_wrapper around a real file of FILE_BYTES[:size]
                      (default all); seek=K seeks first, read=R reads R bytes
                      through the buffered file first; length=L sets
                      Content-Length; write=1 writes b"before-" first;
                      source=bytesio wraps an in-memory file instead
    /short            Content-Length 10, 5 bytes; kind=list|generator
    /long             Content-Length 5, 11 bytes
    /two-lengths      two Content-Length headers, 5 and 11; 11 bytes
    /no-content       204 with a Content-Length and body bytes
    /input            reads wsgi.input past its end in every way; JSON answer
    /input-chunks     reads wsgi.input `size` bytes at a time; JSON answer
    /noread           answers without reading the body
    /bad-header       start_response with an invalid header; kind=nonlatin|
                      crlf|lf|name|nul|status
    /generator        a generator body without Content-Length
    /unsized          a one-item list b"unsized body" without Content-Length
    /app-close        answers with `Connection: close`
    /environ...       the request's environ strings as JSON (any path below)
"""

import base64
import io
import json
import os
import sys
import tempfile
import time
from urllib.parse import parse_qs

EVENTS = os.environ.get("MERCY_TEST_EVENTS")
FOREVER_CHUNK = b"x" * 65536
FOREVER_CHUNKS = 4096
# The file /file serves: every byte value, so an offset shows in the bytes.
FILE_BYTES = bytes(range(256)) * 1024


def record(request_id, event, **fields):
    if not EVENTS:
        return
    line = json.dumps({"event": event, "id": request_id, "pid": os.getpid(), **fields})
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def plain(start_response, body, status="200 OK", extra=()):
    start_response(status, [("Content-Type", "text/plain"),
                            ("Content-Length", str(len(body))), *extra])
    return [body]


def as_json(start_response, document):
    body = json.dumps(document).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def b64(data):
    return base64.b64encode(data).decode()


class ClosingBody:
    """An iterable whose close() is recorded; mode says how iteration goes."""

    def __init__(self, request_id, mode):
        self.request_id = request_id
        self.mode = mode
        self.produced = 0

    def __iter__(self):
        if self.mode == "raise-first":
            raise RuntimeError("the body failed before its first chunk")
        if self.mode == "forever":
            for index in range(FOREVER_CHUNKS):
                self.produced += 1
                record(self.request_id, "chunk", index=index)
                yield FOREVER_CHUNK
            return
        if self.mode in ("trickle", "keep-alive"):
            chunk = b"x" * 1024 if self.mode == "trickle" else b""
            while True:
                self.produced += 1
                yield chunk
                time.sleep(0.01)
        self.produced += 1
        yield b"first;"
        if self.mode == "raise-later":
            raise RuntimeError("the body failed after its first chunk")
        self.produced += 1
        yield b"second"

    def close(self):
        record(self.request_id, "close", produced=self.produced)


class TrackedFile:
    """A file whose reads and close are recorded: with sendfile mercy never
    reads it through Python."""

    def __init__(self, request_id, file):
        self.request_id = request_id
        self.file = file

    def fileno(self):
        return self.file.fileno()

    def tell(self):
        return self.file.tell()

    def read(self, size=-1):
        record(self.request_id, "file_read", size=size)
        return self.file.read(size)

    def close(self):
        record(self.request_id, "file_close")
        self.file.close()


def file_route(environ, start_response, query, request_id):
    def number(name):
        return int(query[name][0]) if name in query else None

    size = number("size")
    content = FILE_BYTES if size is None else FILE_BYTES[:size]
    if query.get("source") == ["bytesio"]:
        file = io.BytesIO(content)
    else:
        file = tempfile.TemporaryFile()
        file.write(content)
        file.flush()
        file.seek(0)
    if number("seek") is not None:
        file.seek(number("seek"))
    if number("read") is not None:
        file.read(number("read"))

    headers = [("Content-Type", "application/octet-stream")]
    if number("length") is not None:
        headers.append(("Content-Length", str(number("length"))))
    write = start_response("200 OK", headers)
    if query.get("write"):
        write(b"before-")
    return environ["wsgi.file_wrapper"](TrackedFile(request_id, file), 4096)


def write_route(environ, start_response, query):
    headers = [("Content-Type", "text/plain")]
    if query.get("length"):
        headers.append(("Content-Length", "12"))
    write = start_response("200 OK", headers)
    write(b"first-")
    return [b"second"]


def write_generator_route(environ, start_response, query):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"first-")

    def rest():
        yield b"second"
        yield b"-third"

    return rest()


def exc_info_before_route(environ, start_response, request_id):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("changed my mind")
    except ValueError:
        start_response("500 Replaced", [("Content-Type", "text/plain"),
                                        ("Content-Length", "8")], sys.exc_info())
    return [b"replaced"]


def exc_info_after_route(environ, start_response, request_id):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"partial")
    try:
        raise ValueError("too late")
    except ValueError as error:
        try:
            start_response("500 Too Late", [("Content-Type", "text/plain")], sys.exc_info())
        except ValueError as reraised:
            record(request_id, "reraised", same=reraised is error)
            raise
        record(request_id, "not_reraised")
    return [b"unreachable"]


def twice_route(environ, start_response, request_id):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("201 Created", [("Content-Type", "text/plain")])
    except AssertionError:
        record(request_id, "second_start_refused")
        raise
    record(request_id, "second_start_accepted")
    return [b"twice"]


def short_route(environ, start_response, query):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    if query.get("kind") == "generator":
        return (chunk for chunk in [b"sh", b"ort"])
    return [b"short"]


def long_route(start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello world"]


def input_route(environ, start_response, request_id):
    stream = environ["wsgi.input"]
    first = stream.read(100000)
    after = [stream.read(), stream.read(5), stream.readline(), stream.read(0)]
    lines = stream.readlines()
    record(request_id, "input_read", size=len(first))
    return as_json(start_response, {
        "first": b64(first),
        "after": [b64(piece) for piece in after],
        "lines": len(lines),
        "input_terminated": environ.get("wsgi.input_terminated"),
        "content_length": environ.get("CONTENT_LENGTH"),
    })


def input_chunks_route(environ, start_response, query):
    size = int(query.get("size", ["3"])[0])
    stream = environ["wsgi.input"]
    pieces = []
    while True:
        piece = stream.read(size)
        if not piece:
            break
        pieces.append(piece)
    body = b"".join(pieces)
    return as_json(start_response, {
        "body": b64(body),
        "reads": len(pieces),
        "largest": max((len(piece) for piece in pieces), default=0),
        "input_terminated": environ.get("wsgi.input_terminated"),
    })


BAD_HEADERS = {
    "nonlatin": ("200 OK", [("X-Snow", "\u2603")]),
    "crlf": ("200 OK", [("X-Bad", "a\r\nInjected: yes")]),
    "lf": ("200 OK", [("X-Bad", "a\nInjected: yes")]),
    "nul": ("200 OK", [("X-Bad", "a\x00b")]),
    "name": ("200 OK", [("Bad Name", "value")]),
    "colon": ("200 OK", [("Injected: yes\r\nX", "value")]),
    "status": ("200 OK\r\nInjected: yes", []),
}


def bad_header_route(environ, start_response, query):
    status, headers = BAD_HEADERS[query["kind"][0]]
    start_response(status, [("Content-Type", "text/plain"), *headers])
    return [b"must not be sent"]


def generator_route(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return (chunk for chunk in [b"gen", b"erated"])


def unsized_route(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unsized body"]


def environ_route(environ, start_response):
    strings = {key: value for key, value in environ.items() if isinstance(value, str)}
    return as_json(start_response, strings)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    request_id = query.get("id", [None])[0]
    record(request_id, "call", path=path, method=environ["REQUEST_METHOD"])

    if path == "/hello":
        return plain(start_response, b"hello")
    if path == "/write":
        return write_route(environ, start_response, query)
    if path == "/write-generator":
        return write_generator_route(environ, start_response, query)
    if path == "/exc-info-before":
        return exc_info_before_route(environ, start_response, request_id)
    if path == "/exc-info-after":
        return exc_info_after_route(environ, start_response, request_id)
    if path == "/twice":
        return twice_route(environ, start_response, request_id)
    if path == "/close":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ClosingBody(request_id, query.get("mode", ["ok"])[0])
    if path == "/status":
        start_response(query["code"][0], [("Content-Type", "text/plain")])
        return [b"body"]
    if path == "/none":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return None
    if path == "/file":
        return file_route(environ, start_response, query, request_id)
    if path == "/short":
        return short_route(environ, start_response, query)
    if path == "/long":
        return long_route(start_response)
    if path == "/two-lengths":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5"),
                                  ("Content-Length", "11")])
        return [b"hello world"]
    if path == "/no-content":
        start_response("204 No Content", [("Content-Length", "5")])
        return [b"hello"]
    if path == "/input":
        return input_route(environ, start_response, request_id)
    if path == "/input-chunks":
        return input_chunks_route(environ, start_response, query)
    if path == "/noread":
        return plain(start_response, b"ignored")
    if path == "/bad-header":
        return bad_header_route(environ, start_response, query)
    if path == "/generator":
        return generator_route(environ, start_response)
    if path == "/unsized":
        return unsized_route(start_response)
    if path == "/app-close":
        return plain(start_response, b"bye", extra=[("Connection", "close")])
    if path.startswith("/environ"):
        return environ_route(environ, start_response)
    return plain(start_response, b"not found", status="404 Not Found")
