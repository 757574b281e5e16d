#!/usr/bin/env bash
# anvil (a real Ethereum node) and solc-js for the `eth`/`usdt` watcher tests in
# nemordp-payments. Installed from npm into a cache outside the repository; the tests find
# anvil through NEMORDP_ANVIL (or this cache path) and solcjs through NEMORDP_SOLCJS.
set -uo pipefail

cache=${NEMORDP_PEERS_CACHE:-/var/tmp/nemordp-peers}
anvil_version=1.7.1
solc_version=0.8.37
anvil_bin="$cache/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
solcjs_bin="$cache/node_modules/solc/solc.js"

have() {
  [ -x "$anvil_bin" ] && "$anvil_bin" --version 2>/dev/null | grep -q "$anvil_version" \
    && [ -f "$solcjs_bin" ]
}

if have; then
  echo "peers: anvil $anvil_version and solc $solc_version ready in $cache"
  exit 0
fi

echo "peers: installing anvil $anvil_version and solc $solc_version into $cache"
if command -v npm >/dev/null && mkdir -p "$cache"; then
  (cd "$cache" && npm install --no-audit --no-fund --silent \
    "@foundry-rs/anvil-linux-amd64@$anvil_version" "solc@$solc_version" \
    >/tmp/nemordp-peers-anvil.log 2>&1) || tail -20 /tmp/nemordp-peers-anvil.log 2>/dev/null
  chmod +x "$anvil_bin" 2>/dev/null || true
fi

if have; then
  echo "peers: anvil and solc ready"
  exit 0
fi
if [ "${CI:-}" = "true" ]; then
  echo "peers: could not install anvil/solc; CI requires them" >&2
  exit 1
fi
echo "peers: could not install anvil/solc; the eth/usdt node tests will skip"
exit 0
