"""The `uwsgidecorators` module, as far as mercy supports it: `postfork`.

Other decorators (timers, cron, spooler, mules, locks) rely on uWSGI
subsystems that mercy does not have; using one raises an AttributeError
that says so.
"""

import uwsgi

_postfork_chain = []


def _run_postfork_chain():
    for fn in _postfork_chain:
        fn()


class postfork:
    """Run the decorated function once in every worker after the app is
    imported, also in respawned workers."""

    def __init__(self, fn):
        self.fn = fn
        if uwsgi.post_fork_hook is not _run_postfork_chain:
            previous = uwsgi.post_fork_hook
            if previous is not None:
                _postfork_chain.append(previous)
            uwsgi.post_fork_hook = _run_postfork_chain
        _postfork_chain.append(fn)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    raise AttributeError(
        "uwsgidecorators.%s is not provided by mercy: only @postfork is" % name
    )
