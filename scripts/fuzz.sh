#!/usr/bin/env bash
# Fuzzes mercy's sans-IO request framing (fuzz/, cargo-fuzz with libFuzzer)
# for a bounded number of runs per target, on the stable toolchain:
#   head     HeadParser fed in pieces against parse_head, and the policy
#   chunked  ChunkedDecoder, whole against split input
#   proxy    PROXY protocol v1/v2 headers on growing buffers
#   framing  a whole connection with mercy's HeadParser and BodyDecoder:
#            PROXY header, pipelined heads, bodies read in varied pieces
#   uwsgi    uwsgi protocol packets (nginx uwsgi_pass) on growing buffers
#   uwsgi_packet  uwsgi packets against a model: round trips and raw bytes
# Installs cargo-fuzz from crates.io if it is missing, seeds each target's
# corpus from the shared HTTP request corpus, then runs every target. A
# crash leaves its input in fuzz/artifacts/TARGET/ and fails the script.
# libFuzzer's own output goes to fuzz/artifacts/TARGET.log; its last lines
# are shown.
#
# Usage: bash scripts/fuzz.sh [TARGET...]
#   FUZZ_RUNS     runs per target (default 200000)
#   FUZZ_SECONDS  ceiling on each target's run time (default 20), so that
#                 the six targets stay near 2 minutes in CI
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TARGETS=(head chunked proxy framing uwsgi uwsgi_packet)
RUNS=${FUZZ_RUNS:-200000}
SECONDS_PER_TARGET=${FUZZ_SECONDS:-20}
# The shared request corpus, beside the checkout or a folder above it.
REQUESTS=$ROOT/../shared/corpus/http/requests.json
for folder in "$ROOT/.." "$ROOT/../.."; do
    if [[ -f $folder/shared/corpus/http/requests.json ]]; then
        REQUESTS=$folder/shared/corpus/http/requests.json
        break
    fi
done

say() { printf '==> fuzz: %s\n' "$*"; }

if (($#)); then
    TARGETS=("$@")
fi
if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
fi

# The mercy library links libpython through pyo3: build against the same
# interpreter as scripts/setup.sh (fuzz/build.rs adds the rpath to it).
export PYO3_PYTHON=${PYO3_PYTHON:-$ROOT/.venv/bin/python}
[[ -x $PYO3_PYTHON ]] || PYO3_PYTHON=$(command -v python3)

if ! cargo fuzz --version >/dev/null 2>&1; then
    say "cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked
fi

# Seeds: every corpus case as each target reads its input (one control
# byte, then the wire bytes; see fuzz/src/lib.rs). Written again on every
# run; libFuzzer adds what it finds next to them.
seed_corpora() {
    if [[ ! -f $REQUESTS ]]; then
        say "no request corpus at $REQUESTS: starting from empty corpora"
        return
    fi
    "$PYO3_PYTHON" - "$REQUESTS" "$ROOT/fuzz/corpus" <<'EOF'
import base64, json, os, sys

requests, corpus = sys.argv[1], sys.argv[2]

def write(target, name, data):
    folder = os.path.join(corpus, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "seed-" + name.replace("/", "-")), "wb") as file:
        file.write(data)

for case in json.load(open(requests)):
    name, raw = case["name"], base64.b64decode(case["raw_b64"])
    proxy = bool(case["config"].get("proxy_protocol"))
    for limits in range(4):
        write("head", f"{name}-{limits}", bytes([limits]) + raw)
        write("framing", f"{name}-{limits}", bytes([limits | (8 if proxy else 0)]) + raw)
    if proxy:
        write("proxy", name, raw)
    if "accept" in case["expect"]:
        request = case["expect"]["accept"][0]
        pairs = [("REQUEST_METHOD", request["method"]), ("REQUEST_URI", request["uri"]["raw"]),
                 *((f"HTTP_{key.replace('-', '_')}", value) for key, value in request["headers"])]
        block = b"".join(
            len(text).to_bytes(2, "little") + text
            for key, value in pairs for text in (key.encode("latin-1"), value.encode("latin-1")))
        packet = b"\x00" + len(block).to_bytes(2, "little") + b"\x00" + block
        write("uwsgi", name, b"\x00" + packet + base64.b64decode(request["body_b64"]))
    head_end = raw.find(b"\r\n\r\n")
    if b"chunked" in raw.lower() and head_end >= 0:
        body = raw[head_end + 4:]
        write("chunked", name, b"\x00" + body)
        write("chunked", name + "-tight", b"\x04" + body)
EOF
}

say "seeding fuzz/corpus from the request corpus"
seed_corpora

say "cargo fuzz build -s none (PYO3_PYTHON=$PYO3_PYTHON)"
cargo fuzz build -s none

failed=()
for target in "${TARGETS[@]}"; do
    say "$target: up to $RUNS runs, at most ${SECONDS_PER_TARGET}s"
    started=$SECONDS
    log=$ROOT/fuzz/artifacts/$target.log
    mkdir -p "$ROOT/fuzz/artifacts/$target"
    if cargo fuzz run -s none "$target" -- \
        -runs="$RUNS" -max_total_time="$SECONDS_PER_TARGET" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|#[0-9]+ +DONE)' "$log" | sed 's/^/    /'
        say "$target: ok ($((SECONDS - started))s)"
    else
        tail -n 40 "$log" | sed 's/^/    /'
        say "$target: FAILED ($((SECONDS - started))s); the input is in fuzz/artifacts/$target/"
        failed+=("$target")
    fi
done

if ((${#failed[@]})); then
    say "failed: ${failed[*]}"
    exit 1
fi
say "all targets ran without a crash: ${TARGETS[*]}"
