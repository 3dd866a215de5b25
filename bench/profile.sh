#!/usr/bin/env bash
# Profiles one mercy worker serving bench/apps/app.py under wrk and writes
# bench/profile.md: where the worker's CPU time goes per request, by thread
# (the I/O thread, the request threads) and by kind of work (the kernel's
# TCP path, waking and waiting for other threads, the interpreter, mercy's
# own code, the allocator), from `perf record` samples with DWARF call
# stacks, and the system calls per request from `perf stat`.
#
# Usage: bash bench/profile.sh [PATH] [mercy options...]
#   PATH   the route to load (default /: hello world)
#   mercy options are added to the command line (`--gevent 256` profiles
#   gevent mode instead of 4 request threads); OUT_FILE=FILE writes elsewhere
# Needs perf (Debian's linux-perf, installed if missing) and wrk.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH=$ROOT/bench
OUT=$BENCH/.work/profile
MERCY=$ROOT/target/release/mercy
path=${1:-/}
shift || true

say() { printf '==> profile: %s\n' "$*"; }

if ! command -v perf >/dev/null; then
    say "apt-get install linux-perf"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends linux-perf >/dev/null
fi
command -v wrk >/dev/null || { echo "profile: wrk is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }
[[ -x $MERCY ]] || bash scripts/setup.sh
mkdir -p "$OUT"

port=$("$ROOT/.venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
concurrency=(--threads 4)
[[ " $* " == *" --gevent "* ]] && concurrency=()
argv=("$MERCY" --http "127.0.0.1:$port" --wsgi-file "$BENCH/apps/app.py" --processes 1
    "${concurrency[@]}" --disable-logging --virtualenv "$ROOT/.venv" "$@")
say "${argv[*]}"
"${argv[@]}" >"$OUT/mercy.log" 2>&1 &
master=$!
trap 'kill -INT $master 2>/dev/null; wait $master 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port$path" >/dev/null 2>&1 && break
    sleep 0.1
done
worker=$(pgrep -P "$master" | head -1)
url="http://127.0.0.1:$port$path"

say "warm-up, then system calls per request (perf stat, 5 s of wrk)"
wrk -t1 -c32 -d2s "$url" >/dev/null
perf stat -x, -o "$OUT/stat.csv" -e task-clock,context-switches,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_write \
    -p "$worker" -- sleep 5.5 &
stat=$!
sleep 0.25
wrk -t1 -c32 -d5s "$url" >"$OUT/wrk-stat.txt"
wait "$stat"

say "CPU samples with call stacks (perf record, 1 s of a 4 s wrk run)"
wrk -t1 -c32 -d4s "$url" >"$OUT/wrk-record.txt" &
load=$!
sleep 1
perf record -q -F 2000 -e cpu-clock --call-graph dwarf,32768 -p "$worker" -o "$OUT/perf.data" -- sleep 1 2>/dev/null
wait "$load"
perf script -i "$OUT/perf.data" -F comm,tid,ip,sym 2>/dev/null >"$OUT/stacks.txt"

"$ROOT/.venv/bin/python" "$BENCH/profile.py" --stacks "$OUT/stacks.txt" --stat "$OUT/stat.csv" \
    --wrk "$OUT/wrk-stat.txt" --command "${argv[*]/$ROOT\//}" --path "$path" >"${OUT_FILE:-$BENCH/profile.md}"
say "wrote ${OUT_FILE:-bench/profile.md}"
