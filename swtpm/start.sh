#!/usr/bin/env bash
# Runs swtpm in the foreground on 127.0.0.1, TPM already started (startup-clear), so that
# TCTI "swtpm:host=127.0.0.1,port=PORT" (or tpm2-tools with TPM2TOOLS_TCTI) can use it.
#
# usage: swtpm/start.sh --state DIR --port PORT [--ctrl-port CTRL]
#   --port PORT       TPM command port; the swtpm TCTI expects the control port at PORT+1
#   --ctrl-port CTRL  control channel port (default PORT+1)
# Stop it with SIGTERM (or Ctrl-C).
set -euo pipefail

state= port= ctrl=
while [ $# -gt 0 ]; do
  case "$1" in
    --state) state=$2; shift 2 ;;
    --port) port=$2; shift 2 ;;
    --ctrl-port) ctrl=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "start.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$state" ] && [ -n "$port" ] || { echo "start.sh: --state DIR and --port PORT are required" >&2; exit 2; }
[ -e "$state/tpm2-00.permall" ] || { echo "start.sh: no TPM state in $state; run swtpm/provision.sh --state $state first" >&2; exit 4; }
command -v swtpm >/dev/null || { echo "start.sh: 'swtpm' not found; install the Debian package swtpm (./ci/setup.sh does)" >&2; exit 3; }
ctrl=${ctrl:-$((port + 1))}

exec swtpm socket --tpm2 --tpmstate "dir=$state" \
  --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
  --ctrl "type=tcp,port=$ctrl,bindaddr=127.0.0.1" \
  --flags not-need-init,startup-clear
