#!/usr/bin/env bash
# Regenerates nemordp-payments/tests/evm/TestToken.bin from TestToken.sol with solc-js
# (installed by scripts/peers.d/20-anvil.sh). The `token_bytecode_matches_source` test checks
# that the checked-in file equals this output.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
solc=${NEMORDP_SOLCJS_DIR:-/var/tmp/nemordp-peers/node_modules/solc}
node "$here/tests/evm/compile.js" "$solc" >"$here/tests/evm/TestToken.bin"
echo "wrote $here/tests/evm/TestToken.bin"
