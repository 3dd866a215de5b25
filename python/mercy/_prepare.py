"""Makes the app's packages importable. Runs first in a worker, before
gevent's monkey-patching, so it imports nothing but os, sys and site. Not
for apps to import.

The interpreter starts without the `site` module (no site-packages on
sys.path yet); `prepare` runs it once the virtualenv is known, so that a
worker's sys.path is the one `venv/bin/python` would have."""

import os
import sys


def prepare(virtualenv, pythonpath, executable):
    """Make the virtualenv's packages and the --pythonpath folders
    importable; set sys.argv and sys.executable as a program would see."""
    sys.argv = ["mercy"]
    if virtualenv:
        _add_site_packages(os.path.join(os.path.abspath(virtualenv), "bin", "python"))
        venv_python = os.path.join(virtualenv, "bin", "python")
        sys.executable = venv_python if os.path.exists(venv_python) else executable
    else:
        # The base interpreter's own view: its site-packages and the user
        # site folder. `executable` may itself be in a virtualenv (the one
        # mercy was built from), which must not be entered unasked.
        version = "python%d.%d" % sys.version_info[:2]
        _add_site_packages(os.path.join(sys.base_exec_prefix, "bin", version))
        sys.executable = executable
    for folder in reversed(pythonpath):
        sys.path.insert(0, folder)


def _add_site_packages(python):
    """Runs `site` as the interpreter at `python` runs it at start-up.

    `site` looks for pyvenv.cfg in the folder above the executable's: when
    it is there, the virtualenv's site-packages come first, the base
    interpreter's site-packages and the user site folder only if pyvenv.cfg
    says include-system-site-packages = true."""
    import site

    sys.executable = python
    site.main()
