#!/usr/bin/env bash
# Whole-replay benchmark: generate a stream, replay it pinned to one core, print
# events/s and peak RSS. Then the memory benchmark (1,000,000 accounts with full
# windows). Figures go in docs/performance.md.
#
#   benches/replay.sh                 # ~5.5M events (3500 accounts x 150 days)
#   ACCOUNTS=20000 DAYS=120 benches/replay.sh
#   SKIP_MEMORY=1 benches/replay.sh   # replay only
set -euo pipefail
cd "$(dirname "$0")/.."
ACCOUNTS=${ACCOUNTS:-3500}
DAYS=${DAYS:-150}
SEED=${SEED:-1}
CORE=${CORE:-0}
data=bench-data
mkdir -p "$data"
cargo build --release --quiet
bin=target/release/churnwatch
input="$data/events-$ACCOUNTS-$DAYS-$SEED.ndjson"
if [ ! -s "$input" ]; then
  "$bin" gen --accounts "$ACCOUNTS" --days "$DAYS" --seed "$SEED" --output "$input"
fi
lines=$(wc -l < "$input")
bytes=$(stat -c %s "$input")
echo "input: $input, $lines lines, $((bytes / lines)) bytes/line on average"
# Warm the page cache so the figure is about churnwatch, not the disk.
cat "$input" > /dev/null
run() {
  local label=$1; shift
  local t0 t1 rss
  t0=$(date +%s.%N)
  rss=$( { taskset -c "$CORE" /usr/bin/time -f "%M" "$bin" replay -q "$@" --output /dev/null --rejects /dev/null; } 2>&1 | tail -1)
  t1=$(date +%s.%N)
  awk -v l="$lines" -v a="$t0" -v b="$t1" -v r="$rss" -v n="$label" \
    'BEGIN { printf "replay %-6s %.2f s, %.0f events/s on one core, peak RSS %.1f MiB\n", n, b - a, l / (b - a), r / 1024 }'
}
for i in 1 2 3; do run "plain" --input "$input"; done
if [ ! -s "$input.gz" ]; then gzip -1 -k -f "$input"; fi
run "gzip" --input "$input.gz"
if [ -z "${SKIP_MEMORY:-}" ]; then
  cargo bench --quiet --bench memory 2>/dev/null | grep '^memory'
fi
