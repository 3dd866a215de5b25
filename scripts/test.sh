#!/usr/bin/env bash
# Sets up the checkout, then runs every check mercy has: formatting, clippy,
# the Rust unit and integration tests, bounded fuzzing of the framing code,
# the benchmark smoke run, and the Python integration tests
# (tests/*.py) against the release binary. Each step runs even when an
# earlier one failed; the exit status is non-zero if any step failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
ROOT=$PWD

if ! command -v cargo >/dev/null && [[ -x $HOME/.cargo/bin/cargo ]]; then
    export PATH=$HOME/.cargo/bin:$PATH
fi

# The same interpreter as scripts/setup.sh, so that cargo reuses its build.
export PYO3_PYTHON=$ROOT/.venv/bin/python
export MERCY_BIN=$ROOT/target/release/mercy

names=()
results=()
durations=()

# Runs one step: a name, then the command. Records its outcome.
step() {
    local name=$1 started status
    shift
    printf '\n==> test: %s\n' "$name"
    started=$SECONDS
    "$@"
    status=$?
    names+=("$name")
    results+=("$status")
    durations+=("$((SECONDS - started))")
    if ((status != 0)); then
        printf '==> test: %s failed (exit status %d)\n' "$name" "$status"
    fi
    return "$status"
}

summary() {
    local i passed=0 failed=0 outcome
    printf '\n==> test: summary\n'
    for i in "${!names[@]}"; do
        if ((results[i] == 0)); then
            outcome=ok
            passed=$((passed + 1))
        else
            outcome="FAILED (exit status ${results[i]})"
            failed=$((failed + 1))
        fi
        printf '  %-44s %4ss  %s\n' "${names[i]}" "${durations[i]}" "$outcome"
    done
    if ((failed == 0)); then
        printf 'test.sh: all %d steps passed\n' "$passed"
    else
        printf 'test.sh: %d of %d steps FAILED\n' "$failed" "$((passed + failed))"
    fi
    ((failed == 0))
}

if step "setup (venv, packages, release build)" bash scripts/setup.sh; then
    step "cargo fmt --check" cargo fmt --check
    step "cargo clippy --all-targets -- -D warnings" \
        cargo clippy --all-targets -- -D warnings
    step "cargo test --release" cargo test --release
    step "docs/uwsgi-options.md is current" \
        bash -c '"$MERCY_BIN" --options-table | diff -u docs/uwsgi-options.md -'
    step "fuzz (bounded: 200000 runs or 20 s per target)" \
        env FUZZ_RUNS=200000 FUZZ_SECONDS=20 bash scripts/fuzz.sh
    step "bench smoke" bash bench/run.sh --smoke
    step "pytest tests/" .venv/bin/python -m pytest tests/ -v
else
    # Formatting is still worth reporting when the build is broken.
    step "cargo fmt --check" cargo fmt --check
fi

summary
