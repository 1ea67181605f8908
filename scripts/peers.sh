#!/usr/bin/env bash
# Installs the XMPP servers the federation interoperability tests run against (Debian's prosody
# and ejabberd), and stops the system services the packages start, because the tests run their
# own daemons with configurations in temporary directories. Safe to run again: when both are
# present it only checks that the services are stopped, which takes well under a second.
set -euo pipefail

need=()
dpkg -s prosody >/dev/null 2>&1 || need+=(prosody)
dpkg -s ejabberd >/dev/null 2>&1 || need+=(ejabberd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "peers: missing ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d keeps the packages from starting their services during installation.
  cleanup_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    cleanup_policy=1
  fi
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null; }
  if [ "$cleanup_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# The packaged services would hold port 5222/5269 on every address and share the Erlang node
# name the tests use; stop them when they run (the tests never start them).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  for svc in prosody ejabberd; do
    if systemctl is-active --quiet "$svc" 2>/dev/null; then systemctl stop "$svc" || true; fi
  done
else
  for svc in prosody ejabberd; do
    if [ -x "/etc/init.d/$svc" ] && "/etc/init.d/$svc" status >/dev/null 2>&1; then "/etc/init.d/$svc" stop >/dev/null 2>&1 || true; fi
  done
fi
