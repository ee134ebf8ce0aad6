#!/usr/bin/env bash
# Runs every check and test. Installs what the tests need first (ci/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "setup"
./ci/setup.sh

step "format"
cargo fmt --all --check
cargo fmt --manifest-path firmware/image/Cargo.toml --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The bare-metal image is its own workspace (no std may be unified into it).
firmware/image/cargo.sh clippy -- -D warnings

step "supply chain (cargo deny: advisories from ../shared/advisory-db, bans, licenses, sources)"
./ci/deny.sh

step "common without std (no allocator) and with defmt"
cargo build -p attest-common --no-default-features --locked
cargo check -p attest-common --no-default-features --features defmt --locked
cargo build -p attest-firmware --locked
cargo check -p attest-firmware --features defmt --locked

step "bare-metal image (QEMU tests boot it)"
firmware/image/cargo.sh build

step "tests"
cargo test --workspace --locked

echo
echo "ci/test.sh: all checks passed"
