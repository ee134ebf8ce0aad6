#!/usr/bin/env bash
# Supply-chain checks: cargo deny (deny.toml) on both workspaces, this one and the bare-metal
# image's (firmware/image), offline, against the RustSec advisory database snapshot in
# ../shared/advisory-db (CI cannot reach the database's home, only crates.io).
#
# cargo deny reads an advisory database only from a git checkout that it cloned itself, so
# this script commits the snapshot to a throw-away git repository under target/deny and lets
# `cargo deny fetch db` clone that one: git's url.<base>.insteadOf sends the database's usual
# address to it, and GIT_ALLOW_PROTOCOL=file forbids any other. The checks themselves run
# with --offline.
#
# First it proves the advisory check is not vacuous: with the snapshot plus one made-up
# advisory against a crate in both Cargo.locks, the check must fail on both workspaces naming
# that advisory. Then the real check runs.
#   ci/deny.sh [CHECK...]    CHECK: advisories, bans, licenses, sources (default: all four)
# Logs: target/deny/*.log.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# ITL_ADVISORY_SNAPSHOT: another snapshot folder, e.g. a newer one to try before it replaces
# ../shared/advisory-db.
snapshot="${ITL_ADVISORY_SNAPSHOT:-$root/../shared/advisory-db}"
work="${CARGO_TARGET_DIR:-$root/target}/deny"
config="$root/deny.toml"
manifests=(Cargo.toml firmware/image/Cargo.toml)
# The made-up advisory: a well-formed id no real advisory has, against a crate that both
# workspaces resolve (attest-common's heapless), every version affected.
fake_id=RUSTSEC-2099-0001
fake_crate=heapless
min_advisories=1000 # the 2026-08-20 snapshot has 1205; fewer means a truncated copy

say() { echo "ci/deny.sh: $*"; }
die() {
  echo "ci/deny.sh: $*" >&2
  exit 1
}

cargo deny --version >/dev/null 2>&1 || die "cargo-deny is not installed: run ci/setup.sh"
command -v git >/dev/null || die "git is needed (cargo deny reads the database from a git checkout)"

# --- the snapshot: present, and not empty or truncated --------------------------------------
[ -d "$snapshot/crates" ] || die "no advisory database at $snapshot (a RustSec advisory-db \
snapshot with its crates/ folder, ../shared/advisory-db beside the repository): the \
supply-chain check cannot run without it"
snapshot=$(cd "$snapshot" && pwd)
count=$(find "$snapshot/crates" -type f -name 'RUSTSEC-*.md' | wc -l)
[ "$count" -ge "$min_advisories" ] || die "$snapshot holds only $count advisories \
(at least $min_advisories expected): empty or truncated copy"
newest=$(grep -rhoE '^date = "[0-9]{4}-[0-9]{2}-[0-9]{2}"' "$snapshot/crates" | sort | tail -1 | grep -oE '[0-9-]{10}')
age_days=$((($(date -u +%s) - $(date -u -d "$newest" +%s)) / 86400))
say "$(cargo deny --version); advisory database snapshot: $count advisories, newest dated $newest ($age_days days ago)"
if [ "$age_days" -gt 90 ]; then
  say "note: advisories published after $newest are not checked; replace ../shared/advisory-db with a newer snapshot (README, \"Supply chain\")"
fi

# --- the crates: every package of both Cargo.locks on disk (cargo deny --offline runs cargo
# metadata, which reads every one, for all targets), and cargo's index cache refreshed from
# crates.io so that the yanked-version check (which reads that cache) is current.
for m in "${manifests[@]}"; do
  cargo fetch --locked --quiet --manifest-path "$m"
  if ! cargo update --dry-run --quiet --manifest-path "$m" 2>/dev/null; then
    say "warning: could not refresh cargo's index cache for $m: yanked versions are checked against the cached index"
  fi
done

# --- the database: one throw-away git repository whose work tree is the snapshot itself
# (nothing is copied: the disk is slow with many small files). Commit $real is the snapshot;
# commit $poisoned adds the made-up advisory to it. cargo deny clones each into its own
# db-path.
rm -rf "$work"
mkdir -p "$work"
repo="$work/advisory-db.git"
db_git() {
  GIT_AUTHOR_DATE="${newest}T00:00:00Z" GIT_COMMITTER_DATE="${newest}T00:00:00Z" \
    git --git-dir="$repo" -c core.excludesFile=/dev/null -c user.name=ci-deny \
    -c user.email=ci-deny@localhost "$@"
}
git init --quiet --bare --initial-branch=main "$repo"
db_git --work-tree="$snapshot" add --all
real=$(db_git commit-tree -m "RustSec advisory database snapshot ($newest)" "$(db_git write-tree)")

grep -rqF "\"$fake_id\"" "$snapshot/crates" && die "$fake_id is a real advisory now: pick another made-up id"
fake_blob=$(
  db_git hash-object -w --stdin <<EOF
\`\`\`toml
[advisory]
id = "$fake_id"
package = "$fake_crate"
date = "$(date -u +%F)"
url = "https://example.invalid/ci-deny-non-vacuity"
categories = ["memory-corruption"]
keywords = ["made-up", "ci"]

[versions]
patched = []
\`\`\`

# Made up by ci/deny.sh: every version of $fake_crate is affected

Not a real advisory. ci/deny.sh adds it to a throw-away repository of the snapshot to prove
that \`cargo deny check advisories\` reads the database and fails on a crate in Cargo.lock.
EOF
)
db_git update-index --add --cacheinfo "100644,$fake_blob,crates/$fake_crate/$fake_id.md"
poisoned=$(db_git commit-tree -p "$real" -m "made-up advisory $fake_id" "$(db_git write-tree)")

# clone_db NAME COMMIT ADVISORIES: has cargo deny clone COMMIT (as branch main, the one it
# clones) into $work/NAME.dbs, the db-path deny.toml takes from ITL_ADVISORY_DBS, and checks
# that the clone holds ADVISORIES advisories.
clone_db() {
  local name=$1 commit=$2 want=$3 dbs="$work/$1.dbs"
  db_git update-ref refs/heads/main "$commit"
  GIT_ALLOW_PROTOCOL=file GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0="url.file://$repo.insteadOf" \
    GIT_CONFIG_VALUE_0=https://github.com/RustSec/advisory-db \
    ITL_ADVISORY_DBS="$dbs" cargo deny --config "$config" fetch db
  local clones=("$dbs"/*/crates)
  if [ ${#clones[@]} -ne 1 ] || [ ! -d "${clones[0]}" ]; then
    die "cargo deny did not clone the database into $dbs (is deny.toml's db-path \${ITL_ADVISORY_DBS...}?)"
  fi
  local got
  got=$(find "${clones[0]}" -type f -name 'RUSTSEC-*.md' | wc -l)
  [ "$got" -eq "$want" ] || die "the $name database cargo deny cloned holds $got advisories, not $want"
}

# label MANIFEST: a name for log files.
label() { if [ "$1" = Cargo.toml ]; then echo host; else dirname "$1" | tr / -; fi; }

# deny NAME MANIFEST ARGS...: cargo deny against database NAME, offline.
deny() {
  local name=$1 manifest=$2
  shift 2
  local allow=()
  # One deny.toml serves both workspaces: its rsa exception and some allowed licenses
  # concern only the host workspace, which warns when they go unused.
  [ "$manifest" = Cargo.toml ] || allow=(-A advisory-not-detected -A license-not-encountered)
  ITL_ADVISORY_DBS="$work/$name.dbs" cargo deny --color never --offline --locked \
    --manifest-path "$manifest" --config "$config" check --show-stats "${allow[@]}" "$@"
}

# --- non-vacuity: a made-up advisory must fail the check -----------------------------------
clone_db poisoned "$poisoned" $((count + 1))
for m in "${manifests[@]}"; do
  log="$work/poisoned-$(label "$m").log"
  if deny poisoned "$m" advisories >"$log" 2>&1; then
    cat "$log" >&2
    die "non-vacuity: with the made-up advisory $fake_id against $fake_crate, cargo deny passed on $m"
  fi
  grep -q "ID: $fake_id" "$log" || {
    cat "$log" >&2
    die "non-vacuity: cargo deny failed on $m, but not naming the made-up advisory $fake_id"
  }
  say "non-vacuity: $m fails with the made-up advisory $fake_id against $fake_crate, as it must"
done

# --- the real check ------------------------------------------------------------------------
clone_db snapshot "$real" "$count"
failed=()
for m in "${manifests[@]}"; do
  log="$work/check-$(label "$m").log"
  say "cargo deny check ${*:-all} on $m (full output: $log)"
  deny snapshot "$m" "$@" >"$log" 2>&1 || failed+=("$m")
  # Errors in full; warnings (duplicate versions) by headline only: their inclusion graphs,
  # thousands of lines, are in the log. Then the stats.
  awk '/^ *(advisories|bans|licenses|sources) (ok|FAILED)/ { skip = 0 }
       /^(error|warning|note|help)(\[|:)/ { skip = /^warning\[/; print; next }
       !skip' "$log"
done
[ ${#failed[@]} -eq 0 ] || die "cargo deny failed on ${failed[*]} (exceptions belong in deny.toml, each with its reason)"
say "supply-chain checks passed"
