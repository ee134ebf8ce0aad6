#!/usr/bin/env bash
# Installs what the tests need, only what is missing; safe to run again.
# Debian packages: swtpm and swtpm-tools (software TPM with EK certificates), tpm2-tools
# (cross-checks), libtss2-dev and pkg-config (tss-esapi), openssl (cross-checks),
# qemu-system-x86 (boots the bare-metal firmware image), nodejs and npm (the OpenID provider
# the operator CLI's tests log in at: npm's oidc-provider, pinned in server/tests/oidc), curl
# and jq (the seed's operations guide's lines are run verbatim: tests/seed_lines.rs), systemd
# (systemd-analyze verifies the service units: tests/packaging.rs).
set -euo pipefail

packages=(swtpm swtpm-tools tpm2-tools libtss2-dev pkg-config openssl qemu-system-x86 curl jq systemd)
# Node.js may come from elsewhere (nodesource, nvm); install Debian's only when none is there.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "ci/setup.sh: installing ${missing[*]}"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "ci/setup.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "ci/setup.sh: system packages present (${packages[*]})"
fi

# The pinned toolchain (rust-toolchain.toml) must already be installed: rustup must never
# download one here.
want=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' "$(dirname "$0")/../rust-toolchain.toml")
if ! rustup toolchain list 2>/dev/null | grep -q "^$want"; then
  echo "ci/setup.sh: Rust toolchain $want (rust-toolchain.toml) is not installed" >&2
  exit 1
fi
for component in clippy rustfmt; do
  rustup component list --toolchain "$want" --installed 2>/dev/null | grep -q "^$component" || {
    echo "ci/setup.sh: rustup component $component is missing for $want" >&2
    exit 1
  }
done

# cargo-deny for ci/deny.sh (supply-chain checks), pinned: built from crates.io with the pinned
# toolchain. 0.20.2 is the newest release and needs rustc 1.88.
deny_version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" = "cargo-deny $deny_version" ]; then
  echo "ci/setup.sh: cargo-deny $deny_version present"
else
  echo "ci/setup.sh: cargo install cargo-deny $deny_version (builds for a few minutes)"
  (cd "$(dirname "$0")/.." && cargo install cargo-deny --locked --version "$deny_version" --quiet)
fi

# The OpenID provider for server/tests/cli.rs, exactly as package-lock.json pins it.
oidc="$(dirname "$0")/../server/tests/oidc"
if [ ! -f "$oidc/node_modules/oidc-provider/package.json" ] || [ "$oidc/package-lock.json" -nt "$oidc/node_modules/.package-lock.json" ]; then
  echo "ci/setup.sh: npm ci in server/tests/oidc"
  (cd "$oidc" && npm ci --no-audit --no-fund --loglevel=error)
else
  echo "ci/setup.sh: oidc-provider present in server/tests/oidc/node_modules"
fi
