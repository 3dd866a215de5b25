"""The WSGI app every server runs in mercy's benchmark (bench/run.sh).

Routes, each answered with the same bytes by bench/ceiling (no Python):
- `/`       hello world, 14 bytes;
- `/10k`    a 10 KB body;
- `/echo`   a POST whose body (10 KB in the benchmark) is sent back;
- `/sleep`  waits 10 ms cooperatively (`gevent.sleep`), then says hello:
            used only in the gevent scenario.
"""

HELLO = b"Hello, World!\n"
TEN_KB = b"x" * 10240


def _answer(start_response, body):
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")

    if path == "/":
        return _answer(start_response, HELLO)

    if path == "/10k":
        return _answer(start_response, TEN_KB)

    if path == "/echo":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        return _answer(start_response, environ["wsgi.input"].read(length))

    if path == "/sleep":
        import gevent

        gevent.sleep(0.01)
        return _answer(start_response, HELLO)

    start_response("404 Not Found", [("Content-Length", "0")])
    return [b""]
