#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 60) from seed
# corpora made of the real recordings, configurations and hostile cases
# (fuzz/make_seeds.py), as many at once as there are cores; prints
# executions per target and in total. Installs the nightly toolchain and
# cargo-fuzz when missing. A crash fails the run and leaves its input in
# fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(headers flow streams json_probe config)

if ! rustup toolchain list | grep -q '^nightly'; then
  echo ">> rustup toolchain install nightly"
  rustup toolchain install nightly --profile minimal
fi
if ! command -v cargo-fuzz >/dev/null; then
  echo ">> cargo install cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
python3 fuzz/make_seeds.py
cargo +nightly fuzz build >/dev/null

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
run_one() {
  local t=$1
  mkdir -p "fuzz/corpus/$t"
  # -rss_limit_mb catches unbounded growth, -timeout a hang.
  if cargo +nightly fuzz run "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 >"$logs/$t.log" 2>&1; then
    echo ok >"$logs/$t.status"
  else
    echo failed >"$logs/$t.status"
  fi
}
jobs_max=$(nproc)
for t in "${TARGETS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do sleep 0.5; done
  run_one "$t" &
done
wait

total=0
failed=0
for t in "${TARGETS[@]}"; do
  if [ "$(cat "$logs/$t.status" 2>/dev/null)" != ok ]; then
    tail -40 "$logs/$t.log" || true
    echo "fuzz: target $t FAILED (input in fuzz/artifacts/$t/)" >&2
    failed=1
    continue
  fi
  n=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$logs/$t.log" | grep -o '[0-9]*$' | tail -1)
  n=${n:-0}
  total=$((total + n))
  printf 'fuzz: %-11s %10d executions in %ss, no crash\n' "$t" "$n" "$SECONDS_EACH"
done
printf 'fuzz: %-11s %10d executions\n' total "$total"
exit "$failed"
