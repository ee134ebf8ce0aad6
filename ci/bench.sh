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

echo
echo "==> server RSS with 100,000 machines registered (target 32 MB)"
cargo bench -p attest-server --bench registry_rss --locked

echo
echo "==> firmware image: bytes, static RAM, boot to evidence in QEMU (targets 128 KiB, 64 KiB, 1 s)"
firmware/image/cargo.sh build -q
cargo build -q -p attest-host-agent --bin attest-agent --locked
image=target/firmware/attest-firmware-image
section() { readelf -SW "$image" | python3 -c '
import sys
for line in sys.stdin:
    f = line.replace("[ ", "[").split()
    if len(f) > 5 and f[1] == sys.argv[1]:
        print(int(f[5], 16))' "$1"; }
text=$(section .text) rodata=$(section .rodata) data=$(section .data) bss=$(section .bss)
echo "image bytes (loaded: .text $text + .rodata $rodata + .data $data) = $((text + rodata + data)); ELF file $(stat -c %s "$image")"
echo "static RAM (.data $data + .bss $bss, which holds 8 KiB of page tables, the 8 KiB agent and the 44 KiB stack) = $((data + bss))"
for i in 1 2 3; do
  out=$(./qemu/run.sh --no-build --mode receipt --receipt-out "$(mktemp -d)/receipt.json")
  echo "run $i: $(echo "$out" | sed -n 's/^itl-firmware: \(evidence sent .*\)$/\1/p');" \
    "$(echo "$out" | sed -n 's/^relay: first_frame_ms=\(.*\)$/relay saw it \1 ms after the line opened/p');" \
    "$(echo "$out" | sed -n 's/.*\(stack used .*\)$/\1/p')"
done
