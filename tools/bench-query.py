#!/usr/bin/env python3
"""SQL over JSON events: `strata query` against DuckDB on the same JSON lines, in the same run.

Generates N events with ../shared/data/gen_events.py (cached in the work directory), loads them
with `strata produce --timestamp-field ts` (record timestamps = the events' own), and runs each
query best-of-RUNS in both engines (DuckDB with 2 threads reading the JSON lines file; strata as
a fresh process each time, so its times include process start). The answers are compared.

Usage: tools/bench-query.py [--events N] [--runs R] [--work DIR] [--generator flat|nested] [--sqlite]
  --generator nested uses tools/gen-nested-events.py (nested objects, arrays, optional members,
  unicode, ~30% of lines with \\u escapes) and queries nested paths.
  --sqlite also times SQLite's json_extract over a plain table of the same lines (slow).
Needs: a release build (built here), python3 -m pip install duckdb (installed here when missing).
"""
import argparse, os, subprocess, sys, time, sqlite3

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--events", type=int, default=10_000_000)
ap.add_argument("--runs", type=int, default=3)
ap.add_argument("--work", default="/tmp/strata-bench-query")
ap.add_argument("--sqlite", action="store_true")
ap.add_argument("--generator", choices=["flat", "nested"], default="flat")
ap.add_argument("--only", help="run only the queries whose name contains this text")
ap.add_argument("--segment-mb", type=int, default=128, help="segment.bytes of the topic, MiB (default 128, Strata's default)")
ap.add_argument("--json-topic", action="store_true",
                help="load into a topic with value.format=json (validated on write: the member scan may stop early)")
args = ap.parse_args()

try:
    import duckdb
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "duckdb"])
    import duckdb

os.makedirs(args.work, exist_ok=True)
flavour = "" if args.generator == "flat" else "nested_"
events = os.path.join(args.work, f"{flavour}events_{args.events}.jsonl")
if not os.path.exists(events):
    gen = os.path.join(root, "..", "shared", "data", "gen_events.py") if args.generator == "flat" else \
        os.path.join(root, "tools", "gen-nested-events.py")
    subprocess.check_call([sys.executable, gen, "-n", str(args.events), "-o", events + ".tmp"])
    os.rename(events + ".tmp", events)
subprocess.check_call(["swift", "build", "-c", "release", "--static-swift-stdlib", "--package-path", root, "--product", "strata"], stdout=sys.stderr)
strata = os.path.join(root, ".build", "release", "strata")
data = os.path.join(args.work, f"{flavour}data_{args.events}_{args.segment_mb}m" + ("_json" if args.json_topic else ""))
if not os.path.exists(os.path.join(data, "loaded")):
    subprocess.run(["rm", "-rf", data])
    # Block summaries over the members the needle queries look for; segments of --segment-mb
    # (the active segment has no summary and is always read).
    configs = ["--config", "query.index.members=" + ("user_id" if args.generator == "flat" else "user.id,order_id"),
               "--config", f"segment.bytes={args.segment_mb << 20}"]
    if args.json_topic:
        configs += ["--config", "value.format=json"]
    subprocess.check_call([strata, "topics", "create", "events", "--data", data] + configs)
    t = time.perf_counter()
    subprocess.check_call([strata, "produce", "events", "--data", data, "--timestamp-field", "ts", "--file", events])
    print(f"loaded {args.events} events in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    t = time.perf_counter()
    out = subprocess.check_output([strata, "index", "events", "--data", data], text=True)
    print(f"strata index in {time.perf_counter() - t:.1f} s: {out.strip()}", file=sys.stderr)
    open(os.path.join(data, "loaded"), "w").close()

day_from, day_to = 1760486400000, 1760572800000  # 2025-10-15T00:00Z .. 2025-10-16T00:00Z
f = events
if args.generator == "flat":
    queries = [
        ("top event types (docs/query.md): count",
         f"SELECT event_type, count(*) FROM read_json_auto('{f}') GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
         "SELECT value->>'$.event_type' AS type, count(*) AS events FROM events GROUP BY 1 ORDER BY 2 DESC LIMIT 5"),
        ("group by event_type: count, sum(amount)",
         f"SELECT event_type, count(*), sum(amount) FROM read_json_auto('{f}') GROUP BY 1 ORDER BY 1",
         "SELECT value->>'$.event_type', count(*), sum(value->>'$.amount') FROM events GROUP BY 1 ORDER BY 1"),
        ("the same, one day of 30",
         f"SELECT event_type, count(*), sum(amount) FROM read_json_auto('{f}') WHERE ts >= TIMESTAMP '2025-10-15 00:00:00' AND ts < TIMESTAMP '2025-10-16 00:00:00' GROUP BY 1 ORDER BY 1",
         f"SELECT value->>'$.event_type', count(*), sum(value->>'$.amount') FROM events WHERE timestamp >= {day_from} AND timestamp < {day_to} GROUP BY 1 ORDER BY 1"),
        ("count(DISTINCT user_id)",
         f"SELECT count(DISTINCT user_id) FROM read_json_auto('{f}')",
         "SELECT count(DISTINCT value->>'$.user_id') FROM events"),
        ("distinct users, as a DISTINCT subquery",
         f"SELECT count(*) FROM (SELECT DISTINCT user_id FROM read_json_auto('{f}'))",
         "SELECT count(*) FROM (SELECT DISTINCT value->>'$.user_id' FROM events)"),
        ("purchases per country per day",
         f"SELECT country, CAST(ts AS DATE) AS day, count(*), round(sum(amount), 2) FROM read_json_auto('{f}') WHERE event_type = 'purchase' GROUP BY 1, 2 ORDER BY 1, 2",
         "SELECT value->>'$.country', date(timestamp / 1000, 'unixepoch') AS day, count(*), round(sum(value->>'$.amount'), 2) FROM events WHERE value->>'$.event_type' = 'purchase' GROUP BY 1, 2 ORDER BY 1, 2"),
    ]
    # Needles: one rare user's events over the 30 days.
    queries.append(("all events of one rare user",
                    f"SELECT count(*), sum(amount) FROM read_json_auto('{f}') WHERE user_id = 'u-99990'",
                    "SELECT count(*), sum(value->>'$.amount') FROM events WHERE value->>'$.user_id' = 'u-99990'"))
else:
    queries = [
        ("nested GROUP BY geo.city: count",
         f"SELECT geo.city, count(*) FROM read_json_auto('{f}') GROUP BY 1 ORDER BY 1",
         "SELECT value->>'$.geo.city', count(*) FROM events GROUP BY 1 ORDER BY 1"),
        ("GROUP BY type: count, sum(total)",
         f"SELECT type, count(*), sum(total) FROM read_json_auto('{f}') GROUP BY 1 ORDER BY 1",
         "SELECT value->>'$.type', count(*), sum(value->>'$.total') FROM events GROUP BY 1 ORDER BY 1"),
        ("GROUP BY user.tier, geo.country",
         f"SELECT \"user\".tier, geo.country, count(*) FROM read_json_auto('{f}') GROUP BY 1, 2 ORDER BY 1, 2",
         "SELECT value->>'$.user.tier', value->>'$.geo.country', count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2"),
        ("first item's sku, top 10",
         f"SELECT items[1].sku, count(*) FROM read_json_auto('{f}') WHERE items[1].sku IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10",
         "SELECT value->>'$.items[0].sku', count(*) FROM events WHERE value->>'$.items[0].sku' IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"),
        ("one day of 30: GROUP BY type",
         f"SELECT type, count(*), sum(total) FROM read_json_auto('{f}') WHERE ts >= TIMESTAMP '2025-10-15 00:00:00' AND ts < TIMESTAMP '2025-10-16 00:00:00' GROUP BY 1 ORDER BY 1",
         f"SELECT value->>'$.type', count(*), sum(value->>'$.total') FROM events WHERE timestamp >= {day_from} AND timestamp < {day_to} GROUP BY 1 ORDER BY 1"),
        ("count(DISTINCT user.id)",
         f"SELECT count(DISTINCT \"user\".id) FROM read_json_auto('{f}')",
         "SELECT count(DISTINCT value->>'$.user.id') FROM events"),
        ("all events of one rare user",
         f"SELECT count(*), sum(total) FROM read_json_auto('{f}') WHERE \"user\".id = 'u-99990'",
         "SELECT count(*), sum(value->>'$.total') FROM events WHERE value->>'$.user.id' = 'u-99990'"),
        ("the event with one order id",
         f"SELECT type, total FROM read_json_auto('{f}') WHERE order_id = 'o-{args.events // 3:08d}'",
         f"SELECT value->>'$.type', value->>'$.total' FROM events WHERE value->>'$.order_id' = 'o-{args.events // 3:08d}'"),
    ]

con = duckdb.connect()
con.execute("SET threads=2")

def best(fn):
    times, out = [], None
    for _ in range(args.runs):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out

def norm(rows):
    # NULL is None in DuckDB and an empty cell in strata's CSV.
    rows = [[None if v == "" else v for v in r] for r in rows]
    return [tuple(None if v is None else round(float(v), 2) if isinstance(v, float) or (isinstance(v, str) and v.replace('.', '', 1).replace('-', '', 1).isdigit() and '.' in v) else str(v) for v in r) for r in rows]

print(f"{args.events} events, {os.path.getsize(events) / 1e9:.2f} GB of JSON lines; best of {args.runs}; DuckDB {duckdb.__version__} with 2 threads;"
      f" topic {'value.format=json' if args.json_topic else 'without value.format (raw)'}")
print(f"{'query':44} {'DuckDB s':>9} {'strata s':>9} {'strata/DuckDB':>14}  same answer")
for name, dq, sq in [q for q in queries if not args.only or args.only in q[0]]:
    dt, drows = best(lambda: con.execute(dq).fetchall())
    def run_strata():
        r = subprocess.run([strata, "query", sq, "--data", data, "--format", "csv"], capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"strata query failed: {r.stderr}")
        return [line.split(",") for line in r.stdout.strip().split("\n")[1:]]
    st, srows = best(run_strata)
    same = norm(drows) == norm([[c for c in r] for r in srows])
    print(f"{name:44} {dt:9.3f} {st:9.3f} {st / dt:13.2f}x  {'yes' if same else 'NO'}")
    if not same:
        print("  duckdb:", drows[:4], "\n  strata:", srows[:4])

if args.sqlite:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t(value TEXT)")
    with open(events) as fh:
        db.executemany("INSERT INTO t VALUES (?)", ((line,) for line in fh))
    t = time.perf_counter()
    db.execute("SELECT value->>'$.event_type', count(*), sum(value->>'$.amount') FROM t GROUP BY 1").fetchall()
    print(f"SQLite json_extract GROUP BY over a plain table: {time.perf_counter() - t:.3f} s")
