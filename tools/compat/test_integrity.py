#!/usr/bin/env python3
"""Data-integrity and resource tests with real clients against `strata serve` (run as an
unprivileged user, like test_clients.py): ordered appends under pipelined acks=all requests,
group commits that survive a shrinking group, bounded memory under unread pipelined fetches.
Ends with 'integrity: N passed, N failed'."""
import json
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_clients import admin_create, run_suite  # noqa: E402


def _produce_ordered(srv, topic, idempotent):
    """One producer, 1,000 messages of 500 KB to one partition of a `sync` topic, acks=all,
    five requests in flight: every message must land at the offset of its send order."""
    from confluent_kafka import Producer, Consumer, TopicPartition
    admin_create(srv.bootstrap, topic, 1, {"flush.mode": "sync", "max.message.bytes": str(2 << 20)})
    conf = {"bootstrap.servers": srv.bootstrap, "acks": "all", "linger.ms": 0, "batch.size": 600_000,
            "message.max.bytes": 2 << 20, "max.in.flight.requests.per.connection": 5, "enable.idempotence": idempotent,
            "queue.buffering.max.kbytes": 2_000_000}
    p = Producer(conf)
    pad = "x" * 500_000
    n = 1000
    for i in range(n):
        while True:
            try:
                p.produce(topic, value=json.dumps({"seq": i, "pad": pad}), partition=0)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    assert p.flush(300) == 0, "unflushed messages"
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "order-check-" + topic, "enable.auto.commit": False,
                  "fetch.max.bytes": 64 << 20, "max.partition.fetch.bytes": 4 << 20})
    c.assign([TopicPartition(topic, 0, 0)])
    seen = []
    deadline = time.time() + 120
    while len(seen) < n and time.time() < deadline:
        m = c.poll(1)
        if m is None or m.error():
            continue
        seen.append((m.offset(), json.loads(m.value())["seq"]))
    c.close()
    assert len(seen) == n, "consumed %d of %d" % (len(seen), n)
    wrong = [(o, s) for o, s in seen if o != s]
    assert not wrong, "%d of %d messages stored out of order, first: %s" % (len(wrong), n, wrong[:3])


def test_pipelined_acks_all_appends_stay_in_order(srv):
    _produce_ordered(srv, "ordered", idempotent=False)


def test_pipelined_idempotent_appends_stay_in_order(srv):
    _produce_ordered(srv, "ordered-idem", idempotent=True)


def _consume_group(srv, topic, group, stop, counter, lock, extra=None):
    from confluent_kafka import Consumer
    conf = {"bootstrap.servers": srv.bootstrap, "group.id": group, "auto.offset.reset": "earliest",
            "enable.auto.commit": True, "auto.commit.interval.ms": 200, "session.timeout.ms": 6000}
    conf.update(extra or {})
    c = Consumer(conf)
    c.subscribe([topic])
    while not stop.is_set():
        m = c.poll(0.2)
        if m is not None and not m.error():
            with lock:
                counter[0] += 1
    c.close()  # commits what was consumed, then leaves


def _committed(srv, topic, group, partitions):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": group})
    got = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=20)
    c.close()
    return {tp.partition: tp.offset for tp in got}


def _fill(srv, topic, partitions, n, create=True):
    from confluent_kafka import Producer
    if create:
        admin_create(srv.bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": srv.bootstrap, "linger.ms": 5})
    for i in range(n):
        p.produce(topic, key=str(i), value=json.dumps({"i": i}))
        if i % 1000 == 0:
            p.poll(0)
    assert p.flush(60) == 0


def _end_offsets(srv, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "probe"})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    c.close()
    return ends


def test_group_of_two_auto_commit_close_keeps_its_commits(srv):
    topic, group, partitions, n = "shrink2", "g2", 4, 20000
    admin_create(srv.bootstrap, topic, partitions)
    stop, lock, counter = threading.Event(), threading.Lock(), [0]
    threads = [threading.Thread(target=_consume_group, args=(srv, topic, group, stop, counter, lock)) for _ in range(2)]
    for t in threads:
        t.start()
    # Both members are in the group (a generation of two) before the records arrive, so both
    # consume, and both close at once: the second close's commit meets a rebalance in progress.
    time.sleep(6)
    _fill(srv, topic, partitions, n, create=False)
    deadline = time.time() + 90
    while time.time() < deadline:
        with lock:
            if counter[0] >= n:
                break
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(60)
    assert counter[0] >= n, "consumed %d of %d" % (counter[0], n)
    committed = _committed(srv, topic, group, partitions)
    ends = _end_offsets(srv, topic, partitions)
    assert committed == ends, "committed %s, log ends %s" % (committed, ends)


def test_group_shrinking_from_three_to_one_keeps_commits(srv):
    topic, group, partitions, n = "shrink3", "g3", 6, 30000
    _fill(srv, topic, partitions, n)
    lock, counter = threading.Lock(), [0]
    stops = [threading.Event() for _ in range(3)]
    threads = [threading.Thread(target=_consume_group, args=(srv, topic, group, stops[i], counter, lock)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(6)
    # Two members leave while the group keeps consuming and committing.
    for i in (0, 1):
        stops[i].set()
        threads[i].join(60)
        time.sleep(2)
    deadline = time.time() + 120
    while time.time() < deadline:
        with lock:
            if counter[0] >= n:
                break
        time.sleep(0.2)
    stops[2].set()
    threads[2].join(60)
    committed = _committed(srv, topic, group, partitions)
    ends = _end_offsets(srv, topic, partitions)
    assert committed == ends, "committed %s, log ends %s (consumed %d)" % (committed, ends, counter[0])
    # A restarted consumer of the group re-reads nothing.
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": group, "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    extra = 0
    t0 = time.time()
    while time.time() - t0 < 8:
        m = c.poll(0.5)
        if m is not None and not m.error():
            extra += 1
    c.close()
    assert extra == 0, "a restarted member re-read %d records" % extra


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _fetch_frame(topic, correlation, max_bytes=1 << 20, partition_max=256 << 20):
    client = b"unread"
    body = struct.pack(">iiiib", -1, 0, 0, max_bytes, 0)  # replica, max_wait 0, min_bytes 0, max_bytes, isolation
    body += struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic.encode()
    body += struct.pack(">i", 1) + struct.pack(">iqqi", 0, 0, -1, partition_max)
    msg = struct.pack(">hhih", 1, 5, correlation, len(client)) + client + body
    return struct.pack(">i", len(msg)) + msg


def test_unread_pipelined_fetches_stay_bounded(srv):
    """Fetch honours max_bytes, and clients that never read their sockets cannot grow the broker:
    8 connections each pipeline 300 Fetches (1 MiB max_bytes, 256 MiB partition limit) of a
    64 MiB partition and never read. Bound: 200 MiB of growth over the whole test."""
    from confluent_kafka import Producer
    admin_create(srv.bootstrap, "big", 1, {"flush.mode": "os", "max.message.bytes": str(2 << 20)})
    p = Producer({"bootstrap.servers": srv.bootstrap, "linger.ms": 20, "batch.size": 1 << 20, "message.max.bytes": 2 << 20})
    for i in range(64):
        p.produce("big", value=json.dumps({"i": i, "pad": "y" * (1 << 20)}), partition=0)
        p.poll(0)
    assert p.flush(60) == 0
    # One Fetch with max_bytes 1 MiB gets about 1 MiB (one batch at least), not the partition limit.
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(_fetch_frame("big", 1))
    size = struct.unpack(">i", s.recv(4, socket.MSG_WAITALL))[0]
    s.close()
    assert size < (3 << 20), "a 1 MiB Fetch returned %d bytes" % size
    time.sleep(1)
    before = _rss_kb(srv.proc.pid)
    conns = []
    for c in range(8):
        s = socket.create_connection(("127.0.0.1", srv.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        s.setblocking(False)
        data = b"".join(_fetch_frame("big", i, max_bytes=1 << 20) for i in range(300))
        sent = 0
        t0 = time.time()
        while sent < len(data) and time.time() - t0 < 5:
            try:
                sent += s.send(data[sent:])
            except BlockingIOError:
                time.sleep(0.05)  # the broker stopped reading: that is the back-pressure
        conns.append(s)
    time.sleep(5)
    grown_mb = (_rss_kb(srv.proc.pid) - before) / 1024
    for s in conns:
        s.close()
    assert srv.alive()
    print("  unread fetches: broker RSS grew %.0f MiB (bound 200)" % grown_mb, flush=True)
    assert grown_mb < 200, "broker grew %.0f MiB under unread fetches" % grown_mb


def _java_hash_partition(group, partitions=50):
    h = 0
    data = group.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (h * 31 + int.from_bytes(data[i:i + 2], "big")) & 0xFFFFFFFF
    if h >= 2**31:
        h -= 2**32
    return (0 if h == -2**31 else abs(h)) % partitions


def test_commits_appear_in_consumer_offsets_as_kafka_writes_them(srv):
    """Lag monitors (Burrow) read __consumer_offsets: every commit is there, in Kafka's key and
    value schemas, in the partition Kafka picks for the group; the topic is internal (never
    auto-created, not producible)."""
    from confluent_kafka import Consumer, Producer, TopicPartition, KafkaException
    from confluent_kafka.admin import AdminClient
    _fill(srv, "lagged", 2, 100)
    group = "burrow-watched"
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition("lagged", 0, 17), TopicPartition("lagged", 1, 4)], asynchronous=False)
    c.close()
    md = AdminClient({"bootstrap.servers": srv.bootstrap}).list_topics(timeout=10)
    assert "__consumer_offsets" in md.topics and len(md.topics["__consumer_offsets"].partitions) == 50
    partition = _java_hash_partition(group)
    r = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "reader", "enable.auto.commit": False})
    r.assign([TopicPartition("__consumer_offsets", partition, 0)])
    seen = {}
    t0 = time.time()
    while len(seen) < 2 and time.time() - t0 < 20:
        m = r.poll(0.5)
        if m is None or m.error():
            continue
        k, v = m.key(), m.value()
        version = struct.unpack(">h", k[:2])[0]
        assert version in (0, 1), version
        i = 2
        glen = struct.unpack(">h", k[i:i + 2])[0]; g = k[i + 2:i + 2 + glen].decode(); i += 2 + glen
        tlen = struct.unpack(">h", k[i:i + 2])[0]; t = k[i + 2:i + 2 + tlen].decode(); i += 2 + tlen
        p = struct.unpack(">i", k[i:i + 4])[0]
        vversion, offset = struct.unpack(">hq", v[:10])
        assert vversion == 3
        seen[(g, t, p)] = offset
    r.close()
    assert seen == {(group, "lagged", 0): 17, (group, "lagged", 1): 4}, seen
    # Clients cannot write the internal topic.
    p = Producer({"bootstrap.servers": srv.bootstrap, "message.send.max.retries": 0})
    errors = []
    p.produce("__consumer_offsets", value=b"x", partition=0, on_delivery=lambda err, msg: errors.append(err))
    p.flush(10)
    assert errors and errors[0] is not None, "a client wrote to __consumer_offsets"


TESTS = [test_pipelined_acks_all_appends_stay_in_order, test_pipelined_idempotent_appends_stay_in_order,
         test_group_of_two_auto_commit_close_keeps_its_commits, test_group_shrinking_from_three_to_one_keeps_commits,
         test_unread_pipelined_fetches_stay_bounded, test_commits_appear_in_consumer_offsets_as_kafka_writes_them]


def main():
    run_suite("integrity", TESTS, sys.argv)


if __name__ == "__main__":
    main()
