#!/usr/bin/env python3
"""Writes synthetic JSON events, one compact object per line (JSON Lines), for trying Strata.

    python3 tools/gen-events.py -n 20000 -o events.jsonl
    python3 tools/gen-events.py -n 5 --seed 7

Each event looks like
    {"ts":"2025-10-06T00:00:04.311Z","event_type":"page_view","user_id":"u-118","country":"DE",
     "amount":0.0,"latency_ms":42}
- ts: RFC 3339 UTC with milliseconds, non-decreasing, spread evenly over --hours hours from
  --start (default: 48 hours from 2025-10-06T00:00:00Z, so 2025-10-07 is the second day);
  use it with `strata produce --timestamp-field ts`.
- event_type: page_view, click, user_login, add_to_cart, search, purchase, user_logout, error
  (most to least frequent).
- user_id: "u-0" .. "u-<users-1>", a few users far more active than the rest; use it with
  `strata produce --key-field user_id`.
- amount: > 0 (two decimals) only for add_to_cart and purchase, else 0.0; latency_ms: an integer.
The output depends only on the arguments (--seed, default 1): the same command writes the same bytes.
"""
import argparse
import datetime
import json
import random
import sys

# (event type, relative weight)
TYPES = [("page_view", 38), ("click", 17), ("user_login", 14), ("add_to_cart", 10),
         ("search", 9), ("purchase", 6), ("user_logout", 4), ("error", 2)]
COUNTRIES = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA", "NL", "ES"]
COUNTRY_WEIGHTS = [30, 12, 10, 9, 9, 8, 7, 6, 5, 4]


def rfc3339(text):
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--events", type=int, default=1000, help="number of events (default 1000)")
    ap.add_argument("-o", "--out", default="-", help="output file (default: stdout)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    ap.add_argument("--users", type=int, default=5000, help="distinct user ids (default 5000)")
    ap.add_argument("--start", type=rfc3339, default=rfc3339("2025-10-06T00:00:00Z"),
                    help="timestamp of the first event, RFC 3339 (default 2025-10-06T00:00:00Z)")
    ap.add_argument("--hours", type=float, default=48.0, help="time span of the events (default 48)")
    a = ap.parse_args()
    if a.events < 0 or a.users < 1 or a.hours < 0:
        ap.error("-n must be >= 0, --users >= 1, --hours >= 0")

    rnd = random.Random(a.seed)
    names = [t for t, _ in TYPES]
    weights = [w for _, w in TYPES]
    start_ms = int(a.start.timestamp() * 1000)
    step_ms = a.hours * 3600 * 1000 / max(a.events, 1)
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

    out = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8")
    try:
        lines = []
        for i in range(a.events):
            ms = start_ms + int(i * step_ms + rnd.random() * step_ms)  # i-th slot: stays non-decreasing
            t = epoch + datetime.timedelta(milliseconds=ms)
            event_type = rnd.choices(names, weights)[0]
            user = int(a.users * rnd.random() ** 3)  # skewed: low ids are the busy users
            amount = 0.0
            if event_type in ("add_to_cart", "purchase"):
                amount = round(rnd.uniform(2, 250), 2)
            event = {
                "ts": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z",
                "event_type": event_type,
                "user_id": f"u-{user}",
                "country": rnd.choices(COUNTRIES, COUNTRY_WEIGHTS)[0],
                "amount": amount,
                "latency_ms": int(rnd.lognormvariate(3.5, 0.6)),
            }
            lines.append(json.dumps(event, separators=(",", ":")))
            if len(lines) == 10000:
                out.write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            out.write("\n".join(lines) + "\n")
    except BrokenPipeError:  # e.g. `| head`
        sys.stderr.close()
    finally:
        if out is not sys.stdout:
            out.close()


if __name__ == "__main__":
    main()
