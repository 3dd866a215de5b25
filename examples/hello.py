"""The smallest WSGI app: answers every request with "Hello, World!".

    mercy --http :8000 --wsgi-file examples/hello.py
"""


def application(environ, start_response):
    body = b"Hello, World!\n"
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
