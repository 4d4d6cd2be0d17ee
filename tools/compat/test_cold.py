#!/usr/bin/env python3
"""The cold tier as users meet it, against `strata serve` run as an unprivileged user from a
relative directory: segments converted by the broker's cold worker (cold.after.ms) while clients
read, and by `strata tier` with the server stopped (also killed with SIGKILL mid-conversion);
then every record read back byte-identical to what confluent-kafka produced (key, value,
headers, timestamp, offset) through kcat, confluent-kafka (read_uncommitted and read_committed)
and `strata consume`, at every offset; time lookups (offsets_for_times) equal to the hot log's;
retention over cold segments; describe showing hot and cold bytes. Ends with 'cold: N passed,
N failed'."""
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_clients import STRATA, Server, admin_create, run_suite  # noqa: E402
from test_export import adversarial_records, produce, strata  # noqa: E402


# Batches well under the small test segments' max.message.bytes (capped by segment.bytes).
SMALL_BATCHES = {"batch.size": 12000}


def generated(n, partitions, base_ms, seed):
    """Shared-generator events, plus nested objects, arrays, unicode and escapes in some."""
    gen = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gen-events.py")
    lines = subprocess.run([sys.executable, gen, "-n", str(n), "--seed", str(seed)], capture_output=True, check=True).stdout.splitlines()
    rnd = random.Random(seed)
    out = []
    for i, line in enumerate(lines):
        doc = json.loads(line)
        if i % 7 == 0:
            doc["geo"] = {"city": rnd.choice(["Zürich", "東京", "São Paulo", "a\"quoted\"\\city"]), "lat": rnd.uniform(-90, 90)}
            doc["items"] = [{"sku": "s-%d" % rnd.randrange(100), "qty": rnd.randrange(1, 5)} for _ in range(rnd.randrange(0, 4))]
            line = json.dumps(doc, ensure_ascii=i % 2 == 0).encode()
        headers = [("source", b"gen"), ("n", None)] if i % 10 == 0 else None
        key = doc["user_id"].encode() if i % 5 else None
        out.append((key, line, headers, base_ms + i * 1000 + rnd.randrange(-1500, 1500), i % partitions))
    return out


def cold_files(srv, topic):
    return sorted(glob.glob(os.path.join(srv.data, "logs", topic + "-*", "*.cold")))


def hot_closed(srv, topic):
    """Closed hot segments left (every partition's newest segment is active)."""
    n = 0
    for d in glob.glob(os.path.join(srv.data, "logs", topic + "-*")):
        n += max(0, len(glob.glob(os.path.join(d, "*.log"))) - 1)
    return n


def wait_until(predicate, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def consume_confluent(srv, topic, isolation):
    """{(partition, offset): (key, value, headers, timestamp)} of every record, from the start."""
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "cold-%s-%d" % (isolation, random.randrange(1 << 30)),
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, "isolation.level": isolation,
                  "fetch.max.bytes": 1 << 20, "max.partition.fetch.bytes": 64 << 10})
    c.subscribe([topic])
    seen = {}
    idle = time.time()
    while time.time() - idle < 5:
        m = c.poll(0.5)
        if m is None:
            continue
        assert not m.error(), m.error()
        seen[(m.partition(), m.offset())] = (m.key(), m.value(), m.headers(), m.timestamp()[1])
        idle = time.time()
    c.close()
    return seen


def consume_kcat(srv, topic, partition):
    """[(offset, key, value, timestamp)] through kcat, lengths framing the bytes (binary-safe)."""
    r = subprocess.run(["kcat", "-b", srv.bootstrap, "-t", topic, "-p", str(partition), "-C", "-e", "-q", "-o", "beginning",
                        "-f", "%o %T %K %S\n%k%s\n"], capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr[-500:]
    out = []
    data = r.stdout
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        offset, ts, klen, vlen = (int(x) for x in data[i:nl].split(b" "))
        i = nl + 1
        key = data[i:i + klen] if klen >= 0 else None
        i += max(klen, 0)
        value = data[i:i + vlen] if vlen >= 0 else None
        i += max(vlen, 0)
        assert data[i:i + 1] == b"\n"
        i += 1
        out.append((offset, key, value, ts))
    return out


def check_exact(srv, topic, delivered, aborted_offsets, partitions):
    """Every reader gives back exactly the produced records."""
    def headers_of(h):
        return [(k, v) for k, v in h] if h else None
    for isolation in ("read_uncommitted", "read_committed"):
        got = consume_confluent(srv, topic, isolation)
        want = {pos: rec for pos, rec in delivered.items()}
        extra = set(got) - set(want)
        if isolation == "read_uncommitted":
            assert extra == set(aborted_offsets), ("unexpected records", sorted(extra - set(aborted_offsets))[:5])
        else:
            assert not extra, ("aborted or unexpected records under read_committed", sorted(extra)[:5])
        missing = set(want) - set(got)
        assert not missing, ("missing", isolation, sorted(missing)[:5], len(missing))
        for pos, (key, value, headers, ts, _) in want.items():
            g = got[pos]
            assert g[0] == key and g[1] == value, (isolation, pos, g[:2], (key, value))
            assert headers_of(g[2]) == headers_of(headers), (isolation, pos, g[2], headers)
            assert g[3] == ts, (isolation, pos, g[3], ts)
    for p in range(partitions):
        rows = consume_kcat(srv, topic, p)
        want = sorted((o, rec) for (pp, o), rec in delivered.items() if pp == p)
        rows = [r for r in rows if (p, r[0]) not in aborted_offsets]
        assert [r[0] for r in rows] == [o for o, _ in want], ("kcat offsets", p, len(rows), len(want))
        for (o, key, value, ts), (_, rec) in zip(rows, want):
            assert (key, value, ts) == (rec[0], rec[1], rec[3]), ("kcat", p, o)


def check_time_lookups(srv, topic, delivered, partitions):
    """offsets_for_times: the first offset whose timestamp is >= t, in each partition."""
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "cold-times"})
    per = {p: sorted((o, rec[3]) for (pp, o), rec in delivered.items() if pp == p) for p in range(partitions)}
    rnd = random.Random(5)
    for p, rows in per.items():
        lo, hi = min(t for _, t in rows), max(t for _, t in rows)
        for t in [lo - 1, hi + 1] + [rnd.randrange(lo, hi) for _ in range(25)]:
            want = next((o for o, ts in rows if ts >= t), None)
            got = c.offsets_for_times([TopicPartition(topic, p, t)], timeout=30)[0].offset
            # A transaction's records and markers (stamped when written) count as in Kafka: the
            # answer may be one of them, before the first produced record that matches.
            if want is None:
                assert got < 0 or (p, got) not in delivered, ("offsets_for_times", p, t, got)
            else:
                assert got == want or (0 <= got < want and (p, got) not in delivered), ("offsets_for_times", p, t, got, want)
    c.close()


def test_cold_worker_converts_under_readers(srv):
    """cold.after.ms=0 with a worker every 300 ms: segments turn cold while clients read."""
    topic, partitions = "coldev", 2
    admin_create(srv.bootstrap, topic, partitions, {"segment.bytes": "32768", "cold.after.ms": "0"})
    records = adversarial_records() + generated(6000, partitions, 1_759_276_800_000, seed=3)
    aborted = [(b"k-ab", b'{"aborted":true}', None, 1_759_276_800_500, 0), (None, b'{"aborted":2}', None, 1_759_276_800_501, 1)]
    delivered = produce(srv, topic, records, transactional_abort=aborted, config=SMALL_BATCHES)
    # Compressed batches from another producer: cold segments re-encode them, records unchanged.
    from confluent_kafka import Producer
    for codec in ("zstd", "lz4", "gzip", "snappy"):
        more = generated(400, partitions, 1_759_400_000_000, seed=len(codec))
        p = Producer(dict({"bootstrap.servers": srv.bootstrap, "compression.type": codec, "linger.ms": 20}, **SMALL_BATCHES))
        got = {}
        for rec in more:
            p.produce(topic, key=rec[0], value=rec[1], headers=rec[2], timestamp=rec[3], partition=rec[4],
                      on_delivery=lambda err, msg, rec=rec: got.__setitem__((msg.partition(), msg.offset()), rec) if not err else None)
        assert p.flush(60) == 0
        delivered.update(got)
    # Readers during the conversions.
    got = consume_confluent(srv, topic, "read_committed")
    assert set(delivered) <= set(got), "a reader during the conversion missed records"
    wait_until(lambda: hot_closed(srv, topic) == 0 and cold_files(srv, topic), "every closed segment to turn cold")
    assert len(cold_files(srv, topic)) >= 10, cold_files(srv, topic)
    aborted_offsets = set()
    got = consume_confluent(srv, topic, "read_uncommitted")
    aborted_offsets = set(got) - set(delivered)
    assert len(aborted_offsets) == 2, aborted_offsets
    check_exact(srv, topic, delivered, aborted_offsets, partitions)
    check_time_lookups(srv, topic, delivered, partitions)
    # strata consume from the data directory (read-only, next to the server), every value.
    r = subprocess.run(srv.command([STRATA, "consume", topic, "--from-beginning", "--print-meta", "--data", srv.data_arg]),
                       capture_output=True, timeout=300, cwd=srv.workdir)
    assert r.returncode == 0, r.stderr[-500:]
    rows = [json.loads(line.decode("utf-8", "replace")) for line in r.stdout.splitlines()]
    assert len(rows) == len(delivered), (len(rows), len(delivered))
    for row in rows:
        rec = delivered[(row["partition"], row["offset"])]
        assert row["timestamp"] == rec[3], row
        try:
            text = rec[1].decode("utf-8") if rec[1] is not None else None
        except UnicodeDecodeError:
            continue
        assert row["value"] == text or (text is not None and row["value"] == json.loads(text)), (row, text)
    # describe: hot and cold bytes.
    d = strata(srv, "topics", "describe", topic, "--data", srv.data_arg).stdout
    assert "tiers: hot" in d and "x smaller" in d, d
    # strata query over cold segments.
    q = strata(srv, "query", "--format", "jsonl", "--data", srv.data_arg, "SELECT count(*) AS n FROM %s" % topic)
    assert json.loads(q.stdout.splitlines()[0])["n"] == len(delivered), q.stdout


def _tier_server():
    return Server(args=["--config", "log.cold.check.interval.ms=0", "--config", "log.retention.check.interval.ms=200"])


def test_tier_command_killed_and_restarted(srv):
    """`strata tier` with the server stopped, killed with SIGKILL at random moments, then
    completed; the restarted server serves every record; retention then drops cold segments."""
    topic, partitions = "tiered", 3
    # retention.ms=-1: the generator's events are from 2025, older than the default 7 days.
    admin_create(srv.bootstrap, topic, partitions, {"segment.bytes": "65536", "retention.ms": "-1"})
    records = generated(30000, partitions, 1_759_276_800_000, seed=9)
    delivered = produce(srv, topic, records, config=SMALL_BATCHES)
    srv.stop()
    rnd = random.Random(1)
    for attempt in range(4):
        p = subprocess.Popen(srv.command([STRATA, "tier", topic, "--data", srv.data_arg]), cwd=srv.workdir,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rnd.uniform(0.05, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
    r = strata(srv, "tier", topic, "--data", srv.data_arg)
    assert "x smaller" in r.stdout or "nothing to convert" in r.stdout, r.stdout
    assert hot_closed(srv, topic) == 0, "closed hot segments left after strata tier"
    leftovers = [f for f in glob.glob(os.path.join(srv.data, "logs", topic + "-*", "*")) if f.endswith((".tmp", ".deleted"))]
    assert not leftovers, leftovers
    r = strata(srv, "inspect", "--data", srv.data_arg, topic)
    assert "(cold)" in r.stdout and "tiers: hot" in r.stdout, r.stdout[-800:]
    r = strata(srv, "inspect", "--verify", "--data", srv.data_arg, topic, check=False)
    assert r.returncode == 0, r.stdout[-800:] + r.stderr[-800:]
    srv.start()
    check_exact(srv, topic, delivered, set(), partitions)
    check_time_lookups(srv, topic, delivered, partitions)
    # Retention over cold segments (the retention worker runs every 200 ms on this server):
    # retention.bytes small enough to drop most of them, counted in cold bytes.
    from confluent_kafka.admin import AdminClient, ConfigResource
    a = AdminClient({"bootstrap.servers": srv.bootstrap})
    before = len(cold_files(srv, topic))
    resource = ConfigResource("topic", topic, set_config={"retention.ms": "-1", "retention.bytes": "20000"})
    a.alter_configs([resource])[resource].result(15)
    wait_until(lambda: len(cold_files(srv, topic)) < before, "retention to delete cold segments")
    got = consume_confluent(srv, topic, "read_committed")
    assert got and all(delivered[pos][1] == rec[1] for pos, rec in got.items()), "records changed after retention"


TESTS = [test_cold_worker_converts_under_readers, test_tier_command_killed_and_restarted]


if __name__ == "__main__":
    run_suite("cold", TESTS, sys.argv,
              server_for=lambda test: Server(args=["--config", "log.cold.check.interval.ms=300"])
              if test is test_cold_worker_converts_under_readers else _tier_server())
