"""The worker's side of mercy written in Python: loading the app and the
retirement steps that need the interpreter. Not for apps to import."""

import atexit
import importlib
import importlib.util
import io
import os
import sys
import threading
import traceback

import _mercy
import mercy


def load_file(path, callable_name):
    """Import the app from a Python file, as __main__-free module named after
    the file, and return its WSGI callable."""
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = os.path.splitext(os.path.basename(path))[0]
    if not name.isidentifier():
        name = "mercy_app"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError("cannot load %s: not a Python file" % path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return _callable_of(module, callable_name, path)


def load_module(spec, default_callable):
    """Import the app from `pkg.mod` or `pkg.mod:callable`."""
    module_name, _, callable_name = spec.partition(":")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    module = importlib.import_module(module_name)
    return _callable_of(module, callable_name or default_callable, module_name)


def _callable_of(module, name, where):
    """The module's attribute `name`; for a name ending in "()" (an app
    factory, as in `pkg.mod:create_app()`), what calling that attribute
    with no arguments returns, once, at load."""
    factory = name.endswith("()")
    attribute = name[:-2] if factory else name
    try:
        app = getattr(module, attribute)
    except AttributeError:
        raise LookupError("%s has no callable named %r (set --callable)"
                          % (where, attribute)) from None
    if not callable(app):
        raise TypeError("%s.%s is a %s, not a callable" % (where, attribute, type(app).__name__))
    if factory:
        app = app()
        if not callable(app):
            raise TypeError("%s.%s() returned a %s, not a WSGI callable"
                            % (where, attribute, type(app).__name__))
    return app


def describe_error(error):
    """One line naming the exception and where it was raised in the app."""
    text = "%s: %s" % (type(error).__name__, error)
    if isinstance(error, SyntaxError) and error.filename:
        return "%s (%s, line %s)" % (text, error.filename, error.lineno)
    frames = traceback.extract_tb(error.__traceback__)
    own = os.path.dirname(__file__)
    for frame in reversed(frames):
        if not frame.filename.startswith("<") and not frame.filename.startswith(own):
            return "%s (%s, line %s)" % (text, frame.filename, frame.lineno)
    return text


def format_error(error):
    return "".join(traceback.format_exception(type(error), error, error.__traceback__))


def start_request_threads(count):
    threads = []
    for index in range(count):
        thread = threading.Thread(
            target=_mercy.serve,
            args=(index,),
            name="mercy-request-%d" % (index + 1),
            # Not daemons, so that the threads an app starts while serving
            # are not daemons either (a thread inherits the flag of the one
            # that creates it), as under a plain Python program; the request
            # threads themselves are joined in retirement step 2.
            daemon=False,
        )
        thread.start()
        threads.append(thread)
    return threads


def wait_request_threads(threads):
    for thread in threads:
        thread.join()


def wait_tracked_work():
    """Retirement step 3: wait for work started with mercy.spawn()."""
    while True:
        with mercy._tracked_lock:
            pending = list(mercy._tracked)
        if not pending:
            return
        for thread in pending:
            thread.join()


def run_shutdown_hooks():
    """Retirement step 4: mercy.on_shutdown hooks, uwsgi.atexit, then
    Python's own atexit handlers; each exactly once."""
    hooks = list(mercy._shutdown_hooks)
    mercy._shutdown_hooks.clear()
    for hook in hooks:
        _call_hook(hook, "a mercy.on_shutdown hook")
    uwsgi = sys.modules.get("uwsgi")
    uwsgi_atexit = getattr(uwsgi, "atexit", None) if uwsgi is not None else None
    if callable(uwsgi_atexit):
        _call_hook(uwsgi_atexit, "uwsgi.atexit")
    atexit._run_exitfuncs()


def _call_hook(hook, what):
    try:
        hook()
    except BaseException:
        _mercy.log_exception("%s raised" % what)


def wait_non_daemon_threads():
    """Retirement step 5: wait for non-daemon threads, as Python itself does
    at exit. Daemon threads (driver monitors, flushers) never delay it."""
    current = threading.current_thread()
    main = threading.main_thread()
    while True:
        pending = [
            t
            for t in threading.enumerate()
            if t is not current and t is not main and not t.daemon and t.is_alive()
        ]
        if not pending:
            return
        for thread in pending:
            thread.join()


def harakiri(core, sequence):
    """Request slot `core` passed --harakiri: returns the Python stack of
    its thread (or greenlet) and raises mercy.HarakiriTimeout in it, if it
    is still in the same request."""
    if _mercy.core_request(core) != (sequence, True):
        return "(the request ended before its stack was taken)"
    if _mercy.mode() == "gevent":
        from mercy import _gevent

        return _gevent.harakiri(core, sequence)
    name = "mercy-request-%d" % (core + 1)
    thread = next((t for t in threading.enumerate() if t.name == name), None)
    if thread is None:
        return "(the request thread is gone)"
    frame = sys._current_frames().get(thread.ident)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else ""
    if _mercy.core_request(core) == (sequence, True):
        import ctypes

        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(mercy.HarakiriTimeout)
        )
    return stack


def daemon_threads():
    """Names of the daemon threads left behind at exit, for the debug log."""
    return [t.name for t in threading.enumerate() if t.daemon and t.is_alive()]


def thread_stacks():
    """The name and Python stack of every live thread and greenlet, for the
    mercy_expired diagnostic."""
    threads = {t.ident: t for t in threading.enumerate()}
    current = _real_get_ident()
    parts = []
    for ident, frame in sys._current_frames().items():
        if ident == current:
            continue
        parts.append(_describe("Thread", threads.get(ident), ident, frame))
    for greenlet in _live_greenlets():
        # A monkey-patched thread is a greenlet whose ident is id(greenlet).
        thread = threads.get(id(greenlet))
        name = getattr(greenlet, "name", None) if thread is None else None
        parts.append(_describe("Greenlet", thread, id(greenlet), greenlet.gr_frame, name))
    return "\n".join(parts)


def _describe(kind, thread, ident, frame, name=None):
    if thread is not None:
        name = thread.name
        kind += " (%s)" % ("daemon" if thread.daemon else "non-daemon")
    name = name or "%s %d" % (kind.split()[0].lower(), ident)
    stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no Python frame)\n"
    return '%s "%s":\n%s' % (kind, name, stack)


def _real_get_ident():
    try:
        from gevent import monkey

        return monkey.get_original("_thread", "get_ident")()
    except ImportError:
        return threading.get_ident()


def _live_greenlets():
    """Greenlets that are suspended with a Python frame: the ones a gevent
    worker could be waiting for."""
    greenlet_module = sys.modules.get("greenlet")
    if greenlet_module is None:
        return []
    import gc

    return [
        g
        for g in gc.get_objects()
        if isinstance(g, greenlet_module.greenlet) and not g.dead and g.gr_frame is not None
    ]


class FileWrapper:
    """wsgi.file_wrapper: iterates a file-like object in blocks and closes
    it when the server closes the response."""

    def __init__(self, filelike, block_size=8192):
        self.filelike = filelike
        self.block_size = block_size
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read = self.filelike.read
        while True:
            block = read(self.block_size)
            if not block:
                return
            yield block


def after_app_loaded():
    """uWSGI's post-fork hook (and @postfork functions), once per worker,
    after the app is imported."""
    uwsgi = sys.modules.get("uwsgi")
    hook = getattr(uwsgi, "post_fork_hook", None) if uwsgi is not None else None
    if callable(hook):
        hook()


class _LineLog(io.TextIOBase):
    """`sys.stdout` or `sys.stderr` under --log-json: every line the app
    prints becomes one `app_log` event, so the log stays JSON lines. Each
    thread (each greenlet in gevent mode) gathers its own partial line."""

    def __init__(self, stream, original):
        self._stream = stream
        self._original = original
        self._pending = threading.local()

    @property
    def encoding(self):
        return "utf-8"

    def writable(self):
        return True

    def isatty(self):
        return False

    def fileno(self):
        return self._original.fileno()

    def write(self, text):
        if not isinstance(text, str):
            raise TypeError("write() argument must be str, not %s" % type(text).__name__)
        lines = (getattr(self._pending, "text", "") + text).split("\n")
        self._pending.text = lines.pop()
        for line in lines:
            _mercy.log_output(line, self._stream)
        return len(text)

    def flush(self):
        text = getattr(self._pending, "text", "")
        if text:
            self._pending.text = ""
            _mercy.log_output(text, self._stream)


def log_printed_lines():
    """Under --log-json, what the app prints is logged as JSON lines too."""
    sys.stdout = _LineLog("stdout", sys.__stdout__)
    sys.stderr = _LineLog("stderr", sys.__stderr__)
