#!/usr/bin/env bash
# The whole test suite, as CI runs it: lints, unit and property tests, end-to-end tests
# in network namespaces (need root: under CI=true they fail rather than skip), and a
# short fuzzing run of every fuzz target.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
tools/scripts/install-deps.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

step "build binaries for the end-to-end tests"
cargo build --workspace --bins --quiet

results=$(mktemp)
trap 'rm -f "$results"' EXIT

step "unit and property tests"
cargo test --workspace --exclude vnet-e2e 2>&1 | tee -a "$results"

step "end-to-end tests (network namespaces, TAP, iperf3)"
# One at a time: they measure throughput and must not compete for the 2 cores.
cargo test -p vnet-e2e -- --test-threads=1 2>&1 | tee -a "$results"

step "fuzz targets"
tools/scripts/fuzz.sh "${FUZZ_SECONDS:-20}"

# One closing line for the whole suite (cargo prints one per test binary, the last of
# which is often an empty doc-test run).
awk '/^test result:/ { p += $4; f += $6 } END { printf "\ntests: %d passed, %d failed\n", p, f }' "$results"
