"""gevent mode: the worker's main thread runs the gevent hub.

Rust accepts connections and parses requests on its own threads and never
calls into Python. It queues requests and answers and writes to an eventfd;
the dispatcher greenlet below watches that eventfd, wakes the greenlets
whose answers are in, and starts one greenlet per request (at most
--gevent N at once).
Not for apps to import."""

import sys

import gevent
import gevent.event

import _mercy

_waiters = {}
_engine = None


def wait(wait_id):
    """Called (from Rust) by a request greenlet that waits for the
    connection: yields to the hub until the answer is in."""
    event = _waiters.get(wait_id)
    if event is None:
        event = _waiters[wait_id] = gevent.event.Event()
    try:
        event.wait()
    finally:
        _waiters.pop(wait_id, None)


def _answer_ready(wait_id):
    event = _waiters.get(wait_id)
    if event is None:
        event = _waiters[wait_id] = gevent.event.Event()
    event.set()


class Engine:
    def __init__(self, greenlets):
        self.limit = greenlets
        # Request greenlets running, and those of them not yet started
        # (their requests are still counted as waiting).
        self.active = 0
        self.starting = 0
        # Request slots (uWSGI's "cores"), handed to greenlets as they start.
        self.free_slots = list(range(greenlets - 1, -1, -1))
        self.slot_greenlets = {}
        self.idle = gevent.event.Event()
        self.idle.set()
        self.retiring = gevent.event.Event()
        self.hub = gevent.get_hub()
        self.watcher = self.hub.loop.io(_mercy.hub_fd(), 1)

    def dispatch(self):
        while True:
            self.hub.wait(self.watcher)
            for wait_id in _mercy.hub_take_ready():
                _answer_ready(wait_id)
            self.start_request_greenlets()
            if _mercy.is_shutting_down():
                self.retiring.set()

    def start_request_greenlets(self):
        """Starts one greenlet per queued request while fewer than
        --gevent N run; the rest stay queued until a greenlet ends."""
        while self.active < self.limit and _mercy.requests_waiting() > self.starting:
            self.active += 1
            self.starting += 1
            self.idle.clear()
            gevent.spawn(self.serve, self.free_slots.pop())

    def serve(self, slot):
        """Runs one request in this new greenlet, in request slot `slot`
        (the stats' and harakiri's "core"). A greenlet per request: data the
        app keeps in gevent.local (or a patched threading.local) never
        reaches the next request."""
        self.slot_greenlets[slot] = gevent.getcurrent()
        self.starting -= 1
        try:
            _mercy.handle_next(slot)
        finally:
            self.slot_greenlets.pop(slot, None)
            self.free_slots.append(slot)
            self.active -= 1
            # Requests queued while every slot was busy woke the hub for
            # nothing: this is their turn.
            self.start_request_greenlets()
            if self.active == 0:
                self.idle.set()

    def stop(self):
        self.watcher.stop()


def harakiri(core, sequence):
    """Called from mercy's watchdog thread (with the GIL): the greenlet of
    slot `core` passed --harakiri. Returns its stack and, from the hub,
    raises mercy.HarakiriTimeout in it if it is still in that request."""
    import traceback

    import mercy

    greenlet = _engine.slot_greenlets.get(core) if _engine is not None else None
    if greenlet is None:
        return "(the request greenlet is gone)"
    frame = greenlet.gr_frame
    if frame is None and not greenlet.dead:
        # A greenlet has no frame of its own while it runs: this one holds
        # the hub's thread (a CPU loop, a call that blocks without
        # yielding), whose current frame is the greenlet's.
        frame = sys._current_frames().get(_engine.hub.thread_ident)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else ""

    def stop():
        if _mercy.core_request(core) == (sequence, True) and not greenlet.dead:
            greenlet.throw(mercy.HarakiriTimeout)

    _engine.hub.loop.run_callback_threadsafe(stop)
    return stack


def run(greenlets, stopped_accepting_wait_id, drained_wait_id, wait_for_hub):
    """Serve until the master asks this worker to retire, then retire in
    the order of DESIGN.md section 3. Returns when the worker may exit."""
    from mercy import _worker

    global _engine
    engine = _engine = Engine(greenlets)
    dispatcher = gevent.spawn(engine.dispatch)
    dispatcher.name = "mercy-dispatcher"

    engine.retiring.wait()
    # Step 1: Rust stops accepting (on a graceful shutdown, after taking
    # what the kernel had queued). Step 2: Rust answers when every
    # connection is closed; request greenlets may still be running close().
    _mercy.set_step(1)
    wait(stopped_accepting_wait_id)
    _mercy.set_step(2)
    wait(drained_wait_id)
    engine.idle.wait()

    _mercy.set_step(3)
    _worker.wait_tracked_work()
    _mercy.set_step(4)
    _worker.run_shutdown_hooks()
    if not _mercy.is_fast_retirement():
        _mercy.set_step(5)
        _worker.wait_non_daemon_threads()
        if wait_for_hub:
            dispatcher.kill()
            engine.stop()
            # Returns once nothing is left for the hub to run: no greenlet,
            # timer or watcher.
            engine.hub.join()
    _mercy.set_step(6)
