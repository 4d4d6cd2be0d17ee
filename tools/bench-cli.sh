#!/usr/bin/env bash
# End-to-end CLI benchmark with same-run baselines:
#   strata produce of N generated events   vs  sqlite3 .import of the same file (one TEXT column)
#   strata consume --from-beginning > /dev/null
#   durable LMDB offset commits per second (1, 8, 64 committing threads)
# Usage: tools/bench-cli.sh [events] [runs]      (release build; events default 1000000, runs 3)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:-1000000}"
runs="${2:-3}"
"$root/tools/ensure-deps.sh"
command -v sqlite3 >/dev/null || { echo "needs the sqlite3 command (apt-get install sqlite3)" >&2; exit 1; }
gen="$root/../shared/data/gen_events.py"
[ -f "$gen" ] || { echo "needs ../shared/data/gen_events.py" >&2; exit 1; }
swift build -c release --static-swift-stdlib --package-path "$root" --product strata >&2
strata="$root/.build/release/strata"
work="$(mktemp -d /tmp/strata-bench-cli-XXXXXX)"
trap 'rm -rf "$work"' EXIT
python3 "$gen" -n "$n" -o "$work/events.jsonl"
cat "$work/events.jsonl" > /dev/null  # page-cache the input for every contender

best() { sort -n | head -n1; }
now() { date +%s.%N; }

produce_times=(); sqlite_times=(); consume_times=(); keyed_times=()
for i in $(seq "$runs"); do
  rm -rf "$work/data" "$work/import.db"
  t0=$(now); "$strata" produce events --data "$work/data" --file "$work/events.jsonl" 2>/dev/null; t1=$(now)
  produce_times+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); "$strata" consume events --data "$work/data" --from-beginning > /dev/null; t1=$(now)
  consume_times+=("$(echo "$t1 - $t0" | bc)")
  cmp -s <("$strata" consume events --data "$work/data" --from-beginning) "$work/events.jsonl" || { echo "round trip differs!" >&2; exit 1; }
  rm -rf "$work/data"
  "$strata" topics create events --data "$work/data" --partitions 8 > /dev/null
  t0=$(now); "$strata" produce events --data "$work/data" --file "$work/events.jsonl" --key-field user_id --timestamp-field ts 2>/dev/null; t1=$(now)
  keyed_times+=("$(echo "$t1 - $t0" | bc)")
  sqlite3 "$work/import.db" "CREATE TABLE events(line TEXT);"
  t0=$(now); printf '.mode ascii\n.separator "\\037" "\\n"\n.import %s events\n' "$work/events.jsonl" | sqlite3 "$work/import.db"; t1=$(now)
  sqlite_times+=("$(echo "$t1 - $t0" | bc)")
done
p=$(printf '%s\n' "${produce_times[@]}" | best)
k=$(printf '%s\n' "${keyed_times[@]}" | best)
s=$(printf '%s\n' "${sqlite_times[@]}" | best)
c=$(printf '%s\n' "${consume_times[@]}" | best)
rate() { echo "scale=0; $n / $1" | bc; }
echo "events: $n ($(du -h "$work/events.jsonl" | cut -f1)), best of $runs, wall clock including process start"
echo "strata produce (1 partition, acks=all):            ${p}s  $(rate "$p") events/s  $(echo "scale=2; $s / $p" | bc)x sqlite3 .import"
echo "strata produce (8 partitions, --key-field, --timestamp-field): ${k}s  $(rate "$k") events/s  $(echo "scale=2; $s / $k" | bc)x sqlite3 .import"
echo "sqlite3 .import (baseline):                        ${s}s  $(rate "$s") rows/s"
echo "strata consume --from-beginning > /dev/null:       ${c}s  $(rate "$c") events/s"
for t in 1 8 64; do "$strata" debug bench-commits --threads "$t" --commits 8000 --dir "$work/commits"; done
