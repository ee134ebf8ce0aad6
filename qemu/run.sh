#!/usr/bin/env bash
# Boots the bare-metal firmware image in QEMU (q35, TIS TPM backed by swtpm) with its link
# (COM2) connected to `attest-agent relay`, and exits with the firmware's exit code.
#
# usage: qemu/run.sh --mode register|attest|receipt [options]
#   --server URL         the attestation server (register and attest modes)
#   --tpm-state DIR      TPM state to use; provisioned there when DIR holds none
#                        (default: a fresh provisioned state in a temporary directory)
#   --receipt-out FILE   receipt mode: where the relay writes the receipt (default receipt.json)
#   --serial S, --uuid U SMBIOS system serial number and UUID (defaults: ITL-QEMU-0001, random)
#   --console FILE       also keep the firmware's console (COM1) in FILE
#   --no-build           use the image and relay already built
#
# The relay (attest-agent relay) refuses a plain http:// URL unless it is allowed: export
# ATTEST_AGENT_ALLOW_PLAIN_HTTP=true for a test server without TLS (the relay inherits it);
# for an https server with a private CA, ATTEST_AGENT_CA_FILE.
#
# The server's response key is fetched from URL/api/v1/server-key and pinned on the
# image's command line. Exit codes (the firmware's): 0 done, 1 failed, 2 pending approval,
# 3 locked, 4 wiped, 5 refused by the server; 64+ for problems of this script.
# Needs: qemu-system-x86_64 (qemu-system-x86), swtpm and swtpm_setup (swtpm, swtpm-tools),
# python3; ./ci/setup.sh installs them.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mode= server= state= receipt_out=receipt.json serial=ITL-QEMU-0001 uuid= console= build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --mode) mode=$2; shift 2 ;;
    --server) server=${2%/}; shift 2 ;;
    --tpm-state) state=$2; shift 2 ;;
    --receipt-out) receipt_out=$2; shift 2 ;;
    --serial) serial=$2; shift 2 ;;
    --uuid) uuid=$2; shift 2 ;;
    --console) console=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "qemu/run.sh: unknown argument '$1' (see --help)" >&2; exit 64 ;;
  esac
done
case "$mode" in
  register|attest) [ -n "$server" ] || { echo "qemu/run.sh: --mode $mode needs --server URL" >&2; exit 64; } ;;
  receipt) ;;
  *) echo "qemu/run.sh: --mode must be register, attest or receipt" >&2; exit 64 ;;
esac
for tool in qemu-system-x86_64:qemu-system-x86 swtpm:swtpm swtpm_setup:swtpm-tools python3:python3; do
  command -v "${tool%%:*}" >/dev/null || {
    echo "qemu/run.sh: '${tool%%:*}' not found; install the Debian package ${tool##*:} (./ci/setup.sh does)" >&2
    exit 65
  }
done

if [ "$build" = 1 ]; then
  (cd "$root" && firmware/image/cargo.sh build -q && cargo build -q -p attest-host-agent --bin attest-agent) >&2
fi
image=$root/target/firmware/attest-firmware-image
agent=${ITL_AGENT_BIN:-$root/target/debug/attest-agent}
[ -x "$image" ] && [ -x "$agent" ] || { echo "qemu/run.sh: image or attest-agent not built (drop --no-build)" >&2; exit 66; }

work=$(mktemp -d "${TMPDIR:-/tmp}/itl-qemu-XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "$state" ]; then
  state=$work/tpm
fi
if [ ! -e "$state/tpm2-00.permall" ]; then
  "$root/swtpm/provision.sh" --state "$state" --ca "$work/manufacturer-ca" >/dev/null
fi

cmdline="mode=$mode"
if [ "$mode" != receipt ]; then
  key=$(python3 - "$server/api/v1/server-key" <<'PY'
import base64, json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    print(base64.b64decode(json.load(r)["public_key_der"]).hex())
PY
) || { echo "qemu/run.sh: cannot fetch the server key from $server/api/v1/server-key" >&2; exit 67; }
  cmdline="$cmdline key=$key"
fi
[ -n "$uuid" ] || uuid=$(python3 -c 'import uuid; print(uuid.uuid4())')
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

swtpm socket --tpm2 --tpmstate "dir=$state" --ctrl "type=unixio,path=$work/swtpm.sock" \
  --log "file=$work/swtpm.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/swtpm.sock" ] && break; sleep 0.05; done

timeout 120 qemu-system-x86_64 -M q35 -cpu qemu64,+pdpe1gb -m 64 -display none -no-reboot -nodefaults \
  -kernel "$image" -append "$cmdline" \
  -chardev "socket,id=chrtpm,path=$work/swtpm.sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
  -device tpm-tis,tpmdev=tpm0 \
  -serial "file:$work/console" -serial "tcp:127.0.0.1:$port,server=on,wait=on" \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -smbios "type=1,serial=$serial,uuid=$uuid,product=ITL QEMU q35" \
  >"$work/qemu.log" 2>&1 &
qemu=$!
pids+=($qemu)

relay_args=(relay --serial "tcp:127.0.0.1:$port")
[ -n "$server" ] && relay_args+=(--server "$server")
[ "$mode" = receipt ] && relay_args+=(--receipt-out "$receipt_out")
relay_status=0
env -u ITL_SERVER "$agent" "${relay_args[@]}" >"$work/relay.out" 2>"$work/relay.err" || relay_status=$?

status=0
wait "$qemu" || status=$?
cat "$work/console"
[ -n "$console" ] && cp "$work/console" "$console"
sed 's/^/relay: /' "$work/relay.out"
[ "$relay_status" = 0 ] || { echo "qemu/run.sh: the relay failed:" >&2; cat "$work/relay.err" >&2; }
# isa-debug-exit: QEMU's status is (code << 1) | 1. Anything even is a crash or a timeout.
if [ $((status % 2)) = 1 ]; then
  exit $(((status - 1) / 2))
fi
echo "qemu/run.sh: the machine did not exit through isa-debug-exit (QEMU status $status)" >&2
grep -v "waiting for connection" "$work/qemu.log" >&2 || true
exit 68
