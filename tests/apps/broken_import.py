"""An app that cannot be imported: it needs a module that does not exist."""

import mercy_test_no_such_module  # noqa: F401


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable"]
