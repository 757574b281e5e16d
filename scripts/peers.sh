#!/usr/bin/env bash
# Installs the real programs the tests talk to. Idempotent; prints what it did.
# With CI=true a peer that cannot be installed is an error (the tests would fail anyway);
# elsewhere the tests that need it skip with a printed reason.
set -uo pipefail

apt_peers=(
  /usr/sbin/xrdp:xrdp                       # RDP readiness probe against a real server
  /usr/bin/cloud-init:cloud-init            # `cloud-init schema` validates our #cloud-config
  /usr/bin/xfreerdp:freerdp2-x11            # reads our .rdp files and authenticates
  /usr/bin/xvfb-run:xvfb                    # X display for xfreerdp
  /usr/bin/freerdp-shadow-cli:freerdp2-shadow-x11  # local server that really checks an NLA password
  /usr/bin/winpr-hash:winpr-utils           # makes the shadow server's password file
)

missing=()
for entry in "${apt_peers[@]}"; do
  path=${entry%%:*}
  pkg=${entry#*:}
  [ -x "$path" ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "peers: all present"
  exit 0
fi

echo "peers: installing ${missing[*]}"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/tmp/nemordp-peers-apt.log 2>&1; then
    echo "peers: installed"
    exit 0
  fi
  tail -20 /tmp/nemordp-peers-apt.log 2>/dev/null
fi

if [ "${CI:-}" = "true" ]; then
  echo "peers: could not install ${missing[*]}; CI requires them" >&2
  exit 1
fi
echo "peers: could not install ${missing[*]}; tests that need them will skip"
