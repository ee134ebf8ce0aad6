#!/usr/bin/env bash
# The soak (issue 21), not part of ci/test.sh: the real server under mixed load killed with
# SIGKILL KILL_CYCLES times (every acknowledged change checked after each restart), a tmpfs
# filled and freed DISK_CYCLES times (needs root to mount it), and slow clients filling the
# connection cap while requests go on. Prints a table per part (README, "Faults").
#   ci/soak.sh [KILL_CYCLES [DISK_CYCLES]]     (defaults 10 and 3)
set -euo pipefail
cd "$(dirname "$0")/.."
./ci/setup.sh >/dev/null
cargo bench -q -p attest-server --bench soak --locked -- "${1:-10}" "${2:-3}"
