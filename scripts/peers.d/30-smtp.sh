#!/usr/bin/env bash
# SMTP server for the nemordp-notify tests: aiosmtpd (PyPI) in a virtualenv. The tests start it
# themselves on a free 127.0.0.1 port (with STARTTLS and AUTH) from
# nemordp-notify/tests/support/smtp_sink.py, using the interpreter this script prepares:
#   ${NEMORDP_PEERS_DIR:-/var/tmp/nemordp-peers}/aiosmtpd/bin/python
# Idempotent. Exits non-zero only with CI=true when aiosmtpd cannot be provided.
set -uo pipefail

dir=${NEMORDP_PEERS_DIR:-/var/tmp/nemordp-peers}/aiosmtpd
py="$dir/bin/python"

if [ -x "$py" ] && "$py" -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "peers: aiosmtpd ready ($py)"
  exit 0
fi

fail() {
  if [ "${CI:-}" = "true" ]; then
    echo "peers: could not provide aiosmtpd ($1); CI requires it" >&2
    exit 1
  fi
  echo "peers: could not provide aiosmtpd ($1); the SMTP tests will skip"
  exit 0
}

command -v python3 >/dev/null || fail "no python3"
mkdir -p "$(dirname "$dir")"
if ! python3 -m venv "$dir" >/tmp/nemordp-peers-smtp.log 2>&1; then
  # Debian splits venv/ensurepip into python3-venv.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq python3-venv >>/tmp/nemordp-peers-smtp.log 2>&1
    rm -rf "$dir"
    python3 -m venv "$dir" >>/tmp/nemordp-peers-smtp.log 2>&1 || { tail -5 /tmp/nemordp-peers-smtp.log; fail "python3 -m venv failed"; }
  else
    tail -5 /tmp/nemordp-peers-smtp.log
    fail "python3 -m venv failed"
  fi
fi
echo "peers: installing aiosmtpd into $dir"
"$py" -m pip install -q --disable-pip-version-check 'aiosmtpd>=1.4,<2' >>/tmp/nemordp-peers-smtp.log 2>&1 \
  || { tail -5 /tmp/nemordp-peers-smtp.log; fail "pip install aiosmtpd failed"; }
"$py" -c 'import aiosmtpd' >/dev/null 2>&1 || fail "aiosmtpd does not import"
echo "peers: aiosmtpd ready ($py)"
