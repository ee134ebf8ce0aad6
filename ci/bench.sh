#!/usr/bin/env bash
# Benchmarks (numbers, not pass/fail). BENCH_SECONDS sets the time per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "==> quote verification vs raw P-384 verify, one core (attest-common)"
cargo bench -p attest-common --features aws-lc --bench quote --locked

echo
echo "==> durable registry writes per second (attest-server)"
cargo bench -p attest-server --bench store --locked

echo
echo "==> full attestations/s through the real server vs raw P-384 verifies/s on all cores (attest-server)"
cargo bench -p attest-server --bench attest_load --locked
