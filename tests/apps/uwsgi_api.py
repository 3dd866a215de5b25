"""An app written for uWSGI, using `import uwsgi` and `uwsgidecorators` the
way such apps do, unchanged. Used by the uWSGI compatibility tests and the
ini-file tests.

$COMPAT_RECORD (when set) names a file that gets one JSON line per hook
call, written with a single O_APPEND write: {"hook": "import" | "direct" |
"postfork" | "atexit", "pid": ..., "worker_id": ...}.

Routes:
    /info   JSON: pid, worker_id, masterpid, numproc, opt (each value tagged
            with its Python type), version_type, version (decoded),
            version_info, greeting ($GREETING), config_dir ($CONFIG_DIR),
            ini_env (every $INI_* variable), multithread, gevent (whether
            the socket module is gevent's), cache_get_error (the
            AttributeError message of uwsgi.cache_get), has_cache_get
    /reload uwsgi.reload(): a graceful reload
    /setprocname?NAME
            uwsgi.setprocname(NAME); JSON: pid, result (its repr)
    /accepting
            JSON: pid, results (the reprs of uwsgi.accepting() and
            uwsgi.accepting(True))
    other   "hello"
"""

import json
import os
import socket

import uwsgi
from uwsgidecorators import postfork

RECORD = os.environ.get("COMPAT_RECORD")


def record(hook):
    if not RECORD:
        return
    entry = {"hook": hook, "pid": os.getpid(), "worker_id": uwsgi.worker_id()}
    fd = os.open(RECORD, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


record("import")


# Some apps assign the hook directly; @postfork must chain it, not drop it.
def direct_hook():
    record("direct")


uwsgi.post_fork_hook = direct_hook


@postfork
def connect_database():
    record("postfork")


def goodbye():
    record("atexit")


uwsgi.atexit = goodbye


def tagged(value):
    """opt values as JSON, keeping their Python type visible."""
    if isinstance(value, bytes):
        return {"bytes": value.decode("latin-1")}
    if isinstance(value, list):
        return {"list": [tagged(item) for item in value]}
    if value is True:
        return {"true": True}
    return {"other": repr(value)}


def info(environ):
    try:
        uwsgi.cache_get("key")
        cache_get_error = None
    except AttributeError as error:
        cache_get_error = str(error)
    return {
        "pid": os.getpid(),
        "worker_id": uwsgi.worker_id(),
        "masterpid": uwsgi.masterpid(),
        "numproc": uwsgi.numproc,
        "opt": {str(key): tagged(value) for key, value in uwsgi.opt.items()},
        "opt_key_types": sorted({type(key).__name__ for key in uwsgi.opt}),
        "version_type": type(uwsgi.version).__name__,
        "version": uwsgi.version.decode("latin-1"),
        "version_info": list(uwsgi.version_info),
        "ini_env": {key: value for key, value in os.environ.items() if key.startswith("INI_")},
        "gevent": socket.socket.__module__.startswith("gevent"),
        "greeting": os.environ.get("GREETING"),
        "config_dir": os.environ.get("CONFIG_DIR"),
        "multithread": environ.get("wsgi.multithread"),
        "cache_get_error": cache_get_error,
        "has_cache_get": hasattr(uwsgi, "cache_get"),
    }


def application(environ, start_response):
    path = environ.get("PATH_INFO")
    if path == "/info":
        body = json.dumps(info(environ)).encode()
        content_type = "application/json"
    elif path == "/reload":
        body = json.dumps({"reload": uwsgi.reload()}).encode()
        content_type = "application/json"
    elif path == "/setprocname":
        result = uwsgi.setprocname(environ.get("QUERY_STRING", ""))
        body = json.dumps({"pid": os.getpid(), "result": repr(result)}).encode()
        content_type = "application/json"
    elif path == "/accepting":
        results = [repr(uwsgi.accepting()), repr(uwsgi.accepting(True))]
        body = json.dumps({"pid": os.getpid(), "results": results}).encode()
        content_type = "application/json"
    else:
        body = b"hello"
        content_type = "text/plain"
    start_response(
        "200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    )
    return [body]
