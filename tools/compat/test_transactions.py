#!/usr/bin/env python3
"""Transactions (KIP-98) and durable idempotent-producer state with real clients against `strata
serve` (run as an unprivileged user, like test_clients.py): confluent-kafka commits and aborts over
three partitions, read back read_committed and read_uncommitted, by `strata consume` and `strata
query`; an aiokafka consume-transform-produce loop with offsets in its transactions and one abort;
an older producer fenced by a newer instance with the same transactional.id; a broker SIGKILLed
with a transaction open, which its timeout aborts after the restart; an idempotent producer whose
acknowledgement is lost in a broker restart (SIGKILL, then SIGTERM) retrying through a TCP proxy
without duplicating a record. Every check is exact (contents, offsets, counts); the waits are
deadlines only. Ends with 'transactions: N passed, N failed'."""
import asyncio
import collections
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_clients import STRATA, admin_create, run_suite  # noqa: E402

FENCED = ("_FENCED", "PRODUCER_FENCED", "INVALID_PRODUCER_EPOCH")


# ---------------------------------------------------------------- helpers

def strata(srv, *args):
    """stdout of the strata CLI run as the server's user from its working directory (the data
    directory is relative to it), next to the running server; fails on a non-zero exit."""
    r = subprocess.run(srv.command([STRATA] + list(args)), capture_output=True, text=True, timeout=120, cwd=srv.workdir)
    assert r.returncode == 0, "strata %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr[-800:])
    return r.stdout


def strata_consume(srv, topic, uncommitted=False):
    """[(partition, offset, value)] of `strata consume TOPIC --from-beginning` over the data directory."""
    args = ["consume", topic, "--data", srv.data_arg, "--from-beginning", "--print-meta"]
    if uncommitted:
        args.append("--read-uncommitted")
    return [(o["partition"], o["offset"], o["value"]) for o in map(json.loads, strata(srv, *args).splitlines())]


def strata_count(srv, topic, uncommitted=False):
    """`select count(*)` of the topic by `strata query` over the data directory."""
    args = ["query", "select count(*) as n from \"%s\"" % topic, "--data", srv.data_arg, "--format", "jsonl"]
    if uncommitted:
        args.append("--read-uncommitted")
    rows = [json.loads(line) for line in strata(srv, *args).splitlines() if line.strip()]
    assert len(rows) == 1, "strata query returned %r" % rows
    return int(rows[0]["n"])


def end_offsets(bootstrap, topic, partitions, committed=False):
    """{partition: offset} from ListOffsets(latest): the high watermark, or with committed=True
    the last stable offset (isolation level read_committed)."""
    from confluent_kafka import TopicPartition, IsolationLevel
    from confluent_kafka.admin import AdminClient, OffsetSpec
    a = AdminClient({"bootstrap.servers": bootstrap})
    level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
    fs = a.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in range(partitions)},
                        isolation_level=level, request_timeout=20)
    return {tp.partition: f.result().offset for tp, f in fs.items()}


def read_all(bootstrap, topic, partitions, isolation, seconds=60):
    """{partition: [(offset, value)]} a confluent-kafka consumer with isolation.level `isolation`
    reads from the start of every partition until its fetch position reaches the high watermark
    (taken first) of each one: a partition-EOF event at that offset. A read_committed consumer
    gets there only when no open transaction holds the last stable offset below it."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING
    ends = end_offsets(bootstrap, topic, partitions)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "reader-" + uuid.uuid4().hex[:8],
                  "enable.auto.commit": False, "isolation.level": isolation, "enable.partition.eof": True})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = {p: [] for p in range(partitions)}
    eof = {}
    deadline = time.time() + seconds
    while time.time() < deadline and any(eof.get(p, -1) < ends[p] for p in range(partitions)):
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof[m.partition()] = m.offset()
                continue
            c.close()
            raise AssertionError("%s consumer of %s: %s" % (isolation, topic, m.error()))
        got[m.partition()].append((m.offset(), m.value().decode()))
    c.close()
    short = {p: (eof.get(p), ends[p]) for p in range(partitions) if eof.get(p, -1) < ends[p]}
    assert not short, "%s consumer of %s did not reach the high watermark in %d s: {partition: (EOF at, high watermark)} %s; " \
                      "last stable offsets %s; read %s" % (isolation, topic, seconds, short,
                                                           end_offsets(bootstrap, topic, partitions, committed=True), got)
    return got


def values(per_partition):
    return {p: [v for _, v in rows] for p, rows in per_partition.items()}


def metric(srv, name):
    status, body = srv.http_get("/metrics")
    assert status == 200, "/metrics: %d" % status
    m = re.search(r"^%s(?:\{\})? ([0-9.e+-]+)$" % re.escape(name), body, re.M)
    assert m, "no %s in /metrics" % name
    return float(m.group(1))


def restart(srv, sig, same_port=True):
    """Stops the server with `sig` (SIGKILL: a crash) and starts it again over the same data
    directory, as the same user, from the same working directory; on the same port by default."""
    port = srv.port
    srv.stop(sig)
    if same_port:
        srv.args = [a for a in srv.args] + ["--listen", "127.0.0.1:%d" % port]  # the last --listen wins
    srv.start()
    assert not same_port or srv.port == port, "restarted on port %d, not %d" % (srv.port, port)


def kafka_code(err):
    return err.name() if err is not None else None


# ---------------------------------------------------------------- 1. commits and aborts

def test_committed_and_aborted_transactions_read_committed(srv):
    """8 transactions of one confluent-kafka transactional producer over a 3-partition topic, 10
    records per partition each; transactions 1, 4 and 5 are flushed (their records are in the log,
    acknowledged) and then aborted. read_committed sees exactly the committed records, in their
    partition order; read_uncommitted all; each partition holds 80 records and 8 markers."""
    from confluent_kafka import Producer
    topic, partitions, per_partition = "txn", 3, 10
    admin_create(srv.bootstrap, topic, partitions)
    p = Producer({"bootstrap.servers": srv.bootstrap, "transactional.id": "txn-basic", "linger.ms": 5})
    p.init_transactions(30)
    aborted = {1, 4, 5}
    committed, everything = ({q: [] for q in range(partitions)} for _ in range(2))
    errors = []
    for t in range(8):
        p.begin_transaction()
        for i in range(per_partition):
            for q in range(partitions):
                v = "t%d-p%d-%d" % (t, q, i)
                p.produce(topic, value=v, partition=q, on_delivery=lambda e, m: e and errors.append(e))
                everything[q].append(v)
                if t not in aborted:
                    committed[q].append(v)
        if t in aborted:
            assert p.flush(30) == 0, "transaction %d: unflushed records" % t
            p.abort_transaction(30)
        else:
            p.commit_transaction(30)
    assert not errors, "delivery errors: %s" % errors[:3]
    n_committed = sum(len(v) for v in committed.values())

    ends = end_offsets(srv.bootstrap, topic, partitions)
    assert ends == {q: 8 * per_partition + 8 for q in range(partitions)}, "high watermarks %s" % ends
    lso = end_offsets(srv.bootstrap, topic, partitions, committed=True)
    assert lso == ends, "last stable offsets %s with no open transaction, high watermarks %s" % (lso, ends)

    rc = values(read_all(srv.bootstrap, topic, partitions, "read_committed"))
    assert rc == committed, "read_committed per partition differs: got %s, expected %s" % (
        {q: len(v) for q, v in rc.items()}, {q: len(v) for q, v in committed.items()})
    ru = values(read_all(srv.bootstrap, topic, partitions, "read_uncommitted"))
    assert ru == everything, "read_uncommitted per partition differs: got %s" % {q: len(v) for q, v in ru.items()}

    # The CLI over the data directory, next to the running server: committed by default.
    got = strata_consume(srv, topic)
    assert [v for _, _, v in got] == [v for q in range(partitions) for v in committed[q]], \
        "strata consume: %d records, first %s" % (len(got), got[:3])
    got = strata_consume(srv, topic, uncommitted=True)
    assert [v for _, _, v in got] == [v for q in range(partitions) for v in everything[q]], \
        "strata consume --read-uncommitted: %d records" % len(got)
    n = strata_count(srv, topic)
    assert n == n_committed, "strata query count(*) = %d, committed %d" % (n, n_committed)
    n = strata_count(srv, topic, uncommitted=True)
    assert n == 8 * per_partition * partitions, "strata query --read-uncommitted count(*) = %d" % n


# ---------------------------------------------------------------- 2. consume-transform-produce

def test_aiokafka_consume_transform_produce_exactly_once(srv):
    """aiokafka: 200 plain records in a 2-partition input topic; a read_committed consumer of group
    'ctp' (no auto commit) and a transactional producer move batches of at most 30 records to an
    output topic, with the batch's offsets sent in the same transaction. The third transaction
    raises after its records were acknowledged, so `producer.transaction()` aborts it and the
    consumer seeks back. Output read_committed: every input exactly once; read_uncommitted: plus the
    aborted batch; the group's committed offsets are the input's ends (200)."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    src, dst, group, n = "ctp-in", "ctp-out", "ctp", 200
    admin_create(srv.bootstrap, src, 2)
    admin_create(srv.bootstrap, dst, 2)
    p = Producer({"bootstrap.servers": srv.bootstrap, "linger.ms": 5})
    inputs = ["in-%03d" % i for i in range(n)]
    for i, v in enumerate(inputs):
        p.produce(src, value=v, partition=i % 2)
    assert p.flush(30) == 0

    def transform(v):
        return "out:" + v.upper()

    class Abort(Exception):
        pass

    stats = {"aborted": [], "batches": 0, "committed": 0}

    async def run():
        from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
        producer = AIOKafkaProducer(bootstrap_servers=srv.bootstrap, transactional_id="ctp-txn")
        consumer = AIOKafkaConsumer(src, bootstrap_servers=srv.bootstrap, group_id=group, isolation_level="read_committed",
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await producer.start()
        await consumer.start()
        try:
            deadline = time.time() + 120
            while stats["committed"] < n:
                assert time.time() < deadline, "moved %d of %d records in 120 s" % (stats["committed"], n)
                batch = await consumer.getmany(timeout_ms=1000, max_records=30)
                if not batch:
                    continue
                stats["batches"] += 1
                try:
                    async with producer.transaction():
                        sent = []
                        for tp, msgs in batch.items():
                            for m in msgs:
                                sent.append(await producer.send(dst, value=transform(m.value.decode()).encode()))
                        await asyncio.gather(*sent)  # acknowledged: in the output log
                        if stats["batches"] == 3:
                            raise Abort()
                        await producer.send_offsets_to_transaction({tp: msgs[-1].offset + 1 for tp, msgs in batch.items()}, group)
                except Abort:
                    stats["aborted"] += [transform(m.value.decode()) for msgs in batch.values() for m in msgs]
                    for tp, msgs in batch.items():
                        consumer.seek(tp, msgs[0].offset)
                    continue
                stats["committed"] += sum(len(msgs) for msgs in batch.values())
        finally:
            await consumer.stop()
            await producer.stop()

    asyncio.run(run())
    assert stats["aborted"], "no transaction was aborted (%d batches)" % stats["batches"]
    assert stats["committed"] == n, stats

    rc = [v for rows in values(read_all(srv.bootstrap, dst, 2, "read_committed")).values() for v in rows]
    dup = [v for v, k in collections.Counter(rc).items() if k > 1]
    assert not dup, "read_committed output has duplicates: %s" % dup[:5]
    assert sorted(rc) == sorted(transform(v) for v in inputs), \
        "read_committed output: %d records, expected %d; missing %s" % (len(rc), n, sorted(set(map(transform, inputs)) - set(rc))[:5])
    ru = [v for rows in values(read_all(srv.bootstrap, dst, 2, "read_uncommitted")).values() for v in rows]
    assert sorted(ru) == sorted(rc + stats["aborted"]), \
        "read_uncommitted output: %d records, expected %d committed + %d aborted" % (len(ru), len(rc), len(stats["aborted"]))

    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": group, "isolation.level": "read_committed"})
    got = {tp.partition: tp.offset for tp in c.committed([TopicPartition(src, 0), TopicPartition(src, 1)], timeout=20)}
    c.close()
    assert got == {0: n // 2, 1: n // 2}, "group %s committed %s, expected %s" % (group, got, {0: n // 2, 1: n // 2})


# ---------------------------------------------------------------- 3. fencing

def test_newer_instance_fences_the_older_one(srv):
    """Producer A (transactional.id 'fenced') opens a transaction and writes 5 acknowledged records;
    producer B with the same id calls init_transactions, which bumps the epoch and aborts A's open
    transaction. A's next record and commit fail with a fatal fenced error; the late record is not
    in the log. B commits 5 records: read_committed sees exactly B's; read_uncommitted A's 5 and
    B's 5 (the log: 5 + abort marker + 5 + commit marker)."""
    from confluent_kafka import Producer, KafkaException
    topic = "fence"
    admin_create(srv.bootstrap, topic, 1)
    conf = {"bootstrap.servers": srv.bootstrap, "transactional.id": "fenced", "linger.ms": 5, "log_level": 0}
    a = Producer(conf)
    a.init_transactions(30)
    a.begin_transaction()
    a_errors = []
    for i in range(5):
        a.produce(topic, value="a-%d" % i, partition=0, on_delivery=lambda e, m: a_errors.append(e))
    assert a.flush(30) == 0 and a_errors == [None] * 5, a_errors

    b = Producer(conf)
    b.init_transactions(30)

    late, seen = [], []
    final = None
    try:
        # confluent-kafka raises a fatal error from produce/flush as soon as it has one.
        a.produce(topic, value="a-late", partition=0, on_delivery=lambda e, m: late.append(e))
        a.flush(30)
    except (KafkaException, SystemError) as e:
        # (With a delivery callback to run, confluent-kafka wraps it in a SystemError.)
        e = e if isinstance(e, KafkaException) else e.__cause__
        assert isinstance(e, KafkaException), "produce/flush of a-late: %r" % e
        final = e.args[0]
        seen.append(("produce/flush of a-late", final))
    seen += [("delivery of a-late", e) for e in late if e is not None]
    try:
        a.commit_transaction(30)
        committed = True
    except KafkaException as e:
        committed = False
        final = e.args[0]
        seen.append(("commit_transaction", final))
    assert not committed, "the fenced producer committed (errors %s)" % seen
    if not final.fatal() and final.txn_requires_abort():
        # An abortable error first (INVALID_PRODUCER_EPOCH on Produce, KIP-588): the abort then
        # meets the fence.
        try:
            a.abort_transaction(30)
            final = None
        except KafkaException as e:
            final = e.args[0]
            seen.append(("abort_transaction", final))
        assert final is not None, "the fenced producer aborted its transaction without error (errors %s)" % seen
    assert final.fatal() and kafka_code(final) in FENCED, \
        "the fenced producer's last error is not a fatal fence: %s (fatal=%s); all: %s" % (final, final.fatal(), seen)
    print("  fenced producer saw: %s" % "; ".join("%s: %s" % (w, kafka_code(e)) for w, e in seen), flush=True)

    b.begin_transaction()
    b_errors = []
    for i in range(5):
        b.produce(topic, value="b-%d" % i, partition=0, on_delivery=lambda e, m: b_errors.append(e))
    b.commit_transaction(30)
    assert b_errors == [None] * 5, b_errors

    assert end_offsets(srv.bootstrap, topic, 1) == {0: 12}, end_offsets(srv.bootstrap, topic, 1)
    rc = read_all(srv.bootstrap, topic, 1, "read_committed")
    assert rc == {0: [(6 + i, "b-%d" % i) for i in range(5)]}, "read_committed: %s" % rc
    ru = read_all(srv.bootstrap, topic, 1, "read_uncommitted")
    assert ru == {0: [(i, "a-%d" % i) for i in range(5)] + [(6 + i, "b-%d" % i) for i in range(5)]}, "read_uncommitted: %s" % ru


# ---------------------------------------------------------------- 4. crash with a transaction open

def test_open_transaction_aborted_after_sigkill(srv):
    """Over 2 partitions: producer 2 (transaction.timeout.ms=5000) opens a transaction and writes 3
    acknowledged records o1 per partition; producer 1 commits 4 records c per partition; producer 2
    writes 3 more (o2) and never commits. The last stable offset is 0 on both partitions (o1 holds
    it). SIGKILL; restart on the same port and data directory. The open transaction's partitions
    were never stored (only decisions are), so at open no record covers it and it is aborted as a
    hanging transaction (the counters say 1 hanging, 0 timed out; its timeout would end it too):
    read_committed reaches the high watermark and sees exactly c at offsets 3..6;
    read_uncommitted sees o1, c, o2; producer 2 cannot commit."""
    from confluent_kafka import Producer, KafkaException
    topic = "crash"
    admin_create(srv.bootstrap, topic, 2)
    errors = []
    p2 = Producer({"bootstrap.servers": srv.bootstrap, "transactional.id": "left-open", "transaction.timeout.ms": 5000,
                   "linger.ms": 5, "log_level": 0})
    p2.init_transactions(30)
    p2.begin_transaction()
    for q in range(2):
        for i in range(3):
            p2.produce(topic, value="o1-p%d-%d" % (q, i), partition=q, on_delivery=lambda e, m: e and errors.append(e))
    assert p2.flush(30) == 0
    p1 = Producer({"bootstrap.servers": srv.bootstrap, "transactional.id": "committer", "linger.ms": 5, "log_level": 0})
    p1.init_transactions(30)
    p1.begin_transaction()
    for q in range(2):
        for i in range(4):
            p1.produce(topic, value="c-p%d-%d" % (q, i), partition=q, on_delivery=lambda e, m: e and errors.append(e))
    p1.commit_transaction(30)
    for q in range(2):
        for i in range(3):
            p2.produce(topic, value="o2-p%d-%d" % (q, i), partition=q, on_delivery=lambda e, m: e and errors.append(e))
    assert p2.flush(30) == 0
    assert not errors, errors
    assert end_offsets(srv.bootstrap, topic, 2) == {0: 11, 1: 11}, end_offsets(srv.bootstrap, topic, 2)
    lso = end_offsets(srv.bootstrap, topic, 2, committed=True)
    assert lso == {0: 0, 1: 0}, "before the kill: last stable offsets %s, expected 0 (the open transaction's first record)" % lso

    restart(srv, signal.SIGKILL)
    rc = read_all(srv.bootstrap, topic, 2, "read_committed", seconds=30)
    expected_c = {q: [(3 + i, "c-p%d-%d" % (q, i)) for i in range(4)] for q in range(2)}
    assert rc == expected_c, "read_committed after the restart: %s" % rc
    assert end_offsets(srv.bootstrap, topic, 2) == {0: 12, 1: 12}, "high watermarks %s (records + 2 markers)" % end_offsets(srv.bootstrap, topic, 2)
    ru = read_all(srv.bootstrap, topic, 2, "read_uncommitted")
    expected_all = {q: [(i, "o1-p%d-%d" % (q, i)) for i in range(3)] + expected_c[q] + [(8 + i, "o2-p%d-%d" % (q, i)) for i in range(3)]
                    for q in range(2)}
    assert ru == expected_all, "read_uncommitted after the restart: %s" % ru
    timed_out = metric(srv, "strata_transactions_timed_out_total")
    hanging = metric(srv, "strata_transactions_hanging_aborted_total")
    assert (timed_out, hanging) == (0, 2), "after the restart: %d transactions timed out, %d aborted as hanging (expected 0, and 1 per partition)" % (timed_out, hanging)

    got = strata_consume(srv, topic)
    assert got == [(q, o, v) for q in range(2) for o, v in expected_c[q]], "strata consume: %s" % got
    got = strata_consume(srv, topic, uncommitted=True)
    assert got == [(q, o, v) for q in range(2) for o, v in expected_all[q]], "strata consume --read-uncommitted: %s" % got
    assert strata_count(srv, topic) == 8

    try:
        p2.commit_transaction(30)
        committed = True
    except KafkaException as e:
        committed = False
        print("  producer 2's commit after the timeout: %s" % e.args[0], flush=True)
    assert not committed, "producer 2 committed a transaction the coordinator aborted"
    assert read_all(srv.bootstrap, topic, 2, "read_committed") == expected_c


# ---------------------------------------------------------------- 5. idempotent retry across a restart

def _read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def _shut(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _produce_batch(body):
    """(producer id, epoch, base sequence, record count) of the one record batch at the end of a
    Produce request frame (one partition), or None: the batch ends the frame, or precedes the three
    empty tagged-field sections of a flexible version."""
    for tail in (0, 3):
        end = len(body) - tail
        for i in range(8, end - 61):
            if body[i + 16] == 2 and struct.unpack(">i", body[i + 8:i + 12])[0] == end - i - 12:
                return struct.unpack(">qhii", body[i + 43:i + 61])
    return None


class ProduceResponseDropper:
    """A TCP proxy on 127.0.0.1:<port> in front of the broker (clients reach the broker only
    through it: the broker advertises the proxy). It reads the Kafka frames both ways, remembers
    each request's API key by correlation id, and at the first Produce response (API key 0) drops
    it, runs `on_drop` (which restarts the broker), then closes that client connection. Upstream
    connections go to `upstream()`, the broker's current port; new ones wait while `on_drop` runs."""

    def __init__(self, upstream, on_drop):
        self.upstream, self.on_drop = upstream, on_drop
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.ready = threading.Event()
        self.ready.set()
        self.dropped = None  # the batch of the request whose response was dropped (_produce_batch)
        self.retries = []  # the batches of the Produce requests sent after the drop
        self.fired = threading.Lock()
        self.done = threading.Event()
        self.error = None
        self.sockets = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client):
        self.sockets.append(client)
        self.ready.wait(120)
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream()), timeout=10)
            up.settimeout(None)
        except OSError:
            _shut(client)
            return
        self.sockets.append(up)
        api_keys = {}

        def requests():
            while True:
                head = _read_exact(client, 4)
                body = head and _read_exact(client, struct.unpack(">i", head)[0])
                if not body:
                    _shut(up)
                    return
                api_key, _version, correlation = struct.unpack(">hhi", body[:8])
                api_keys[correlation] = (api_key, _produce_batch(body) if api_key == 0 else None)
                if api_key == 0 and self.done.is_set():
                    self.retries.append(api_keys[correlation][1])
                try:
                    up.sendall(head + body)
                except OSError:
                    return  # the broker went away: the response side closes the client

        threading.Thread(target=requests, daemon=True).start()
        while True:
            head = _read_exact(up, 4)
            body = head and _read_exact(up, struct.unpack(">i", head)[0])
            if not body:
                break
            correlation = struct.unpack(">i", body[:4])[0]
            api_key, batch = api_keys.pop(correlation, (None, None))
            if api_key == 0 and self.fired.acquire(blocking=False):
                self.dropped = batch
                self.ready.clear()
                try:
                    self.on_drop()
                except Exception as e:  # reported by the test
                    self.error = e
                finally:
                    self.ready.set()
                    self.done.set()
                break
            try:
                client.sendall(head + body)
            except OSError:
                break
        _shut(client)
        _shut(up)

    def close(self):
        _shut(self.listener)
        for s in self.sockets:
            _shut(s)


def _idempotent_retry_across_restart(srv, sig):
    """An idempotent confluent-kafka producer (acks=all, long message timeout) sends 300 records to
    a 1-partition topic through the proxy; the first Produce response is dropped, the broker stopped
    with `sig` and restarted over the same data directory, and the client connection closed. The
    producer retries what it did not see acknowledged (same producer id, epoch and sequences); the
    restarted broker knows those sequences from its durable producer state, so the log holds each
    record exactly once, at the offset of its send order. Then 100 more records follow (the
    sequence goes on) and a fresh consumer and `strata consume` see 400 records at offsets 0..399."""
    from confluent_kafka import Producer
    topic, first, more = "idem", 300, 100
    restarts = []

    def on_drop():
        srv.stop(sig)
        restarts.append(srv.proc.returncode)
        srv.start()

    proxy = ProduceResponseDropper(lambda: srv.port, on_drop)
    try:
        # The broker tells clients to connect to the proxy.
        srv.stop()
        srv.args = list(srv.args) + ["--advertised", "127.0.0.1:%d" % proxy.port]
        srv.start()
        bootstrap = "127.0.0.1:%d" % proxy.port
        admin_create(bootstrap, topic, 1)
        delivered = {}
        errors = []

        def report(e, m):
            if e is not None:
                errors.append(e)
            else:
                delivered[m.value().decode()] = m.offset()

        p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 50,
                      "message.timeout.ms": 300000, "retries": 1000000, "retry.backoff.ms": 200,
                      "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 1000, "log_level": 0})
        sent = ["r-%03d" % i for i in range(first + more)]
        for v in sent[:first]:
            p.produce(topic, value=v, partition=0, on_delivery=report)
        p.poll(0)
        assert proxy.done.wait(120), "no Produce response passed the proxy within 120 s"
        assert proxy.error is None, "restarting the broker failed: %s" % proxy.error
        assert p.flush(120) == 0, "unflushed records after the restart"
        assert not errors, "delivery errors: %s" % errors[:3]
        for v in sent[first:]:
            p.produce(topic, value=v, partition=0, on_delivery=report)
        assert p.flush(60) == 0 and not errors, errors[:3]
        expected_stop = {signal.SIGKILL: -signal.SIGKILL}.get(sig, 0)
        assert restarts == [expected_stop], "broker exits: %s (expected one, %s)" % (restarts, expected_stop)
        # The producer sent the unacknowledged batch again: same producer id, epoch, sequence.
        assert proxy.dropped is not None, "the dropped response's request had no parseable record batch"
        assert proxy.retries and proxy.retries[0] == proxy.dropped, \
            "the first Produce after the restart carried %s, the dropped one %s (producer id, epoch, base sequence, count)" % (
                proxy.retries[:1], proxy.dropped)
        print("  dropped the response to batch (producer id %d, epoch %d, base sequence %d, %d records); "
              "retried identically after the restart; %d delivery reports without an offset" % (
                  proxy.dropped + (sum(1 for o in delivered.values() if o < 0),)), flush=True)

        got = read_all(bootstrap, topic, 1, "read_uncommitted")[0]
        dup = [v for v, k in collections.Counter(v for _, v in got).items() if k > 1]
        assert not dup, "%d records in the log twice after the retry, first %s; log has %d records for %d sent" % (
            len(dup), dup[:5], len(got), len(sent))
        assert got == list(enumerate(sent)), "log content: %d records, first differences %s" % (
            len(got), [(i, r) for i, r in enumerate(got) if i >= len(sent) or r != (i, sent[i])][:5])
        wrong = {v: o for v, o in delivered.items() if o >= 0 and o != sent.index(v)}
        assert len(delivered) == len(sent) and not wrong, "delivery reports: %d, with offsets not their log offsets: %s" % (
            len(delivered), list(wrong.items())[:5])
        assert strata_consume(srv, topic) == [(0, i, v) for i, v in enumerate(sent)], "strata consume differs"
        assert end_offsets(bootstrap, topic, 1) == {0: len(sent)}
    finally:
        proxy.close()


def test_idempotent_retry_across_sigkill_no_duplicate(srv):
    _idempotent_retry_across_restart(srv, signal.SIGKILL)


def test_idempotent_retry_across_clean_restart_no_duplicate(srv):
    _idempotent_retry_across_restart(srv, signal.SIGTERM)


TESTS = [test_committed_and_aborted_transactions_read_committed, test_aiokafka_consume_transform_produce_exactly_once,
         test_newer_instance_fences_the_older_one, test_open_transaction_aborted_after_sigkill,
         test_idempotent_retry_across_sigkill_no_duplicate, test_idempotent_retry_across_clean_restart_no_duplicate]


def main():
    run_suite("transactions", TESTS, sys.argv)


if __name__ == "__main__":
    main()
