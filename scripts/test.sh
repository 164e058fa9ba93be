#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# (redis-server for the shared-limit tests; Debian's chromium for the browser test;
# the pinned official JS SDKs and playwright-core for the SDK and browser tests;
# promtool, from the prometheus package, for the alert rule tests), then
# `cargo test`. Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
# The browser test drives this binary (tests/it/browser/); no browser is downloaded.
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  # Only promtool is wanted: the servers the package (and its recommends) start must not
  # keep running or listening.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl disable --now prometheus prometheus-node-exporter >/dev/null 2>&1 || true
  fi
fi

# npm ci installs exactly the lockfile (every package pinned with its integrity hash);
# again when the lockfile changed since the last install (npm ci writes
# node_modules/.package-lock.json).
if [ -f tests/sdk/package-lock.json ] &&
  { [ ! -f tests/sdk/node_modules/.package-lock.json ] ||
    [ tests/sdk/package-lock.json -nt tests/sdk/node_modules/.package-lock.json ]; }; then
  (cd tests/sdk && npm ci --no-audit --no-fund --loglevel=error)
fi

cargo test --all-targets "$@"
