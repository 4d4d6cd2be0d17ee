#!/usr/bin/env python3
"""Kafka client compatibility tests: unmodified kcat, confluent-kafka, kafka-python and aiokafka
against `strata serve` (debug build by default; STRATA_BIN overrides). Each test starts from a fresh
data directory on a free port: the server runs from a fresh temporary directory with `--data
strata-data` relative to it, and as nobody/nogroup when this script runs as root (see RunAs).
Ends with 'N passed, N failed' and exits non-zero on any failure.
"""
import asyncio
import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRATA = os.environ.get("STRATA_BIN", os.path.join(ROOT, ".build", "debug", "strata"))


def _traversable_by_others(path):
    """True when every directory from / down to path lets other users through (o+x)."""
    path = os.path.abspath(path)
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


class RunAs:
    """Who `strata serve` runs as. As root: the unprivileged nobody/nogroup through setpriv (or
    runuser), checked once by running `true` that way; otherwise, or when switching is impossible,
    the current user. STRATA_SERVE_USER=USER[:GROUP] picks another user as root."""

    def __init__(self):
        self.uid, self.gid = os.geteuid(), os.getegid()
        self.prefix = []
        self.name = self._name(self.uid)
        self.note = None
        if self.uid != 0:
            return
        import grp
        import pwd
        user, _, group = os.environ.get("STRATA_SERVE_USER", "nobody:nogroup").partition(":")
        try:
            pw = pwd.getpwnam(user)
        except KeyError:
            self.note = "no user %r on this machine" % user
            return
        gid = pw.pw_gid
        for g in ([group] if group else []) + ["nogroup", "nobody"]:
            try:
                gid = grp.getgrnam(g).gr_gid
                break
            except KeyError:
                continue
        candidates = []
        setpriv, runuser = shutil.which("setpriv"), shutil.which("runuser")
        if setpriv:
            candidates.append([setpriv, "--reuid=%d" % pw.pw_uid, "--regid=%d" % gid, "--clear-groups", "--"])
        if runuser:
            candidates.append([runuser, "-u", user, "-g", grp.getgrgid(gid).gr_name, "--"])
        if not candidates:
            self.note = "neither setpriv nor runuser is installed"
            return
        for prefix in candidates:
            try:
                r = subprocess.run(prefix + ["id", "-u"], capture_output=True, text=True, timeout=10, cwd="/")
            except (OSError, subprocess.SubprocessError) as e:
                self.note = "%s failed: %s" % (os.path.basename(prefix[0]), e)
                continue
            if r.returncode == 0 and r.stdout.strip() == str(pw.pw_uid):
                if os.path.exists(STRATA):
                    r = subprocess.run(prefix + [STRATA, "--help"], capture_output=True, text=True, timeout=60, cwd="/")
                    if r.returncode != 0:
                        self.note = "%s cannot run %s: %s" % (user, STRATA, (r.stderr or r.stdout).strip()[:200])
                        return
                self.uid, self.gid, self.prefix, self.name = pw.pw_uid, gid, prefix, user
                self.note = None
                return
            self.note = "%s failed: %s" % (os.path.basename(prefix[0]), (r.stderr or r.stdout).strip()[:200])

    @staticmethod
    def _name(uid):
        try:
            import pwd
            return pwd.getpwuid(uid).pw_name
        except (KeyError, ImportError):
            return str(uid)

    @property
    def switched(self):
        return bool(self.prefix)

    def describe(self):
        """One line saying which uid the server runs as (and why, when it could not switch)."""
        if self.switched:
            return "strata serve runs as uid %d (%s), gid %d, via %s" % (self.uid, self.name, self.gid, os.path.basename(self.prefix[0]))
        line = "strata serve runs as uid %d (%s), the current user" % (self.uid, self.name)
        if self.note:
            line += " -- cannot switch to an unprivileged user: " + self.note
        return line

    def chown(self, path):
        if self.switched:
            os.chown(path, self.uid, self.gid)


_RUN_AS = None


def run_as():
    global _RUN_AS
    if _RUN_AS is None:
        _RUN_AS = RunAs()
    return _RUN_AS


class Server:
    """A `strata serve` process on 127.0.0.1:<free port> over its own data directory.

    The server runs from a fresh temporary working directory (its cwd) with the data directory given
    relative to it (`--data strata-data`); as root it runs as nobody/nogroup (see RunAs) and both
    directories belong to that user. `data` is the absolute path of the data directory."""

    DATA = "strata-data"

    def __init__(self, data=None, args=()):
        self.runas = run_as()
        tmp = None
        if self.runas.switched and not _traversable_by_others(tempfile.gettempdir()):
            tmp = "/tmp"  # TMPDIR is not reachable by the unprivileged user
        self.workdir = tempfile.mkdtemp(prefix="strata-compat-", dir=tmp)
        self.runas.chown(self.workdir)
        if data is None:
            self.data_arg = self.DATA
            self.data = os.path.join(self.workdir, self.DATA)
            os.mkdir(self.data)
            self.runas.chown(self.data)
        else:
            self.data_arg = self.data = os.path.abspath(data)
        self.args = list(args)
        self.proc = None
        self.port = None
        self.http_port = None  # the /metrics, /healthz, /readyz listener
        self.output = []  # stderr lines before the listener came up (for error messages)
        self.tail = collections.deque(maxlen=40)  # the last stderr lines (for post-mortems)
        self.log_path = None  # when set, every stderr line is appended to this file

    def command(self, argv):
        """argv prefixed to run as the server's user."""
        return self.runas.prefix + list(argv)

    def start(self):
        env = dict(os.environ)
        if self.runas.switched:
            env["HOME"] = self.workdir
        self.output = []
        self.proc = subprocess.Popen(self.command([STRATA, "serve", "--data", self.data_arg, "--listen", "127.0.0.1:0",
                                                   "--http-listen", "127.0.0.1:0"] + self.args),
                                     cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                try:
                    rc = self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    rc = None
                raise RuntimeError("strata serve exited: rc=%s: %s" % (rc, "".join(self.output[-5:]).strip()))
            self.output.append(line)
            self.tail.append(line)
            m = re.search(r"HTTP listener on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.http_port = int(m.group(1))
            m = re.search(r"Kafka listener on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
                return self
        self.proc.kill()
        self.proc.wait(timeout=10)
        raise RuntimeError("strata serve did not start within 60 s: %s" % "".join(self.output[-5:]).strip())

    def _drain(self, proc):
        log = open(self.log_path, "a") if self.log_path else None
        try:
            if log:
                log.writelines(self.output)
            for line in proc.stderr:
                self.tail.append(line)
                if log:
                    log.write(line)
                    log.flush()
                if os.environ.get("STRATA_VERBOSE"):
                    sys.stderr.write("  [serve] " + line)
        finally:
            if log:
                log.close()

    def uid(self):
        """The real uid of the running server process (from /proc)."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
        return None

    def http_get(self, path):
        """(status, body) of GET path on the server's HTTP listener."""
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.http_port, path), timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    @property
    def bootstrap(self):
        return "127.0.0.1:%d" % self.port

    def stop(self, sig=signal.SIGINT):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode if self.proc else None

    def kill(self):
        return self.stop(signal.SIGKILL)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def events(n, seed=1):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        user = "u-%d" % rnd.randrange(40)
        out.append((user, json.dumps({"event_type": rnd.choice(["click", "page_view", "user_login"]), "user_id": user, "seq": i},
                                     separators=(",", ":"))))
    return out


def murmur2_partition(key, partitions):
    from kafka.partitioner.default import murmur2
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def expect_exact(consumed, produced, partitions, label):
    """consumed: [(partition, key, value)] in consumption order per partition."""
    assert len(consumed) == len(produced), "%s: consumed %d of %d" % (label, len(consumed), len(produced))
    per_partition = {}
    for p, k, v in consumed:
        assert murmur2_partition(k, partitions) == p, "%s: key %s in partition %d" % (label, k, p)
        per_partition.setdefault(p, []).append((k, v))
    expected = {}
    for k, v in produced:
        expected.setdefault(murmur2_partition(k, partitions), []).append((k, v))
    assert per_partition == expected, "%s: content or per-partition order differs" % label


def admin_create(bs, topic, partitions, configs=None):
    from confluent_kafka.admin import AdminClient, NewTopic
    a = AdminClient({"bootstrap.servers": bs})
    a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1, config=configs or {})])[topic].result(15)


def kcat(args, input_text=None, timeout=60):
    r = subprocess.run(["kcat"] + args, input=input_text, capture_output=True, text=True, timeout=timeout)
    return r


# ---------------------------------------------------------------- tests

def test_kcat_keyed_json(srv):
    admin_create(srv.bootstrap, "kc", 4)
    produced = events(2000)
    # librdkafka's default partitioner is consistent_random (CRC32); murmur2_random is the Java
    # client's, which Strata's own producer also uses.
    r = kcat(["-b", srv.bootstrap, "-t", "kc", "-P", "-K", "\t", "-X", "partitioner=murmur2_random"],
             "".join("%s\t%s\n" % kv for kv in produced))
    assert r.returncode == 0, r.stderr
    consumed = []
    for p in range(4):
        r = kcat(["-b", srv.bootstrap, "-t", "kc", "-p", str(p), "-C", "-e", "-q", "-f", "%k\t%s\n"])
        assert r.returncode == 0, r.stderr
        for line in r.stdout.splitlines():
            k, v = line.split("\t", 1)
            consumed.append((p, k, v))
    expect_exact(consumed, produced, 4, "kcat")


def test_kcat_compression(srv):
    produced = [v for _, v in events(500, seed=7)]
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        topic = "z-" + codec
        r = kcat(["-b", srv.bootstrap, "-t", topic, "-P", "-z", codec], "\n".join(produced) + "\n")
        assert r.returncode == 0, r.stderr
        r = kcat(["-b", srv.bootstrap, "-t", topic, "-C", "-e", "-q"])
        assert r.stdout.splitlines() == produced, "%s: consumed content differs" % codec
        # Strata itself reads librdkafka's compressed batches (read-only, next to the server).
        r = subprocess.run(srv.command([STRATA, "consume", topic, "--data", srv.data_arg, "--from-beginning"]), cwd=srv.workdir,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines() == produced, "%s: strata consume of librdkafka's batches differs" % codec


def test_confluent_kafka(srv):
    from confluent_kafka import Consumer, Producer, TopicPartition
    admin_create(srv.bootstrap, "ck", 3)
    produced = events(1500, seed=2)
    p = Producer({"bootstrap.servers": srv.bootstrap, "acks": "all", "enable.idempotence": True,
                  "partitioner": "murmur2_random"})
    errors = []
    for k, v in produced:
        p.produce("ck", key=k, value=v, on_delivery=lambda e, m: e and errors.append(e))
        p.poll(0)
    assert p.flush(30) == 0 and not errors, errors[:3]
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "ck-assign", "enable.auto.commit": False})
    c.assign([TopicPartition("ck", p, 0) for p in range(3)])
    consumed = poll_all(c, len(produced))
    c.close()
    expect_exact(consumed, produced, 3, "confluent-kafka")


def poll_all(c, n, seconds=60):
    out = []
    deadline = time.time() + seconds
    while len(out) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        out.append((m.partition(), m.key().decode(), m.value().decode()))
    return out


def test_kafka_python(srv):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    admin_create(srv.bootstrap, "kp", 2)
    produced = events(800, seed=3)
    p = KafkaProducer(bootstrap_servers=srv.bootstrap)  # idempotent by default in 3.x
    futures = [p.send("kp", key=k.encode(), value=v.encode()) for k, v in produced]
    p.flush()
    for f in futures:
        f.get(timeout=30)
    p.close()
    c = KafkaConsumer(bootstrap_servers=srv.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=8000)
    c.assign([TopicPartition("kp", 0), TopicPartition("kp", 1)])
    c.seek_to_beginning()
    consumed = [(m.partition, m.key.decode(), m.value.decode()) for m in c]
    c.close()
    expect_exact(consumed, produced, 2, "kafka-python")


def test_aiokafka(srv):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    admin_create(srv.bootstrap, "aio", 2)
    produced = events(400, seed=4)

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=srv.bootstrap)
        await p.start()
        try:
            for k, v in produced:
                await p.send("aio", key=k.encode(), value=v.encode())
            await p.flush()
        finally:
            await p.stop()
        c = AIOKafkaConsumer("aio", bootstrap_servers=srv.bootstrap, group_id="aio-g", auto_offset_reset="earliest")
        await c.start()
        got = []
        try:
            deadline = time.time() + 60
            while len(got) < len(produced) and time.time() < deadline:
                batch = await c.getmany(timeout_ms=500)
                for tp, msgs in batch.items():
                    got += [(tp.partition, m.key.decode(), m.value.decode()) for m in msgs]
            await c.commit()
        finally:
            await c.stop()
        return got

    consumed = asyncio.run(run())
    consumed.sort(key=lambda x: x[0])  # per-partition order is kept by the stable sort
    expect_exact(consumed, produced, 2, "aiokafka")


def test_group_of_two_rebalance_and_resume(srv):
    from confluent_kafka import Consumer, Producer
    admin_create(srv.bootstrap, "grp", 4)
    produced = events(1200, seed=5)

    def consumer(name):
        return Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "two", "client.id": name,
                         "auto.offset.reset": "earliest", "enable.auto.commit": False,
                         "session.timeout.ms": 6000, "heartbeat.interval.ms": 500})

    a, b = consumer("a"), consumer("b")
    a.subscribe(["grp"])
    b.subscribe(["grp"])
    # Let both members join and receive their share before any data exists, so no partition
    # moves between them while records are being delivered.
    deadline = time.time() + 60
    while time.time() < deadline:
        for c in (a, b):
            c.poll(0.1)
        sa, sb = {tp.partition for tp in a.assignment()}, {tp.partition for tp in b.assignment()}
        if sa and sb and not (sa & sb) and (sa | sb) == {0, 1, 2, 3}:
            break
    assert a.assignment() and b.assignment(), "both members got partitions"
    p = Producer({"bootstrap.servers": srv.bootstrap, "partitioner": "murmur2_random"})
    for k, v in produced[:800]:
        p.produce("grp", key=k, value=v)
    p.flush(30)
    seen = {"a": [], "b": []}
    deadline = time.time() + 60
    while len(seen["a"]) + len(seen["b"]) < 800 and time.time() < deadline:
        for name, c in (("a", a), ("b", b)):
            m = c.poll(0.2)
            if m is not None and not m.error():
                seen[name].append((m.partition(), m.offset()))
    assert len(seen["a"]) + len(seen["b"]) == 800, "consumed %d of 800" % (len(seen["a"]) + len(seen["b"]))
    pa = {p for p, _ in seen["a"]}
    pb = {p for p, _ in seen["b"]}
    assert pa and pb and not (pa & pb), "partitions split without overlap: a=%s b=%s" % (pa, pb)
    assert len(set(seen["a"]) | set(seen["b"])) == 800, "no record delivered twice"
    a.commit(asynchronous=False)
    b.commit(asynchronous=False)
    b.close()  # leaves the group: a takes over all four partitions
    deadline = time.time() + 60
    while len(a.assignment()) < 4 and time.time() < deadline:
        a.poll(0.2)
    assert len(a.assignment()) == 4, "after b left, a owns every partition"
    for k, v in produced[800:1000]:
        p.produce("grp", key=k, value=v)
    p.flush(30)
    more = []
    deadline = time.time() + 60
    while len(more) < 200 and time.time() < deadline:
        m = a.poll(0.2)
        if m is not None and not m.error():
            more.append(m.partition())
    assert len(more) == 200, "after the rebalance a got %d of 200" % len(more)
    assert set(more) == {murmur2_partition(k, 4) for k, _ in produced[800:1000]}, (sorted(set(more)), sorted({murmur2_partition(k, 4) for k, _ in produced[800:1000]}))
    a.commit(asynchronous=False)
    a.close()
    # Restart of the group: it resumes from the committed offsets (nothing old is redelivered).
    for k, v in produced[1000:]:
        p.produce("grp", key=k, value=v)
    p.flush(30)
    c = consumer("c")
    c.subscribe(["grp"])
    resumed = poll_all(c, 200, seconds=60)
    c.close()
    assert sorted(v for _, _, v in resumed) == sorted(v for _, v in produced[1000:]), "resumed exactly after the commits"


def test_consumer_group_protocol_kip848(srv):
    """KIP-848 (group.protocol=consumer): the broker assigns partitions through
    ConsumerGroupHeartbeat. Two members split a 4-partition topic 2/2 and consume every record
    exactly once; when one leaves, the other ends up with all four; a new member of the emptied
    group resumes from the committed offsets; the range assignor, ConsumerGroupDescribe
    (describe_consumer_groups) and ListGroups (list_consumer_groups) show the group."""
    from confluent_kafka import Consumer, ConsumerGroupType, Producer
    from confluent_kafka.admin import AdminClient
    admin_create(srv.bootstrap, "kip848", 4)
    produced = events(800, seed=11)
    everything = {0, 1, 2, 3}

    def consumer(name, group="kip848", **extra):
        # No session.timeout.ms / heartbeat.interval.ms / partition.assignment.strategy: the new
        # protocol refuses them (the broker owns those settings).
        conf = {"bootstrap.servers": srv.bootstrap, "group.id": group, "group.protocol": "consumer",
                "client.id": name, "auto.offset.reset": "earliest", "enable.auto.commit": False}
        conf.update(extra)
        return Consumer(conf)

    def owned(c):
        return {tp.partition for tp in c.assignment()}

    def wait_split(members, seconds=60):
        """Polls every member until their assignments are disjoint, cover every partition and
        each holds its equal share; returns [partitions per member]. Records polled meanwhile
        are dropped: call it while the topic is empty."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            for c in members:
                c.poll(0.1)
            sets = [owned(c) for c in members]
            if (all(len(s) == len(everything) // len(members) for s in sets) and set().union(*sets) == everything
                    and sum(len(s) for s in sets) == len(everything)):
                return sets
        return [owned(c) for c in members]

    def produce(records, topic="kip848"):
        p = Producer({"bootstrap.servers": srv.bootstrap, "partitioner": "murmur2_random"})
        errors = []
        for k, v in records:
            p.produce(topic, key=k, value=v, on_delivery=lambda e, m: e and errors.append(e))
            p.poll(0)
        assert p.flush(30) == 0 and not errors, errors[:3]

    def consume(members, n, seconds=60):
        """Polls members round-robin until n records arrived; {index: [(partition, offset, key, value)]}."""
        got = {i: [] for i in range(len(members))}
        deadline = time.time() + seconds
        while sum(len(g) for g in got.values()) < n and time.time() < deadline:
            for i, c in enumerate(members):
                # In batches: one record per poll would leave the other members waiting.
                for m in c.consume(500, 0.1):
                    if not m.error():
                        got[i].append((m.partition(), m.offset(), m.key().decode(), m.value().decode()))
        return got

    # 1. Two members split the partitions 2/2 (before any data exists, so nothing moves while
    #    records are delivered) and between them consume every record exactly once.
    a, b = consumer("a"), consumer("b")
    a.subscribe(["kip848"])
    b.subscribe(["kip848"])
    sa, sb = wait_split([a, b])
    assert len(sa) == 2 and len(sb) == 2 and not (sa & sb) and sa | sb == everything, "2/2 split: a=%s b=%s" % (sa, sb)
    produce(produced[:400])
    got = consume([a, b], 400)
    # Nothing beyond the 400 arrives (no record delivered twice).
    extra = consume([a, b], 1, seconds=2)
    assert not any(extra.values()), "a record arrived twice: %s" % extra
    pa, pb = {r[0] for r in got[0]}, {r[0] for r in got[1]}
    assert pa <= sa and pb <= sb, "each member consumed only its partitions: a=%s of %s, b=%s of %s" % (pa, sa, pb, sb)
    both = got[0] + got[1]
    assert len({(p, o) for p, o, _, _ in both}) == len(both), "no offset consumed twice"
    expect_exact([(p, k, v) for p, _, k, v in sorted(both, key=lambda r: (r[0], r[1]))], produced[:400], 4, "kip848 a+b")
    a.commit(asynchronous=False)
    b.commit(asynchronous=False)

    # 2. b leaves: a ends up with all four partitions and consumes what is produced next.
    b.close()
    deadline = time.time() + 30
    while owned(a) != everything and time.time() < deadline:
        a.poll(0.2)
    assert owned(a) == everything, "after b left, a owns every partition: %s" % owned(a)
    produce(produced[400:600])
    more = consume([a], 200)[0]
    expect_exact([(p, k, v) for p, _, k, v in sorted(more, key=lambda r: (r[0], r[1]))], produced[400:600], 4, "kip848 a alone")
    a.commit(asynchronous=False)
    a.close()

    # 3. The emptied group restarts: a new member resumes from the committed offsets.
    produce(produced[600:800])
    c = consumer("c")
    c.subscribe(["kip848"])
    resumed = consume([c], 200)[0]
    resumed += consume([c], 1, seconds=3)[0]  # nothing old follows
    assert sorted(r[3] for r in resumed) == sorted(v for _, v in produced[600:800]), \
        "resumed exactly after the commits: got %d records, %d of them new" % (
            len(resumed), len(set(r[3] for r in resumed) & set(v for _, v in produced[600:800])))
    c.commit(asynchronous=False)

    # 4. ConsumerGroupDescribe and ListGroups show the group (c is its only member).
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    desc = admin.describe_consumer_groups(["kip848"])["kip848"].result(15)
    assert desc.type == ConsumerGroupType.CONSUMER, desc.type
    assert len(desc.members) == 1 and desc.members[0].client_id == "c", [(m.member_id, m.client_id) for m in desc.members]
    assert {(tp.topic, tp.partition) for tp in desc.members[0].assignment.topic_partitions} == {("kip848", p) for p in everything}, \
        desc.members[0].assignment.topic_partitions
    assert desc.partition_assignor == "uniform", desc.partition_assignor
    listed = admin.list_consumer_groups().result(15)
    kinds = {g.group_id: g.type for g in listed.valid}
    # The group type comes with ListGroups v5.
    assert kinds.get("kip848") == ConsumerGroupType.CONSUMER, kinds
    assert not [g for g in listed.valid if g.group_id == "kip848"][0].is_simple_consumer_group, "listed as a simple group"
    c.close()

    # 5. The range assignor (group.remote.assignor=range) on another, still empty topic:
    #    contiguous ranges, and again every record exactly once.
    admin_create(srv.bootstrap, "kip848r", 4)
    r1, r2 = consumer("r1", "kip848-range", **{"group.remote.assignor": "range"}), \
        consumer("r2", "kip848-range", **{"group.remote.assignor": "range"})
    r1.subscribe(["kip848r"])
    r2.subscribe(["kip848r"])
    s1, s2 = wait_split([r1, r2])
    assert sorted([sorted(s1), sorted(s2)]) == [[0, 1], [2, 3]], "range split: r1=%s r2=%s" % (s1, s2)
    produce(produced[:400], "kip848r")
    got = consume([r1, r2], 400)
    both = got[0] + got[1]
    assert {r[0] for r in got[0]} <= s1 and {r[0] for r in got[1]} <= s2, "each range member consumed only its partitions"
    expect_exact([(p, k, v) for p, _, k, v in sorted(both, key=lambda r: (r[0], r[1]))], produced[:400], 4, "kip848 range")
    desc = admin.describe_consumer_groups(["kip848-range"])["kip848-range"].result(15)
    assert desc.partition_assignor == "range" and desc.type == ConsumerGroupType.CONSUMER, (desc.partition_assignor, desc.type)
    assigned = {m.client_id: {tp.partition for tp in m.assignment.topic_partitions} for m in desc.members}
    assert assigned == {"r1": s1, "r2": s2}, assigned
    r1.close()
    r2.close()


def test_admin_create_list_delete(srv):
    from confluent_kafka.admin import AdminClient, NewTopic
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic as KPNewTopic
    a = AdminClient({"bootstrap.servers": srv.bootstrap})
    a.create_topics([NewTopic("adm1", num_partitions=2, replication_factor=1)])["adm1"].result(15)
    try:
        a.create_topics([NewTopic("adm1", num_partitions=2, replication_factor=1)])["adm1"].result(15)
        raise AssertionError("duplicate create accepted")
    except Exception as e:
        assert "TOPIC_ALREADY_EXISTS" in str(e) or "already exists" in str(e), e
    try:
        a.create_topics([NewTopic("../bad", num_partitions=1, replication_factor=1)])["../bad"].result(15)
        raise AssertionError("invalid topic name accepted")
    except Exception as e:
        assert "INVALID_TOPIC" in str(e) or "not a valid topic" in str(e).lower() or "topic name" in str(e), e
    kp = KafkaAdminClient(bootstrap_servers=srv.bootstrap)
    kp.create_topics([KPNewTopic("adm2", 3, 1)])
    names = set(kp.list_topics())
    assert {"adm1", "adm2"} <= names, names
    assert len(a.list_topics(timeout=10).topics["adm2"].partitions) == 3
    # DeleteRecords moves the log start; consumers from the beginning start there.
    from kafka import KafkaProducer, TopicPartition as KTP
    prod = KafkaProducer(bootstrap_servers=srv.bootstrap)
    for i in range(50):
        prod.send("adm2", value=b"r%d" % i, partition=0)
    prod.flush()
    prod.close()
    res = kp.delete_records({KTP("adm2", 0): 20})
    assert list(res.values())[0]["low_watermark"] == 20, res
    r = kcat(["-b", srv.bootstrap, "-t", "adm2", "-p", "0", "-C", "-e", "-q", "-o", "beginning"])
    assert r.stdout.splitlines()[0] == "r20", r.stdout[:40]
    a.delete_topics(["adm1"])["adm1"].result(15)
    kp.delete_topics(["adm2"])
    names = set(a.list_topics(timeout=10).topics)
    assert "adm1" not in names and "adm2" not in names, names
    kp.close()


def test_sigkill_keeps_every_acknowledged_event(srv):
    from confluent_kafka import Producer, Consumer, TopicPartition
    admin_create(srv.bootstrap, "dur", 2, {"flush.mode": "sync"})
    acked = []
    lock = threading.Lock()
    stop = threading.Event()

    def produce():
        p = Producer({"bootstrap.servers": srv.bootstrap, "acks": "all", "linger.ms": 1, "message.timeout.ms": 5000,
                      "log_level": 0})  # the kill makes librdkafka log every reconnect attempt
        i = 0
        while not stop.is_set():
            value = "ev-%d" % i
            p.produce("dur", key="k%d" % (i % 5), value=value,
                      on_delivery=lambda e, m, v=value: e is None and lock.acquire() is not None and (acked.append((m.partition(), m.offset(), v)), lock.release()))
            p.poll(0)
            i += 1
            if i % 100 == 0:
                time.sleep(0.001)
        p.flush(1)

    t = threading.Thread(target=produce)
    t.start()
    deadline = time.time() + 30
    while len(acked) < 3000 and time.time() < deadline:
        time.sleep(0.05)
    srv.kill()  # mid-stream
    stop.set()
    t.join()
    with lock:
        snapshot = list(acked)
    assert len(snapshot) >= 1000, "acked %d before the kill" % len(snapshot)
    srv.start()  # same data directory: recovery
    c = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "dur-check", "enable.auto.commit": False})
    c.assign([TopicPartition("dur", 0, 0), TopicPartition("dur", 1, 0)])
    got = {}
    idle = time.time()
    while time.time() - idle < 5:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        idle = time.time()
        got[(m.partition(), m.offset())] = m.value().decode()
    c.close()
    for p, off, v in snapshot:
        assert got.get((p, off)) == v, "acknowledged event %s at %d/%d missing after restart" % (v, p, off)
    values = list(got.values())
    assert len(values) == len(set(values)), "an event appears twice"


def raw_request(port, payload, read=True):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(payload)
        if not read:
            return b""
        data = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if len(data) >= 4 and len(data) >= 4 + struct.unpack(">i", data[:4])[0]:
                    break
        except socket.timeout:
            pass
        return data
    finally:
        s.close()


def frame(api_key, version, body, correlation=7, client=b"t"):
    header = struct.pack(">hhih", api_key, version, correlation, len(client)) + client
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def test_bad_input_keeps_the_broker_up(srv):
    rnd = random.Random(9)
    cases = [
        bytes(rnd.randrange(256) for _ in range(1000)),                   # random bytes
        struct.pack(">i", 100) + b"\x00\x03\x00\x01",                      # truncated frame
        struct.pack(">i", 2**31 - 1) + b"\x00" * 64,                       # 2 GiB declared size
        struct.pack(">i", -5),                                             # negative size
        frame(999, 0, b""),                                                # unknown API key
        frame(3, 99, b""),                                                 # unknown version
        frame(0, 8, b"\xff"),                                              # malformed produce body
        frame(3, 8, struct.pack(">i", 2**30)),                             # hostile array length
    ]
    for payload in cases:
        raw_request(srv.port, payload)
        assert srv.alive(), "broker died on %r" % payload[:20]
    # ApiVersions beyond what is served (v9) is answered with the v0 error body, not a closed
    # connection; v3 (flexible, header v2) is served.
    reply = raw_request(srv.port, frame(18, 9, b"\x00\x00\x00"))
    assert len(reply) > 10 and struct.unpack(">h", reply[8:10])[0] == 35, reply[:16]
    reply = raw_request(srv.port, frame(18, 3, b"\x00\x02s\x021\x00"))
    assert len(reply) > 10 and struct.unpack(">h", reply[8:10])[0] == 0, reply[:16]
    # An invalid topic name in Metadata gets INVALID_TOPIC_EXCEPTION (17), not a crash.
    body = struct.pack(">i", 1) + struct.pack(">h", 5) + b"../x!" + b"\x00"
    reply = raw_request(srv.port, frame(3, 4, body))
    assert b"../x!" in reply and struct.pack(">h", 17) in reply, reply
    # And the broker still serves real clients.
    r = kcat(["-b", srv.bootstrap, "-L"])
    assert r.returncode == 0, r.stderr


TESTS = [test_kcat_keyed_json, test_kcat_compression, test_confluent_kafka, test_kafka_python, test_aiokafka,
         test_group_of_two_rebalance_and_resume, test_consumer_group_protocol_kip848,
         test_admin_create_list_delete, test_bad_input_keeps_the_broker_up,
         test_sigkill_keeps_every_acknowledged_event]


def run_suite(label, tests, argv, server_for=lambda test: Server()):
    """Runs each test (those named in argv, or all) against a fresh server run as run_as()'s user
    (`server_for(test)` makes it); prints PASS/FAIL lines and ends with 'LABEL: N passed, N
    failed'; exits non-zero on a failure."""
    only = argv[1:]
    passed = failed = 0
    print("%s: %s" % (label, run_as().describe()), flush=True)
    for test in tests:
        if only and test.__name__ not in only:
            continue
        srv = server_for(test)
        started = time.time()
        try:
            srv.start()
            if srv.uid() != run_as().uid:
                raise AssertionError("strata serve runs as uid %s, expected %d" % (srv.uid(), run_as().uid))
            test(srv)
            passed += 1
            print("PASS %s (%.1fs)" % (test.__name__, time.time() - started), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s (%.1fs)" % (test.__name__, time.time() - started), flush=True)
            traceback.print_exc()
            print("  last server lines:\n    " + "\n    ".join(list(srv.tail)[-10:]), flush=True)
        finally:
            srv.cleanup()
    print("%s: %d passed, %d failed" % (label, passed, failed))
    sys.exit(1 if failed else 0)


def main():
    run_suite("compat", TESTS, sys.argv)


if __name__ == "__main__":
    main()
