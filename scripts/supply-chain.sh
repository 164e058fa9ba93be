#!/usr/bin/env bash
# Known-vulnerable dependencies, offline: checks Cargo.lock against the RustSec advisory
# database snapshot in ../shared/advisory-db (next to the repository; its SNAPSHOT file says
# which commit) with cargo-audit, then runs cargo-deny (advisories from the same snapshot,
# plus the bans, licences and sources deny.toml declares). Installs either tool from
# crates.io when missing. Exit non-zero on any finding. See README.md, Tests.
set -euo pipefail
cd "$(dirname "$0")/.."

snapshot=../shared/advisory-db
if [ ! -f "$snapshot/SNAPSHOT" ] || [ ! -d "$snapshot/crates" ]; then
  echo "no RustSec snapshot at $snapshot (see README.md, Tests: refreshing the advisory snapshot)" >&2
  exit 1
fi
head -n 1 "$snapshot/SNAPSHOT"

# Pinned: the layout built for cargo-deny below is the one this version reads.
cargo audit --version >/dev/null 2>&1 || cargo install --locked cargo-audit@0.22.2
cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.' ||
  cargo install --locked cargo-deny@0.20.2

# --stale: a snapshot is old by nature; cargo-deny below enforces the age limit.
cargo audit --db "$snapshot" --no-fetch --stale

# cargo-deny does not read a plain directory: it expects <db-path>/<name>-<hash of the
# database URL>/ as a git checkout, dated by .git/FETCH_HEAD's mtime, and takes a lock
# file in <db-path>. The snapshot is read-only, so that shape is built under target/
# (deny.toml's db-path) around a link to the snapshot's advisories, dated by the
# snapshot's own date so `maximum-db-staleness` measures the snapshot, not this run.
# The directory name is the one cargo-deny 0.20 derives from the default RustSec URL.
deny_db=target/advisory-dbs/advisory-db-3157b0e258782691
snapshot_date=$(sed -n 's/.*(\([0-9]\{4\}-[0-9]\{2\}-[0-9]\{2\}\)).*/\1/p' "$snapshot/SNAPSHOT" | head -n 1)
if [ -z "$snapshot_date" ]; then
  echo "$snapshot/SNAPSHOT names no date (YYYY-MM-DD)" >&2
  exit 1
fi
rm -rf "$deny_db"
mkdir -p "$deny_db/.git"
ln -s "$(cd "$snapshot" && pwd)/crates" "$deny_db/crates"
touch -d "$snapshot_date" "$deny_db/.git/FETCH_HEAD"

# --offline keeps cargo-deny off the network (no database fetch); the crate graph it
# reads through `cargo metadata` needs every package of Cargo.lock, fetched first.
cargo fetch --locked
cargo deny --offline check
