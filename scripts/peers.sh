#!/usr/bin/env bash
# Installs the real programs the tests talk to. Idempotent; prints what it did.
# With CI=true a peer that cannot be installed is an error (the tests would fail anyway);
# elsewhere the tests that need it skip with a printed reason.
set -uo pipefail

# PostgreSQL for the `postgres` store tests: a local server on 127.0.0.1:5432 with trust auth
# for user `postgres` and a database `test` (or NEMORDP_TEST_POSTGRES_URL pointing elsewhere).
status=0
postgres_peer() {
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "peers: postgresql ready"
    return 0
  fi
  local fresh=0
  if ! ls -d /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "peers: installing postgresql"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq && apt-get install -y -qq postgresql >/tmp/nemordp-peers-pg.log 2>&1 \
        || tail -20 /tmp/nemordp-peers-pg.log 2>/dev/null
      fresh=1
    fi
  fi
  local version
  version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
  if [ -n "$version" ] && command -v pg_ctlcluster >/dev/null; then
    if [ "$fresh" = 1 ]; then
      # Test-only server: trust local connections, like the tests expect.
      printf 'local all all trust\nhost all all 127.0.0.1/32 trust\n' \
        >"/etc/postgresql/$version/main/pg_hba.conf"
    fi
    echo "peers: starting postgresql $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>&1 | tail -5
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      pg_isready -q -h 127.0.0.1 -p 5432 && break
      sleep 1
    done
  fi
  if command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; then
    psql -h 127.0.0.1 -U postgres -d test -Atc 'select 1' >/dev/null 2>&1 \
      || psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE test' >/dev/null 2>&1 \
      || true
    echo "peers: postgresql ready"
    return 0
  fi
  if [ "${CI:-}" = "true" ]; then
    echo "peers: could not start postgresql; CI requires it" >&2
    return 1
  fi
  echo "peers: could not start postgresql; the postgres store tests will skip"
  return 0
}
postgres_peer || status=1

apt_peers=(
  /usr/sbin/xrdp:xrdp                       # RDP readiness probe against a real server
  /usr/bin/cloud-init:cloud-init            # `cloud-init schema` validates our #cloud-config
  /usr/bin/xfreerdp:freerdp2-x11            # reads our .rdp files and authenticates
  /usr/bin/xvfb-run:xvfb                    # X display for xfreerdp
  /usr/bin/freerdp-shadow-cli:freerdp2-shadow-x11  # local server that really checks an NLA password
  /usr/bin/winpr-hash:winpr-utils           # makes the shadow server's password file
)

apt_peers_install() {
  local missing=() entry path pkg
  for entry in "${apt_peers[@]}"; do
    path=${entry%%:*}
    pkg=${entry#*:}
    [ -x "$path" ] || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "peers: apt peers all present"
    return 0
  fi
  echo "peers: installing ${missing[*]}"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/tmp/nemordp-peers-apt.log 2>&1; then
      echo "peers: installed"
      return 0
    fi
    tail -20 /tmp/nemordp-peers-apt.log 2>/dev/null
  fi
  if [ "${CI:-}" = "true" ]; then
    echo "peers: could not install ${missing[*]}; CI requires them" >&2
    return 1
  fi
  echo "peers: could not install ${missing[*]}; tests that need them will skip"
  return 0
}
apt_peers_install || status=1

# Further peers (anvil, an SMTP sink, ...) each have a script of their own here, written to the
# same rules: idempotent, and failing only when CI=true and the peer cannot be made available.
for peer_script in scripts/peers.d/*.sh; do
  [ -e "$peer_script" ] || continue
  bash "$peer_script" || status=1
done
exit "$status"
