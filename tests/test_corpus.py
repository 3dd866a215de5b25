"""The shared HTTP/1.x request corpus, sent over real sockets to mercy.

Every case of `../shared/corpus/http/requests.json` (README beside it) goes
to a running mercy whose app (`tests/apps/echo.py`) echoes what it received
and records each call in a file. Each case is sent whole, byte by byte and
in seeded random pieces, in threads mode and in gevent mode. Checked:
- an accepted case reaches the app exactly as expected (method, PATH_INFO,
  QUERY_STRING, protocol, headers by environ name, body; the client address
  from a PROXY header), pipelined requests in order, one app call each;
- a refused head gets the expected 4xx/5xx with `Connection: close`, the
  server closes the connection, the app is never called, and mercy logs a
  `bad_request` line;
- a malformed chunked body (found while the app reads `wsgi.input`) gets
  no 2xx, the connection is closed, and the app's read raised.

The expectations come from the corpus read with mercy's policy, exactly as
`tests/protocol_corpus.rs` decides them at the parser level: the tables
below repeat its decisions with their reasons. No case is skipped.

mercy runs with `--socket-timeout` and `--keep-alive` longer than the
client's timeout, so every close the test sees is mercy's decision on the
bytes, never a timer.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import APPS, REPO
from test_http import LONG_TIMEOUTS, MODES, Wire, parse_responses

# In the folder that holds the checkout, or one above it (a worktree).
CORPUS = next((folder / "shared" / "corpus" / "http" / "requests.json"
               for folder in REPO.parents
               if (folder / "shared" / "corpus" / "http" / "requests.json").is_file()),
              REPO.parent / "shared" / "corpus" / "http" / "requests.json")
CASE_COUNT = 109
SEED = 20240601
# Pause between pieces, so that the server reads them one by one.
PIECE_PAUSE = 0.0002

# --- mercy's reading of the corpus (same decisions as tests/protocol_corpus.rs) ---

# Cases where mercy's expected result differs from the corpus, and why.
# ("refuse", status) | ("path", PATH_INFO) | ("chunked_07",)
DIFFERENCES = {
    "valid/009": (("refuse", 400),
                  "Content-Length together with Transfer-Encoding is ambiguous framing"),
    "valid/025": (("refuse", 501), "gzip transfer coding is not supported"),
    "valid/025_line": (("refuse", 501), "gzip transfer coding is not supported"),
    "valid/rfc9112_smuggle_gzip_chunked_01": (("refuse", 501),
                                             "gzip transfer coding is not supported"),
    "valid/029": (("refuse", 501), "identity is not a transfer coding since RFC 7230"),
    "valid/rfc9112_smuggle_te_identity_chunked_01": (
        ("refuse", 501), "identity is not a transfer coding since RFC 7230"),
    "valid/rfc9112_target_authority_connect_01": (("refuse", 501),
                                                 "CONNECT has no meaning for a WSGI app"),
    "valid/rfc9112_target_authority_ipv6_01": (("refuse", 501),
                                              "CONNECT has no meaning for a WSGI app"),
    "valid/compat_obs_fold": (("refuse", 400),
                              "config permit_obsolete_folding: mercy has no such switch "
                              "and refuses obs-fold"),
    "valid/compat_obs_fold_huge": (("refuse", 400),
                                   "config permit_obsolete_folding: mercy has no such "
                                   "switch and refuses obs-fold"),
    "valid/031compat": (("refuse", 400),
                        "config permit_unconventional_http_method and casefold_http_method: "
                        "mercy has no such switches; a method with lower-case letters is "
                        "refused"),
    "valid/031compat2": (("refuse", 400),
                         "config permit_unconventional_http_method: mercy has no such "
                         "switch; a method with lower-case letters is refused"),
    "invalid/013": (("refuse", 400),
                    "config permit_obsolete_folding has no mercy equivalent "
                    "(--limit-request-field-size 14 is set): the folded line is refused as "
                    "obs-fold, 400, before it could break the field size limit (431)"),
    "invalid/chunked_07": (("chunked_07",),
                           "config header_map=refuse has no mercy equivalent: mercy drops "
                           "header names with `_`, so Transfer_Encoding never counts and the "
                           "chunked body is read"),
    "valid/100": (("path", "///keeping_slashes"),
                  "the corpus conversion read `//` as an authority; an origin-form target "
                  "is an absolute path, so PATH_INFO keeps the slashes"),
    "invalid/version_02": (("refuse", 505),
                           "HTTP/2.0 is a well-formed version mercy does not speak: 505"),
}

# Cases run with a corpus setting mercy maps differently or lacks, where the
# expected result stays the corpus's.
SETTING_NOTES = {
    "valid/024": "limit_request_line 8200 and limit_request_field_size 8210 are set; "
                 "--buffer-size is raised to 65536, as an operator raising those limits "
                 "must, or the 16 KiB head could never fit",
    "valid/040_compat": "config header_map=dangerous has no mercy equivalent: names with "
                        "`_` are dropped as in valid/040",
    "invalid/limit_header_default_01": "limit_request_field_size 0: mercy reads 0 as no "
                                       "limit of its own per line; the 8 KiB head still "
                                       "breaks --buffer-size 4096, so the answer is 431",
}

# Cases whose bytes end before the body their head announces.
TRUNCATED_BODIES = {
    "valid/099": "Content-Length is 17914 but only 8599 body bytes were captured. On the "
                 "wire the client half-closes after them: a body that short of its length "
                 "can never reach the app whole, so the check is that no 2xx is sent, the "
                 "connection is closed, and the app, if mercy called it (bodies over "
                 "--post-buffering stream), saw its read fail. With the default "
                 "--post-buffering the body is read before the app runs, so it is not called",
}

# Corpus settings with a mercy option.
MERCY_SETTINGS = ("limit_request_line", "limit_request_field_size", "proxy_protocol")


@dataclass
class Expected:
    """What mercy must do with one case."""

    # "accept", "refuse", "refuse_body", "incomplete" or "truncated".
    kind: str
    requests: list = field(default_factory=list)
    status: int | None = None
    # accept: the last request does not keep the connection alive.
    closes: bool = False


@dataclass
class Case:
    name: str
    raw: bytes
    args: tuple
    expected: Expected
    # The client address a PROXY header names, or None.
    proxy_source: tuple | None = None

    def __repr__(self):
        return self.name


def latin1(text: str) -> bytes:
    return text.encode("latin-1")


def percent_decode(raw: bytes) -> bytes:
    """As mercy decodes PATH_INFO: valid %XX escapes only."""
    out = bytearray()
    index = 0
    hexdigits = b"0123456789abcdefABCDEF"
    while index < len(raw):
        escape = raw[index:index + 3]
        if len(escape) == 3 and escape[0:1] == b"%" and all(b in hexdigits for b in escape[1:]):
            out.append(int(escape[1:], 16))
            index += 3
        else:
            out.append(raw[index])
            index += 1
    return bytes(out)


def environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


def expected_request(value: dict) -> dict:
    """What the echo app must report for one accepted corpus request."""
    headers: dict[str, str] = {}
    connection = []
    for name, header_value in value["headers"]:
        if "_" in name:
            continue  # dropped by mercy (valid/040)
        key = environ_key(name)
        separator = "; " if key == "HTTP_COOKIE" else ", "
        headers[key] = f"{headers[key]}{separator}{header_value}" if key in headers else header_value
        if name.upper() == "CONNECTION":
            connection += [token.strip().lower() for token in header_value.split(",")]
    minor = value["version"][1]
    keep_alive = "close" not in connection and (minor == 1 or "keep-alive" in connection)
    return {
        "method": value["method"],
        "path": percent_decode(latin1(value["uri"]["path"])),
        "query": latin1(value["uri"]["query"]),
        "protocol": f"HTTP/1.{minor}",
        "headers": headers,
        "body": base64.b64decode(value["body_b64"]),
        "keep_alive": keep_alive,
    }


def chunked_07_request() -> dict:
    """invalid/chunked_07 under mercy: `Transfer_Encoding: gzip` dropped."""
    return {
        "method": "POST",
        "path": b"/chunked_ambiguous_header_mapping",
        "query": b"",
        "protocol": "HTTP/1.1",
        "headers": {"HTTP_TRANSFER_ENCODING": "chunked"},
        "body": b"hello world",
        "keep_alive": True,
    }


def expected_rejection(name: str, kind: str) -> Expected:
    """gunicorn's exception names as mercy answers them (corpus README)."""
    if kind in ("InvalidChunkSize", "InvalidChunkExtension", "ChunkMissingTerminator"):
        return Expected("refuse_body")
    if "trailer_forbidden" in name:
        return Expected("refuse_body")
    if kind == "NoMoreData":
        return Expected("incomplete")
    if kind == "LimitRequestLine":
        return Expected("refuse", status=414)
    if kind == "LimitRequestHeaders":
        return Expected("refuse", status=431)
    return Expected("refuse", status=400)


def expected_result(name: str, expect: dict) -> Expected:
    if name in DIFFERENCES:
        (kind, *detail), _reason = DIFFERENCES[name]
        if kind == "refuse":
            return Expected("refuse", status=detail[0])
        requests = [chunked_07_request()] if kind == "chunked_07" else [
            expected_request(expect["accept"][0])]
        if kind == "path":
            requests[0]["path"] = latin1(detail[0])
        return Expected("accept", requests, closes=not requests[-1]["keep_alive"])
    if name in TRUNCATED_BODIES:
        return Expected("truncated")
    if "accept" in expect:
        requests = [expected_request(value) for value in expect["accept"]]
        return Expected("accept", requests, closes=not requests[-1]["keep_alive"])
    return expected_rejection(name, expect["reject"])


def mercy_args(name: str, config: dict) -> tuple:
    """mercy's options for the case's corpus settings."""
    explained = name in DIFFERENCES or name in SETTING_NOTES
    for key in config:
        assert key in MERCY_SETTINGS or explained, (
            f"{name}: config key {key} has no mercy equivalent and no written reason")
    args = []
    if config.get("proxy_protocol"):
        args.append("--enable-proxy-protocol")
    for key in ("limit_request_line", "limit_request_field_size"):
        if key in config:
            args += ["--" + key.replace("_", "-"), str(config[key])]
    # gunicorn has no whole-head limit (valid/024 in SETTING_NOTES).
    if any(config.get(key, 0) > 4096
           for key in ("limit_request_line", "limit_request_field_size")):
        args += ["--buffer-size", "65536"]
    return tuple(args)


def proxy_source(raw: bytes, enabled: bool) -> tuple | None:
    """The (address, port) a PROXY v1 or v2 header at the start names."""
    if not enabled:
        return None
    if raw.startswith(b"PROXY "):
        fields = raw[:raw.index(b"\r\n")].decode().split(" ")
        if fields[1] in ("TCP4", "TCP6"):
            return str(ipaddress.ip_address(fields[2])), int(fields[4])
        return None
    if raw.startswith(b"\r\n\r\n\x00\r\nQUIT\n"):
        command, family = raw[12] & 0x0F, raw[13] >> 4
        if command != 1:
            return None
        if family == 1:
            return str(ipaddress.IPv4Address(raw[16:20])), struct.unpack("!H", raw[24:26])[0]
        if family == 2:
            return str(ipaddress.IPv6Address(raw[16:32])), struct.unpack("!H", raw[48:50])[0]
    return None


def load_cases() -> list[Case]:
    document = json.loads(CORPUS.read_text())
    cases = []
    for value in document:
        name = value["name"]
        raw = base64.b64decode(value["raw_b64"])
        args = mercy_args(name, value["config"])
        expected = expected_result(name, value["expect"])
        # Only accepted cases reach the app; invalid PROXY headers name nobody.
        proxy = "--enable-proxy-protocol" in args and expected.kind == "accept"
        cases.append(Case(name, raw, args, expected, proxy_source(raw, proxy)))
    return cases


CASES = load_cases()
CONFIGS = sorted({case.args for case in CASES})


def config_id(args: tuple) -> str:
    return " ".join(args).replace("--", "") or "defaults"


# --- sending and judging ------------------------------------------------------------


def random_pieces(length: int, rng: random.Random) -> list[int]:
    """Mostly small pieces, some large."""
    pieces, total = [], 0
    while total < max(length, 1):
        size = 1 + rng.randrange(length // 2 + 1) if rng.randrange(4) == 0 \
            else 1 + rng.randrange(16)
        pieces.append(size)
        total += size
    return pieces


def feeds(case: Case):
    """(name, piece sizes, pause) for each way a case is sent."""
    rng = random.Random(f"{SEED}:{case.name}")
    return [
        ("whole", [len(case.raw)], 0.0),
        ("byte by byte", [1], PIECE_PAUSE),
        ("random pieces", random_pieces(len(case.raw), rng), PIECE_PAUSE),
    ]


class Calls:
    """The echo app's record of its calls."""

    def __init__(self, path: Path):
        self.path = path
        self.seen = 0

    def entries(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines()]

    def new(self) -> list[dict]:
        """Entries written since the last call."""
        entries = self.entries()
        fresh = entries[self.seen:]
        self.seen = len(entries)
        return fresh


def compare_request(echo: dict, want: dict, case: Case, local_port: int) -> list[str]:
    problems = []
    got = {
        "method": echo["method"],
        "path": latin1(echo["path"]),
        "query": latin1(echo["query"]),
        "protocol": echo["protocol"],
        "headers": echo["headers"],
        "body": base64.b64decode(echo["body_b64"]),
    }
    for key, value in got.items():
        if value != want[key]:
            problems.append(f"{key}: expected {want[key]!r:.300}, got {value!r:.300}")
    remote = case.proxy_source or ("127.0.0.1", local_port)
    if (echo["remote_addr"], echo["remote_port"]) != (remote[0], str(remote[1])):
        problems.append(f"client address: expected {remote}, got "
                        f"{echo['remote_addr']}:{echo['remote_port']}")
    return problems


def judge(case: Case, wire: Wire, calls: list[dict]) -> list[str]:
    """What is wrong with mercy's handling of one sending of a case."""
    expected = case.expected
    responses, rest = parse_responses(wire.received)
    finals = [response for response in responses if response.status >= 200]
    app_calls = [entry for entry in calls if entry["event"] == "call"]
    problems = []
    if rest:
        problems.append(f"bytes that are no response: {rest!r:.200}")

    if expected.kind == "accept":
        if len(finals) != len(expected.requests):
            problems.append(f"expected {len(expected.requests)} responses, got "
                            f"{len(finals)}: {wire.received!r:.600}")
        for index, (response, want) in enumerate(zip(finals, expected.requests)):
            if response.status != 200:
                problems.append(f"response {index + 1}: status {response.status}: "
                                f"{response.raw!r:.300}")
                continue
            for problem in compare_request(response.json(), want, case, wire.local_port):
                problems.append(f"request {index + 1}: {problem}")
        called = [latin1(entry["path"]) for entry in app_calls]
        if called != [want["path"] for want in expected.requests]:
            problems.append(f"app calls in order: expected "
                            f"{[want['path'] for want in expected.requests]}, got {called}")
        if expected.closes and finals and finals[-1].header("connection") != "close":
            problems.append("the last response lacks `Connection: close`")
        if wire.reset:
            problems.append("the connection was reset")
    elif expected.kind == "refuse":
        statuses = [response.status for response in finals]
        if statuses != [expected.status]:
            problems.append(f"expected one {expected.status} response, got {statuses}: "
                            f"{wire.received!r:.300}")
        elif finals[0].header("connection") != "close":
            problems.append(f"the refusal lacks `Connection: close`: {finals[0].raw!r:.300}")
        if app_calls:
            problems.append(f"the app was called: {app_calls}")
    elif expected.kind in ("refuse_body", "truncated"):
        ok = [response.status for response in finals if 200 <= response.status < 300]
        if ok:
            problems.append(f"a malformed body got a 2xx: {wire.received!r:.300}")
        if expected.kind == "refuse_body" and len(app_calls) != 1:
            problems.append(f"expected the app to be called once, got {len(app_calls)}")
        if app_calls and not any(entry["event"] == "body_error" for entry in calls):
            problems.append(f"the app was called but its body read did not fail: {calls}")
    elif expected.kind == "incomplete":
        if any(response.status < 400 for response in finals):
            problems.append(f"an incomplete head got an answer: {wire.received!r:.300}")
        if app_calls:
            problems.append(f"the app was called: {app_calls}")
    return problems


def send_case(server, case: Case, pieces, pause) -> Wire:
    """Sends one case and reads until mercy closes the connection."""
    wire = Wire(server.port)
    with wire:
        sent_all = wire.send_pieces(case.raw, pieces, pause)
        # Accepted keep-alive requests, and inputs that end inside a head or
        # body, need the client's end of input: nothing else would end them.
        expected = case.expected
        needs_end = (expected.kind == "accept" and not expected.closes) or expected.kind in (
            "refuse_body", "incomplete", "truncated")
        if sent_all and needs_end:
            wire.half_close()
        wire.read_until_close()
    return wire


# --- tests -----------------------------------------------------------------------------


def test_every_case_has_an_expectation_and_the_tables_name_real_cases():
    """All 109 corpus cases load with an expectation; every table entry is a
    corpus case; every reason is written."""
    names = {case.name for case in CASES}
    assert len(CASES) == CASE_COUNT
    for table in (DIFFERENCES, SETTING_NOTES, TRUNCATED_BODIES):
        for name, entry in table.items():
            assert name in names, name
            assert entry, name
    assert {case.expected.kind for case in CASES} == {
        "accept", "refuse", "refuse_body", "incomplete", "truncated"}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("args", CONFIGS, ids=config_id)
def test_corpus_over_the_wire(mercy, tmp_path, mode, args):
    """Every corpus case that needs these options, sent whole, byte by byte
    and in random pieces: accepted requests reach the app exactly and in
    order, refused ones get their status and a close and never reach the
    app, malformed chunked bodies get no 2xx and a close."""
    calls_path = tmp_path / "calls.jsonl"
    server = mercy("--wsgi-file", APPS / "echo.py", *MODES[mode], *LONG_TIMEOUTS, *args,
                   env={"MERCY_ECHO_CALLS": str(calls_path)})
    calls = Calls(calls_path)
    cases = [case for case in CASES if case.args == args]
    assert cases

    failures = []
    refusals = 0
    for case in cases:
        for feed, pieces, pause in feeds(case):
            wire = send_case(server, case, pieces, pause)
            for problem in judge(case, wire, calls.new()):
                failures.append(f"{case.name} ({feed}): {problem}")
            refusals += case.expected.kind == "refuse"

    late = calls.new()
    if late:
        failures.append(f"app calls after the last case ended: {late}")
    # Every refusal was logged with its status (the log line is written
    # before the answer); other bad_request lines (a body cut short) have none.
    logged = len([record for record in server.events("bad_request") if "status" in record])
    if logged != refusals:
        failures.append(f"expected {refusals} bad_request log lines, found {logged}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures)
