"""Turns the samples and counters bench/profile.sh recorded into
bench/profile.md: where a mercy worker's CPU time goes, per request.

Each sample (a call stack of one thread at one moment) is put in one kind
of work. Mechanisms come first: a stack in the GIL's code, in waking or
waiting for another thread, or in the kernel's TCP path counts as that,
whatever called it. Otherwise the innermost of mercy's functions on the
stack says what the work was for (building the environ, checking the
response, parsing the request); the app's own Python code and the
allocator come after.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime
import re

# (kind, pattern): the first kind whose pattern matches any frame wins.
MECHANISMS = (
    ("the GIL: taking and handing it over", re.compile(r"\b(take_gil|drop_gil)\b")),
    (
        "waking another thread",
        re.compile(r"futex_wake|Signal>::fire|try_to_wake_up|unpark|eventfd_write"),
    ),
    ("waiting for work, thread switches", re.compile(r"futex_wait|futex_do_wait|__schedule|finish_task_switch")),
    ("epoll (waiting for sockets)", re.compile(r"epoll_wait")),
    ("kernel TCP send (loopback delivery included)", re.compile(r"__sys_sendto|tcp_sendmsg|do_sendfile|sock_write_iter")),
    ("kernel TCP receive", re.compile(r"__sys_recvfrom|tcp_recvmsg|sock_read_iter")),
)

# (kind, pattern) for the innermost frame of mercy's that matches.
PURPOSES = (
    ("environ (mercy::wsgi::environ)", re.compile(r"mercy::wsgi::environ")),
    ("start_response and the response (mercy::wsgi::response)", re.compile(r"mercy::wsgi::response")),
    ("wsgi.input (mercy::wsgi::input)", re.compile(r"mercy::wsgi::input")),
    ("request head parsing (mercy::protocol)", re.compile(r"mercy::protocol")),
    ("connection handling (mercy::worker::connection)", re.compile(r"mercy::worker::connection")),
)

APP = re.compile(r"_PyEval_EvalFrameDefault|_PyObject_MakeTpCall|PyObject_Vectorcall")
ALLOCATOR = re.compile(r"^(mi_|_mi_|malloc|free|realloc|cfree|_int_malloc|_int_free|pymalloc|_PyObject_Malloc|_PyObject_Free)")
CALL_APP = re.compile(r"mercy::wsgi::native::call_app")


def read_samples(path: str) -> list[tuple[str, list[str]]]:
    """(thread name, frames from the innermost out) for each sample."""
    samples, comm, frames = [], None, []
    with open(path, errors="replace") as file:
        for line in file:
            if not line.strip():
                if comm is not None:
                    samples.append((comm, frames))
                comm, frames = None, []
            elif not line[0].isspace():
                comm, frames = line.split()[0], []
            elif comm is not None:
                parts = line.strip().split(None, 1)
                frames.append(parts[1] if len(parts) > 1 else parts[0])
    if comm is not None:
        samples.append((comm, frames))
    return samples


def kind_of(frames: list[str]) -> str:
    for kind, pattern in MECHANISMS:
        if any(pattern.search(frame) for frame in frames):
            return kind
    for frame in frames:
        if frame.startswith("mercy::"):
            for kind, pattern in PURPOSES:
                if pattern.search(frame):
                    return kind
            break
    if frames and ALLOCATOR.search(frames[0]):
        return "allocator"
    if any(CALL_APP.search(frame) for frame in frames) and any(APP.search(f) for f in frames):
        return "the app and the interpreter"
    if any(frame.startswith("mercy::") for frame in frames):
        return "other mercy code (bridge, queues)"
    if any(APP.search(frame) for frame in frames):
        return "the app and the interpreter"
    return "other (tokio, libc, kernel)"


def role_of(comm: str) -> str:
    return "I/O thread" if comm == "mercy-io" else "request threads"


def read_stat(path: str) -> dict[str, float]:
    counters = {}
    with open(path) as file:
        for row in csv.reader(line for line in file if line.strip() and not line.startswith("#")):
            if len(row) >= 3 and row[0].replace(".", "", 1).isdigit():
                counters[row[2].replace("syscalls:sys_enter_", "")] = float(row[0])
    return counters


def read_requests(path: str) -> tuple[int, float]:
    text = open(path).read()
    requests = int(re.search(r"(\d+) requests in", text).group(1))
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    return requests, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", required=True)
    parser.add_argument("--stat", required=True)
    parser.add_argument("--wrk", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--path", required=True)
    args = parser.parse_args()

    samples = read_samples(args.stacks)
    counters = read_stat(args.stat)
    requests, rate = read_requests(args.wrk)
    cpu_us = counters.get("task-clock", 0.0) * 1000 / requests if requests else 0.0

    table = collections.Counter()
    roles = collections.Counter()
    for comm, frames in samples:
        table[(kind_of(frames), role_of(comm))] += 1
        roles[role_of(comm)] += 1
    total = sum(roles.values()) or 1
    kinds = sorted({kind for kind, _ in table}, key=lambda k: -sum(table[(k, r)] for r in roles))

    lines = [
        "# Where a mercy worker's CPU time goes",
        "",
        f"Made by `bash bench/profile.sh {args.path}` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: one worker, "
        f"4 request threads, `GET {args.path}` from wrk with 32 connections on the same "
        "machine. The load and the machine's other work share its cores: read the shares, "
        "not the absolute figures.",
        "",
        f"- `{args.command}`",
        f"- {requests:,} requests in 5 s ({rate:,.0f}/s); the worker used "
        f"{cpu_us:.1f} µs of CPU per request (perf stat task-clock)",
        "- per request: "
        + ", ".join(
            f"{counters[name] / requests:.2f} {label}"
            for name, label in (
                ("context-switches", "thread switches"),
                ("futex", "futex calls"),
                ("epoll_wait", "epoll_wait"),
                ("sendto", "sendto"),
                ("recvfrom", "recvfrom"),
                ("write", "write (eventfd wake-ups)"),
            )
            if name in counters and requests
        ),
        f"- {total:,} samples (perf record -F 2000, DWARF call stacks): "
        + ", ".join(f"{role} {100 * count / total:.0f}%" for role, count in roles.most_common()),
        "",
        "| kind of work | I/O thread | request threads | all | µs per request |",
        "|---|---|---|---|---|",
    ]
    for kind in kinds:
        io = table[(kind, "I/O thread")]
        python = table[(kind, "request threads")]
        share = (io + python) / total
        lines.append(
            f"| {kind} | {100 * io / total:.1f}% | {100 * python / total:.1f}% "
            f"| {100 * share:.1f}% | {share * cpu_us:.1f} |"
        )
    lines.append("")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
