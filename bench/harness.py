"""mercy's benchmark harness: runs each scenario against mercy and its peers
on this machine, alternating the servers round by round, and writes
results.md, results.json and results.png.

Run it through `bench/run.sh`, which installs the peers and the load tools
and builds mercy and the ceiling first. `python bench/harness.py --help`
lists the options.

What is measured, per server and scenario (the median over the rounds, with
the spread):
- requests/s and latency (p50, p99) at saturation (wrk, a fixed number of
  connections, keep-alive on);
- CPU time per request: user + system time of the server's whole process
  tree (read from /proc/PID/stat before and after), divided by the requests
  it served; at saturation and at a fixed rate below it (oha);
- failed requests and p99 while the server is reloaded by SIGHUP under load;
- resident memory of the master and of each worker after warm-up;
- how long the pymongo example takes to stop after SIGTERM.
"""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
VENV = os.path.join(BENCH, ".venv")
APPS = os.path.join(BENCH, "apps")
EXAMPLES = os.path.join(ROOT, "examples")
WRK_SCRIPT = os.path.join(BENCH, "wrk.lua")
MERCY = os.path.join(ROOT, "target", "release", "mercy")
CEILING = os.path.join(BENCH, "ceiling", "target", "release", "mercy-bench-ceiling")

WORKERS = 2
THREADS = 4
GREENLETS = 256
# Seconds every server gives a worker to finish on a reload or stop.
GRACE = 10
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

SERVERS = ("mercy", "granian", "uwsgi", "gunicorn", "ceiling")


def log(message: str) -> None:
    print(f"==> bench: {message}", flush=True)


# --- scenarios ------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """A throughput scenario: what wrk and oha send, and to whom."""

    name: str
    title: str
    path: str
    mode: str  # "threads" or "gevent"
    servers: tuple[str, ...]
    connections: int = 32
    body_bytes: int = 0
    fixed_rate: int = 1000


LOADS = {
    "hello": Load("hello", "hello world, threads", "/", "threads", SERVERS),
    "10k": Load("10k", "10 KB response body, threads", "/10k", "threads", SERVERS),
    "echo": Load(
        "echo", "POST echoing a 10 KB body, threads", "/echo", "threads", SERVERS,
        body_bytes=10240,
    ),
    "gevent-hello": Load(
        "gevent-hello", "hello world, gevent", "/", "gevent", ("mercy", "uwsgi", "gunicorn"),
    ),
    "gevent": Load(
        "gevent", "gevent, each request sleeps 10 ms cooperatively", "/sleep",
        "gevent", ("mercy", "uwsgi", "gunicorn"), connections=256,
    ),
}

# Servers that reload on SIGHUP.
RELOADERS = ("mercy", "uwsgi", "gunicorn", "granian")

# Configurations of the stop-time scenario: (label, server, mode, flags).
STOPPERS = (
    ("mercy threads", "mercy", "threads", ()),
    ("granian threads", "granian", "threads", ()),
    ("uwsgi threads", "uwsgi", "threads", ()),
    ("gunicorn gthread", "gunicorn", "threads", ()),
    ("mercy gevent", "mercy", "gevent", ()),
    ("uwsgi gevent", "uwsgi", "gevent", ()),
    ("gunicorn gevent", "gunicorn", "gevent", ()),
    ("mercy gevent, wait-for-hub", "mercy", "gevent", ("--gevent-wait-for-hub",)),
    ("uwsgi gevent, wait-for-hub", "uwsgi", "gevent", ("--gevent-wait-for-hub",)),
)

SCENARIOS = ("hello", "10k", "echo", "gevent-hello", "gevent", "reload", "stop")

# Seconds the /sleep route sleeps: with C connections no server can serve
# more than C / SLEEP_SECONDS requests a second.
SLEEP_SECONDS = 0.010


# --- server command lines -----------------------------------------------------


def venv_bin(name: str) -> str:
    return os.path.join(VENV, "bin", name)


def server_command(
    server: str, mode: str, port: int, app_dir: str, module: str, extra=()
) -> list[str]:
    """The command line that starts `server` serving `app_dir/module.py` on
    127.0.0.1:port with 2 workers, in threads or gevent mode."""
    address = f"127.0.0.1:{port}"
    app_file = os.path.join(app_dir, f"{module}.py")
    gevent = mode == "gevent"

    if server == "mercy":
        concurrency = ["--gevent", str(GREENLETS)] if gevent else ["--threads", str(THREADS)]
        return [
            MERCY, "--http", address, "--wsgi-file", app_file,
            "--processes", str(WORKERS), *concurrency, "--disable-logging",
            "--worker-reload-mercy", str(GRACE), "--virtualenv", VENV, *extra,
        ]

    if server == "uwsgi":
        # Threads: --http11-socket, the http-socket with HTTP/1.1 keep-alive.
        # On a plain --http-socket neither --http-keepalive nor an added
        # "Connection: Keep-Alive" header keeps a connection open (the
        # second request on it hangs or is closed). gevent: --http11-socket
        # crashes uWSGI 2.0's gevent loop with gevent 26 ("'io' object has
        # no attribute 'stop'", then a libev assertion), so there it is the
        # plain --http-socket, no keep-alive, with "Connection: close" so
        # that clients reconnect instead of counting a read error.
        # SIGTERM is a graceful stop only with the hook below (uWSGI 2.0's
        # SIGTERM is a brutal reload, and --die-on-term's a brutal stop).
        if gevent:
            socket_options = ["--http-socket", address, "--add-header", "Connection: close"]
            concurrency = ["--gevent", str(GREENLETS), "--gevent-monkey-patch"]
        else:
            socket_options = ["--http11-socket", address]
            concurrency = ["--threads", str(THREADS)]
        return [
            venv_bin("uwsgi"), "--master", *socket_options,
            "--wsgi-file", app_file, "--processes", str(WORKERS), *concurrency,
            "--lazy-apps", "--need-app", "--disable-logging", "--listen", "1024",
            "--die-on-term", "--hook-master-start", "unix_signal:15 gracefully_kill_them_all",
            "--worker-reload-mercy", str(GRACE), "--reload-mercy", str(GRACE), *extra,
        ]

    if server == "gunicorn":
        if gevent:
            concurrency = ["-k", "gevent", "--worker-connections", str(GREENLETS)]
        else:
            concurrency = ["-k", "gthread", "--threads", str(THREADS)]
        return [
            venv_bin("gunicorn"), "--bind", address, "--workers", str(WORKERS),
            *concurrency, "--keep-alive", "5", "--graceful-timeout", str(GRACE),
            "--worker-tmp-dir", "/dev/shm", "--chdir", app_dir, f"{module}:application",
        ]

    if server == "granian":
        # Granian grows its pool of blocking threads on demand; its default
        # size served more than --blocking-threads 4 or 1 here (20k against
        # 11-16k requests/s for hello world), so it is left at the default.
        assert not gevent, "Granian has no gevent mode"
        return [
            venv_bin("granian"), "--interface", "wsgi", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(WORKERS), "--http", "1", "--no-ws",
            "--log-level", "warning", "--workers-kill-timeout", str(GRACE),
            "--working-dir", app_dir, f"{module}:application",
        ]

    if server == "ceiling":
        return [CEILING, address]

    raise ValueError(f"unknown server {server}")


def shown(argv: list[str], port: int) -> str:
    """A command line as written in results.md: the port as PORT, paths
    relative to the repository."""
    text = shlex.join(argv)
    text = text.replace(f"127.0.0.1:{port}", "127.0.0.1:PORT")
    text = text.replace(f"--port {port}", "--port PORT")
    return text.replace(ROOT + "/", "")


# --- processes ------------------------------------------------------------------


@dataclass
class Stat:
    pid: int
    ppid: int
    session: int
    state: str
    cpu_ticks: int  # utime + stime + cutime + cstime


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat") as file:
            text = file.read()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces.
    fields = text[text.rindex(")") + 2 :].split()
    return Stat(
        pid=pid,
        ppid=int(fields[1]),
        session=int(fields[3]),
        state=fields[0],
        cpu_ticks=sum(int(value) for value in fields[11:15]),
    )


def all_stats() -> list[Stat]:
    stats = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None:
                stats.append(stat)
    return stats


def session_members(session: int, include_zombies: bool = False) -> list[Stat]:
    """Every process of a session (each server runs in one of its own)."""
    return [
        stat
        for stat in all_stats()
        if stat.session == session and (include_zombies or stat.state != "Z")
    ]


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str = "/", timeout: float = 2.0) -> int:
    """The status of one GET, or 0 when it fails."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        connection.close()


def keeps_alive(port: int, requests: int = 3) -> bool:
    """Whether the server answers several GET / on one connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
            for _ in range(requests):
                connection.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                response = http.client.HTTPResponse(connection)
                response.begin()
                response.read()
                if response.will_close:
                    return False
        return True
    except (OSError, http.client.HTTPException):
        return False


class ServerProcess:
    """One server instance in a session of its own, so that its whole
    process tree can be found, measured and killed."""

    def __init__(self, label: str, argv: list[str], cwd: str, log_path: str):
        self.label = label
        self.argv = argv
        self.log_path = log_path
        env = dict(os.environ)
        env.pop("VIRTUAL_ENV", None)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        with open(log_path, "ab") as log_file:
            log_file.write(f"\n### {shlex.join(argv)}\n".encode())
            log_file.flush()
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.pid = self.process.pid

    def wait_ready(self, port: int, path: str = "/", timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with status {self.process.returncode}"
                    f" before answering; see {self.log_path}"
                )
            if http_get(port, path, timeout=1.0) == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} did not answer within {timeout} s; see {self.log_path}")

    def cpu_seconds(self) -> float:
        ticks = sum(stat.cpu_ticks for stat in session_members(self.pid, include_zombies=True))
        return ticks / CLOCK_TICKS

    def memory(self) -> dict:
        """Resident sizes in KiB: the master, and each other process."""
        others = [
            {"pid": stat.pid, "rss_kib": rss_kib(stat.pid), "cmdline": cmdline(stat.pid)[:120]}
            for stat in session_members(self.pid)
            if stat.pid != self.pid
        ]
        return {"master_kib": rss_kib(self.pid), "workers": others}

    def stop(self, grace: float = GRACE + 10) -> None:
        """SIGTERM, then SIGKILL for whatever is left of the session after
        `grace` seconds; returns once no process of it is left."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{self.label} did not stop within {grace} s: killing it")
        self.kill_session()

    def kill_session(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            left = session_members(self.pid)
            if self.process.poll() is None:
                left.append(Stat(self.pid, 0, self.pid, "R", 0))
            if not left:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: processes left over: {[s.pid for s in left]}")
            for stat in left:
                try:
                    os.kill(stat.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        if self.process.poll() is None:
            self.process.wait(timeout=5)


# --- load tools -----------------------------------------------------------------


def wrk_command(port: int, load_path: str, seconds: float, connections: int) -> list[str]:
    return [
        "wrk", "-t2", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "5s", "-s", WRK_SCRIPT, f"http://127.0.0.1:{port}{load_path}",
    ]


def parse_wrk(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith("BENCH "):
            result = json.loads(line[len("BENCH ") :])
            seconds = result["duration_us"] / 1e6
            result["rps"] = result["requests"] / seconds if seconds else 0.0
            result["socket_errors"] = sum(
                result[kind] for kind in ("connect", "read", "write", "timeout")
            )
            return result
    raise RuntimeError(f"wrk printed no result:\n{output}")


def run_wrk(port: int, load: Load, seconds: float) -> dict:
    env = dict(os.environ, BENCH_BODY_BYTES=str(load.body_bytes))
    argv = wrk_command(port, load.path, seconds, load.connections)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(done.stdout + done.stderr)


def oha_command(port: int, load: Load, seconds: float, body_file: str | None) -> list[str]:
    argv = [
        "oha", "--no-tui", "--output-format", "json", "-z", f"{max(1, round(seconds))}s",
        "-c", str(load.connections), "-q", str(load.fixed_rate), "--latency-correction",
        "-t", "5s",
    ]
    if body_file:
        argv += ["-m", "POST", "-D", body_file, "-T", "application/octet-stream"]
    return argv + [f"http://127.0.0.1:{port}{load.path}"]


def run_oha(port: int, load: Load, seconds: float, body_file: str | None) -> dict:
    argv = oha_command(port, load, seconds, body_file)
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"oha failed: {done.stderr.strip()[:500]}")
    report = json.loads(done.stdout)
    statuses = {int(code): count for code, count in report.get("statusCodeDistribution", {}).items()}
    percentiles = report.get("latencyPercentiles", {})
    # Requests still in flight when the time is up are cut by oha itself
    # ("aborted due to deadline"): they are no failure of the server.
    errors = {
        kind: count
        for kind, count in report.get("errorDistribution", {}).items()
        if "deadline" not in kind
    }
    return {
        "requests": sum(statuses.values()),
        "ok": sum(count for code, count in statuses.items() if 200 <= code < 300),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rps": report["summary"].get("requestsPerSec") or 0.0,
        "p50_us": (percentiles.get("p50") or 0.0) * 1e6,
        "p99_us": (percentiles.get("p99") or 0.0) * 1e6,
    }


# --- scenario runs ----------------------------------------------------------------


@dataclass
class Settings:
    rounds: int
    seconds: float  # one saturated measurement
    warmup: float
    fixed_seconds: float  # one fixed-rate measurement; 0: none
    reloads: int
    work: str  # folder for logs and scratch files
    commands: dict = field(default_factory=dict)  # (scenario, label) -> command line


def launch(label, server_name, mode, app_dir, module, settings, scenario, extra=()):
    """Starts a server on a free port and waits until it answers; returns
    it and the port. Its command line is kept for the report."""
    port = free_port()
    argv = server_command(server_name, mode, port, app_dir, module, extra)
    settings.commands[(scenario, label)] = shown(argv, port)
    name = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")
    log_path = os.path.join(settings.work, "logs", f"{scenario}_{name}.log")
    server = ServerProcess(label, argv, app_dir, log_path)
    try:
        server.wait_ready(port)
    except Exception:
        server.kill_session()
        raise
    return server, port


def throughput_round(load: Load, server_name: str, settings: Settings, body_file) -> dict:
    server, port = launch(server_name, server_name, load.mode, APPS, "app", settings, load.name)
    try:
        keep_alive = keeps_alive(port)
        run_wrk(port, load, settings.warmup)

        before = server.cpu_seconds()
        result = run_wrk(port, load, settings.seconds)
        result["cpu_us_per_request"] = (
            (server.cpu_seconds() - before) / result["requests"] * 1e6 if result["requests"] else None
        )
        result["memory"] = server.memory()
        result["keep_alive"] = keep_alive

        if settings.fixed_seconds and shutil.which("oha"):
            before = server.cpu_seconds()
            fixed = run_oha(port, load, settings.fixed_seconds, body_file)
            served = fixed["requests"]
            fixed["cpu_us_per_request"] = (
                (server.cpu_seconds() - before) / served * 1e6 if served else None
            )
            result["fixed"] = fixed
        return result
    finally:
        server.stop()


def reload_round(server_name: str, settings: Settings) -> dict:
    load = LOADS["hello"]
    server, port = launch(server_name, server_name, "threads", APPS, "app", settings, "reload")
    try:
        run_wrk(port, load, settings.warmup)
        seconds = settings.reloads + 4
        env = dict(os.environ, BENCH_BODY_BYTES="0")
        wrk = subprocess.Popen(
            wrk_command(port, load.path, seconds, load.connections), env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        # The processes seen while it runs tell how many workers the
        # reloads started (sampled every 50 ms).
        first = {stat.pid for stat in session_members(server.pid)}
        seen = set(first)

        def watch(seconds: float) -> None:
            until = time.monotonic() + seconds
            while time.monotonic() < until:
                seen.update(stat.pid for stat in session_members(server.pid))
                time.sleep(0.05)

        watch(1.5)
        for _ in range(settings.reloads):
            os.kill(server.pid, signal.SIGHUP)
            watch(1.0)
        while wrk.poll() is None:
            watch(0.5)
        output, _ = wrk.communicate(timeout=60)
        result = parse_wrk(output)
        result["failed"] = result["socket_errors"] + result["status"]
        result["processes_started"] = len(seen - first)

        # Still serving after the reloads?
        deadline = time.monotonic() + 30
        while http_get(port) != 200 and time.monotonic() < deadline:
            time.sleep(0.5)
        result["serving_after"] = http_get(port) == 200
        return result
    finally:
        server.stop()


# Log lines that say a worker was killed after its grace ran out (mercy,
# uWSGI, gunicorn, Granian); "Gracefully killing" in uWSGI's is no kill.
KILL_PATTERN = re.compile(
    r"NO MERCY|SIGKILL|mercy_expired|killed=[1-9]|refused to gracefully", re.IGNORECASE
)


def stop_round(label: str, server_name: str, mode: str, extra, settings: Settings) -> dict:
    server, port = launch(label, server_name, mode, EXAMPLES, "pymongo_app", settings, "stop", extra)
    try:
        # Let every worker load the app and its client start its monitors.
        for _ in range(20):
            http_get(port)
        time.sleep(2.0)
        log_size = os.path.getsize(server.log_path)

        started = time.monotonic()
        os.kill(server.pid, signal.SIGTERM)
        limit = GRACE + 30
        master_exit = None
        while time.monotonic() - started < limit:
            if master_exit is None and server.process.poll() is not None:
                master_exit = time.monotonic() - started
            if master_exit is not None and not session_members(server.pid):
                break
            time.sleep(0.01)
        all_gone = time.monotonic() - started
        stopped = master_exit is not None and not session_members(server.pid)
        with open(server.log_path, errors="replace") as file:
            file.seek(log_size)
            kill_lines = [line.strip() for line in file if KILL_PATTERN.search(line)]
        return {
            "stopped": stopped,
            "master_exit_s": master_exit,
            "all_gone_s": all_gone if stopped else None,
            "exit_status": server.process.returncode,
            "kill_lines": kill_lines[:6],
        }
    finally:
        server.kill_session()


def baseline_rss_kib(settings: Settings) -> int:
    """Resident size of a plain Python process that imported the app."""
    code = (
        f"import sys, time; sys.path.insert(0, {APPS!r}); import app; "
        "print('ready', flush=True); time.sleep(30)"
    )
    process = subprocess.Popen(
        [venv_bin("python"), "-c", code], stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        process.stdout.readline()
        time.sleep(0.5)
        return rss_kib(process.pid)
    finally:
        process.kill()
        process.wait()


# --- the run ----------------------------------------------------------------------


def rotated(items, round_index):
    items = list(items)
    shift = round_index % len(items)
    return items[shift:] + items[:shift]


def run(settings: Settings, scenarios, servers) -> dict:
    results: dict = {
        "throughput": {}, "reload": {}, "stop": {}, "baseline_rss_kib": [], "failures": [],
    }
    body_file = os.path.join(settings.work, "body-10k.bin")
    with open(body_file, "wb") as file:
        file.write(b"x" * 10240)

    def attempt(what: str, measure, *args):
        """One measurement; a server that fails to start or answer is
        recorded as a failure and the run goes on."""
        log(what)
        try:
            return measure(*args)
        except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as error:
            log(f"{what}: FAILED: {error}")
            results["failures"].append(f"{what}: {error}")
            return None

    for name in scenarios:
        if name in LOADS:
            load = LOADS[name]
            chosen = [server for server in load.servers if server in servers]
            per_server = results["throughput"].setdefault(name, {s: [] for s in chosen})
            body = body_file if load.body_bytes else None
            for round_index in range(settings.rounds):
                for server_name in rotated(chosen, round_index):
                    what = f"{name}: {server_name}, round {round_index + 1}/{settings.rounds}"
                    result = attempt(what, throughput_round, load, server_name, settings, body)
                    if result is not None:
                        per_server[server_name].append(result)
                if name == "hello":
                    results["baseline_rss_kib"].append(baseline_rss_kib(settings))

        elif name == "reload":
            chosen = [server for server in RELOADERS if server in servers]
            per_server = results["reload"] = {s: [] for s in chosen}
            for round_index in range(settings.rounds):
                for server_name in rotated(chosen, round_index):
                    what = f"reload: {server_name}, round {round_index + 1}/{settings.rounds}"
                    result = attempt(what, reload_round, server_name, settings)
                    if result is not None:
                        per_server[server_name].append(result)

        elif name == "stop":
            chosen = [entry for entry in STOPPERS if entry[1] in servers]
            per_config = results["stop"] = {entry[0]: [] for entry in chosen}
            for round_index in range(settings.rounds):
                for label, server_name, mode, extra in rotated(chosen, round_index):
                    what = f"stop: {label}, round {round_index + 1}/{settings.rounds}"
                    result = attempt(what, stop_round, label, server_name, mode, extra, settings)
                    if result is not None:
                        per_config[label].append(result)

    results["commands"] = {
        f"{scenario}|{label}": text for (scenario, label), text in settings.commands.items()
    }
    return results


# --- the report --------------------------------------------------------------------


def tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].strip() if text else "?"


def python_package_version(name: str) -> str:
    code = (
        "import importlib.metadata as m\n"
        f"try: print(m.version({name!r}))\n"
        "except m.PackageNotFoundError: print('not installed')"
    )
    return tool_version([venv_bin("python"), "-c", code])


def machine_facts() -> dict:
    model = "?"
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    revision = tool_version(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    # The run's own outputs (profile.md is written just before) do not count.
    dirty = tool_version(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no",
                          "--", ".", ":!bench/profile.md", ":!bench/results.*"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "os": platform.freedesktop_os_release().get("PRETTY_NAME", "?")
        if hasattr(platform, "freedesktop_os_release") else "?",
        "load_average": os.getloadavg(),
        "versions": {
            "mercy": tool_version([MERCY, "--version"])
            + f" (git {revision}{', with uncommitted changes' if dirty not in ('', '?') else ''})",
            "python": tool_version([venv_bin("python"), "--version"]),
            "uWSGI": python_package_version("uWSGI"),
            "gunicorn": python_package_version("gunicorn"),
            "Granian": python_package_version("granian"),
            "gevent": python_package_version("gevent"),
            "pymongo": python_package_version("pymongo"),
            "wrk": tool_version(["wrk", "-v"]),
            "oha": tool_version(["oha", "--version"]),
        },
    }


def median(values):
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def spread(values):
    values = [value for value in values if value is not None]
    return (min(values), max(values)) if values else (None, None)


def fmt(value, digits=0, scale=1.0):
    if value is None:
        return "–"
    return f"{value * scale:,.{digits}f}"


def fmt_spread(values, digits=0, scale=1.0):
    low, high = spread(values)
    if low is None:
        return "–"
    return f"{fmt(median(values), digits, scale)} ({fmt(low, digits, scale)}–{fmt(high, digits, scale)})"


def ratio(mine, theirs):
    if mine is None or not theirs:
        return "–"
    return f"{mine / theirs:.2f}"


def summarize_throughput(rounds: list[dict]) -> dict:
    fixed = [r["fixed"] for r in rounds if "fixed" in r]
    return {
        "rps": [r["rps"] for r in rounds],
        "p50_ms": [r["p50_us"] / 1000 for r in rounds],
        "p99_ms": [r["p99_us"] / 1000 for r in rounds],
        "errors": [r["socket_errors"] + r["status"] for r in rounds],
        "cpu_us": [r["cpu_us_per_request"] for r in rounds],
        "fixed_rps": [f["rps"] for f in fixed],
        "fixed_p50_ms": [f["p50_us"] / 1000 for f in fixed],
        "fixed_p99_ms": [f["p99_us"] / 1000 for f in fixed],
        "fixed_cpu_us": [f["cpu_us_per_request"] for f in fixed],
        "fixed_errors": [f["errors"] + f["requests"] - f["ok"] for f in fixed],
    }


def throughput_tables(results: dict, lines: list[str], gaps: list[str]) -> None:
    for name, per_server in results["throughput"].items():
        load = LOADS[name]
        summaries = {
            server: summarize_throughput(rounds) for server, rounds in per_server.items() if rounds
        }
        mine = summaries.get("mercy")
        body = f", POST {load.body_bytes} B" if load.body_bytes else ""
        lines += [
            f"### {load.title}",
            "",
            f"`GET {load.path}`{body}; wrk, 2 threads, {load.connections} connections.",
            "",
            "| server | requests/s | p50 ms | p99 ms | errors | CPU µs/request "
            "| mercy ÷ server, requests/s | mercy ÷ server, CPU/request |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for server, summary in summaries.items():
            lines.append(
                f"| {server} | {fmt_spread(summary['rps'])} | {fmt(median(summary['p50_ms']), 2)} "
                f"| {fmt_spread(summary['p99_ms'], 2)} | {fmt(median(summary['errors']))} "
                f"| {fmt(median(summary['cpu_us']))} "
                f"| {ratio(median(mine['rps']), median(summary['rps'])) if mine else '–'} "
                f"| {ratio(median(mine['cpu_us']), median(summary['cpu_us'])) if mine else '–'} |"
            )
        if any(summary["fixed_rps"] for summary in summaries.values()):
            lines += [
                "",
                f"At a fixed rate of {load.fixed_rate} requests/s (oha, {load.connections} "
                "connections, latency corrected for coordinated omission):",
                "",
                "| server | requests/s | p50 ms | p99 ms | failed | CPU µs/request "
                "| mercy ÷ server, CPU/request |",
                "|---|---|---|---|---|---|---|",
            ]
            for server, summary in summaries.items():
                lines.append(
                    f"| {server} | {fmt(median(summary['fixed_rps']))} "
                    f"| {fmt(median(summary['fixed_p50_ms']), 2)} "
                    f"| {fmt_spread(summary['fixed_p99_ms'], 2)} "
                    f"| {fmt(median(summary['fixed_errors']))} "
                    f"| {fmt_spread(summary['fixed_cpu_us'])} "
                    f"| {ratio(median(mine['fixed_cpu_us']), median(summary['fixed_cpu_us'])) if mine else '–'} |"
                )
            kinds = {}
            for server, rounds in per_server.items():
                for r in rounds:
                    for kind, count in r.get("fixed", {}).get("error_kinds", {}).items():
                        key = (server, kind)
                        kinds[key] = kinds.get(key, 0) + count
            if kinds:
                lines += ["", "Failed at the fixed rate, all rounds: " + "; ".join(
                    f"{server}: {count} × {kind}" for (server, kind), count in kinds.items()
                ) + "."]
        closing = [
            server for server, rounds in per_server.items()
            if rounds and not all(r["keep_alive"] for r in rounds)
        ]
        if closing:
            lines += ["", f"No keep-alive (checked: 3 requests on one connection): {', '.join(closing)}."]
        lines.append("")

        if not mine:
            continue
        for server, summary in summaries.items():
            if server in ("mercy", "ceiling"):
                continue
            rps = ratio(median(mine["rps"]), median(summary["rps"]))
            if rps != "–" and float(rps) < 1.0:
                gaps.append(f"{load.title}: mercy serves {rps}× {server}'s requests/s.")
            cpu = ratio(median(mine["cpu_us"]), median(summary["cpu_us"]))
            if cpu != "–" and float(cpu) > 1.0:
                gaps.append(f"{load.title}: mercy spends {cpu}× {server}'s CPU per request at saturation.")
            fixed_cpu = ratio(median(mine["fixed_cpu_us"]), median(summary["fixed_cpu_us"]))
            if fixed_cpu != "–" and float(fixed_cpu) > 1.0:
                gaps.append(
                    f"{load.title}: mercy spends {fixed_cpu}× {server}'s CPU per request at "
                    f"{load.fixed_rate} requests/s."
                )
            p99 = ratio(median(mine["p99_ms"]), median(summary["p99_ms"]))
            if p99 != "–" and float(p99) > 1.5:
                gaps.append(f"{load.title}: mercy's p99 is {p99}× {server}'s at saturation.")


def memory_table(results: dict, lines: list[str], gaps: list[str]) -> None:
    hello = results["throughput"].get("hello")
    if not hello:
        return
    baseline = median(results["baseline_rss_kib"])
    lines += [
        "### Memory after warm-up (hello world, threads)",
        "",
        "Resident size (VmRSS) read after the saturated run. Overhead: a worker's RSS minus "
        f"that of a plain `python -c \"import app; time.sleep(...)\"` ({fmt(baseline, 1, 1 / 1024)} MiB).",
        "",
        "| server | master MiB | each worker MiB | worker overhead MiB | total MiB |",
        "|---|---|---|---|---|",
    ]
    mercy_overhead = None
    overheads = {}
    for server, rounds in hello.items():
        if not rounds:
            continue
        masters = [r["memory"]["master_kib"] for r in rounds]
        workers = [w["rss_kib"] for r in rounds for w in r["memory"]["workers"]]
        counts = {len(r["memory"]["workers"]) for r in rounds}
        totals = [r["memory"]["master_kib"] + sum(w["rss_kib"] for w in r["memory"]["workers"]) for r in rounds]
        worker = median(workers)
        overhead = worker - baseline if worker is not None and baseline and server != "ceiling" else None
        overheads[server] = overhead
        if server == "mercy":
            mercy_overhead = overhead
        count = "/".join(str(c) for c in sorted(counts))
        lines.append(
            f"| {server} | {fmt(median(masters), 1, 1 / 1024)} "
            f"| {fmt(worker, 1, 1 / 1024)} (×{count}) | {fmt(overhead, 1, 1 / 1024)} "
            f"| {fmt(median(totals), 1, 1 / 1024)} |"
        )
    lines.append("")
    for server, overhead in overheads.items():
        if server not in ("mercy", "ceiling") and overhead is not None and mercy_overhead is not None:
            if mercy_overhead > overhead + 1024:
                gaps.append(
                    f"memory: a mercy worker carries {fmt(mercy_overhead, 1, 1 / 1024)} MiB over plain "
                    f"Python, {server}'s {fmt(overhead, 1, 1 / 1024)} MiB."
                )


def reload_table(results: dict, lines: list[str], gaps: list[str], reloads: int) -> None:
    if not results["reload"]:
        return
    lines += [
        "### Reload under load",
        "",
        f"wrk (hello world, 32 connections) runs while {reloads} SIGHUPs are sent to the master, "
        "one a second. Failed = wrk's socket errors (connect, read, write, timeout) + non-2xx "
        "responses. Processes started: new processes of the server seen while it ran (sampled "
        f"every 50 ms): {2 * reloads} when each reload replaced both workers.",
        "",
        "| server | requests/s | failed (min–max) | p99 ms | max ms | processes started "
        "| serving afterwards |",
        "|---|---|---|---|---|---|---|",
    ]
    for server, rounds in results["reload"].items():
        if not rounds:
            continue
        failed = [r["failed"] for r in rounds]
        lines.append(
            f"| {server} | {fmt_spread([r['rps'] for r in rounds])} | {fmt_spread(failed)} "
            f"| {fmt_spread([r['p99_us'] / 1000 for r in rounds], 1)} "
            f"| {fmt(median([r['max_us'] / 1000 for r in rounds]), 0)} "
            f"| {fmt(median([r['processes_started'] for r in rounds]))} "
            f"| {sum(r['serving_after'] for r in rounds)}/{len(rounds)} |"
        )
        if server == "mercy" and max(failed) > 0:
            gaps.append(f"reload under load: mercy failed {median(failed):.0f} requests (median).")
    lines.append("")
    kinds = {
        server: {k: median([r[k] for r in rounds]) for k in ("connect", "read", "write", "timeout", "status")}
        for server, rounds in results["reload"].items()
        if rounds
    }
    lines.append(
        "Failures by kind (median): "
        + "; ".join(
            f"{server}: " + ", ".join(f"{k} {v:.0f}" for k, v in counts.items() if v)
            if any(counts.values()) else f"{server}: none"
            for server, counts in kinds.items()
        )
        + "."
    )
    lines.append("")


def stop_table(results: dict, lines: list[str], gaps: list[str]) -> None:
    if not results["stop"]:
        return
    lines += [
        "### Stop time of the pymongo example after SIGTERM",
        "",
        f"`examples/pymongo_app.py` (a `MongoClient` made at import, no MongoDB server), 2 "
        f"workers, each server given {GRACE} s of grace. Time from SIGTERM until the master "
        "has exited and no process of the server is left.",
        "",
        "| server, mode | stop time s (min–max) | master exit s | forced kills logged | exit status |",
        "|---|---|---|---|---|",
    ]
    for label, rounds in results["stop"].items():
        if not rounds:
            continue
        gone = [r["all_gone_s"] for r in rounds]
        kills = [len(r["kill_lines"]) for r in rounds]
        statuses = sorted({str(r["exit_status"]) for r in rounds})
        not_stopped = sum(not r["stopped"] for r in rounds)
        note = f" ({not_stopped} did not stop in {GRACE + 30} s)" if not_stopped else ""
        lines.append(
            f"| {label} | {fmt_spread(gone, 2)}{note} | {fmt(median([r['master_exit_s'] for r in rounds]), 2)} "
            f"| {fmt(median(kills))} | {', '.join(statuses)} |"
        )
    lines.append("")
    examples = {
        label: rounds[0]["kill_lines"]
        for label, rounds in results["stop"].items()
        if rounds and rounds[0]["kill_lines"]
    }
    if examples:
        lines.append("Kill lines from the logs (first round):")
        lines.append("")
        for label, kill_lines in examples.items():
            lines.append(f"- {label}: `{kill_lines[0][:160]}`")
        lines.append("")
    kinds = {label: (server, mode, extra) for label, server, mode, extra in STOPPERS}
    for label, rounds in results["stop"].items():
        server, mode, extra = kinds[label]
        if server != "mercy":
            continue
        mine = median([r["all_gone_s"] for r in rounds])
        peers = {
            other: median([r["all_gone_s"] for r in other_rounds])
            for other, other_rounds in results["stop"].items()
            if kinds[other][0] != "mercy" and kinds[other][1:] == (mode, extra)
        }
        peers = {other: value for other, value in peers.items() if value is not None}
        if mine is None or not peers:
            continue
        fastest = min(peers, key=peers.get)
        if mine > peers[fastest] * 1.5 and mine - peers[fastest] > 0.1:
            gaps.append(
                f"stop: {label} takes {mine:.2f} s after SIGTERM; {fastest} {peers[fastest]:.2f} s."
            )


# The threads-mode scenarios the throughput goals apply to.
THREAD_LOADS = ("hello", "10k", "echo")


def goals_table(results: dict, lines: list[str]) -> None:
    """One row per goal: the figure this run measured, whether the goal is
    met, and, for a goal no server could meet on this machine, why.
    Ratios use the medians of alternated rounds."""
    rows: list[tuple[str, str, str, str]] = []

    def throughput(name: str, server: str, key: str = "rps"):
        rounds = results["throughput"].get(name, {}).get(server)
        return median(summarize_throughput(rounds)[key]) if rounds else None

    def check(goal: str, measured, good, note: str = "") -> None:
        if measured is None:
            rows.append((goal, "not measured", "–", note))
        else:
            verdict = "met" if good(measured[1]) else "**missed**"
            rows.append((goal, measured[0], verdict, note))

    def rps_ratio(name: str, peer: str):
        mine, theirs = throughput(name, "mercy"), throughput(name, peer)
        if not mine or not theirs:
            return None
        return (f"{mine / theirs:.2f}×", mine / theirs)

    def cpu_ratio(name: str, peer: str, key: str = "cpu_us"):
        mine, theirs = throughput(name, "mercy", key), throughput(name, peer, key)
        if not mine or not theirs:
            return None
        return (f"{mine:.0f} µs vs {theirs:.0f} µs ({mine / theirs:.2f}×)", mine / theirs)

    def beyond(name: str, peer: str, factor: float, limit, what: str) -> str:
        """A note when factor × peer's requests/s is above what any server
        can serve here."""
        theirs = throughput(name, peer)
        if not theirs or not limit or factor * theirs <= limit:
            return ""
        return (
            f"out of reach here: {factor:g}× {peer} is {fmt(factor * theirs)} requests/s, "
            f"above {what} ({fmt(limit)})"
        )

    for name in THREAD_LOADS:
        title = LOADS[name].title
        ceiling = throughput(name, "ceiling")
        check(f"{title}: requests/s ≥ 1.0× Granian", rps_ratio(name, "granian"), lambda r: r >= 1.0)
        check(
            f"{title}: CPU/request ≤ Granian's, at saturation",
            cpu_ratio(name, "granian"), lambda r: r <= 1.0,
        )
        check(
            f"{title}: CPU/request ≤ Granian's, at {LOADS[name].fixed_rate} requests/s",
            cpu_ratio(name, "granian", "fixed_cpu_us"), lambda r: r <= 1.0,
        )
        for peer in ("uwsgi", "gunicorn"):
            check(
                f"{title}: requests/s ≥ 5× {peer}", rps_ratio(name, peer), lambda r: r >= 5.0,
                beyond(name, peer, 5.0, ceiling, "the no-Python ceiling"),
            )
        granian = throughput(name, "granian")
        check(
            f"{title}: requests/s within 10% of the ceiling",
            rps_ratio(name, "ceiling"), lambda r: r >= 0.9,
            f"Granian reaches {granian / ceiling:.2f}× of it" if granian and ceiling else "",
        )
    sleep_limit = LOADS["gevent"].connections / SLEEP_SECONDS
    for name in ("gevent-hello", "gevent"):
        title = LOADS[name].title
        limit = sleep_limit if name == "gevent" else throughput("hello", "ceiling")
        what = (
            f"{LOADS[name].connections} connections ÷ {SLEEP_SECONDS * 1000:g} ms"
            if name == "gevent" else "the no-Python ceiling"
        )
        for peer in ("uwsgi", "gunicorn"):
            check(
                f"{title}: requests/s ≥ 3× {peer} gevent", rps_ratio(name, peer),
                lambda r: r >= 3.0, beyond(name, peer, 3.0, limit, what),
            )

    reloads = results["reload"].get("mercy") if results["reload"] else None
    if reloads:
        failed = [r["failed"] for r in reloads]
        check(
            "reload under load: no failed request",
            (f"{sum(failed)} in {len(failed)} rounds", sum(failed)), lambda n: n == 0,
        )
    else:
        check("reload under load: no failed request", None, None)

    hello = results["throughput"].get("hello", {}).get("mercy")
    if hello:
        master = median([r["memory"]["master_kib"] for r in hello]) / 1024
        worker = median([w["rss_kib"] for r in hello for w in r["memory"]["workers"]]) / 1024
        baseline = median(results["baseline_rss_kib"])
        check("master resident size < 15 MiB", (f"{master:.1f} MiB", master), lambda m: m < 15)
        overhead = worker - baseline / 1024 if baseline else None
        check(
            "worker overhead over plain Python < 15 MiB",
            (f"{overhead:.1f} MiB", overhead) if overhead is not None else None,
            lambda m: m < 15,
        )
    else:
        check("master resident size < 15 MiB", None, None)
        check("worker overhead over plain Python < 15 MiB", None, None)

    stops = results["stop"].get("mercy threads") if results["stop"] else None
    gone = median([r["all_gone_s"] for r in stops if r["all_gone_s"] is not None]) if stops else None
    check(
        "pymongo example (threads) stops < 0.5 s after SIGTERM",
        (f"{gone:.2f} s", gone) if gone is not None else None,
        lambda s: s < 0.5, STOP_NOTE,
    )

    lines += ["## Goals", "", "| goal | this run | | note |", "|---|---|---|---|"]
    lines += [f"| {goal} | {measured} | {verdict} | {note} |" for goal, measured, verdict, note in rows]
    lines.append("")


# Why the pymongo example cannot stop much faster while its atexit handlers
# run, which DESIGN.md section 3 requires.
STOP_NOTE = (
    "pymongo's own atexit handler joins its monitor threads, which look "
    "for the stop flag every 0.5 s (its minimum heartbeat interval): a stop "
    "that runs the app's atexit handlers takes up to 0.5 s more than one that does not"
)


def profile_shares(path: str) -> dict[str, tuple[float, float]]:
    """The rows of profile.md's table: kind of work -> (share of the
    worker's CPU in %, µs per request)."""
    shares = {}
    try:
        with open(path) as file:
            text = file.read()
    except OSError:
        return shares
    for row in re.finditer(r"^\| ([^|]+?) \| [\d.]+% \| [\d.]+% \| ([\d.]+)% \| ([\d.]+) \|$", text, re.M):
        shares[row.group(1)] = (float(row.group(2)), float(row.group(3)))
    return shares


def in_the_way(results: dict, lines: list[str]) -> None:
    """What the profile of one worker (profile.md, made just before this
    report by run.sh, from the same build) shows between mercy and the
    no-Python ceiling, for the goals the table marks missed."""
    shares = profile_shares(os.path.join(BENCH, "profile.md"))
    lines += ["## What is in the way", ""]
    if not shares:
        lines += ["No profile: `bash bench/profile.sh` did not write bench/profile.md.", ""]
        return
    handoff = [shares.get(k, (0.0, 0.0)) for k in
               ("waiting for work, thread switches", "waking another thread", "the GIL: taking and handing it over")]
    send = shares.get("kernel TCP send (loopback delivery included)", (0.0, 0.0))
    python = [shares.get(k, (0.0, 0.0)) for k in
              ("environ (mercy::wsgi::environ)", "the app and the interpreter",
               "start_response and the response (mercy::wsgi::response)")]
    def hello(server: str, key: str = "rps"):
        rounds = results["throughput"].get("hello", {}).get(server)
        return median(summarize_throughput(rounds)[key]) if rounds else None

    ceiling, mercy, granian, uwsgi = (hello(s) for s in ("ceiling", "mercy", "granian", "uwsgi"))
    mercy_cpu, uwsgi_cpu = hello("mercy", "cpu_us"), hello("uwsgi", "cpu_us")
    fractions = (
        f" ({ceiling / mercy:.1f}× mercy's requests/s on hello world in this run)"
        if ceiling and mercy else ""
    )
    granian_fraction = f" ({granian / ceiling:.2f}× of it)" if granian and ceiling else ""
    lines += [
        f"- **The handoff to Python.** In [profile.md](profile.md) (one worker of this build "
        f"under wrk), waiting for work, waking the other thread and passing the GIL take "
        f"{sum(h[0] for h in handoff):.0f}% of the worker's CPU "
        f"({sum(h[1] for h in handoff):.1f} µs per request): each request is read on the I/O "
        f"thread and run on a Python thread, and the answer goes back. The kernel's TCP send "
        f"takes {send[0]:.0f}%, the Python side of the request (environ, the app, the "
        f"response) {sum(p[0] for p in python):.0f}%. The ceiling answers on the thread that "
        f"read the request, with neither handoff nor Python, which is why it serves more"
        f"{fractions}; Granian, which hands requests to Python threads the same way, "
        f"lands in the same range{granian_fraction}. Running the app on the I/O thread would remove "
        f"the handoff but stall every other connection of the worker while the app runs, so "
        f"the 10%-of-the-ceiling goal is out of reach for a server that keeps connections "
        f"served while Python works.",
        "- **uWSGI.** The 5× goal was set against uWSGI without keep-alive; with "
        "`--http11-socket` (its best setting, used here) each uWSGI thread accepts, parses "
        "in C and runs the app itself, with no handoff between threads"
        + (f": in this run it serves {uwsgi / mercy:.2f}× mercy's requests/s on hello world "
           f"at {uwsgi_cpu / mercy_cpu:.2f}× mercy's CPU per request" if uwsgi and mercy
           and uwsgi_cpu and mercy_cpu else "")
        + ". 5× of that is above the ceiling (the goals table says so per row). What mercy "
        "pays for, and uWSGI does not, is the handoff above: mercy reads slow clients and "
        "idle keep-alive connections on its I/O thread, outside the GIL, so a slow client "
        "never holds a Python thread; a uWSGI thread is held by its connection.",
        "- **gevent, 3×.** With 256 connections each waiting 10 ms, no server can exceed "
        f"{LOADS['gevent'].connections / SLEEP_SECONDS:,.0f} requests/s; the hello-world "
        "gevent scenario shows the per-request cost without that cap.",
        "",
    ]


def commands_section(results: dict, lines: list[str], settings: Settings) -> None:
    lines += ["## Command lines", ""]
    lines += [
        "Every server binds 127.0.0.1 on a free port (PORT below), runs 2 workers and is "
        "started afresh for each measurement, in a session of its own; after each one its "
        "whole process tree is stopped (SIGTERM, then SIGKILL for anything left) and checked gone.",
        "",
    ]
    by_scenario: dict = {}
    for key, text in results["commands"].items():
        scenario, label = key.split("|", 1)
        by_scenario.setdefault(scenario, []).append((label, text))
    for scenario, entries in by_scenario.items():
        lines.append(f"**{scenario}**")
        lines.append("")
        for label, text in entries:
            lines.append(f"- {label}: `{text}`")
        lines.append("")

    sample = LOADS["echo"]
    lines += [
        "**load**",
        "",
        f"- warm-up, then the measurement: `{shown(wrk_command(1, '/PATH', settings.seconds, 32), 1)}`"
        " (`BENCH_BODY_BYTES=10240` for the echo scenario; 256 connections for gevent)",
        f"- fixed rate: `{shown(oha_command(1, sample, settings.fixed_seconds, 'body-10k.bin'), 1)}`"
        " (`-m POST -D ... -T ...` only for the echo scenario)",
        f"- reload: the wrk command above for {settings.reloads + 4} s, with `kill -HUP MASTER` "
        f"{settings.reloads} times, once a second, from 1.5 s in",
        "- stop: 20 requests, 2 s pause, `kill -TERM MASTER`",
        "",
    ]


CONFIGURATION_NOTES = (
    "threads mode: 2 workers × 4 threads for mercy, uWSGI and gunicorn (gthread); Granian "
    "2 workers with its default pool of blocking threads, which it grows on demand (it "
    "served more that way than with `--blocking-threads 4` or `1`)",
    "gevent mode: 2 workers × 256 greenlets for mercy, uWSGI and gunicorn; Granian has no "
    "gevent mode",
    "uWSGI keep-alive: `--http11-socket`. On a plain `--http-socket` neither "
    "`--http-keepalive` nor an added `Connection: Keep-Alive` header keeps a connection "
    "open (the second request hangs, or the connection is closed)",
    "uWSGI gevent: without keep-alive (`--http-socket`, `Connection: close` added so wrk "
    "reconnects without counting an error): with gevent 26, `--http11-socket` crashes "
    "uWSGI 2.0's gevent loop (`'io' object has no attribute 'stop'`, then a libev "
    "assertion)",
    "uWSGI SIGTERM: `--die-on-term --hook-master-start 'unix_signal:15 "
    "gracefully_kill_them_all'` makes it a graceful stop (uWSGI 2.0's own SIGTERM is a "
    "brutal reload); `--lazy-apps` so that each worker loads the app (needed for the "
    "pymongo example, and for SIGHUP to reload the app)",
    f"grace for reloads and stops: {GRACE} s everywhere (mercy `--worker-reload-mercy`, "
    "uWSGI `--worker-reload-mercy`/`--reload-mercy`, gunicorn `--graceful-timeout`, "
    "Granian `--workers-kill-timeout`)",
    "request logging off everywhere (gunicorn and Granian log no requests by default)",
)


def write_report(results: dict, facts: dict, settings: Settings, out: str, chart: str | None, argv) -> str:
    lines = [
        "# mercy benchmark results",
        "",
        f"Made by `bash bench/run.sh {' '.join(argv)}`".rstrip() + f" on {facts['date']}.",
        "",
        f"- machine: {facts['cpus']} CPUs ({facts['cpu_model']}), kernel {facts['kernel']}, {facts['os']}; "
        "shared with other work while it ran, so expect noise: each figure is the median of "
        f"{settings.rounds} round(s), with the spread (min–max) where shown",
        f"- load average at the start: {', '.join(f'{v:.2f}' for v in facts['load_average'])}; "
        f"at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}",
        "- versions: " + "; ".join(f"{k} {v}" for k, v in facts["versions"].items()),
        f"- each round: every server started afresh, {settings.warmup:g} s warm-up, "
        f"{settings.seconds:g} s measured at saturation"
        + (f", then {settings.fixed_seconds:g} s at a fixed rate" if settings.fixed_seconds else "")
        + "; servers alternated (the order rotates each round); the load tool runs on the same 2 "
        "cores as the server",
        "- CPU/request: user + system time of the server's whole process tree (master and "
        "workers, from /proc/PID/stat, 10 ms resolution) over the measurement, divided by the "
        "requests served in it",
        "- ceiling: `bench/ceiling`, hyper with no Python answering the same bytes, one "
        "process, a tokio thread per core",
        "",
    ]
    lines += ["Configuration notes (each peer with its best-known settings, keep-alive on where it works):", ""]
    lines += [f"- {note}" for note in CONFIGURATION_NOTES]
    lines.append("")
    if chart:
        lines += [f"![requests/s and p99 per server and scenario]({os.path.basename(chart)})", ""]
    lines += ["## Results", ""]
    gaps: list[str] = []
    throughput_tables(results, lines, gaps)
    memory_table(results, lines, gaps)
    reload_table(results, lines, gaps, settings.reloads)
    stop_table(results, lines, gaps)

    if results["failures"]:
        lines += ["### Measurements that failed", ""]
        lines += [f"- {failure}" for failure in results["failures"]]
        lines.append("")

    goals_table(results, lines)

    lines += ["## Where mercy is behind", ""]
    lines += [f"- {gap}" for gap in gaps] or ["- nowhere in this run"]
    lines.append("")
    in_the_way(results, lines)
    commands_section(results, lines, settings)

    path = os.path.join(out, "results.md")
    with open(path, "w") as file:
        file.write("\n".join(lines).rstrip() + "\n")
    return path


COLOURS = {
    "mercy": "#c0392b", "granian": "#2874a6", "uwsgi": "#7d3c98",
    "gunicorn": "#229954", "ceiling": "#7f8c8d",
}


def write_chart(results: dict, out: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed: no chart")
        return None

    scenarios = list(results["throughput"])
    if not scenarios:
        return None
    servers = [s for s in SERVERS if any(s in results["throughput"][n] for n in scenarios)]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8.5))
    width = 0.8 / len(servers)
    for index, server in enumerate(servers):
        xs, rps, rps_err, p99, p99_err = [], [], [[], []], [], [[], []]
        for position, name in enumerate(scenarios):
            rounds = results["throughput"][name].get(server)
            if not rounds:
                continue
            summary = summarize_throughput(rounds)
            xs.append(position - 0.4 + width * (index + 0.5))
            for values, target, errors in ((summary["rps"], rps, rps_err), (summary["p99_ms"], p99, p99_err)):
                middle = median(values)
                low, high = spread(values)
                target.append(middle)
                errors[0].append(middle - low)
                errors[1].append(high - middle)
        top.bar(xs, rps, width, yerr=rps_err, label=server, color=COLOURS[server], capsize=2)
        bottom.bar(xs, p99, width, yerr=p99_err, label=server, color=COLOURS[server], capsize=2)
        for x, value in zip(xs, rps):
            top.annotate(f"{value / 1000:.1f}k", (x, value), ha="center", va="bottom", fontsize=7)
        for x, value in zip(xs, p99):
            bottom.annotate(f"{value:.1f}", (x, value), ha="center", va="bottom", fontsize=7)

    titles = [LOADS[name].title.replace(", ", "\n", 1) for name in scenarios]
    for axes in (top, bottom):
        axes.set_xticks(range(len(scenarios)), titles, fontsize=8)
        axes.grid(axis="y", alpha=0.3)
    top.set_ylabel("requests/s (median, bars: min–max)")
    bottom.set_ylabel("p99 latency, ms (log scale)")
    bottom.set_yscale("log")
    top.legend(ncols=len(servers), fontsize=8, loc="upper right")
    top.set_title(f"mercy and its peers, 2 workers, {os.cpu_count()} CPUs (bench/results.md)")
    figure.tight_layout()
    path = os.path.join(out, "results.png")
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --- main -------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10, help="one saturated measurement")
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--fixed-seconds", type=float, default=8, help="one fixed-rate run; 0: none")
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--out", default=BENCH, help="where results.md/.json/.png go")
    parser.add_argument("--run-args", default="", help="run.sh's arguments, for the report")
    args = parser.parse_args()

    scenarios = [s for s in args.scenarios.split(",") if s]
    servers = [s for s in args.servers.split(",") if s]
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name}; known: {', '.join(SCENARIOS)}")
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name}; known: {', '.join(SERVERS)}")
    if "ceiling" in servers and not os.access(CEILING, os.X_OK):
        log(f"no ceiling binary at {CEILING}: leaving the ceiling out")
        servers.remove("ceiling")
    if args.fixed_seconds and not shutil.which("oha"):
        log("oha is not installed: no fixed-rate measurements")

    os.makedirs(args.out, exist_ok=True)
    work = os.path.join(args.out, ".work") if args.out == BENCH else os.path.join(args.out, "work")
    os.makedirs(os.path.join(work, "logs"), exist_ok=True)
    settings = Settings(
        rounds=args.rounds, seconds=args.seconds, warmup=args.warmup,
        fixed_seconds=args.fixed_seconds if shutil.which("oha") else 0,
        reloads=args.reloads, work=work,
    )

    facts = machine_facts()
    started = time.monotonic()
    results = run(settings, scenarios, servers)
    results["machine"] = facts
    results["elapsed_s"] = time.monotonic() - started

    with open(os.path.join(args.out, "results.json"), "w") as file:
        json.dump(results, file, indent=1, default=str)
    chart = write_chart(results, args.out)
    report = write_report(results, facts, settings, args.out, chart, shlex.split(args.run_args))
    log(f"wrote {report}" + (f" and {chart}" if chart else "") + f" in {results['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
