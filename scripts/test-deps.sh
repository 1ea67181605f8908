#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine (run as root), then prints the
# environment the tests read. Safe to run again: it installs only what is missing.
set -euo pipefail

need=()
dpkg -s python3-slixmpp >/dev/null 2>&1 || need+=(python3-slixmpp)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; }
fi
