#!/usr/bin/env bash
# Provisions a software TPM state like a real TPM leaves the factory: an RSA-2048 EK with its
# certificate at NV 0x01c00002 and an ECC P-384 EK with its certificate at NV 0x01c00016,
# signed by a project-local test manufacturer CA; PCR banks sha256 and sha384.
#
# usage: swtpm/provision.sh --state DIR [--ca DIR]
#   --state DIR  TPM state directory to create (must not hold a TPM state yet)
#   --ca DIR     manufacturer CA directory (created on first use, reused after; default
#                DIR/../manufacturer-ca). Holds swtpm-localca-rootca-cert.pem (root) and
#                issuercert.pem (intermediate that signs the EK certificates).
# Nothing is written outside these two directories (never /var/lib/swtpm-localca).
set -euo pipefail

state= ca=
while [ $# -gt 0 ]; do
  case "$1" in
    --state) state=$2; shift 2 ;;
    --ca) ca=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "provision.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$state" ] || { echo "provision.sh: --state DIR is required" >&2; exit 2; }
for tool in swtpm swtpm_setup swtpm_localca; do
  command -v "$tool" >/dev/null || {
    echo "provision.sh: '$tool' not found; install the Debian packages swtpm and swtpm-tools (./ci/setup.sh does)" >&2
    exit 3
  }
done

mkdir -p "$state"
state=$(cd "$state" && pwd)
ca=${ca:-$(dirname "$state")/manufacturer-ca}
mkdir -p "$ca"
ca=$(cd "$ca" && pwd)
if [ -e "$state/tpm2-00.permall" ]; then
  echo "provision.sh: $state already holds a TPM state" >&2
  exit 4
fi

cat > "$ca/swtpm-localca.conf" <<CONF
statedir = $ca
signingkey = $ca/signkey.pem
issuercert = $ca/issuercert.pem
certserial = $ca/certserial
CONF
cat > "$ca/swtpm-localca.options" <<CONF
--platform-manufacturer ITL-Test
--platform-version 2.1
--platform-model QEMU
CONF
cat > "$ca/swtpm_setup.conf" <<CONF
create_certs_tool = $(command -v swtpm_localca)
create_certs_tool_config = $ca/swtpm-localca.conf
create_certs_tool_options = $ca/swtpm-localca.options
active_pcr_banks = sha256,sha384
CONF

# swtpm_setup also looks for per-user config under XDG_CONFIG_HOME; keep it inside $ca.
XDG_CONFIG_HOME=$ca swtpm_setup --tpm2 --tpmstate "$state" --config "$ca/swtpm_setup.conf" \
  --create-ek-cert --create-platform-cert --ecc --pcr-banks sha256,sha384 \
  --logfile "$state/provision.log" >/dev/null 2>&1 || {
  echo "provision.sh: swtpm_setup failed; its log follows" >&2
  cat "$state/provision.log" >&2
  exit 1
}
echo "provisioned TPM state in $state (manufacturer CA in $ca)"
