"""Echoes every request back as JSON, for the wire-level conformance tests.

Each call appends one JSON line to the file named by the environment
variable MERCY_ECHO_CALLS (when set), before the body is read, so a test can
tell whether, how often and in which order the app was called, even when the
body read fails. A second line records the outcome of reading the body.

The response (200, with a Content-Length) is a JSON object:
    method, path (PATH_INFO), query (QUERY_STRING), protocol, remote_addr,
    remote_port, input_terminated, headers (every HTTP_* key plus
    CONTENT_TYPE and CONTENT_LENGTH), body_b64 (what wsgi.input.read() gave).
Strings are the environ's latin-1 native strings; a test encodes them back
to latin-1 to get the request bytes.

When the body cannot be read (a malformed chunked body), the OSError from
wsgi.input propagates: what the client then gets is mercy's decision.
"""

import base64
import json
import os

CALLS = os.environ.get("MERCY_ECHO_CALLS")


def record(entry):
    """Appends one line with a single write, so lines never interleave."""
    if not CALLS:
        return
    line = (json.dumps(entry) + "\n").encode()
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def request_headers(environ):
    return {
        key: value for key, value in environ.items()
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
    }


def application(environ, start_response):
    summary = {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "protocol": environ.get("SERVER_PROTOCOL", ""),
        "remote_addr": environ.get("REMOTE_ADDR", ""),
        "remote_port": environ.get("REMOTE_PORT", ""),
        "input_terminated": environ.get("wsgi.input_terminated", False),
        "headers": request_headers(environ),
    }
    record({"event": "call", "pid": os.getpid(), **summary})
    try:
        body = environ["wsgi.input"].read()
    except OSError as error:
        record({"event": "body_error", "path": summary["path"], "error": str(error)})
        raise
    record({"event": "body", "path": summary["path"], "size": len(body)})

    summary["body_b64"] = base64.b64encode(body).decode()
    payload = json.dumps(summary).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]
