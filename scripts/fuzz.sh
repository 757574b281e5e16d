#!/usr/bin/env bash
# Runs every cargo-fuzz target under fuzz/ briefly: a smoke fuzz for CI, not a campaign.
#
#   bash scripts/fuzz.sh                      # every target, 20 s each
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh     # longer
#   FUZZ_TARGETS="bootstrap money_parse" bash scripts/fuzz.sh
#   FUZZ_SANITIZER=address bash scripts/fuzz.sh   # ASan (slower; nemordp-core has no unsafe)
#
# cargo-fuzz needs nightly-only rustc flags; on the stable toolchain RUSTC_BOOTSTRAP=1 allows
# them. Each target starts from fuzz/seeds/<target> (committed) plus fuzz/corpus/<target>
# (ignored by git; kept between local runs), with fuzz/dicts/<target>.dict if present.
# Crashing inputs land in fuzz/artifacts/<target>/; reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run -s none <target> fuzz/artifacts/<target>/<file>
# (from fuzz/). Exits non-zero if any target crashed, timed out or failed to build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

FUZZ_SECONDS=${FUZZ_SECONDS:-20}
FUZZ_SANITIZER=${FUZZ_SANITIZER:-none}
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/nemordp-target}/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
all_targets=$(cargo fuzz list)
targets=${FUZZ_TARGETS:-$all_targets}
logs="$CARGO_TARGET_DIR/fuzz-logs"
mkdir -p "$logs"

echo "==> building fuzz targets (sanitizer: $FUZZ_SANITIZER)"
build_start=$(date +%s)
cargo fuzz build -s "$FUZZ_SANITIZER"
echo "built in $(($(date +%s) - build_start)) s"

failed=()
summary=()
for t in $targets; do
  echo "==> fuzzing $t for ${FUZZ_SECONDS}s"
  mkdir -p "corpus/$t"
  args=(-max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1)
  if [[ -f "dicts/$t.dict" ]]; then
    args+=(-dict="dicts/$t.dict")
  fi
  start=$(date +%s)
  rc=0
  timeout -k 10 $((FUZZ_SECONDS + 300)) \
    cargo fuzz run -s "$FUZZ_SANITIZER" "$t" "corpus/$t" "seeds/$t" -- "${args[@]}" \
    >"$logs/$t.log" 2>&1 || rc=$?
  took=$(($(date +%s) - start))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
  if [[ $rc -eq 0 ]]; then
    line="fuzz: $t: ok, ${execs:-?} execs in ${took}s (${rate:-?} exec/s)"
  else
    line="fuzz: $t: FAILED (exit $rc), ${execs:-?} execs in ${took}s (${rate:-?} exec/s), log $logs/$t.log"
    failed+=("$t")
    # The panic message and the reproducer's path.
    grep -E -A20 "panicked at|ERROR: libFuzzer|SUMMARY|Test unit written|Reproduce with|^error" \
      "$logs/$t.log" | head -60 || tail -40 "$logs/$t.log"
  fi
  echo "$line"
  summary+=("$line")
done

echo
echo "==> fuzz summary"
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (inputs in $root/fuzz/artifacts/)"
  exit 1
fi
echo "fuzz: all ${#summary[@]} target(s) ok"
