#!/usr/bin/env bash
# Installs what `npm run test:browser` needs, idempotently:
#   - Debian's chromium and chromium-driver, when /usr/bin/chromium (or $PUSHGATE_CHROMIUM) is missing
#     (playwright-core drives it; Playwright's own browser download is not used);
#   - the npm devDependencies of clients/js (playwright-core, typescript) with `npm ci`, when
#     node_modules does not already match package-lock.json.
# The gateway binary is built separately: `cargo build --release -p pushgate-gateway` at the repo root.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

chromium="${PUSHGATE_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$chromium" ]; then
  echo "setup: chromium present ($chromium)"
else
  echo "setup: installing Debian's chromium and chromium-driver"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root (or sudo) for apt-get" >&2; exit 1; }
    sudo="sudo"
  fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver
  [ -x "$chromium" ] || { echo "setup: $chromium still missing after apt-get" >&2; exit 1; }
fi

# `npm ls` fails when a dependency is missing or at another version than the lockfile's.
if [ -d node_modules ] && npm ls --depth=0 >/dev/null 2>&1; then
  echo "setup: node_modules up to date"
else
  echo "setup: npm ci"
  npm ci --no-audit --no-fund
fi

echo "setup: $("$chromium" --version 2>/dev/null), playwright-core $(node -p "require('./node_modules/playwright-core/package.json').version")"
