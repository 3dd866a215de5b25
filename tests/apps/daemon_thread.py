"""An app with an untracked daemon thread that runs forever, as a metrics
flusher or a driver's monitor does: it must never delay a retirement.

Routes:
    /pid    JSON: this worker's pid and the names of its live threads
"""

import json
import os
import threading
import time

THREAD_NAME = "mercy-test-daemon-flusher"


def flush_forever():
    while True:
        time.sleep(0.1)


threading.Thread(target=flush_forever, name=THREAD_NAME, daemon=True).start()


def application(environ, start_response):
    body = json.dumps({"pid": os.getpid(),
                       "threads": [t.name for t in threading.enumerate()]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
