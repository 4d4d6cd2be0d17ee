#!/usr/bin/env python3
"""Columnar storage of JSON events in one run: the cold format (`strata tier --dry-run`) and
`strata export --format parquet` against DuckDB's Parquet (zstd) of the same JSON lines.

Generates N events (../shared/data/gen_events.py, or tools/gen-nested-events.py with
--generator nested; cached in the work directory), loads them with `strata produce
--timestamp-field ts` (and `--key-field` for the flat events, as applications key by user), then
measures, in this order and on this machine:
  - DuckDB 2 threads: COPY (SELECT * FROM read_json_auto(lines)) TO parquet (zstd): time, bytes;
  - strata tier --dry-run: log bytes of the closed segments, cold bytes, encoding and read-back
    speed (each block decoded and compared record by record);
  - strata export (with and without the raw value column): time, bytes;
  - DuckDB's GROUP BY over its own file and over the export (best of RUNS);
  - then on a copy of the data directory converted with `strata tier` (wall time, verification
    included): kcat consuming every partition from `strata serve` hot vs cold (the first run, with
    an empty decoded-block cache, and the best of RUNS), and `strata query`'s GROUP BY hot vs cold
    against DuckDB on its Parquet and on the JSON lines.
Prints bytes per event so that the closed segments (the active one is never converted) compare
with the whole file. Needs a release build (built here) and duckdb (pip; installed when missing).

Usage: tools/bench-cold.py [--events N] [--generator flat|nested] [--segment-mb M] [--runs R] [--work DIR] [--no-serve]
"""
import argparse, glob, os, re, shutil, subprocess, sys, time

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--events", type=int, default=1_000_000)
ap.add_argument("--generator", choices=["flat", "nested"], default="flat")
ap.add_argument("--segment-mb", type=int, default=32)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--work", default="/tmp/strata-bench-cold")
ap.add_argument("--no-serve", action="store_true", help="skip the conversion, kcat and query measurements")
args = ap.parse_args()
try:
    import duckdb
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "duckdb"])
    import duckdb

os.makedirs(args.work, exist_ok=True)
flat = args.generator == "flat"
lines = os.path.join(args.work, f"{args.generator}_{args.events}.jsonl")
if not os.path.exists(lines):
    gen = os.path.join(root, "..", "shared", "data", "gen_events.py") if flat else os.path.join(root, "tools", "gen-nested-events.py")
    subprocess.check_call([sys.executable, gen, "-n", str(args.events), "-o", lines + ".tmp"])
    os.rename(lines + ".tmp", lines)
subprocess.check_call(["swift", "build", "-c", "release", "--static-swift-stdlib", "--package-path", root, "--product", "strata"], stdout=sys.stderr)
strata = os.path.join(root, ".build", "release", "strata")
data = os.path.join(args.work, f"data_{args.generator}_{args.events}_{args.segment_mb}m")
if not os.path.exists(os.path.join(data, "loaded")):
    shutil.rmtree(data, ignore_errors=True)
    subprocess.check_call([strata, "topics", "create", "events", "--data", data, "--config", f"segment.bytes={args.segment_mb << 20}"],
                          stdout=subprocess.DEVNULL)
    keys = ["--key-field", "user_id"] if flat else []
    subprocess.check_call([strata, "produce", "events", "--data", data, "--timestamp-field", "ts", "--file", lines] + keys,
                          stdout=subprocess.DEVNULL)
    open(os.path.join(data, "loaded"), "w").close()


def timed(cmd):
    t = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return time.perf_counter() - t, out


con = duckdb.connect()
con.execute("SET threads = 2")
con.execute("SET enable_progress_bar = false")
parquet = os.path.join(args.work, f"duck_{args.generator}_{args.events}.parquet")
t = time.perf_counter()
con.execute(f"COPY (SELECT * FROM read_json_auto('{lines}')) TO '{parquet}' (FORMAT parquet, COMPRESSION zstd)")
duck_s = time.perf_counter() - t
duck_bytes = os.path.getsize(parquet)

_, out = timed([strata, "tier", "events", "--dry-run", "--data", data])
m = re.search(r"(\d+) records: (\d+) bytes hot → (\d+) bytes cold .*encoding ([\d.]+) MB/s.*as batches ([\d.]+) MB/s", out)
if not m:
    sys.exit("unexpected strata tier output: " + out[-500:])
cold_records, hot, cold, enc, serve = int(m[1]), int(m[2]), int(m[3]), float(m[4]), float(m[5])

exports = {}
for label, extra in (("export", []), ("export --without-value", ["--without-value"])):
    out_dir = os.path.join(args.work, "export_" + ("nv" if extra else "full"))
    shutil.rmtree(out_dir, ignore_errors=True)
    s, _ = timed([strata, "export", "events", "--output", out_dir, "--data", data] + extra)
    exports[label] = (s, sum(os.path.getsize(f) for f in glob.glob(os.path.join(out_dir, "*.parquet"))), out_dir)

group = "type" if not flat else "event_type"
measure = "total" if not flat else "amount"


def best(sql):
    times = []
    for _ in range(args.runs):
        t = time.perf_counter()
        con.execute(sql).fetchall()
        times.append(time.perf_counter() - t)
    return min(times)


q_own = best(f"SELECT {group}, count(*), sum({measure}) FROM '{parquet}' GROUP BY 1")
export_dir = exports["export"][2]
q_exp = best(f"SELECT {group}, count(*), sum({measure}) FROM read_parquet('{export_dir}/*.parquet', union_by_name = true) GROUP BY 1")

n = args.events
print(f"{args.generator} events: {n} ({os.path.getsize(lines)} bytes of JSON lines); closed segments hold {cold_records}")
print(f"{'':34}{'seconds':>9}{'bytes':>14}{'bytes/event':>13}{'vs DuckDB':>11}")
print(f"{'DuckDB JSON lines -> Parquet zstd':34}{duck_s:9.2f}{duck_bytes:14d}{duck_bytes / n:13.2f}{1.0:10.2f}x")
print(f"{'log (closed segments)':34}{'':9}{hot:14d}{hot / cold_records:13.2f}{(hot / cold_records) / (duck_bytes / n):10.2f}x")
print(f"{'cold (strata tier --dry-run)':34}{'':9}{cold:14d}{cold / cold_records:13.2f}{(cold / cold_records) / (duck_bytes / n):10.2f}x")
for label, (s, b, _) in exports.items():
    print(f"{'strata ' + label:34}{s:9.2f}{b:14d}{b / n:13.2f}{(b / n) / (duck_bytes / n):10.2f}x")
print(f"cold: {hot / cold:.2f}x smaller than the log; encoding {enc:.1f} MB/s of log per core, reading back as batches {serve:.1f} MB/s")
print(f"DuckDB GROUP BY over its own Parquet {q_own:.3f} s, over strata's export {q_exp:.3f} s ({q_exp / q_own:.2f}x)")

if args.no_serve:
    sys.exit(0)

import socket
import signal

cold_data = data + "_cold"
shutil.rmtree(cold_data, ignore_errors=True)
subprocess.check_call(["cp", "-a", data, cold_data])
tier_s, out = timed([strata, "tier", "events", "--data", cold_data])
m = re.search(r"(\d+) bytes hot → (\d+) bytes cold", out.splitlines()[-1])
tier_hot = int(m[1]) if m else 0
print(f"strata tier: {tier_hot} bytes of log converted in {tier_s:.2f} s wall ({tier_hot / tier_s / 1e6:.1f} MB/s of log, "
      f"one core, every block verified, files synced)")


def free_port():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def kcat_rate(data_dir):
    """(first run, best run) seconds for kcat to consume the whole topic, and its bytes of values."""
    port = free_port()
    srv = subprocess.Popen([strata, "serve", "--data", data_dir, "--listen", f"127.0.0.1:{port}", "--http-listen", "off",
                            "--config", "log.cold.check.interval.ms=0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            with socket.socket() as sk:
                if sk.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        times = []
        # kcat's default fetch sizes, output to /dev/null (reading 200 MB through a pipe here
        # costs more than the consuming); the values are checked once, by their length.
        command = ["kcat", "-b", f"127.0.0.1:{port}", "-t", "events", "-C", "-e", "-q", "-o", "beginning", "-f", "%s\n"]
        for _ in range(args.runs):
            t = time.perf_counter()
            subprocess.run(command, stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t)
        size = len(subprocess.run(command, capture_output=True, check=True).stdout)
        return times[0], min(times), size
    finally:
        srv.send_signal(signal.SIGINT)
        srv.wait(timeout=60)


hot_first, hot_best, hot_size = kcat_rate(data)
cold_first, cold_best, cold_size = kcat_rate(cold_data)
assert hot_size == cold_size, (hot_size, cold_size)
print(f"kcat consume, all {n} events: hot {hot_first:.2f} s first / {hot_best:.2f} s best; cold {cold_first:.2f} s first / "
      f"{cold_best:.2f} s best: cold/hot rate {hot_first / cold_first:.2f}x first, {hot_best / cold_best:.2f}x best")

if flat:
    sql = "SELECT value->>'$.event_type' AS t, count(*), sum(value->>'$.amount') FROM events GROUP BY 1"
else:
    sql = "SELECT value->>'$.type' AS t, count(*), sum(value->>'$.total') FROM events GROUP BY 1"


def query_best(data_dir):
    times = []
    for _ in range(args.runs):
        s, _ = timed([strata, "query", "--data", data_dir, sql])
        times.append(s)
    return min(times)


q_hot = query_best(data)
q_cold = query_best(cold_data)
q_lines = best(f"SELECT {group}, count(*), sum({measure}) FROM read_json_auto('{lines}') GROUP BY 1")
print(f"GROUP BY: strata query hot {q_hot:.3f} s, cold {q_cold:.3f} s; DuckDB on its Parquet {q_own:.3f} s, on the JSON lines "
      f"{q_lines:.3f} s: cold {q_cold / q_own:.2f}x DuckDB-Parquet's time, {q_cold / q_lines:.2f}x DuckDB-JSON's")
