#!/usr/bin/env bash
# Kafka-protocol benchmark with a same-run peer baseline (release build):
#   kcat producing the N-event file with acks=1 and with acks=all on a flush.mode=sync topic
#   redis-benchmark XADD of 200-byte events, pipelined (-P 64 -c 4), AOF everysec and always
#   kcat consuming from the beginning
#   end-to-end latency at 10k events/s (tools/compat/latency.py, confluent-kafka)
# Usage: tools/bench-kafka.sh [events] [runs]     (defaults 1000000 3). Installs redis-server if missing (root).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:-1000000}"; runs="${2:-3}"
"$root/tools/ensure-deps.sh" --compat
command -v redis-server >/dev/null || { [ "$(id -u)" -eq 0 ] && apt-get install -y -qq redis-server redis-tools >/dev/null; }
gen="$root/../shared/data/gen_events.py"
swift build -c release --static-swift-stdlib --package-path "$root" --product strata >&2
strata="$root/.build/release/strata"
work="$(mktemp -d /tmp/strata-bench-kafka-XXXXXX)"
python3 "$gen" -n "$n" -o "$work/events.jsonl"
"$strata" serve --data "$work/data" --listen 127.0.0.1:0 2> "$work/serve.log" & spid=$!
rport=6391
redis-server --port $rport --bind 127.0.0.1 --dir "$work" --save "" --appendonly yes --appendfsync everysec --daemonize no > "$work/redis.log" 2>&1 & rpid=$!
trap 'kill $spid $rpid 2>/dev/null; wait $spid $rpid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "Kafka listener on" "$work/serve.log" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/.*Kafka listener on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/serve.log" | head -1)
bs="127.0.0.1:$port"
for _ in $(seq 50); do redis-cli -p $rport ping >/dev/null 2>&1 && break; sleep 0.1; done
best() { sort -n | head -n1; }
now() { date +%s.%N; }
rate() { echo "scale=0; $n / $1" | bc; }
a1=(); aall=(); cons=(); redis_es=(); redis_al=()
payload=$(head -c 200 "$work/events.jsonl")
for i in $(seq "$runs"); do
  t0=$(now); kcat -b "$bs" -t "a1-$i" -P -X acks=1 -l "$work/events.jsonl"; t1=$(now); a1+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); kcat -b "$bs" -t "a1-$i" -C -e -q -o beginning > /dev/null; t1=$(now); cons+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); kcat -b "$bs" -t "all-$i" -P -X acks=all -l "$work/events.jsonl"; t1=$(now); aall+=("$(echo "$t1 - $t0" | bc)")
  for fs in everysec always; do
    redis-cli -p $rport config set appendfsync $fs > /dev/null; redis-cli -p $rport del s > /dev/null
    v=$(redis-benchmark -p $rport --csv -n "$n" -P 64 -c 4 XADD s '*' payload "$payload" 2>/dev/null | tr '\r' '\n' | grep -v '^"test"' | awk -F',' 'NF>=8 {gsub(/"/,""); print $(NF-6)}' | tail -1)
    if [ "$fs" = everysec ]; then redis_es+=("${v%.*}"); else redis_al+=("${v%.*}"); fi
  done
done
p1=$(printf '%s\n' "${a1[@]}" | best); pall=$(printf '%s\n' "${aall[@]}" | best); c=$(printf '%s\n' "${cons[@]}" | best)
res=$(printf '%s\n' "${redis_es[@]}" | sort -n | tail -1); ral=$(printf '%s\n' "${redis_al[@]}" | sort -n | tail -1)
echo "events: $n, best of $runs, wall clock of the kcat process"
echo "kcat produce acks=1:                 ${p1}s  $(rate "$p1") events/s  $(echo "scale=2; $(rate "$p1") / $res" | bc)x redis XADD everysec"
echo "kcat produce acks=all (sync topic):  ${pall}s  $(rate "$pall") events/s  $(echo "scale=2; $(rate "$pall") / $ral" | bc)x redis XADD always"
echo "redis-benchmark XADD -P 64 -c 4 (200 B): everysec $res/s, always $ral/s"
echo "kcat consume from the beginning:     ${c}s  $(rate "$c") events/s"
python3 "$root/tools/compat/latency.py" "$bs" 10000 10 latency
echo "strata bench (Swift client, prebuilt 1000-event batches, 8 requests in flight):"
"$strata" bench produce --bootstrap "$bs" --topic sb-1 --events "$n" --acks 1
"$strata" bench produce --bootstrap "$bs" --topic sb-all --events "$n" --acks all
"$strata" bench consume --bootstrap "$bs" --topic sb-1
"$strata" bench e2e --bootstrap "$bs" --topic sb-e2e --rate 10000 --seconds 10
