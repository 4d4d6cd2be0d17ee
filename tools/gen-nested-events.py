#!/usr/bin/env python3
"""Writes JSON events shaped like real-world ones (JSON Lines): nested objects, arrays, optional
members, unicode, and escaped strings — the second generator of tools/bench-query.py, beside the
flat events of ../shared/data/gen_events.py.

    python3 tools/gen-nested-events.py -n 1000000 -o nested.jsonl
    python3 tools/gen-nested-events.py -n 3 --seed 7

Each event looks like
    {"ts":"2025-10-01T00:00:00.000Z","type":"order","order_id":"o-00000001",
     "user":{"id":"u-4211","name":"Zoë Müller","tier":"gold"},
     "geo":{"country":"DE","city":"München","lat":48.14,"lon":11.58},
     "items":[{"sku":"sku-311","qty":2,"price":12.5}],"total":25.0,
     "device":{"os":"ios","version":"17.1"},"tags":["mobile","promo"],"note":"gift, \"wrapped\""}
- ts: RFC 3339 UTC with milliseconds, non-decreasing over 30 days from 2025-10-01 (as
  gen_events.py; use `strata produce --timestamp-field ts`).
- type: view 45%, cart 20%, order 15%, search 12%, refund 3%, support 5%; items (1-5) and total
  only on cart, order and refund; query (text with quotes, backslashes, emoji) only on search;
  note on ~10% of events (newlines, tabs, quotes); device missing on ~20%; tags 0-3.
- user.id: "u-0" .. "u-<users-1>" with skewed activity (low ids hot, as gen_events.py); user.name and
  geo.city carry non-ASCII letters for some users.
- About 30% of the lines are written with every non-ASCII character as a \\uXXXX escape (as
  producers with ensure_ascii/escape-unicode settings do), so the same city appears both ways.
The output depends only on the arguments (--seed, default 42).
"""
import argparse
import json
import random
import sys
import time

TYPES = [("view", 45), ("cart", 20), ("order", 15), ("search", 12), ("support", 5), ("refund", 3)]
CITIES = [("US", "New York", 40.71, -74.01), ("US", "San Francisco", 37.77, -122.42), ("DE", "München", 48.14, 11.58),
          ("DE", "Köln", 50.94, 6.96), ("FR", "Paris", 48.86, 2.35), ("FR", "Besançon", 47.24, 6.02),
          ("BR", "São Paulo", -23.55, -46.63), ("JP", "東京", 35.68, 139.69), ("ES", "Málaga", 36.72, -4.42),
          ("GB", "London", 51.51, -0.13), ("IN", "Bengaluru", 12.97, 77.59), ("CA", "Montréal", 45.50, -73.57),
          ("SE", "Göteborg", 57.71, 11.97), ("PL", "Łódź", 51.76, 19.46), ("TR", "İstanbul", 41.01, 28.98)]
FIRST = ["Zoë", "José", "Anna", "Łukasz", "Mia", "Noah", "Søren", "Aiko", "Chloé", "Omar", "Ines", "Björn", "Li", "Eva"]
LAST = ["Müller", "García", "Smith", "Nowak", "O'Brien", "Dubois", "Rossi", "Tanaka", "Silva", "Öztürk", "Kim", "Ng"]
TIERS = ["free", "free", "free", "silver", "gold"]
OS = [("ios", "17.1"), ("ios", "16.6"), ("android", "14"), ("android", "13"), ("web", "chrome/120"), ("web", "firefox/121")]
TAGS = ["mobile", "promo", "returning", "new", "beta", "vip"]
SEARCHES = ['red shoes', 'size "XL"', 'C:\\temp\\file', 'café au lait', '50% off', 'emoji 😀 search', 'tab\there', 'a/b']
NOTES = ['gift, "wrapped"', 'line one\nline two', 'tab\tseparated', 'back\\slash', 'naïve café', 'ok']
START_MS = 1759276800000  # 2025-10-01T00:00:00Z
SPAN_MS = 30 * 86400 * 1000


def iso(ms):
    s, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(s)) + ".%03dZ" % ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=1000, help="number of events")
    ap.add_argument("-o", "--out", default="-", help="output file (default stdout)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--users", type=int, default=100_000)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    rand = rnd.random
    table = [name for name, w in TYPES for _ in range(w)]
    compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
    ascii_only = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))
    out = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    step = SPAN_MS / max(1, a.n)
    buf = []
    for i in range(a.n):
        u = int(a.users * rand() ** 3)
        kind = table[int(rand() * 100)]
        country, city, lat, lon = CITIES[(u * 7 + 3) % len(CITIES)]
        e = {"ts": iso(START_MS + int(i * step)), "type": kind}
        if kind in ("cart", "order", "refund"):
            e["order_id"] = "o-%08d" % i
        e["user"] = {"id": "u-%d" % u, "name": FIRST[u % len(FIRST)] + " " + LAST[(u // 3) % len(LAST)], "tier": TIERS[u % len(TIERS)]}
        e["geo"] = {"country": country, "city": city, "lat": lat, "lon": lon}
        if kind in ("cart", "order", "refund"):
            items = []
            for _ in range(1 + int(rand() * rand() * 5)):
                items.append({"sku": "sku-%d" % int(1000 * rand() ** 2), "qty": 1 + int(rand() * 3), "price": round(1 + rand() * 99, 2)})
            e["items"] = items
            e["total"] = round(sum(it["qty"] * it["price"] for it in items), 2)
        if kind == "search":
            e["query"] = SEARCHES[int(rand() * len(SEARCHES))]
        if rand() < 0.8:
            os_name, version = OS[u % len(OS)]
            e["device"] = {"os": os_name, "version": version}
        e["tags"] = [TAGS[int(rand() * len(TAGS))] for _ in range(int(rand() * 4))]
        if rand() < 0.1:
            e["note"] = NOTES[int(rand() * len(NOTES))]
        buf.append((ascii_only if rand() < 0.3 else compact).encode(e))
        if len(buf) >= 10000:
            out.write("\n".join(buf) + "\n")
            buf = []
    if buf:
        out.write("\n".join(buf) + "\n")
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
