"""Echoes every request back as JSON, for the uwsgi-protocol and nginx tests.

Each call appends one JSON line to the file named by $COMPAT_CALLS (when
set) before the body is read, so a test can tell whether and how often the
app was called.

The response (200, with a Content-Length) is a JSON object: method, path
(PATH_INFO), query (QUERY_STRING), script_name, scheme (wsgi.url_scheme),
protocol, headers (every HTTP_* key plus CONTENT_TYPE and CONTENT_LENGTH),
uwsgi_keys (environ keys starting with UWSGI_), body_b64 (what
wsgi.input.read() gave) and pid. Strings are the environ's latin-1 native
strings.
"""

import base64
import json
import os

CALLS = os.environ.get("COMPAT_CALLS")


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


def application(environ, start_response):
    summary = {
        "method": environ["REQUEST_METHOD"],
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "script_name": environ.get("SCRIPT_NAME", ""),
        "scheme": environ.get("wsgi.url_scheme", ""),
        "protocol": environ.get("SERVER_PROTOCOL", ""),
        "headers": {
            key: value for key, value in environ.items()
            if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH")
        },
        "uwsgi_keys": sorted(key for key in environ if key.startswith("UWSGI_")),
        "pid": os.getpid(),
    }
    record({"event": "call", **summary})
    body = environ["wsgi.input"].read()
    record({"event": "body", "path": summary["path"], "size": len(body)})
    summary["body_b64"] = base64.b64encode(body).decode()
    payload = json.dumps(summary).encode()
    start_response(
        "200 OK",
        [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))],
    )
    return [payload]
