#!/usr/bin/env bash
# Coverage-guided fuzzing of Strata's decoders (docs/fuzzing.md): builds the libFuzzer targets of
# Package.swift (STRATA_FUZZ=1; --sanitize fuzzer and address; scratch path .build-fuzz, so the
# rebuild is incremental) and runs each for FUZZ_SECONDS from its seed corpus in
# Tests/FuzzCorpus/<target>/. New corpus units, crash inputs and logs go to FUZZ_OUT, outside the
# repository. Fails on any crash (trap, ASan report, broken invariant, out-of-memory, timeout),
# printing the input's path and the stack. Ends with the line "fuzz: N passed, N failed".
#
#   tools/fuzz.sh                          every target, 30 s each
#   FUZZ_SECONDS=3600 tools/fuzz.sh        the long run, an hour each
#   tools/fuzz.sh record-decode            some targets only
#
# Environment: FUZZ_SECONDS (default 30), FUZZ_OUT (default ${TMPDIR:-/tmp}/strata-fuzz),
# FUZZ_ARGS (more libFuzzer flags, e.g. "-jobs=2 -workers=2" or "-seed=1").
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${FUZZ_SECONDS:-30}"
out="${FUZZ_OUT:-${TMPDIR:-/tmp}/strata-fuzz}"
scratch="$root/.build-fuzz"
# Target names and their products. -max_len is 1 MiB (a request frame or batch that large is
# already well past what the seeds hold; libFuzzer grows inputs towards it gradually).
targets_all=(kafka-request batch-append record-decode sasl-exchange summary-decode cold-block)
declare -A product=([kafka-request]=FuzzKafkaRequest [batch-append]=FuzzBatchAppend [record-decode]=FuzzRecordDecode [sasl-exchange]=FuzzSaslExchange [summary-decode]=FuzzSummaryDecode [cold-block]=FuzzColdBlock)
# The two stateful targets keep a broker / log across inputs: what they hold is not a leak.
declare -A leaks=([kafka-request]=0 [batch-append]=0 [record-decode]=1 [sasl-exchange]=1 [summary-decode]=1 [cold-block]=1)
# Size of each target's private tmpfs. Small for the broker: a CreateTopics of 10,000 partitions
# then fails with ENOSPC after a few hundred (an error path too) instead of creating thousands
# of files first, which would take most of the run.
declare -A disk=([kafka-request]=256m [batch-append]=1g [record-decode]=64m [sasl-exchange]=64m [summary-decode]=64m [cold-block]=64m)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${targets_all[@]}")
for t in "${targets[@]}"; do
  [ -n "${product[$t]:-}" ] || { echo "fuzz: unknown target '$t' (targets: ${targets_all[*]})" >&2; exit 2; }
done

# --- Build (serialized with other Swift builds on this machine when flock is there) -------------
# One --sanitize only: SwiftPM passes several in a random order, and swiftc keeps the last
# -sanitize= it is given, so `--sanitize fuzzer --sanitize address` instruments for coverage in
# some builds and not in others. SwiftPM's `--sanitize fuzzer` (libFuzzer's main, C targets'
# coverage), then swiftc's `-sanitize=fuzzer,address` last, and ASan for C through -Xcc.
# -enable-testing: the Kafka target reaches the handler's internals with @testable import.
swiftpm=(--package-path "$root" --scratch-path "$scratch" -c release --sanitize fuzzer
         -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=address -Xswiftc -enable-testing)
lock=()
command -v flock >/dev/null 2>&1 && lock=(flock "${STRATA_SWIFT_LOCK:-/tmp/strata-swift.lock}")
build_start=$SECONDS
mkdir -p "$out"
for t in "${targets[@]}"; do
  if ! STRATA_FUZZ=1 nice -n 10 "${lock[@]}" swift build "${swiftpm[@]}" --product "${product[$t]}" >"$out.build.log" 2>&1; then
    grep -v "Cannot export local symbol" "$out.build.log" | tail -40 >&2
    echo "fuzz: building ${product[$t]} failed (log: $out.build.log)" >&2
    echo "fuzz: 0 passed, ${#targets[@]} failed"
    exit 1
  fi
done
bin="$(STRATA_FUZZ=1 swift build "${swiftpm[@]}" --show-bin-path 2>/dev/null)"
for t in "${targets[@]}"; do
  # A build whose Swift code is not instrumented would "pass" while exploring nothing.
  counters="$(STRATA_FUZZ_DATA="$out" ASAN_OPTIONS=detect_leaks=0 "$bin/${product[$t]}" -runs=0 2>&1 | sed -n 's/.*(\([0-9]*\) inline 8-bit counters).*/\1/p' | head -1)"
  if [ "${counters:-0}" -lt 2000 ]; then
    echo "fuzz: ${product[$t]} has ${counters:-no} coverage counters: the build is not instrumented" >&2
    echo "fuzz: 0 passed, ${#targets[@]} failed"
    exit 1
  fi
done
echo "fuzz: built ${#targets[@]} target(s) in $((SECONDS - build_start)) s; ${seconds} s each"

# --- Run ------------------------------------------------------------------------------------
# Each target's scratch data (broker, logs) lives on a private tmpfs (size above) in its own
# mount namespace, so that no input can fill the machine's disk or memory: a full disk is just
# one more error path. Without user namespaces, a plain directory is used.
sandbox=()
if unshare --user --map-root-user --mount true 2>/dev/null; then
  sandbox=(unshare --user --map-root-user --mount
           sh -c 'mount -t tmpfs -o size="$STRATA_FUZZ_DISK" strata-fuzz "$STRATA_FUZZ_DATA" && exec "$@"' sh)
else
  echo "fuzz: no user namespaces here: the targets' scratch data goes to an unbounded directory" >&2
fi

demangle() { if command -v swift-demangle >/dev/null 2>&1; then swift-demangle --simplified; else cat; fi; }

passed=0
failed=0
for t in "${targets[@]}"; do
  dir="$out/$t"
  mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/data"
  rm -f "$dir/artifacts/"*
  log="$dir/fuzz.log"
  seeds="$root/Tests/FuzzCorpus/$t"
  dict=()
  [ -f "$root/Fuzz/${product[$t]#Fuzz}/fuzz.dict" ] && dict=(-dict="$root/Fuzz/${product[$t]#Fuzz}/fuzz.dict")
  # shellcheck disable=SC2086
  STRATA_FUZZ_DATA="$dir/data" STRATA_FUZZ_DISK="${disk[$t]}" SWIFT_BACKTRACE=enable=no ASAN_OPTIONS="detect_leaks=${leaks[$t]}" timeout -k 30 $((seconds + 300)) \
    "${sandbox[@]}" "$bin/${product[$t]}" -max_total_time="$seconds" -max_len=1048576 -timeout=60 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$dir/artifacts/" "${dict[@]}" ${FUZZ_ARGS:-} "$dir/corpus" "$seeds" >"$log" 2>&1
  rc=$?
  rm -rf "${dir:?}/data/"*
  runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)"
  cov="$(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -1)"
  artifacts=("$dir/artifacts/"*)
  [ -e "${artifacts[0]}" ] || artifacts=()
  if [ "$rc" -eq 0 ] && [ ${#artifacts[@]} -eq 0 ]; then
    passed=$((passed + 1))
    echo "fuzz: $t passed: ${runs:-?} executions in ${seconds} s, ${rate:-?} exec/s, ${cov:-no coverage line}"
  else
    failed=$((failed + 1))
    echo "fuzz: $t FAILED (exit $rc): ${runs:-?} executions, ${rate:-?} exec/s, ${cov:-no coverage line}"
    for a in "${artifacts[@]}"; do echo "  input: $a"; done
    echo "  reproduce: STRATA_FUZZ_DATA=\$(mktemp -d) SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=${leaks[$t]} $bin/${product[$t]} ${artifacts[0]:-<input>}"
    echo "  log: $log"
    # The report: libFuzzer's or ASan's, from its first line to its summary, names demangled.
    awk '/^==[0-9]+==|^INFO: a leak|Fatal error|ERROR: libFuzzer|^SUMMARY/ { on = 1 } on { print "  " $0 } /^SUMMARY/ { exit }' "$log" \
      | grep -v "^  *#[0-9]* .* in fuzzer::\|libc_start\|_start " | head -80 | demangle
  fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
