#!/usr/bin/env bash
# Benchmarks mercy against uWSGI, gunicorn, Granian and a no-Python ceiling
# on this machine, in one run, and writes bench/results.md (tables, machine,
# every command line), bench/results.json and bench/results.png.
#
#   1. installs the peers into bench/.venv (made by the Python mercy embeds),
#      wrk (Debian) and oha (crates.io), if missing;
#   2. builds mercy and bench/ceiling in release mode;
#   3. runs bench/profile.sh: where a mercy worker's CPU time goes per
#      request (bench/profile.md), which the report quotes;
#   4. runs bench/harness.py: every scenario against every server, servers
#      alternated, a warm-up, --rounds rounds, the median reported.
#
# Usage: bash bench/run.sh [--smoke] [--rounds N] [harness options...]
#   --smoke   one short round, mercy and gunicorn, hello world only; checks
#             that the harness runs and writes its table (to bench/.smoke/,
#             leaving bench/results.* alone). No thresholds. Used by CI.
# Other options go to the harness: --scenarios hello,10k,echo,gevent,reload,stop
# --servers mercy,granian,uwsgi,gunicorn,ceiling --seconds S --warmup S
# --fixed-seconds S --reloads N --out DIR (see bench/harness.py --help).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
BENCH=$ROOT/bench
VENV=$BENCH/.venv

say() { printf '==> bench: %s\n' "$*"; }
die() {
    printf 'bench: error: %s\n' "$*" >&2
    exit 1
}

smoke=0
rounds=3
harness_args=()
while (($#)); do
    case $1 in
    --smoke) smoke=1 ;;
    --rounds)
        [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--rounds needs a positive number"
        rounds=$2
        shift
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    *) harness_args+=("$1") ;;
    esac
    shift
done
run_args=$( ((smoke)) && echo "--smoke" || echo "--rounds $rounds")
((${#harness_args[@]})) && run_args+=" ${harness_args[*]}"

if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
fi
[[ -d $HOME/.cargo/bin ]] && export PATH=$PATH:$HOME/.cargo/bin

# One benchmark at a time: two would measure each other.
exec 9>"$BENCH/.run.lock"
flock -n 9 || die "another bench/run.sh is running"

# --- mercy's own virtualenv (the Python it embeds) ---------------------------------

if [[ ! -x $ROOT/.venv/bin/python ]]; then
    say "no .venv: running scripts/setup.sh"
    bash scripts/setup.sh
fi

# --- the benchmark's virtualenv ------------------------------------------------------

# The same base interpreter as .venv: mercy refuses a virtualenv whose Python
# has another version, and uWSGI compiles against this one's headers.
base_python=$("$ROOT/.venv/bin/python" -c \
    'import os, sys; print(os.path.join(sys.base_prefix, "bin", "python3"))')
wanted=$("$base_python" -c 'import sys; print(sys.prefix, sys.version)')
if [[ ! -x $VENV/bin/python ]] ||
    [[ $("$VENV/bin/python" -c 'import sys; print(sys.base_prefix, sys.version)' 2>/dev/null) != "$wanted" ]]; then
    rm -rf "$VENV"
    say "creating bench/.venv with $base_python"
    "$base_python" -m venv "$VENV"
fi

# Prints the requirement of each "import-name=requirement" pair whose module
# the benchmark's Python cannot import.
missing_python_packages() {
    local pair
    for pair in "$@"; do
        "$VENV/bin/python" -c "import ${pair%%=*}" 2>/dev/null || echo "${pair#*=}"
    done
}

if ((smoke)); then
    wanted_packages=(gunicorn=gunicorn)
else
    # uWSGI compiles from source (a minute or two): it needs a C compiler and
    # the interpreter's headers, which a Python built with --enable-shared has.
    wanted_packages=(
        gunicorn=gunicorn granian=granian gevent=gevent pymongo=pymongo
        matplotlib=matplotlib
    )
fi
mapfile -t missing < <(missing_python_packages "${wanted_packages[@]}")
if [[ ! -x $VENV/bin/uwsgi ]] && ((!smoke)); then
    missing+=("uWSGI>=2.0,<2.1")
fi
if ((${#missing[@]})); then
    say "pip install ${missing[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input "${missing[@]}"
fi

# --- load tools -------------------------------------------------------------------------

if ! command -v wrk >/dev/null; then
    command -v apt-get >/dev/null || die "wrk is missing and there is no apt-get: install wrk"
    say "apt-get install wrk"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

# oha holds a fixed request rate (wrk cannot). Building it takes a few
# minutes; without it the fixed-rate measurements are left out, and said so.
if ! command -v oha >/dev/null && ((!smoke)); then
    say "cargo install oha --locked"
    cargo install oha --locked || say "could not install oha: no fixed-rate measurements"
fi

# --- builds -------------------------------------------------------------------------------

say "cargo build --release (mercy)"
PYO3_PYTHON=$ROOT/.venv/bin/python cargo build --release --quiet
if ((!smoke)); then
    say "cargo build --release (bench/ceiling)"
    cargo build --release --quiet --manifest-path "$BENCH/ceiling/Cargo.toml"
fi

# --- the run --------------------------------------------------------------------------------

if ((smoke)); then
    out=$BENCH/.smoke
    rm -rf "$out"
    "$VENV/bin/python" "$BENCH/harness.py" --rounds 1 --seconds 3 --warmup 1 \
        --fixed-seconds 2 --scenarios hello --servers mercy,gunicorn --out "$out" \
        --run-args="$run_args" "${harness_args[@]}"
    # The check: the table is there, with a row for each server.
    for server in mercy gunicorn; do
        grep -q "^| $server | [0-9]" "$out/results.md" ||
            die "no $server row in $out/results.md"
    done
    say "smoke run passed: $out/results.md"
else
    # Where a worker's CPU time goes, for the goals the tables show missed:
    # first, so that the report can quote the profile of this very build.
    bash "$BENCH/profile.sh" || say "profiling failed: bench/profile.md not updated"
    "$VENV/bin/python" "$BENCH/harness.py" --rounds "$rounds" --run-args="$run_args" \
        "${harness_args[@]}"
fi
