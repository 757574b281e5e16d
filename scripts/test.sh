#!/usr/bin/env bash
# The one test command (README "Run the tests"); .ci/run calls exactly this.
#
# It installs and starts whatever the tests need, then runs: rustfmt check, clippy with
# warnings denied on every feature set, every test (unit, integration, doc), and a build of
# the examples and benches. With CI=true a missing peer fails the tests instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export CARGO_INCREMENTAL=0
# Builds are kept outside the clone so CI re-runs are fast.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/nemordp-target}

step() { printf '\n==> %s\n' "$*"; }

step "peers"
bash scripts/peers.sh

step "rustfmt"
cargo fmt --all -- --check
# `include!`d files are not modules, so `cargo fmt` never reaches them.
rustfmt --check --edition 2024 nemordp-store/src/sql_common.rs

step "clippy (all features)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "feature combinations"
# Every backend feature alone and none at all must build (no feature may rely on another).
for spec in "nemordp-providers:vultr contabo" "nemordp-payments:paystack btc eth usdt rates" "nemordp-store:sqlite postgres" "nemordp-notify:smtp webhook"; do
  crate=${spec%%:*}
  cargo check -q -p "$crate" --no-default-features --locked
  for feature in ${spec#*:}; do
    cargo check -q -p "$crate" --no-default-features --features "$feature" --locked
  done
done
cargo check -q -p nemordp-core --no-default-features --locked

step "tests"
test_log=$(mktemp)
set +e
cargo test --workspace --all-features --locked --no-fail-fast 2>&1 | tee "$test_log"
test_status=${PIPESTATUS[0]}
set -e
test_totals=$(awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "%d passed, %d failed, %d skipped", p, f, i }' "$test_log")
rm -f "$test_log"
[ "$test_status" -eq 0 ] || { echo "tests: $test_totals"; exit "$test_status"; }

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked -q

step "fuzz (brief smoke run of every target)"
FUZZ_SECONDS=${FUZZ_SECONDS:-15} bash scripts/fuzz.sh

step "done"
echo "tests: $test_totals"
