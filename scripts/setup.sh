#!/usr/bin/env bash
# Prepares this checkout to run and test mercy, on Debian 12 as root:
#   1. picks a CPython with a shared libpython (mercy embeds it);
#   2. makes .venv with that Python and installs tests/requirements.txt;
#   3. installs the Debian packages the tests and benchmark use (wrk, procps);
#   4. builds target/release/mercy against that Python.
# Safe to run again: each step does nothing when its work is already done.
#
# Usage: bash scripts/setup.sh [--no-build]
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/.venv
REQUIREMENTS=$ROOT/tests/requirements.txt
REQUIREMENTS_STAMP=$VENV/.mercy-requirements.sha256

build=1
for arg in "$@"; do
    case $arg in
    --no-build) build=0 ;;
    *)
        echo "usage: bash scripts/setup.sh [--no-build]" >&2
        exit 2
        ;;
    esac
done

say() { printf '==> setup: %s\n' "$*"; }
die() {
    printf 'setup: error: %s\n' "$*" >&2
    exit 1
}

# --- Debian packages ---------------------------------------------------------

apt_updated=0

# Installs the given Debian packages; runs `apt-get update` once, first.
apt_install() {
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "need root to install: $*"
        sudo=(sudo -n)
    fi
    command -v apt-get >/dev/null || die "no apt-get: install these yourself: $*"
    if ((apt_updated == 0)); then
        say "apt-get update"
        "${sudo[@]}" apt-get update -qq
        apt_updated=1
    fi
    say "apt-get install $*"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Prints those of the given Debian packages that are not installed.
missing_debs() {
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null |
            grep -q '^install ok installed$' || echo "$pkg"
    done
}

# --- Python --------------------------------------------------------------------

# Prints the real path of the base interpreter behind $1 (it may be a pyenv
# shim or a virtualenv's python), if $1 runs and has a shared libpython.
shared_python() {
    "$1" - <<'EOF' 2>/dev/null
import os, sys, sysconfig
if sysconfig.get_config_var("Py_ENABLE_SHARED") == 1 and sys.version_info >= (3, 8):
    print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
EOF
}

pick_python() {
    local candidate path found
    for candidate in python3 python3.11 /usr/bin/python3; do
        path=$(command -v "$candidate" 2>/dev/null) || continue
        found=$(shared_python "$path") || true
        if [[ -n $found && -x $found ]]; then
            # The base interpreter must itself report a shared libpython.
            if [[ -n $(shared_python "$found") ]]; then
                echo "$found"
                return
            fi
        fi
        say "skipping $path: no shared libpython (Py_ENABLE_SHARED != 1)" >&2
    done
    die "no Python with a shared libpython found (tried python3, python3.11," \
        "/usr/bin/python3); install one, e.g. apt-get install python3-dev," \
        "or a pyenv build with PYTHON_CONFIGURE_OPTS=--enable-shared"
}

PYTHON=$(pick_python)
PY_VERSION=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PY_PREFIX=$("$PYTHON" -c 'import sys; print(sys.prefix)')
say "python: $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"

# Debian splits venv and ensurepip out of its python3 package.
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    if [[ $(readlink -f /usr/bin/python3 2>/dev/null) == "$PYTHON" ]]; then
        apt_install python3-venv
    else
        apt_install "python$PY_VERSION-venv"
    fi
    "$PYTHON" -c 'import venv, ensurepip' || die "$PYTHON cannot make a virtualenv"
fi

# Prints "<base prefix> <version>" of the virtualenv's python, if it runs.
venv_identity() {
    "$VENV/bin/python" -c 'import sys; print(sys.base_prefix, sys.version)' 2>/dev/null
}

wanted_identity=$("$PYTHON" -c 'import sys; print(sys.prefix, sys.version)')
if [[ ! -x $VENV/bin/python || $(venv_identity) != "$wanted_identity" ]]; then
    if [[ -e $VENV ]]; then
        say "removing $VENV: it was made by another Python"
        rm -rf "$VENV"
    fi
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

requirements_sum=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [[ $(cat "$REQUIREMENTS_STAMP" 2>/dev/null) != "$requirements_sum" ]]; then
    say "pip install -r tests/requirements.txt"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        --no-input -r "$REQUIREMENTS"
    echo "$requirements_sum" >"$REQUIREMENTS_STAMP"
fi

# --- Debian tools ----------------------------------------------------------------

# wrk drives the benchmark; procps gives ps, which the tests use to list workers.
mapfile -t missing < <(missing_debs wrk procps nginx-light) # nginx: tests/test_nginx.py
if command -v dpkg-query >/dev/null; then
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    fi
else
    say "not Debian: make sure wrk and ps are installed"
fi

# --- Build -------------------------------------------------------------------------

if ((build == 0)); then
    say "skipping the build (--no-build)"
    exit 0
fi

if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
fi
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (rustup)"
if ! command -v cc >/dev/null; then
    apt_install gcc libc6-dev
fi

# PyO3 reads the interpreter's sysconfig; a virtualenv's python reports its
# base installation's libpython, which the binary then links and loads.
export PYO3_PYTHON=$VENV/bin/python
say "cargo build --release (PYO3_PYTHON=$PYO3_PYTHON, Python $PY_VERSION at $PY_PREFIX)"
cargo build --release
say "mercy binary: $ROOT/target/release/mercy"
