#!/usr/bin/env python3
"""Operations against `strata serve` (run as an unprivileged user, like test_clients.py): /metrics
scraped during a real produce/consume workload and parsed with prometheus_client's parser,
/healthz and /readyz (false while a partition is offline), and `strata groups` describe /
reset-offsets / delete against groups of real confluent-kafka consumers.
Ends with 'operations: N passed, N failed'."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_clients import STRATA, Server, admin_create, run_suite  # noqa: E402


def scrape(srv):
    """{(name, frozenset(labels)): value} of every sample in /metrics, parsed by prometheus_client."""
    from prometheus_client.parser import text_string_to_metric_families
    status, body = srv.http_get("/metrics")
    assert status == 200, (status, body[:200])
    samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def poll_all(c, n, seconds=60):
    """Up to n messages (partition, offset) from consumer c."""
    out = []
    deadline = time.time() + seconds
    while len(out) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append((m.partition(), m.offset()))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def strata(srv, *args, check=True):
    """Runs the strata CLI as the server's user (so files it writes stay the server's)."""
    r = subprocess.run(srv.command([STRATA] + list(args)), capture_output=True, text=True, timeout=120, cwd=srv.workdir)
    if check:
        assert r.returncode == 0, "strata %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr[-500:])
    return r


def describe_json(srv, group, *where):
    r = strata(srv, "groups", "describe", group, "--format", "json", *where)
    return {(row["topic"], row["partition"]): row for row in map(json.loads, r.stdout.splitlines())}


def produce(srv, topic, records, partition=None):
    """records: [(value, timestamp_ms or None)]."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": srv.bootstrap, "acks": "all", "linger.ms": 5})
    errors = []
    for v, ts in records:
        kwargs = {"value": v, "on_delivery": lambda e, m: e and errors.append(e)}
        if partition is not None:
            kwargs["partition"] = partition
        if ts is not None:
            kwargs["timestamp"] = ts
        p.produce(topic, **kwargs)
        p.poll(0)
    assert p.flush(30) == 0 and not errors, errors[:3]


def test_metrics_match_the_workload(srv):
    from confluent_kafka import Consumer
    status, body = srv.http_get("/healthz")
    assert status == 200, (status, body)
    status, body = srv.http_get("/readyz")
    assert status == 200 and json.loads(body)["ready"] is True, (status, body)
    admin_create(srv.bootstrap, "om", 3)
    # Explicit partitions: librdkafka's sticky partitioner may put every keyless record in one or
    # two partitions, and a partition the group never read has no committed offset and no lag.
    for part in range(3):
        produce(srv, "om", [(json.dumps({"i": i}), None) for i in range(1000)], partition=part)
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "om-g", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    c.subscribe(["om"])
    got = poll_all(c, 3000)
    assert len(got) == 3000, len(got)
    c.commit(asynchronous=False)
    c.close()
    m = scrape(srv)
    assert value(m, "strata_topic_records_in_total", topic="om") == 3000, value(m, "strata_topic_records_in_total", topic="om")
    assert value(m, "strata_topic_bytes_in_total", topic="om") > 3000 * 7
    # Consumers fetch each record once here; offsets delivered can only be more (refetches).
    assert value(m, "strata_topic_records_out_total", topic="om") >= 3000
    assert sum(value(m, "strata_partition_log_end_offset", topic="om", partition=str(p)) for p in range(3)) == 3000
    assert value(m, "strata_kafka_requests_total", api="produce") >= 1
    assert value(m, "strata_kafka_request_duration_seconds_count", api="fetch") >= 1
    assert value(m, "strata_consumer_group_lag_sum", group="om-g") == 0
    assert value(m, "process_resident_memory_bytes") > 1 << 20
    assert value(m, "strata_partitions", state="offline") == 0
    # 100 more records in partition 0, stamped a minute ago: the group is 100 records and about
    # 60 seconds behind there, and caught up elsewhere.
    minute_ago = int(time.time() * 1000) - 60_000
    produce(srv, "om", [(json.dumps({"late": i}), minute_ago) for i in range(100)], partition=0)
    m = scrape(srv)
    assert value(m, "strata_consumer_group_lag", group="om-g", topic="om", partition="0") == 100
    lag_s = value(m, "strata_consumer_group_lag_seconds", group="om-g", topic="om", partition="0")
    assert 59 <= lag_s < 120, lag_s
    assert value(m, "strata_consumer_group_lag", group="om-g", topic="om", partition="1") == 0
    assert value(m, "strata_consumer_group_lag_seconds", group="om-g", topic="om", partition="1") == 0
    assert value(m, "strata_topic_records_in_total", topic="om") == 3100
    # The CLI through the server and the admin API agree with the scrape.
    rows = describe_json(srv, "om-g", "--bootstrap", srv.bootstrap)
    assert rows[("om", 0)]["lag"] == 100 and 59 <= rows[("om", 0)]["lag_seconds"] < 120, rows[("om", 0)]
    status, body = srv.http_get("/v1/groups/om-g")
    assert status == 200 and {(r["topic"], r["partition"]): r["lag"] for r in json.loads(body)["partitions"]}[("om", 0)] == 100, body


def test_readyz_reports_an_offline_partition(srv):
    admin_create(srv.bootstrap, "ro", 2)
    produce(srv, "ro", [(json.dumps({"i": i}), None) for i in range(10)], partition=1)
    assert srv.stop() == 0
    logs = os.path.join(srv.data, "logs", "ro-1")
    segment = sorted(f for f in os.listdir(logs) if f.endswith(".log"))[0]
    os.chmod(os.path.join(logs, segment), 0)
    again = Server(data=srv.data)
    again.workdir = srv.workdir
    try:
        again.start()
        status, body = again.http_get("/readyz")
        assert status == 503, (status, body)
        problems = json.loads(body)["problems"]
        assert any("ro-1" in p for p in problems), problems
        m = scrape(again)
        assert value(m, "strata_partition_offline", topic="ro", partition="1") == 1
        assert value(m, "strata_partitions", state="offline") == 1
        status, _ = again.http_get("/healthz")
        assert status == 200
    finally:
        again.stop()
        os.chmod(os.path.join(logs, segment), 0o644)


def test_groups_cli_with_real_consumers(srv):
    from confluent_kafka import Consumer, TopicPartition
    admin_create(srv.bootstrap, "gc", 2)
    base = (int(time.time()) - 86_400) * 1000  # a day ago, whole second
    produce(srv, "gc", [(json.dumps({"i": i}), base + i * 1000) for i in range(100)], partition=0)
    produce(srv, "gc", [(json.dumps({"j": i}), None) for i in range(20)], partition=1)
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "gc-g", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest", "client.id": "gc-client"})
    c.subscribe(["gc"])
    assert len(poll_all(c, 120)) == 120
    c.commit(asynchronous=False)
    bs = ("--bootstrap", srv.bootstrap)
    try:
        r = strata(srv, "groups", "describe", "gc-g", *bs)
        assert "Stable" in r.stdout and "gc-client" in r.stdout, r.stdout
        rows = describe_json(srv, "gc-g", *bs)
        assert rows[("gc", 0)]["committed"] == 100 and rows[("gc", 0)]["lag"] == 0 and rows[("gc", 0)]["client_id"] == "gc-client", rows
        # Kafka refuses resets and deletes while the group has members; so does Strata.
        r = strata(srv, "groups", "reset-offsets", "gc-g", "--topic", "gc", "--to-earliest", *bs, check=False)
        assert r.returncode != 0 and "member" in r.stderr, r.stderr
        r = strata(srv, "groups", "delete", "gc-g", *bs, check=False)
        assert r.returncode != 0 and "member" in r.stderr, r.stderr
    finally:
        c.close()
    listed = strata(srv, "groups", "list", "--format", "json", *bs).stdout
    assert {"group": "gc-g", "state": "Empty", "members": 0} in map(json.loads, listed.splitlines()), listed
    # --to-datetime: the first record at or after base + 50 s is offset 50 in partition 0; in
    # partition 1 every record is newer, so its first offset.
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base // 1000 + 50))
    r = strata(srv, "groups", "reset-offsets", "gc-g", "--topic", "gc", "--to-datetime", when, "--dry-run", *bs)
    assert describe_json(srv, "gc-g", *bs)[("gc", 0)]["committed"] == 100, "a dry run committed"
    strata(srv, "groups", "reset-offsets", "gc-g", "--topic", "gc", "--to-datetime", when, *bs)
    rows = describe_json(srv, "gc-g", *bs)
    assert rows[("gc", 0)]["committed"] == 50 and rows[("gc", 0)]["lag"] == 50, rows
    expected = time.time() - (base / 1000 + 50)
    assert abs(rows[("gc", 0)]["lag_seconds"] - expected) < 30, (rows[("gc", 0)], expected)
    assert rows[("gc", 1)]["committed"] == 0 and rows[("gc", 1)]["lag"] == 20, rows
    strata(srv, "groups", "reset-offsets", "gc-g", "--topic", "gc", "--shift-by=-10", *bs)
    assert describe_json(srv, "gc-g", *bs)[("gc", 0)]["committed"] == 40
    # A consumer of the group resumes where the reset put it.
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "gc-g", "enable.auto.commit": False})
    c.subscribe(["gc"])
    first = {}
    deadline = time.time() + 60
    while len(first) < 2 and time.time() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            first.setdefault(msg.partition(), msg.offset())
    c.close()
    assert first == {0: 40, 1: 0}, first  # partition 1 was at 0: a shift stays within the log
    strata(srv, "groups", "reset-offsets", "gc-g", "--topic", "gc", "--to-latest", *bs)
    assert describe_json(srv, "gc-g", *bs)[("gc", 0)]["lag"] == 0
    # On the data directory, with the server stopped: describe, reset and delete.
    assert srv.stop() == 0
    data = ("--data", srv.data)
    strata(srv, "groups", "reset-offsets", "gc-g", "--topic", "gc", "--to-earliest", *data)
    rows = describe_json(srv, "gc-g", *data)
    assert rows[("gc", 0)]["committed"] == 0 and rows[("gc", 0)]["lag"] == 100, rows
    strata(srv, "groups", "delete", "gc-g", *data)
    r = strata(srv, "groups", "describe", "gc-g", *data, check=False)
    assert r.returncode != 0 and "no group" in r.stderr, r.stderr


TESTS = [test_metrics_match_the_workload, test_readyz_reports_an_offline_partition, test_groups_cli_with_real_consumers]


if __name__ == "__main__":
    run_suite("operations", TESTS, sys.argv)
