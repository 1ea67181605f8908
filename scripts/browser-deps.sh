#!/usr/bin/env bash
# Installs what the browser test (test/browser_test.go) needs on a Debian machine: Debian's
# chromium, run headless, and the npm packages of test/browser (@xmpp/client and strophe.js for
# the pages, playwright-core to drive the browser) from the committed package-lock.json. Safe to run
# again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ]; then
    echo "browser-deps: chromium is missing; run as root or install it" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "browser-deps: npm is missing; install Node.js 18 or later with npm" >&2
  exit 1
fi
if [ ! -d test/browser/node_modules/@xmpp/client ] || [ ! -d test/browser/node_modules/strophe.js ] || [ ! -d test/browser/node_modules/playwright-core ]; then
  (cd test/browser && npm ci --no-audit --no-fund --loglevel=error)
fi
