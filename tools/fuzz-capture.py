#!/usr/bin/env python3
"""Captures the seed corpora of the fuzz targets (docs/fuzzing.md) from real Kafka clients.

Starts `strata serve` (STRATA_BIN, default .build/debug/strata) behind a recording TCP proxy,
advertised at the proxy's address so that every connection goes through it, and drives kcat,
confluent-kafka, kafka-python and aiokafka through produce (plain, keyed, with headers, gzip /
snappy / lz4 / zstd, idempotent), fetch, metadata, consumer groups (join / sync / heartbeat /
commit / leave), list offsets, create / delete topics, describe configs, delete records. Writes:

  Tests/FuzzCorpus/kafka-request/  every distinct request frame, size prefix stripped
  Tests/FuzzCorpus/batch-append/   the record batches of the Produce requests
  Tests/FuzzCorpus/record-decode/  those, and the batches the broker returned in Fetch responses

The Python clients have gzip only (no snappy / lz4 / zstd modules), so they produce to and
consume from their own topic, fz-py.

Frames that differ only in correlation id are one; at most PER_KIND files per API key and
version. Usage: python3 tools/fuzz-capture.py [--out DIR]  (replaces the three folders).
"""
import argparse
import asyncio
import hashlib
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATA = os.environ.get("STRATA_BIN", os.path.join(ROOT, ".build", "debug", "strata"))
PER_KIND = 12          # files per (API key, version) in kafka-request
MAX_FILE = 64 * 1024   # larger frames and batches are left out (the corpus stays small)

API_NAMES = {0: "produce", 1: "fetch", 2: "list-offsets", 3: "metadata", 8: "offset-commit", 9: "offset-fetch",
             10: "find-coordinator", 11: "join-group", 12: "heartbeat", 13: "leave-group", 14: "sync-group",
             15: "describe-groups", 16: "list-groups", 18: "api-versions", 19: "create-topics", 20: "delete-topics",
             21: "delete-records", 22: "init-producer-id", 24: "add-partitions-to-txn", 25: "add-offsets-to-txn",
             26: "end-txn", 28: "txn-offset-commit", 32: "describe-configs", 68: "consumer-group-heartbeat",
             69: "consumer-group-describe"}


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = []     # (api, version, frame bytes without the size prefix)
        self.responses = []    # (api, version, response bytes without the size prefix)

    def request(self, frame):
        if len(frame) >= 8:
            api, version = struct.unpack(">hh", frame[:4])
            with self.lock:
                self.requests.append((api, version, frame))
            return api, version, struct.unpack(">i", frame[4:8])[0]
        return None

    def response(self, api, version, frame):
        with self.lock:
            self.responses.append((api, version, frame))


class Proxy:
    """Forwards 127.0.0.1:<port> to the broker, recording each request and Fetch response."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.target = None
        self.stopped = False

    def start(self, target_port):
        self.target = target_port
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            pending = {}
            threading.Thread(target=self._pipe, args=(client, server, True, pending), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False, pending), daemon=True).start()

    @staticmethod
    def _read_exact(sock, n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf

    def _pipe(self, src, dst, is_request, pending):
        try:
            while True:
                head = self._read_exact(src, 4)
                if head is None:
                    break
                body = self._read_exact(src, struct.unpack(">i", head)[0])
                if body is None:
                    break
                if is_request:
                    key = self.recorder.request(body)
                    if key:
                        pending[key[2]] = (key[0], key[1])
                else:
                    corr = struct.unpack(">i", body[:4])[0]
                    api = pending.pop(corr, None)
                    if api and api[0] == 1:
                        self.recorder.response(api[0], api[1], body[4:])
                dst.sendall(head + body)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# --- Batch extraction ---------------------------------------------------------------------

class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, n):
        if n < 0 or self.i + n > len(self.b):
            raise ValueError("truncated")
        v = self.b[self.i:self.i + n]
        self.i += n
        return v

    def i8(self): return struct.unpack(">b", self.take(1))[0]
    def i16(self): return struct.unpack(">h", self.take(2))[0]
    def i32(self): return struct.unpack(">i", self.take(4))[0]
    def i64(self): return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode("utf-8", "replace")

    def bytes_(self):
        n = self.i32()
        return None if n < 0 else self.take(n)

    def array(self, f):
        n = self.i32()
        return [f() for _ in range(max(n, 0))]


def split_batches(records):
    out, i = [], 0
    while records and i + 12 <= len(records):
        size = struct.unpack(">i", records[i + 8:i + 12])[0] + 12
        if size < 61 or i + size > len(records):
            break
        out.append(records[i:i + size])
        i += size
    return out


def produce_batches(version, frame):
    r = Reader(frame)
    r.take(8)
    r.string()                 # client id
    r.string()                 # transactional id (v3+)
    r.i16(); r.i32()
    batches = []
    for _topic in r.array(lambda: (r.string(), r.array(lambda: (r.i32(), r.bytes_())))):
        for _p, records in _topic[1]:
            batches += split_batches(records or b"")
    return batches


def fetch_batches(version, body):
    r = Reader(body)
    if version >= 1: r.i32()
    if version >= 7: r.i16(); r.i32()
    batches = []

    def partition():
        r.i32(); r.i16(); r.i64()
        if version >= 4:
            r.i64()
            if version >= 5: r.i64()
            r.array(lambda: (r.i64(), r.i64()))
        if version >= 11: r.i32()
        return r.bytes_()

    for _name, parts in r.array(lambda: (r.string(), r.array(partition))):
        for records in parts:
            batches += split_batches(records or b"")
    return batches


# --- Client sessions ----------------------------------------------------------------------

def run(cmd, stdin=None, timeout=60):
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout)
    if p.returncode != 0:
        sys.stderr.write("  (%s exited %d: %s)\n" % (cmd[0], p.returncode, p.stderr.decode(errors="replace")[-300:]))
    return p


def kcat_session(bootstrap):
    b = ["-b", bootstrap]
    run(["kcat", "-L"] + b)
    run(["kcat", "-L", "-J", "-t", "fz"] + b)
    lines = "".join("k%d:value %d {\"user\": \"u%d\", \"n\": %d}\n" % (i % 7, i, i % 5, i) for i in range(40)).encode()
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        run(["kcat", "-P", "-t", "fz", "-K:", "-H", "trace=abc", "-H", "h2=", "-X", "compression.codec=" + codec] + b, stdin=lines)
    run(["kcat", "-P", "-t", "fz-compact", "-K:", "-p", "0"] + b, stdin=b"a:1\nb:2\na:3\n")
    run(["kcat", "-P", "-t", "fz-append", "-p", "0", "-X", "compression.codec=lz4"] + b, stdin=b"x\ny\nz\n")
    run(["kcat", "-P", "-t", "fz", "-p", "1", "-X", "acks=0"] + b, stdin=b"acks zero\n")
    run(["kcat", "-P", "-t", "fz", "-p", "2", "-X", "acks=1", "-X", "linger.ms=50", "-X", "batch.num.messages=5"] + b,
        stdin=b"".join(b"batched %d\n" % i for i in range(20)))
    run(["kcat", "-C", "-t", "fz", "-o", "beginning", "-e", "-f", "%k %s %h\n"] + b)
    run(["kcat", "-C", "-t", "fz-append", "-o", "beginning", "-e"] + b)
    run(["kcat", "-C", "-t", "fz", "-p", "0", "-o", "s@0", "-e"] + b)     # offsets by timestamp
    run(["kcat", "-C", "-t", "fz", "-p", "0", "-o", "-3", "-e"] + b)
    run(["kcat", "-Q", "-t", "fz:0:0"] + b)
    run(["timeout", "12", "kcat", "-G", "kcat-group", "-e", "-X", "auto.offset.reset=earliest", "fz"] + b, timeout=30)


def confluent_session(bootstrap):
    from confluent_kafka import Consumer, Producer, TopicPartition, ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, NewPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic("fz-tmp", 2, 1, config={"retention.ms": "3600000", "segment.bytes": "1048576"}),
                                   NewTopic("fz-bad", 0, 1), NewTopic("fz-repl", 1, 3)], validate_only=False)
    for f in futures.values():
        try: f.result(10)
        except Exception: pass
    try: admin.create_topics([NewTopic("fz-validate", 1, 1)], validate_only=True)["fz-validate"].result(10)
    except Exception: pass
    for res in [ConfigResource("topic", "fz"), ConfigResource("topic", "fz-compact"), ConfigResource("broker", "1"),
                ConfigResource("topic", "nope")]:
        try: admin.describe_configs([res])[res].result(10)
        except Exception: pass

    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        p = Producer({"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 20, "enable.idempotence": codec == "zstd"})
        for i in range(60):
            p.produce("fz", key=("key-%d" % (i % 9)).encode() if i % 3 else None,
                      value=("{\"codec\": \"%s\", \"i\": %d, \"pad\": \"%s\"}" % (codec, i, "x" * (i % 40))).encode(),
                      headers=[("h", b"1"), ("empty", None)] if i % 4 == 0 else None, partition=i % 3)
        p.produce("fz-compact", key=b"k", value=None)   # tombstone
        p.flush(15)

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ck-group", "auto.offset.reset": "earliest",
                  "enable.auto.commit": False, "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                  "fetch.wait.max.ms": 100})
    c.subscribe(["fz", "fz-append"])
    got, deadline = 0, time.time() + 15
    while time.time() < deadline and got < 200:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got += 1
    time.sleep(1.2)   # heartbeats
    c.commit(asynchronous=False)
    c.committed([TopicPartition("fz", 0), TopicPartition("fz", 1)], timeout=10)
    c.get_watermark_offsets(TopicPartition("fz", 0), timeout=10)
    c.offsets_for_times([TopicPartition("fz", 0, 0), TopicPartition("fz", 1, int(time.time() * 1000))], timeout=10)
    c.close()

    try:
        admin.list_consumer_groups().result(10)
        admin.describe_consumer_groups(["ck-group", "missing-group"])["ck-group"].result(10)
        admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions("ck-group")])["ck-group"].result(10)
    except Exception:
        pass
    # Transactions: commit with offsets, abort; read_committed; KIP-848 consumer groups.
    tp = Producer({"bootstrap.servers": bootstrap, "transactional.id": "fz-txn", "linger.ms": 5})
    tp.init_transactions(15)
    for commit in (True, False):
        tp.begin_transaction()
        for i in range(10):
            tp.produce("fz", key=b"txn-%d" % i, value=b"{\"txn\": %d}" % i, partition=i % 3)
        tp.flush(10)
        tp.send_offsets_to_transaction([TopicPartition("fz-append", 0, 1)],
                                       Consumer({"bootstrap.servers": bootstrap, "group.id": "txn-group"}).consumer_group_metadata(), 10)
        (tp.commit_transaction if commit else tp.abort_transaction)(10)
    rc = Consumer({"bootstrap.servers": bootstrap, "group.id": "rc-group", "auto.offset.reset": "earliest",
                   "isolation.level": "read_committed", "enable.auto.commit": False})
    rc.assign([TopicPartition("fz", 0, 0)])
    deadline = time.time() + 5
    while time.time() < deadline:
        rc.poll(0.3)
    rc.committed([TopicPartition("fz", 0)], timeout=10)
    rc.close()
    gc = Consumer({"bootstrap.servers": bootstrap, "group.id": "kip848-group", "group.protocol": "consumer",
                   "auto.offset.reset": "earliest", "enable.auto.commit": False})
    gc.subscribe(["fz"])
    deadline = time.time() + 8
    while time.time() < deadline:
        m = gc.poll(0.3)
        if m is not None and not m.error():
            gc.commit(asynchronous=False)
            break
    try: admin.describe_consumer_groups(["kip848-group"])["kip848-group"].result(10)
    except Exception: pass
    gc.close()

    try: admin.delete_records([TopicPartition("fz-tmp", 0, 0)])
    except Exception: pass
    time.sleep(0.5)
    for f in admin.delete_topics(["fz-tmp", "never-existed"]).values():
        try: f.result(10)
        except Exception: pass


def kafka_python_session(bootstrap):
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import ConfigResource, ConfigResourceType, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try: admin.create_topics([NewTopic("fz-kp", 2, 1, topic_configs={"cleanup.policy": "delete"})])
    except Exception: pass
    try: admin.create_topics([NewTopic("fz-py", 3, 1)])
    except Exception: pass
    try: admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "fz")])
    except Exception: pass
    for codec in [None, "gzip"]:
        p = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, linger_ms=10, acks="all")
        for i in range(30):
            p.send("fz-py", key=b"kp-%d" % (i % 4), value=b"kafka-python %d" % i, headers=[("src", b"kp")], partition=i % 3)
        p.flush(10)
        p.close()
    c = KafkaConsumer("fz-py", bootstrap_servers=bootstrap, group_id="kp-group", auto_offset_reset="earliest",
                      enable_auto_commit=False, consumer_timeout_ms=4000, session_timeout_ms=6000, heartbeat_interval_ms=500)
    n = sum(1 for _ in c)
    c.commit()
    c.end_offsets([TopicPartition("fz-py", 0)])
    c.beginning_offsets([TopicPartition("fz-py", 0)])
    c.offsets_for_times({TopicPartition("fz-py", 0): 0})
    c.close()
    try:
        admin.list_consumer_groups()
        admin.describe_consumer_groups(["kp-group"])
        admin.list_consumer_group_offsets("kp-group")
    except Exception:
        pass
    try: admin.delete_topics(["fz-kp"])
    except Exception: pass
    admin.close()


def aiokafka_session(bootstrap):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    async def main():
        for codec in [None, "gzip"]:
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type=codec, enable_idempotence=codec is None)
            await p.start()
            for i in range(20):
                await p.send("fz-py", key=b"aio-%d" % (i % 3), value=b"aiokafka %d" % i, headers=[("a", b"b")], partition=i % 3)
            await p.send_and_wait("fz-compact", key=b"aio", value=b"v")
            await p.stop()
        c = AIOKafkaConsumer("fz-py", bootstrap_servers=bootstrap, group_id="aio-group", auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=6000, heartbeat_interval_ms=500)
        await c.start()
        try:
            await asyncio.wait_for(c.getmany(timeout_ms=3000), 10)
            await asyncio.sleep(1.2)
            await c.commit()
        finally:
            await c.stop()

    asyncio.run(main())


# --- Writing the corpora -------------------------------------------------------------------

def write_corpus(out, recorder):
    dirs = {k: os.path.join(out, k) for k in ["kafka-request", "batch-append", "record-decode"]}
    for d in dirs.values():
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
    seen, per_kind, counts = set(), {}, {k: 0 for k in dirs}

    def put(kind, name, data):
        digest = hashlib.sha1(data).hexdigest()
        if (kind, digest) in seen or len(data) > MAX_FILE:
            return
        seen.add((kind, digest))
        with open(os.path.join(dirs[kind], "%s-%s" % (name, digest[:12])), "wb") as f:
            f.write(data)
        counts[kind] += 1

    def codec(batch):
        return ["none", "gzip", "snappy", "lz4", "zstd"][struct.unpack(">h", batch[21:23])[0] & 7] if len(batch) >= 23 else "x"

    for api, version, frame in recorder.requests:
        normal = frame[:4] + b"\0\0\0\0" + frame[8:]    # correlation ids do not make a frame new
        kind = (api, version)
        digest = hashlib.sha1(normal).hexdigest()
        if (("req", digest) not in seen) and per_kind.get(kind, 0) < PER_KIND:
            seen.add(("req", digest))
            per_kind[kind] = per_kind.get(kind, 0) + 1
            put("kafka-request", "%s-v%d" % (API_NAMES.get(api, "api%d" % api), version), normal)
        if api == 0:
            try:
                for b in produce_batches(version, frame):
                    put("batch-append", "produce-" + codec(b), b)
                    put("record-decode", "produce-" + codec(b), b)
            except ValueError:
                pass
    for api, version, body in recorder.responses:
        try:
            for b in fetch_batches(version, body):
                put("record-decode", "fetched-" + codec(b), b)
        except ValueError:
            pass
    return counts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "Tests", "FuzzCorpus"))
    args = ap.parse_args()
    recorder = Recorder()
    proxy = Proxy(recorder)
    data = tempfile.mkdtemp(prefix="strata-capture-")
    serve = subprocess.Popen([STRATA, "serve", "--data", data, "--listen", "127.0.0.1:0",
                              "--advertised", "127.0.0.1:%d" % proxy.port], stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in serve.stderr:
            m = re.search(r"Kafka listener on 127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        if not port:
            raise SystemExit("strata serve did not start")
        threading.Thread(target=lambda: [None for _ in serve.stderr], daemon=True).start()
        proxy.start(port)
        bootstrap = "127.0.0.1:%d" % proxy.port
        # The topics every fuzz harness broker starts with (Fuzz/KafkaRequest).
        run(["kcat", "-L", "-b", bootstrap])
        from confluent_kafka.admin import AdminClient, NewTopic
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for f in admin.create_topics([NewTopic("fz", 3, 1), NewTopic("fz-compact", 1, 1, config={"cleanup.policy": "compact"}),
                                      NewTopic("fz-append", 1, 1, config={"message.timestamp.type": "LogAppendTime",
                                                                          "compression.type": "zstd"}),
                                      NewTopic("fz-py", 3, 1)]).values():
            f.result(10)
        for name, session in [("kcat", kcat_session), ("confluent-kafka", confluent_session),
                              ("kafka-python", kafka_python_session), ("aiokafka", aiokafka_session)]:
            print("capturing %s ..." % name, flush=True)
            try:
                session(bootstrap)
            except Exception as e:   # a client that fails still leaves what it sent
                print("  %s failed: %r" % (name, e), flush=True)
        time.sleep(0.5)
    finally:
        serve.terminate()
        serve.wait(30)
        proxy.stopped = True
        proxy.sock.close()
        shutil.rmtree(data, ignore_errors=True)
    counts = write_corpus(args.out, recorder)
    print("captured %d requests, %d fetch responses; wrote %s" % (len(recorder.requests), len(recorder.responses),
                                                                 ", ".join("%s: %d" % kv for kv in counts.items())))


if __name__ == "__main__":
    main()
