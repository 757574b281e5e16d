// Compiles TestToken.sol with solc-js and prints the creation bytecode (hex, no 0x) to stdout.
// Usage: node compile.js /path/to/node_modules/solc
const fs = require('fs');
const path = require('path');
const solc = require(process.argv[2] || 'solc');
const source = fs.readFileSync(path.join(__dirname, 'TestToken.sol'), 'utf8');
const input = {
  language: 'Solidity',
  sources: { 'TestToken.sol': { content: source } },
  settings: {
    optimizer: { enabled: false },
    evmVersion: 'paris',
    metadata: { bytecodeHash: 'none' },
    outputSelection: { '*': { '*': ['evm.bytecode.object'] } },
  },
};
const out = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (out.errors || []).filter((e) => e.severity === 'error');
if (errors.length) {
  console.error(errors.map((e) => e.formattedMessage).join('\n'));
  process.exit(1);
}
process.stdout.write(out.contracts['TestToken.sol'].TestToken.evm.bytecode.object + '\n');
