#!/usr/bin/env python3
"""Old message formats against `strata serve`: kafka-python pinned to broker versions that predate
RecordBatch v2, so it speaks what Sarama/kafka-go clients of that era speak.

  api_version=(0, 10)    Produce v2 / Fetch v2 with magic 1 messages, ListOffsets v0, Metadata v1,
                         group APIs v0, OffsetCommit v2
  api_version=(0, 10, 1) Fetch v3 (response max_bytes), ListOffsets v1
  api_version=(0, 9)     Produce v1 / Fetch v1 with magic 0 messages (no timestamps)

Standalone (its own server helper): starts the debug build (STRATA_BIN overrides) on a fresh data
directory and a free port per test. Ends with 'legacy: N passed, N failed'; exits non-zero on a
failure.
"""
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRATA = os.environ.get("STRATA_BIN", os.path.join(ROOT, ".build", "debug", "strata"))


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_clients  # noqa: E402


class Server(test_clients.Server):
    """test_clients' server (as nobody from a relative directory when run as root), usable as a
    context manager."""

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.cleanup()



def produce(server, api_version, topic, records, **config):
    """Sends (key, value, timestamp_ms) records to partition 0; returns their offsets."""
    producer = KafkaProducer(bootstrap_servers=server.bootstrap, api_version=api_version, acks=1,
                             linger_ms=20, **config)
    try:
        futures = [producer.send(topic, key=k, value=v, partition=0, timestamp_ms=ts) for k, v, ts in records]
        producer.flush(timeout=30)
        return [f.get(timeout=30).offset for f in futures]
    finally:
        producer.close(timeout=10)


def consume(server, api_version, topic, count, start=None, **config):
    """Reads `count` messages of partition 0 from the beginning (ListOffsets) or from `start`."""
    consumer = KafkaConsumer(bootstrap_servers=server.bootstrap, api_version=api_version,
                             enable_auto_commit=False, consumer_timeout_ms=15000, **config)
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        if start is None:
            consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
        out = []
        for message in consumer:
            out.append(message)
            if len(out) >= count:
                break
        return out
    finally:
        consumer.close()


def records(n, base_ts, prefix):
    return [(("%s-k%d" % (prefix, i)).encode() if i % 5 else None, ("%s-value-%d" % (prefix, i)).encode() * (1 + i % 3),
             base_ts + i) for i in range(n)]


def check_round_trip(sent, got, offsets, magic0=False):
    assert [m.offset for m in got] == offsets, ([m.offset for m in got], offsets)
    assert [(m.key, m.value) for m in got] == [(k, v) for k, v, _ in sent], "keys/values differ"
    if magic0:
        assert all(m.timestamp in (-1, None) for m in got), [m.timestamp for m in got][:5]
    else:
        assert [m.timestamp for m in got] == [ts for _, _, ts in sent], ([m.timestamp for m in got][:5], sent[0][2])


def test_v010_magic1_plain_and_gzip():
    """(0, 10): Produce v2 magic 1, uncompressed then gzip; Fetch v2 and ListOffsets v0 read them back."""
    with Server() as s:
        sent = records(60, 1_700_000_000_000, "plain")
        offsets = produce(s, (0, 10), "legacy-v010", sent)
        assert offsets == list(range(60)), offsets
        zipped = records(60, 1_700_000_100_000, "gzip")
        offsets2 = produce(s, (0, 10), "legacy-v010", zipped, compression_type="gzip")
        assert offsets2 == list(range(60, 120)), offsets2
        got = consume(s, (0, 10), "legacy-v010", 120)
        check_round_trip(sent + zipped, got, list(range(120)))
        # A small max_partition_fetch_bytes still makes progress message by message.
        got = consume(s, (0, 10), "legacy-v010", 10, start=55, max_partition_fetch_bytes=64)
        check_round_trip((sent + zipped)[55:65], got, list(range(55, 65)))


def test_v0101_fetch_v3():
    """(0, 10, 1): Fetch v3 with a response max_bytes, ListOffsets v1."""
    with Server() as s:
        sent = records(40, 1_700_000_200_000, "v3")
        produce(s, (0, 10), "legacy-v3", sent, compression_type="gzip")
        got = consume(s, (0, 10, 1), "legacy-v3", 40, fetch_max_bytes=200)
        check_round_trip(sent, got, list(range(40)))


def test_v09_magic0():
    """(0, 9): Produce v1 / Fetch v1 with magic 0: no timestamps (Kafka stores NO_TIMESTAMP)."""
    with Server() as s:
        sent = records(30, 0, "m0")
        offsets = produce(s, (0, 9), "legacy-v09", [(k, v, None) for k, v, _ in sent])
        assert offsets == list(range(30)), offsets
        got = consume(s, (0, 9), "legacy-v09", 30)
        check_round_trip(sent, got, list(range(30)), magic0=True)
        # Read with magic 1 (Fetch v2): the up-converted records carry timestamp -1.
        got = consume(s, (0, 10), "legacy-v09", 30)
        check_round_trip(sent, got, list(range(30)), magic0=True)


def test_v010_offsets_and_group():
    """(0, 10): end offsets via ListOffsets v0, and a group consumer (JoinGroup/SyncGroup v0,
    OffsetCommit v2, OffsetFetch v1) that resumes from its commit."""
    with Server() as s:
        sent = records(20, 1_700_000_300_000, "grp")
        produce(s, (0, 10), "legacy-grp", sent)
        consumer = KafkaConsumer(bootstrap_servers=s.bootstrap, api_version=(0, 10), enable_auto_commit=False,
                                 consumer_timeout_ms=15000)
        try:
            tp = TopicPartition("legacy-grp", 0)
            assert consumer.end_offsets([tp]) == {tp: 20}, consumer.end_offsets([tp])
            assert consumer.beginning_offsets([tp]) == {tp: 0}, consumer.beginning_offsets([tp])
        finally:
            consumer.close()

        def group_read(n):
            c = KafkaConsumer("legacy-grp", bootstrap_servers=s.bootstrap, api_version=(0, 10), group_id="old-group",
                              auto_offset_reset="earliest", enable_auto_commit=False, consumer_timeout_ms=20000)
            try:
                out = []
                for m in c:
                    out.append(m)
                    if len(out) >= n:
                        break
                c.commit()
                return out
            finally:
                c.close()

        first = group_read(12)
        assert [m.offset for m in first] == list(range(12)), [m.offset for m in first]
        produce(s, (0, 10), "legacy-grp", records(5, 1_700_000_400_000, "more"))
        rest = group_read(13)
        assert [m.offset for m in rest] == list(range(12, 25)), [m.offset for m in rest]


TESTS = [test_v010_magic1_plain_and_gzip, test_v0101_fetch_v3, test_v09_magic0, test_v010_offsets_and_group]


def main():
    if not os.path.exists(STRATA):
        print("no strata binary at %s (swift build first, or set STRATA_BIN)" % STRATA)
        return 2
    passed = failed = 0
    for test in TESTS:
        started = time.time()
        try:
            test()
            passed += 1
            print("PASS %s (%.1fs)" % (test.__name__, time.time() - started))
        except Exception:
            failed += 1
            print("FAIL %s (%.1fs)" % (test.__name__, time.time() - started))
            traceback.print_exc()
        sys.stdout.flush()
    print("legacy: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
