"""The `uwsgi` module as apps written for uWSGI use it, served by mercy.

What mercy provides: worker_id(), masterpid(), numproc, opt, reload(),
atexit, post_fork_hook, setprocname(), accepting(), version. Any other name
raises an AttributeError that says mercy does not provide it, so code that
probes with hasattr() sees the truth.
"""

import _mercy

numproc = _mercy.numproc()
opt = _mercy.options()
version = ("%s-mercy" % _mercy.version()).encode()
version_info = tuple(int(part) for part in _mercy.version().split(".")[:3]) + ("mercy", 0)
hostname = _mercy.hostname().encode()

#: Called once in each worker after the app is imported (also in respawned
#: workers). mercy imports the app in every worker, so this always runs.
post_fork_hook = None

#: Called once when the worker retires, after mercy.on_shutdown hooks.
atexit = None


def worker_id():
    return _mercy.worker_id()


def masterpid():
    return _mercy.master_pid()


def reload():
    """Ask the master for a graceful reload."""
    _mercy.request_reload()
    return True


def setprocname(name):
    """Name the worker process as `ps -o comm` and `top` show it (the
    kernel keeps 15 bytes). uWSGI also rewrites the command line; mercy
    leaves it as `mercy worker N (generation G)`, which `ps -f` shows."""
    _mercy.set_process_name(str(name))


def accepting(accepting=True):
    """uWSGI marks the worker as accepting with this; a mercy worker reports
    ready once its app is imported, so this has nothing left to do (the
    stats document shows the worker accepting whatever the argument)."""
    return None


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        "uwsgi.%s is not provided by mercy, which implements only part of the "
        "uwsgi module (worker_id, masterpid, numproc, opt, reload, atexit, "
        "post_fork_hook, setprocname, accepting, version)" % name
    )
