"""Start-up: which Python mercy embeds, and apps or virtualenvs it refuses."""

import os
import re
import shutil
import signal
import subprocess

from conftest import APPS, REPO, mercy_bin, pid_running, python_facts


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
