"""An app whose non-daemon thread never ends: retirement can only time out.

The thread's name and function name are looked for in the `mercy_expired`
diagnostic.
"""

import threading
import time

THREAD_NAME = "mercy-test-stuck-thread"


def never_ending_loop():
    while True:
        time.sleep(0.1)


threading.Thread(target=never_ending_loop, name=THREAD_NAME, daemon=False).start()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"stuck"]
