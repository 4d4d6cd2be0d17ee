#!/usr/bin/env python3
"""Transactional produce against idempotent produce, and read_committed end-to-end latency, with
confluent-kafka against a running broker (Strata or Kafka), in alternating rounds of one run.

  tools/bench-transactions.py --bootstrap 127.0.0.1:9092 [--records 200000] [--per-txn 1000] [--rounds 3]

Throughput: N records of ~200 bytes to a 4-partition topic, acks=all, linger 5 ms; idempotent
(enable.idempotence) vs transactional (one transaction per --per-txn records). Latency: a producer
sends one record every 2 ms for --latency-seconds, read by a consumer that measures now minus the
record's create time; baseline read_uncommitted of an idempotent producer vs read_committed of a
transactional producer committing every record and every 10 records. Prints one line per
measurement and ratios."""
import argparse
import json
import statistics
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create(bootstrap, name, partitions=4):
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result arrives
    admin.create_topics([NewTopic(name, partitions)])[name].result(30)


def produce_rate(bootstrap, topic, n, per_txn):
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True,
            "queue.buffering.max.messages": 1_000_000, "batch.size": 1 << 20}
    if per_txn:
        conf["transactional.id"] = "bench-" + uuid.uuid4().hex
    p = Producer(conf)
    if per_txn:
        p.init_transactions(30)
    value = json.dumps({"event_type": "purchase", "user_id": "u-1", "pad": "x" * 150})
    start = time.perf_counter()
    i = 0
    while i < n:
        if per_txn:
            p.begin_transaction()
        end = min(n, i + (per_txn or n))
        while i < end:
            try:
                p.produce(topic, key=str(i % 1000), value=value)
                i += 1
            except BufferError:
                p.poll(0.01)
        if per_txn:
            p.commit_transaction(60)
    assert p.flush(120) == 0
    return n / (time.perf_counter() - start)


def latency(bootstrap, topic, transactional, seconds, per_txn=10):
    create(bootstrap, topic, 1)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "lat-" + uuid.uuid4().hex, "enable.auto.commit": False,
                  "isolation.level": "read_committed" if transactional else "read_uncommitted",
                  "fetch.wait.max.ms": 100, "fetch.min.bytes": 1})
    c.assign([TopicPartition(topic, 0, 0)])
    samples = []
    stop = threading.Event()

    def consume():
        while not stop.is_set():
            m = c.poll(0.1)
            if m is None or m.error() or m.value() == b"w":
                continue
            samples.append(time.time() * 1000 - m.timestamp()[1])

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(1)
    conf = {"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0, "enable.idempotence": True}
    if transactional:
        conf["transactional.id"] = "lat-" + uuid.uuid4().hex
    p = Producer(conf)
    if transactional:
        p.init_transactions(30)
        p.begin_transaction()
    # Warm-up (connection, producer id): not measured.
    p.produce(topic, value=b"w")
    if transactional:
        p.commit_transaction(30)
    p.flush(30)
    deadline = time.time() + seconds
    sent = 0
    while time.time() < deadline:
        if transactional and sent % per_txn == 0:
            p.begin_transaction()
        p.produce(topic, value=b"x", timestamp=int(time.time() * 1000))
        sent += 1
        if transactional and sent % per_txn == 0:
            p.commit_transaction(30)
        p.poll(0)
        time.sleep(0.002)
    if transactional and sent % per_txn != 0:
        p.commit_transaction(30)
    p.flush(30)
    time.sleep(1)
    stop.set()
    t.join()
    c.close()
    samples.sort()
    return samples


def pct(xs, q):
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--per-txn", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency-seconds", type=float, default=5)
    a = ap.parse_args()
    run = uuid.uuid4().hex[:6]
    for r in range(a.rounds):
        rates = {}
        for mode in (["idem", "txn"] if r % 2 == 0 else ["txn", "idem"]):
            topic = f"bench-{mode}-{run}-{r}"
            create(a.bootstrap, topic)
            rates[mode] = produce_rate(a.bootstrap, topic, a.records, a.per_txn if mode == "txn" else 0)
            print(f"round {r + 1} {mode}: {rates[mode]:,.0f} records/s", flush=True)
        print(f"round {r + 1} transactional/idempotent: {rates['txn'] / rates['idem']:.2f}", flush=True)
    for r in range(a.rounds):
        base = latency(a.bootstrap, f"lat-ru-{run}-{r}", False, a.latency_seconds)
        txn1 = latency(a.bootstrap, f"lat-rc1-{run}-{r}", True, a.latency_seconds, per_txn=1)
        txn = latency(a.bootstrap, f"lat-rc-{run}-{r}", True, a.latency_seconds)
        print(f"round {r + 1} e2e ms read_uncommitted (idempotent): p50 {pct(base, .5):.1f} p99 {pct(base, .99):.1f} n={len(base)}; "
              f"read_committed, a transaction per record: p50 {pct(txn1, .5):.1f} p99 {pct(txn1, .99):.1f} n={len(txn1)}; "
              f"per 10 records (2 ms apart): p50 {pct(txn, .5):.1f} p99 {pct(txn, .99):.1f} n={len(txn)}", flush=True)


if __name__ == "__main__":
    main()
