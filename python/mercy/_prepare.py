"""Makes the app's packages importable. Runs first in a worker, before
gevent's monkey-patching, so it imports nothing but os, sys and site. Not
for apps to import."""

import os
import sys


def prepare(virtualenv, pythonpath, executable):
    """Make the virtualenv's packages and the --pythonpath folders
    importable; set sys.argv and sys.executable as a program would see."""
    sys.argv = ["mercy"]
    sys.executable = executable
    if virtualenv:
        import site

        version = "python%d.%d" % sys.version_info[:2]
        site_packages = os.path.join(virtualenv, "lib", version, "site-packages")
        site.addsitedir(site_packages)
        sys.prefix = sys.exec_prefix = virtualenv
        venv_python = os.path.join(virtualenv, "bin", "python")
        if os.path.exists(venv_python):
            sys.executable = venv_python
    for folder in reversed(pythonpath):
        sys.path.insert(0, folder)
