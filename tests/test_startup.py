"""Start-up: which Python mercy embeds, where it finds the app's packages
(virtualenvs, --pythonpath), how it loads the app, and what it refuses."""

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import APPS, REPO, mercy_bin, pid_running, python_facts, venv_python

PATHS_APP = APPS / "paths.py"
VENV_PROBE = "mercy_test_venv_probe"


def without_paths(text: str) -> str:
    """The text with the embedded Python's install paths cut out."""
    python = python_facts()
    for path in sorted({python["libdir"], python["prefix"]}, key=len, reverse=True):
        text = text.replace(path, "")
    return text


def test_version_names_mercy_and_the_embedded_python():
    """`mercy --version` exits 0 and prints mercy's version (Cargo.toml's),
    the embedded Python's version and the folder of its libpython."""
    package = (REPO / "Cargo.toml").read_text().split("[package]", 1)[1].split("\n[", 1)[0]
    version = re.search(r'^version\s*=\s*"([^"]+)"', package, re.MULTILINE)[1]
    python = python_facts()

    result = subprocess.run([str(mercy_bin()), "--version"], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr

    assert result.returncode == 0, output
    assert re.search(rf"\b{re.escape(version)}\b", output), output
    assert python["libdir"] in output, output
    # The version itself, not as part of a path such as .../versions/3.11.7/lib.
    assert re.search(rf"\b{re.escape(python['version'])}\b", without_paths(output)), output


def test_worker_maps_only_the_libpython_of_the_venvs_base_python(mercy):
    """A worker process maps exactly one libpython: the one in the LIBDIR of
    .venv/bin/python's base interpreter (this machine has another Python
    3.11 whose library has the same file name)."""
    python = python_facts()
    expected = os.path.realpath(os.path.join(python["libdir"], python["soname"]))
    server = mercy("--wsgi-file", APPS / "basic.py", "--processes", "1")
    [worker_pid] = server.worker_pids().values()
    assert server.get("/").status == 200

    with open(f"/proc/{worker_pid}/maps") as maps:
        mapped = {
            line.split(maxsplit=5)[5].strip()
            for line in maps
            if len(line.split(maxsplit=5)) == 6 and "libpython" in line
        }

    assert mapped == {expected}


@pytest.mark.parametrize("option, value", [
    ("--http", "127.0.0.1"), ("--http", "localhost"), ("--socket", "0.0.0.0"),
    ("--stats", "127.0.0.1"),
])
def test_address_without_its_port_is_refused(mercy, option, value):
    """`--http 127.0.0.1` (the port forgotten) is a configuration error
    naming the option and saying how to write the port or a unix socket of
    that name (exit status 1, no worker), not a unix socket file created in
    the working folder."""
    server = mercy("--wsgi-file", APPS / "basic.py", option, value, ready=0)

    assert server.wait_exit() == 1
    [error] = server.events("config_error")
    assert error["message"] == (
        f"configuration error: invalid address \"{value}\" in {option}: no port: "
        f"write {value}:PORT, or ./{value} for a unix socket of that name"), error
    assert not (REPO / value).exists()
    server.assert_no_events("spawned")


def test_bare_port_number_is_refused(mercy):
    """`--http 8000` (the colon forgotten) is a configuration error saying
    how to write it, not a unix socket file named 8000."""
    server = mercy("--wsgi-file", APPS / "basic.py", "--http", "8000", ready=0)

    assert server.wait_exit() == 1
    [error] = server.events("config_error")
    assert "no host: write :8000 (every address) or 127.0.0.1:8000" in error["message"], error
    assert not (REPO / "8000").exists()
    server.assert_no_events("spawned")


def test_app_that_fails_to_import_ends_first_start_with_status_3(mercy):
    """An app raising ModuleNotFoundError at import: mercy exits with status 3
    at first start, and the log's `app_load_failed` names the exception, the
    missing module and the app's file."""
    server = mercy("--wsgi-file", APPS / "broken_import.py", "--processes", "1", ready=0)

    assert server.wait_exit() == 3

    [failure, *_] = server.wait_event("app_load_failed")
    assert "mercy_test_no_such_module" in failure["error"]
    assert "ModuleNotFoundError" in failure["error"] + failure["traceback"]
    assert "broken_import.py" in failure["traceback"]
    server.assert_no_events("ready")


def test_failed_reload_keeps_the_old_generation_serving(mercy, tmp_path):
    """The app file is broken after a good start, then SIGHUP: the reload
    fails with `reload_failed` (and `app_load_failed` naming the error),
    and the same old workers, same pids, keep serving; a later SIGTERM
    still exits 0."""
    app = tmp_path / "app.py"
    shutil.copy(APPS / "basic.py", app)
    server = mercy("--wsgi-file", app, "--processes", "2")
    before = server.worker_pids()
    assert len(before) == 2

    app.write_text("import mercy_test_no_such_module\n")
    server.send_signal(signal.SIGHUP)
    server.wait_event("reload_failed")

    [failure, *_] = server.wait_event("app_load_failed")
    assert "mercy_test_no_such_module" in failure["error"]
    assert server.worker_pids() == before
    assert all(pid_running(pid) for pid in before.values())
    for _ in range(10):
        response = server.get("/pid")
        assert response.status == 200
        assert response.json()["pid"] in before.values()
    for pid in before.values():
        assert server.events("retiring", worker_pid=pid) == []
    server.assert_no_events("reload_done")

    server.send_signal(signal.SIGTERM)
    assert server.wait_exit() == 0


def test_virtualenv_of_another_python_version_is_refused(mercy, tmp_path):
    """--virtualenv pointing at a Python 3.9 virtualenv is refused before any
    app is loaded: exit status 1, and the message names both versions."""
    fake = tmp_path / "venv39"
    (fake / "lib" / "python3.9" / "site-packages").mkdir(parents=True)
    (fake / "bin").mkdir()
    (fake / "pyvenv.cfg").write_text(
        "home = /usr/bin\ninclude-system-site-packages = false\nversion = 3.9.2\n"
    )
    python = python_facts()

    server = mercy("--wsgi-file", APPS / "basic.py", "--virtualenv", fake, ready=0)

    assert server.wait_exit() == 1
    log = server.text()
    assert re.search(r"\b3\.9(\.2)?\b", log), log
    assert re.search(rf"\b{re.escape(python['version'])}\b", without_paths(log)), log
    server.assert_no_events("ready")


# --- virtualenvs and --pythonpath ----------------------------------------------------


def make_virtualenv(path: Path, system_site_packages: bool) -> Path:
    """A real virtualenv made by the venv module of mercy's Python, holding
    one module of its own; returns its site-packages folder."""
    command = [str(venv_python()), "-m", "venv", "--without-pip"]
    if system_site_packages:
        command.append("--system-site-packages")
    subprocess.run(command + [str(path)], check=True, timeout=120,
                   stdin=subprocess.DEVNULL)
    site_packages = path / "lib" / f"python{python_facts()['version']}" / "site-packages"
    (site_packages / f"{VENV_PROBE}.py").write_text("WHERE = 'venv'\n")
    return site_packages


def user_site(userbase: Path) -> Path:
    """The user site folder under PYTHONUSERBASE=userbase, created."""
    folder = userbase / "lib" / f"python{python_facts()['version']}" / "site-packages"
    folder.mkdir(parents=True)
    return folder


def site_folders(paths) -> list:
    """The site-packages entries of a sys.path, resolved, in order."""
    return [os.path.realpath(p) for p in paths if p.rstrip("/").endswith("site-packages")]


def venv_python_site_folders(venv: Path, env: dict) -> list:
    """The site-packages entries of sys.path in `venv/bin/python` itself."""
    output = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import json, sys; print(json.dumps(sys.path))"],
        check=True, capture_output=True, text=True, timeout=60, env=env,
        stdin=subprocess.DEVNULL,
    ).stdout
    return site_folders(json.loads(output))


def base_site_packages() -> str:
    """The base interpreter's own site-packages folder."""
    script = ("import sys, sysconfig; print(sysconfig.get_paths(vars={"
              "'base': sys.base_prefix, 'platbase': sys.base_exec_prefix})['purelib'])")
    output = subprocess.run([str(venv_python()), "-c", script], check=True,
                            capture_output=True, text=True, timeout=60).stdout
    return os.path.realpath(output.strip())


@pytest.mark.parametrize("system_site_packages", [False, True])
def test_virtualenv_orders_site_packages_as_its_own_python_does(
        mercy, tmp_path, system_site_packages):
    """--virtualenv: the worker's site-packages folders on sys.path are
    exactly those of `venv/bin/python` and in the same order: the
    virtualenv's first; the base interpreter's and the user site folder
    (PYTHONUSERBASE points at one that exists) only when pyvenv.cfg says
    include-system-site-packages = true, and then after the virtualenv's.
    sys.prefix is the virtualenv, and its own module imports from it."""
    venv = tmp_path / "venv"
    site_packages = os.path.realpath(make_virtualenv(venv, system_site_packages))
    userbase = tmp_path / "userbase"
    user = os.path.realpath(user_site(userbase))
    env = {"PYTHONUSERBASE": str(userbase)}
    server = mercy("--wsgi-file", PATHS_APP, "--virtualenv", venv, env=env)

    info = server.get("/paths").json()
    folders = site_folders(info["path"])

    assert folders == venv_python_site_folders(venv, dict(os.environ, **env))
    assert folders[0] == site_packages
    base = base_site_packages()
    if system_site_packages:
        assert folders.index(site_packages) < folders.index(base)
        assert folders.index(site_packages) < folders.index(user)
    else:
        assert base not in folders, folders
        assert user not in folders, folders
        assert info["user_site_enabled"] is False
    assert os.path.realpath(info["prefix"]) == os.path.realpath(venv)
    probe = server.get(f"/import?name={VENV_PROBE}").json()
    assert os.path.realpath(probe["file"]).startswith(site_packages + os.sep), probe


def test_home_is_virtualenv(mercy, tmp_path):
    """uWSGI's `--home VENV` makes the worker use that virtualenv as
    --virtualenv does: sys.prefix is the virtualenv, its site-packages is
    the only one, and a module installed only there imports from it."""
    venv = tmp_path / "venv"
    site_packages = os.path.realpath(make_virtualenv(venv, system_site_packages=False))
    server = mercy("--wsgi-file", PATHS_APP, "--home", venv)

    info = server.get("/paths").json()
    assert site_folders(info["path"]) == [site_packages]
    assert os.path.realpath(info["prefix"]) == os.path.realpath(venv)
    probe = server.get(f"/import?name={VENV_PROBE}").json()
    assert os.path.realpath(probe["file"]).startswith(site_packages + os.sep), probe


def test_virtual_env_variable_is_used_without_the_option(mercy, tmp_path):
    """No --virtualenv, VIRTUAL_ENV set (as an activated virtualenv sets it):
    the worker uses that virtualenv as --virtualenv would, its site-packages
    first and the base interpreter's absent."""
    venv = tmp_path / "venv"
    site_packages = os.path.realpath(make_virtualenv(venv, system_site_packages=False))
    server = mercy("--wsgi-file", PATHS_APP, env={"VIRTUAL_ENV": str(venv)}, virtualenv=False)

    info = server.get("/paths").json()
    folders = site_folders(info["path"])

    assert folders == [site_packages]
    assert os.path.realpath(info["prefix"]) == os.path.realpath(venv)
    probe = server.get(f"/import?name={VENV_PROBE}").json()
    assert os.path.realpath(probe["file"]).startswith(site_packages + os.sep), probe


def test_pythonpath_folders_are_importable(mercy, tmp_path):
    """A module in a --pythonpath folder (one of two) imports in the app, and
    the folders come first on sys.path, in the order given."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (second / "mercy_test_pythonpath_probe.py").write_text("WHERE = 'pythonpath'\n")
    server = mercy("--wsgi-file", PATHS_APP, "--pythonpath", first, "--pythonpath", second)

    probe = server.get("/import?name=mercy_test_pythonpath_probe").json()
    assert probe.get("file") == str(second / "mercy_test_pythonpath_probe.py"), probe
    assert server.get("/import?name=mercy_test_no_such_module").json()["error"].startswith(
        "ModuleNotFoundError")
    path = server.get("/paths").json()["path"]
    assert path.index(str(first)) < path.index(str(second)) < path.index(
        next(p for p in path if p.endswith("site-packages")))


def test_pythonpath_glob_adds_every_match_sorted(mercy, tmp_path):
    """`--pythonpath 'libs/*'` puts every match on sys.path, sorted, where
    the pattern stood (before a plain --pythonpath given after it), and a
    module in a matched folder imports; the pattern itself is not on
    sys.path and no `pythonpath_unmatched` warning is logged."""
    libs = tmp_path / "libs"
    for name in ("zeta", "alpha", "mid"):
        (libs / name).mkdir(parents=True)
    (libs / "mid" / "mercy_test_glob_probe.py").write_text("WHERE = 'glob'\n")
    plain = tmp_path / "plain"
    plain.mkdir()
    server = mercy("--wsgi-file", PATHS_APP, "--pythonpath", libs / "*", "--pythonpath", plain)

    path = server.get("/paths").json()["path"]
    expected = [str(libs / name) for name in ("alpha", "mid", "zeta")] + [str(plain)]
    assert [p for p in path if p in expected] == expected
    assert path.index(str(plain)) < path.index(
        next(p for p in path if p.endswith("site-packages")))
    assert str(libs / "*") not in path
    probe = server.get("/import?name=mercy_test_glob_probe").json()
    assert probe.get("file") == str(libs / "mid" / "mercy_test_glob_probe.py"), probe
    server.assert_no_events("pythonpath_unmatched")


def test_pythonpath_glob_that_matches_nothing_is_a_warning(mercy, tmp_path):
    """A --pythonpath pattern matching nothing: the master logs one
    `pythonpath_unmatched` warning naming the pattern, the worker starts and
    serves, and the pattern is not on sys.path."""
    pattern = tmp_path / "nothing-here" / "*"
    server = mercy("--wsgi-file", PATHS_APP, "--pythonpath", pattern)

    path = server.get("/paths").json()["path"]
    assert str(pattern) not in path
    [warning] = server.wait_event("pythonpath_unmatched")
    assert warning["pattern"] == str(pattern)
    assert warning["level"] == "WARN"


# --- loading the app ------------------------------------------------------------------


def test_app_with_a_syntax_error_ends_first_start_with_status_3(mercy, tmp_path):
    """An app file with a syntax error: exit status 3 at first start, and
    `app_load_failed` names SyntaxError, the file and the line."""
    app = tmp_path / "syntax_error_app.py"
    app.write_text("def application(environ, start_response):\n    return [b'x'\n")

    server = mercy("--wsgi-file", app, ready=0)

    assert server.wait_exit() == 3
    [failure, *_] = server.wait_event("app_load_failed")
    assert "SyntaxError" in failure["error"], failure
    assert "syntax_error_app.py" in failure["error"], failure
    server.assert_no_events("ready")


def test_app_without_its_callable_ends_first_start_with_status_3(mercy):
    """--callable naming nothing in the app file: exit status 3 at first
    start, and `app_load_failed` names the missing callable."""
    server = mercy("--wsgi-file", APPS / "basic.py", "--callable", "no_such_app", ready=0)

    assert server.wait_exit() == 3
    [failure, *_] = server.wait_event("app_load_failed")
    assert "no_such_app" in failure["error"], failure
    server.assert_no_events("ready")


@pytest.fixture
def app_package(tmp_path) -> Path:
    """A package folder holding mercy_test_pkg.web with two WSGI callables:
    `application` answers "default", `custom_app` answers "custom"."""
    root = tmp_path / "pkgroot"
    package = root / "mercy_test_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "web.py").write_text(
        "def _answer(start_response, body):\n"
        "    start_response('200 OK', [('Content-Length', str(len(body)))])\n"
        "    return [body]\n"
        "\n"
        "def application(environ, start_response):\n"
        "    return _answer(start_response, b'default')\n"
        "\n"
        "def custom_app(environ, start_response):\n"
        "    return _answer(start_response, b'custom')\n"
        "\n"
        "factory_calls = []\n"
        "\n"
        "def make_app(*args, **kwargs):\n"
        "    factory_calls.append((args, kwargs))\n"
        "    def app(environ, start_response):\n"
        "        return _answer(start_response, b'factory %r' % (factory_calls,))\n"
        "    return app\n"
        "\n"
        "def broken_factory():\n"
        "    raise RuntimeError('mercy_test_factory_failed')\n"
        "\n"
        "def factory_of_nothing():\n"
        "    return None\n"
    )
    return root


@pytest.mark.parametrize("how, body", [
    (["--module", "mercy_test_pkg.web:custom_app"], b"custom"),
    (["--module", "mercy_test_pkg.web", "--callable", "custom_app"], b"custom"),
    (["--wsgi", "mercy_test_pkg.web"], b"default"),
    (["--wsgi-file", "mercy_test_pkg/web.py", "--callable", "custom_app"], b"custom"),
    (["--module", "mercy_test_pkg.web:make_app()"], b"factory [((), {})]"),
    (["--module", "mercy_test_pkg.web", "--callable", "make_app()"], b"factory [((), {})]"),
    (["--wsgi-file", "mercy_test_pkg/web.py", "--callable", "make_app()"],
     b"factory [((), {})]"),
])
def test_app_is_found_by_module_file_and_callable(mercy, app_package, how, body):
    """`--module pkg.mod:callable`, `--module` with `--callable NAME`, the
    `--wsgi` alias (callable `application`) and `--wsgi-file` with
    `--callable` each load the callable they name (the package is found
    from --chdir, the file relative to it). A name ending in "()" is an app
    factory: called once, with no arguments, and what it returns serves
    every request."""
    server = mercy("--chdir", app_package, *how)

    for _ in range(3):
        response = server.get("/")
        assert (response.status, response.body) == (200, body)


@pytest.mark.parametrize("spec, error", [
    ("mercy_test_pkg.web:broken_factory()", "RuntimeError: mercy_test_factory_failed"),
    ("mercy_test_pkg.web:factory_of_nothing()", "factory_of_nothing() returned a NoneType"),
    ("mercy_test_pkg.web:no_such_factory()", "no callable named 'no_such_factory'"),
])
def test_app_factory_that_fails_ends_first_start_with_status_3(mercy, app_package, spec,
                                                               error):
    """`--module pkg.mod:factory()` whose factory raises, returns something
    that is not callable, or does not exist: exit status 3 at first start,
    and `app_load_failed` says why (a raising factory's traceback names the
    app's file)."""
    server = mercy("--chdir", app_package, "--module", spec, ready=0)

    assert server.wait_exit() == 3
    [failure, *_] = server.wait_event("app_load_failed")
    assert error in failure["error"], failure
    if "broken_factory" in spec:
        assert "web.py" in failure["traceback"], failure
        assert "broken_factory" in failure["traceback"], failure
    server.assert_no_events("ready")
