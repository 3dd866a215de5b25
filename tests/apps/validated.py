"""A body-echo app wrapped in `wsgiref.validate.validator`, for
tests/test_http.py: every PEP 3333 rule the validator checks (the environ's
keys and types, wsgi.input and wsgi.errors, start_response, the returned
iterable being closed) fails with an AssertionError, and its warnings are
made errors too. A failure inside a request is an app error (500 and a
logged traceback); one found when the validator's wrapper is collected
(an iterable never closed) is recorded for /problems.

Routes (PATH_INFO):
    /read       reads wsgi.input with read(1000) until it returns b""
    /readline   reads wsgi.input with readline() until it returns b""
    /iter       reads wsgi.input by iterating over it
    /problems   JSON: the errors found outside any request so far
    other       as /read
Each answers JSON: method, the CONTENT_LENGTH it saw (None if absent), the
body bytes as latin-1 text, and how many pieces reading took.
"""

import json
import sys
import warnings
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)

PROBLEMS = []
_previous_hook = sys.unraisablehook


def _record_unraisable(unraisable):
    PROBLEMS.append("%s: %s" % (type(unraisable.exc_value).__name__, unraisable.exc_value))
    _previous_hook(unraisable)


sys.unraisablehook = _record_unraisable


def _read(stream, how):
    pieces = []
    if how == "/readline":
        while line := stream.readline():
            pieces.append(line)
    elif how == "/iter":
        pieces.extend(stream)
    else:
        while piece := stream.read(1000):
            pieces.append(piece)
    return pieces


def _echo(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/problems":
        document = {"problems": PROBLEMS}
    else:
        pieces = _read(environ["wsgi.input"], path)
        document = {
            "method": environ["REQUEST_METHOD"],
            "content_length": environ.get("CONTENT_LENGTH"),
            "body": b"".join(pieces).decode("latin-1"),
            "pieces": len(pieces),
        }
    environ["wsgi.errors"].flush()
    body = json.dumps(document).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


application = validator(_echo)
