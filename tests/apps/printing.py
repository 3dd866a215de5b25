"""An app that prints: to stdout, to stderr in pieces, and from a thread."""

import sys
import threading

print("printed at import")


def application(environ, start_response):
    text = environ.get("QUERY_STRING", "")
    print("stdout says", text)
    sys.stderr.write("stderr ")
    sys.stderr.write("says " + text + "\nsecond line\n")
    worker = threading.Thread(target=print, args=("thread says " + text,))
    worker.start()
    worker.join()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"printed"]
