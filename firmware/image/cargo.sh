#!/usr/bin/env bash
# Runs a cargo command on the bare-metal image the one way it is built everywhere (ci/test.sh,
# ci/bench.sh, qemu/run.sh): its own workspace, the `firmware` profile, the shared target
# dir, and SHA-2 in its compact portable form. The image needs only SHA-384 and hashes a few
# KiB per boot: sha2's default x86 build carries an unrolled SHA-512 and an AVX2 one (18 KiB
# of code); the compact one is a few hundred bytes. A cfg, not a feature, so it is set here
# (cargo's --config) and not in a .cargo/config.toml that would also reach the host crates.
#   firmware/image/cargo.sh build|clippy [args...]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sub=$1
shift
exec cargo "$sub" --manifest-path "$root/firmware/image/Cargo.toml" --target-dir "$root/target" \
  --profile firmware --locked \
  --config 'build.rustflags=["--cfg", "sha2_backend=\"soft\"", "--cfg", "sha2_backend_soft=\"compact\""]' "$@"
