"""mercy's Python API, available to the app inside every worker.

    import mercy

    mercy.worker_id()            # this worker's slot, 1..processes
    mercy.on_shutdown(fn)        # fn() runs once when this worker retires
    mercy.spawn(fn, *args)       # work the worker waits for before it exits
    with mercy.TaskGroup() as g: # the same, as a group
        g.spawn(fn, *args)
    mercy.is_shutting_down()     # True once this worker is retiring
    mercy.reload()               # ask the master for a graceful reload
"""

import threading

import _mercy

__all__ = [
    "HarakiriTimeout",
    "TaskGroup",
    "is_shutting_down",
    "on_shutdown",
    "reload",
    "spawn",
    "worker_id",
]



class HarakiriTimeout(Exception):
    """Raised in a request's thread or greenlet when it runs longer than
    --harakiri. The client has already been answered with a 504."""


_shutdown_hooks = []
_tracked = set()
_tracked_lock = threading.Lock()


def worker_id():
    """This worker's slot number, from 1 to the number of processes."""
    return _mercy.worker_id()


def is_shutting_down():
    """True once this worker has begun to retire."""
    return _mercy.is_shutting_down()


def reload():
    """Ask the master for a graceful reload of every worker."""
    _mercy.request_reload()


def on_shutdown(fn):
    """Register fn() to run once when this worker retires, after its
    requests and tracked work are finished. Usable as a decorator."""
    if not callable(fn):
        raise TypeError("mercy.on_shutdown() needs a callable, got %r" % (fn,))
    _shutdown_hooks.append(fn)
    return fn


def spawn(fn, *args, **kwargs):
    """Run fn(*args, **kwargs) in the background as tracked work: a retiring
    worker waits for it (within --worker-reload-mercy) before it exits.
    Returns the thread."""
    return _start_tracked(fn, args, kwargs, None)


class TaskGroup:
    """A set of tracked tasks; `join()` (or leaving a `with` block) waits for
    all of them. A retiring worker waits for every task of every group."""

    def __init__(self):
        self._tasks = []

    def spawn(self, fn, *args, **kwargs):
        task = _start_tracked(fn, args, kwargs, self)
        self._tasks.append(task)
        return task

    def join(self, timeout=None):
        for task in list(self._tasks):
            task.join(timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.join()
        return False


def _start_tracked(fn, args, kwargs, group):
    if not callable(fn):
        raise TypeError("mercy.spawn() needs a callable, got %r" % (fn,))
    name = "mercy.spawn:%s" % getattr(fn, "__qualname__", repr(fn))
    if _mercy.mode() == "gevent":
        return _start_tracked_greenlet(fn, args, kwargs, name)

    def run():
        try:
            fn(*args, **kwargs)
        except BaseException:
            _mercy.log_exception("a task started with mercy.spawn() raised")
        finally:
            with _tracked_lock:
                _tracked.discard(thread)

    thread = threading.Thread(target=run, name=name, daemon=False)
    with _tracked_lock:
        _tracked.add(thread)
    thread.start()
    return thread


def _start_tracked_greenlet(fn, args, kwargs, name):
    import gevent

    def run():
        try:
            fn(*args, **kwargs)
        except BaseException:
            _mercy.log_exception("a task started with mercy.spawn() raised")
        finally:
            _tracked.discard(greenlet)

    greenlet = gevent.Greenlet(run)
    greenlet.name = name
    _tracked.add(greenlet)
    greenlet.start()
    return greenlet
