#!/usr/bin/env python3
"""Security against `strata serve` (run as an unprivileged user, like test_clients.py): kcat
(librdkafka), confluent-kafka, kafka-python and aiokafka over SSL, SASL_PLAINTEXT and SASL_SSL with
SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; mTLS with a client certificate; wrong passwords, unknown
users, untrusted and expired certificates refused; hostile SASL exchanges with the broker still up;
no password in the server's log. Certificates are made with openssl for the run.
Ends with 'security: N passed, N failed'."""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_clients import STRATA, Server, kcat, run_suite  # noqa: E402

PASSWORD = "s3cret-Pa55word!"
_CERTS = None


def certs():
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, one from another
    CA (untrusted) and an expired one; world-readable so the unprivileged server can read them."""
    global _CERTS
    if _CERTS:
        return _CERTS
    d = tempfile.mkdtemp(prefix="strata-certs-", dir="/tmp")
    os.chmod(d, 0o755)

    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=d, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=Strata Test CA")
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other-ca.key", "-out", "other-ca.pem", "-days", "30", "-subj", "/CN=Other CA")
    with open(os.path.join(d, "san.ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, subject, ca in [("server", "/CN=localhost", "ca"), ("client", "/CN=client1/O=Strata", "ca"),
                              ("stranger", "/CN=stranger", "other-ca")]:
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out", name + ".csr", "-subj", subject)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-CAcreateserial",
            "-out", name + ".pem", "-days", "30", *extra)
    # An expired client certificate, signed by the trusted CA: `openssl ca` takes explicit dates.
    os.makedirs(os.path.join(d, "db"))
    open(os.path.join(d, "db", "index.txt"), "w").close()
    with open(os.path.join(d, "db", "serial"), "w") as f:
        f.write("1000\n")
    with open(os.path.join(d, "ca.cnf"), "w") as f:
        f.write("[ca]\ndefault_ca=ca\n[ca]\ndir=%s/db\ndatabase=$dir/index.txt\nserial=$dir/serial\nnew_certs_dir=$dir\n"
                "default_md=sha256\npolicy=any\n[any]\ncommonName=supplied\n" % d)
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "expired.key", "-out", "expired.csr", "-subj", "/CN=expired")
    run("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key", "-in", "expired.csr", "-out", "expired.pem",
        "-startdate", "20200101000000Z", "-enddate", "20200102000000Z", "-notext")
    for f in os.listdir(d):
        p = os.path.join(d, f)
        if os.path.isfile(p):
            os.chmod(p, 0o644)
    _CERTS = d
    return d


def cert(name):
    return os.path.join(certs(), name)


class SecureServer(Server):
    """A server with every listener kind (PLAINTEXT last: its line ends the start) and a user."""

    def __init__(self, extra=(), client_auth="requested", grant_all=True, own_certificate=False):
        self.grant_all = grant_all
        self.tls_cert, self.tls_key = cert("server.pem"), cert("server.key")
        if own_certificate:  # a copy the test may overwrite
            d = tempfile.mkdtemp(prefix="strata-cert-", dir="/tmp")
            os.chmod(d, 0o755)
            self.tls_cert, self.tls_key = shutil.copy(self.tls_cert, d), shutil.copy(self.tls_key, d)
        super().__init__(args=["--listeners", "SSL://127.0.0.1:0,SASL_PLAINTEXT://127.0.0.1:0,SASL_SSL://127.0.0.1:0,PLAINTEXT://127.0.0.1:0",
                               "--tls-cert", self.tls_cert, "--tls-key", self.tls_key, "--tls-ca", cert("ca.pem"),
                               "--tls-client-auth", client_auth] + list(extra))

    def start(self):
        super().start()
        self.ports = {}
        for line in self.output:
            m = re.search(r"Kafka (SSL|SASL_PLAINTEXT|SASL_SSL) listener on 127\.0\.0\.1:(\d+)", line)
            if m:
                self.ports[m.group(1)] = int(m.group(2))
        assert set(self.ports) == {"SSL", "SASL_PLAINTEXT", "SASL_SSL"}, self.output
        self.strata("users", "add", "alice", "--password", PASSWORD)
        if self.grant_all:
            # ACLs are enforced on authenticated listeners (deny by default): alice may do
            # everything in the tests that are not about ACLs.
            for resource in [["--topic", "*"], ["--group", "*"], ["--cluster"]]:
                self.strata("acls", "add", "--principal", "User:alice", "--operation", "All", *resource)
        return self

    def strata(self, *args, check=True):
        r = subprocess.run(self.command([STRATA] + list(args) + ["--data", self.data]), capture_output=True, text=True, timeout=60)
        if check:
            assert r.returncode == 0, r.stderr
        return r

    def log_text(self):
        return "".join(self.output) + "".join(self.tail)


def librdkafka_conf(srv, proto, mechanism=None, user="alice", password=PASSWORD, client_cert=None):
    conf = {"security.protocol": proto}
    if proto in ("SSL", "SASL_SSL"):
        conf["ssl.ca.location"] = cert("ca.pem")
    if client_cert:
        conf["ssl.certificate.location"] = cert(client_cert + ".pem")
        conf["ssl.key.location"] = cert(client_cert + ".key")
    if mechanism:
        conf.update({"sasl.mechanisms": mechanism, "sasl.username": user, "sasl.password": password})
    return conf


def kcat_args(conf):
    out = []
    for k, v in conf.items():
        out += ["-X", "%s=%s" % (k, v)]
    return out


COMBINATIONS = [("SSL", None), ("SASL_PLAINTEXT", "SCRAM-SHA-256"), ("SASL_PLAINTEXT", "SCRAM-SHA-512"), ("SASL_PLAINTEXT", "PLAIN"),
                ("SASL_SSL", "SCRAM-SHA-256"), ("SASL_SSL", "SCRAM-SHA-512"), ("SASL_SSL", "PLAIN")]


def topic_for(proto, mech, client):
    return ("%s-%s-%s" % (client, proto, mech or "none")).lower().replace("_", "-")


def test_kcat_over_every_listener_and_mechanism(srv):
    for proto, mech in COMBINATIONS:
        bs = "127.0.0.1:%d" % srv.ports[proto]
        topic = topic_for(proto, mech, "kcat")
        conf = kcat_args(librdkafka_conf(srv, proto, mech))
        lines = "".join(json.dumps({"i": i, "via": proto}) + "\n" for i in range(200))
        r = kcat(["-b", bs, "-t", topic, "-P"] + conf, input_text=lines)
        assert r.returncode == 0, (proto, mech, r.stderr[-400:])
        r = kcat(["-b", bs, "-t", topic, "-C", "-e", "-q"] + conf)
        assert r.returncode == 0 and r.stdout == lines, (proto, mech, r.stderr[-400:], len(r.stdout))


def test_confluent_kafka_over_every_listener_and_mechanism(srv):
    from confluent_kafka import Consumer, Producer, TopicPartition
    for proto, mech in COMBINATIONS:
        conf = dict(librdkafka_conf(srv, proto, mech), **{"bootstrap.servers": "127.0.0.1:%d" % srv.ports[proto]})
        topic = topic_for(proto, mech, "ck")
        p = Producer(dict(conf, acks="all"))
        errors = []
        for i in range(300):
            p.produce(topic, value=json.dumps({"i": i}), on_delivery=lambda e, m: e and errors.append(e))
        assert p.flush(30) == 0 and not errors, (proto, mech, errors[:2])
        c = Consumer(dict(conf, **{"group.id": topic, "auto.offset.reset": "earliest"}))
        c.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.time() + 30
        while len(got) < 300 and time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                got.append(json.loads(m.value())["i"])
        c.close()
        assert got == list(range(300)), (proto, mech, len(got))


def test_kafka_python_and_aiokafka_over_every_listener(srv):
    from kafka import KafkaConsumer, KafkaProducer
    for proto, mech in COMBINATIONS:
        topic = topic_for(proto, mech, "kp")
        common = dict(bootstrap_servers="127.0.0.1:%d" % srv.ports[proto], security_protocol=proto)
        if mech:
            common.update(sasl_mechanism=mech, sasl_plain_username="alice", sasl_plain_password=PASSWORD)
        if proto != "SASL_PLAINTEXT":
            common.update(ssl_cafile=cert("ca.pem"), ssl_check_hostname=True)
        p = KafkaProducer(**common)
        for i in range(50):
            p.send(topic, json.dumps({"i": i}).encode())
        p.flush(30)
        p.close()
        c = KafkaConsumer(topic, auto_offset_reset="earliest", consumer_timeout_ms=5000, **common)
        got = [json.loads(m.value)["i"] for m in c]
        c.close()
        assert got == list(range(50)), (proto, mech, got[:5], len(got))

    import asyncio
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.helpers import create_ssl_context

    async def run(proto, mech):
        topic = topic_for(proto, mech, "aio")
        common = dict(bootstrap_servers="127.0.0.1:%d" % srv.ports[proto], security_protocol=proto)
        if mech:
            common.update(sasl_mechanism=mech, sasl_plain_username="alice", sasl_plain_password=PASSWORD)
        if proto != "SASL_PLAINTEXT":
            common.update(ssl_context=create_ssl_context(cafile=cert("ca.pem")))
        p = AIOKafkaProducer(**common)
        await p.start()
        for i in range(50):
            await p.send_and_wait(topic, json.dumps({"i": i}).encode())
        await p.stop()
        c = AIOKafkaConsumer(topic, auto_offset_reset="earliest", **common)
        await c.start()
        got = []
        try:
            while len(got) < 50:
                batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 30)
                for msgs in batch.values():
                    got += [json.loads(m.value)["i"] for m in msgs]
        finally:
            await c.stop()
        assert got == list(range(50)), (proto, mech, len(got))

    for proto, mech in COMBINATIONS:
        asyncio.run(run(proto, mech))


def refused(srv, proto, conf_overrides):
    """kcat -L against `proto` with the given settings: (refused?, stderr)."""
    conf = librdkafka_conf(srv, proto)
    conf.update(conf_overrides)
    r = kcat(["-b", "127.0.0.1:%d" % srv.ports[proto], "-L", "-m", "5"] + kcat_args(conf), timeout=30)
    return r.returncode != 0, r.stderr


def test_wrong_credentials_are_refused_and_never_logged(srv):
    wrong = "not-the-" + PASSWORD
    for proto in ["SASL_PLAINTEXT", "SASL_SSL"]:
        for mech in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]:
            ok, err = refused(srv, proto, {"sasl.mechanisms": mech, "sasl.username": "alice", "sasl.password": wrong})
            assert ok and "authentication" in err.lower(), (proto, mech, err[-300:])
    ok, err = refused(srv, "SASL_PLAINTEXT", {"sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "mallory", "sasl.password": PASSWORD})
    assert ok, err
    # The server said why, without any password (right or wrong) in its log.
    time.sleep(0.5)
    log = srv.log_text()
    assert "SASL authentication failed" in log, log[-500:]
    assert PASSWORD not in log and wrong not in log, "a password reached the server log"
    # Past sasl.max.failed.authentications (set to 50 for this server), even the right password
    # is refused from that address until the window passes: checked in test_failure_limit.


def test_failure_limit_refuses_an_address_that_keeps_failing(srv):
    for _ in range(3):
        refused(srv, "SASL_PLAINTEXT", {"sasl.mechanisms": "PLAIN", "sasl.username": "alice", "sasl.password": "wrong"})
    ok, err = refused(srv, "SASL_PLAINTEXT", {"sasl.mechanisms": "SCRAM-SHA-256", "sasl.username": "alice", "sasl.password": PASSWORD})
    assert ok and "too many failed authentications" in err, err[-300:]


def test_certificates_untrusted_expired_or_missing_are_refused(srv):
    # The server's certificate is checked by clients: without the CA it is not trusted.
    conf = {"security.protocol": "SSL"}
    r = kcat(["-b", "127.0.0.1:%d" % srv.ports["SSL"], "-L", "-m", "5"] + kcat_args(conf), timeout=30)
    assert r.returncode != 0, "a client trusted the test CA without being told"
    # ssl.client.auth=required here: a client certificate from the CA works...
    ok, err = refused(srv, "SSL", {"ssl.certificate.location": cert("client.pem"), "ssl.key.location": cert("client.key")})
    assert not ok, err[-300:]
    # ...none, one from another CA, or an expired one does not.
    ok, err = refused(srv, "SSL", {})
    assert ok, "no client certificate was accepted"
    ok, err = refused(srv, "SSL", {"ssl.certificate.location": cert("stranger.pem"), "ssl.key.location": cert("stranger.key")})
    assert ok, "an untrusted client certificate was accepted"
    ok, err = refused(srv, "SSL", {"ssl.certificate.location": cert("expired.pem"), "ssl.key.location": cert("expired.key")})
    assert ok, "an expired client certificate was accepted"
    # SASL_SSL with a client certificate and SCRAM: both.
    ok, err = refused(srv, "SASL_SSL", {"ssl.certificate.location": cert("client.pem"), "ssl.key.location": cert("client.key"),
                                        "sasl.mechanisms": "SCRAM-SHA-512", "sasl.username": "alice", "sasl.password": PASSWORD})
    assert not ok, err[-300:]


def frame(api, version, body, correlation=7, flexible=False):
    header = struct.pack(">hhi", api, version, correlation) + struct.pack(">h", 4) + b"evil"
    if flexible:
        header += b"\x00"
    msg = header + body
    return struct.pack(">i", len(msg)) + msg


def exchange(port, frames, timeout=5):
    """Sends each frame and reads one response per frame; returns the responses read before the
    connection closed (b'' marks a close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    out = []
    try:
        for f in frames:
            s.sendall(f)
            head = b""
            while len(head) < 4:
                chunk = s.recv(4 - len(head))
                if not chunk:
                    out.append(b"")
                    return out
                head += chunk
            n = struct.unpack(">i", head)[0]
            data = b""
            while len(data) < n:
                chunk = s.recv(n - len(data))
                if not chunk:
                    break
                data += chunk
            out.append(data)
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        out.append(b"")
    finally:
        s.close()
    return out


def sasl_bytes(b):
    return struct.pack(">i", len(b)) + b


def error_of(response):
    return struct.unpack(">h", response[4:6])[0] if len(response) >= 6 else None


def test_hostile_sasl_exchanges_leave_the_broker_up(srv):
    port = srv.ports["SASL_PLAINTEXT"]
    handshake = frame(17, 1, struct.pack(">h", 13) + b"SCRAM-SHA-256")
    # A Metadata request before authenticating: the connection is closed, nothing answered.
    assert exchange(port, [frame(3, 1, struct.pack(">i", -1))]) == [b""]
    # SaslAuthenticate before SaslHandshake: ILLEGAL_SASL_STATE (34), then closed.
    r = exchange(port, [frame(36, 1, sasl_bytes(b"n,,n=alice,r=abcdefghij")), handshake])
    assert error_of(r[0]) == 34 and r[-1] == b"", r
    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM (33) with the enabled list, then closed.
    r = exchange(port, [frame(17, 1, struct.pack(">h", 6) + b"GSSAPI"), handshake])
    assert error_of(r[0]) == 33 and b"SCRAM-SHA-512" in r[0] and r[-1] == b"", r
    # Garbage, truncated and oversized client-first messages; client-final first; bad base64.
    bad_first = [b"", b"garbage", b"y,,n=alice,r=abcdefghij", b"n,,n=alice", b"n,,n=al=ice,r=abcdefghij",
                 b"n,,n=alice,r=short", b"n,,n=alice,r=abcdefghij,ext=1", b"\xff\xfe" * 50, b"n,,n=" + b"a" * 5000 + b",r=abcdefghij",
                 b"c=biws,r=abcdefghij,p=AAAA"]
    for body in bad_first:
        r = exchange(port, [handshake, frame(36, 1, sasl_bytes(body))])
        assert len(r) >= 2 and error_of(r[0]) == 0 and error_of(r[1]) == 58, (body[:40], r)
    # A well-formed client-first, then a client-final with a wrong nonce, bad base64, a short proof.
    for final in [b"c=biws,r=wrongnonce,p=AAAA", b"c=biws,r=%s,p=!!!!", b"c=biws,r=%s,p=AAAA", b"c=eSws,r=%s,p=AAAA", b"p=AAAA"]:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            s.sendall(handshake)
            s.recv(1024)
            s.sendall(frame(36, 1, sasl_bytes(b"n,,n=alice,r=abcdefghijkl")))
            data = s.recv(4096)
            server_first = data[4 + 4 + 2 + 2:]
            nonce = re.search(rb"r=([^,]+)", server_first).group(1)
            s.sendall(frame(36, 1, sasl_bytes(final.replace(b"%s", nonce) if b"%s" in final else final)))
            reply = s.recv(4096)
            assert struct.unpack(">h", reply[8:10])[0] == 58, reply[:20]
            assert s.recv(1024) == b"", "connection left open after a failed authentication"
        finally:
            s.close()
    # A truncated SaslAuthenticate body and a lying length: the connection is closed.
    r = exchange(port, [handshake, frame(36, 1, struct.pack(">i", 1000) + b"abc")])
    assert r[-1] == b"", r
    # The broker still serves: a real client authenticates and round-trips.
    conf = kcat_args(librdkafka_conf(srv, "SASL_PLAINTEXT", "SCRAM-SHA-256"))
    r = kcat(["-b", "127.0.0.1:%d" % port, "-t", "after-attack", "-P"] + conf, input_text='{"still":"up"}\n')
    assert r.returncode == 0, r.stderr[-300:]
    r = kcat(["-b", "127.0.0.1:%d" % port, "-t", "after-attack", "-C", "-e", "-q"] + conf)
    assert r.stdout == '{"still":"up"}\n', r.stderr[-300:]
    assert srv.alive()


def test_users_through_the_kafka_admin_api(srv):
    """AlterUserScramCredentials / DescribeUserScramCredentials with confluent-kafka's AdminClient:
    on the PLAINTEXT listener (trusted), and on SASL only for super.users."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism, UserScramCredentialDeletion,
                                       UserScramCredentialUpsertion)
    admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    futures = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192), b"carol-pw", b"a-salt-of-carol"),
        UserScramCredentialUpsertion("dave", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"dave-pw"),
    ])
    for f in futures.values():
        f.result(15)
    described = admin.describe_user_scram_credentials(["carol", "dave"])
    carol = described["carol"].result(15)
    assert [(i.mechanism, i.iterations) for i in carol.scram_credential_infos] == [(ScramMechanism.SCRAM_SHA_512, 8192)], carol
    every = admin.describe_user_scram_credentials().result(15)
    assert {"alice", "carol", "dave"} <= set(every), every
    # The credential the client salted works for a SCRAM login, and PLAIN checks against it.
    for mech in ["SCRAM-SHA-512", "PLAIN"]:
        ok, err = refused(srv, "SASL_SSL", {"sasl.mechanisms": mech, "sasl.username": "carol", "sasl.password": "carol-pw"})
        assert not ok, (mech, err[-300:])
    # Unknown users, too few iterations, deleting what does not exist: Kafka's errors.
    try:
        admin.describe_user_scram_credentials(["nobody-here"])["nobody-here"].result(15)
        raise AssertionError("an unknown user was described")
    except KafkaException as e:
        assert "RESOURCE_NOT_FOUND" in str(e) or "does not exist" in str(e), e
    bad = admin.alter_user_scram_credentials([UserScramCredentialUpsertion("erin", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 1000), b"pw")])
    try:
        bad["erin"].result(15)
        raise AssertionError("1000 iterations were accepted")
    except KafkaException as e:
        assert "UNACCEPTABLE_CREDENTIAL" in str(e) or "iterations" in str(e), e
    gone = admin.alter_user_scram_credentials([UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_512)])
    try:
        gone["dave"].result(15)
        raise AssertionError("deleting a missing credential succeeded")
    except KafkaException as e:
        assert "RESOURCE_NOT_FOUND" in str(e) or "does not exist" in str(e), e
    admin.alter_user_scram_credentials([UserScramCredentialDeletion("dave", ScramMechanism.SCRAM_SHA_256)])["dave"].result(15)
    assert "dave" not in admin.describe_user_scram_credentials().result(15)
    # On the SASL listener, alice (not a super user) may not manage users; root (one) may.
    def sasl_admin(user, password):
        return AdminClient(dict(librdkafka_conf(srv, "SASL_SSL", "SCRAM-SHA-256", user=user, password=password),
                                **{"bootstrap.servers": "127.0.0.1:%d" % srv.ports["SASL_SSL"]}))
    alice = sasl_admin("alice", PASSWORD)  # kept: a destroyed client fails its futures
    try:
        alice.alter_user_scram_credentials([
            UserScramCredentialUpsertion("mallory", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"pw")])["mallory"].result(15)
        raise AssertionError("a user who is not a super user added a user")
    except KafkaException as e:
        assert "CLUSTER_AUTHORIZATION_FAILED" in str(e) or "super.users" in str(e), e
    srv.strata("users", "add", "root", "--password", PASSWORD)
    root = sasl_admin("root", PASSWORD)
    root.alter_user_scram_credentials([
        UserScramCredentialUpsertion("frank", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), b"frank-pw")])["frank"].result(15)
    assert "frank" in srv.strata("users", "list").stdout


def test_acls_on_authenticated_listeners(srv):
    """ACLs from `strata acls` and the Kafka ACL APIs, enforced on SASL listeners: writes to a
    topic without WRITE fail with TOPIC_AUTHORIZATION_FAILED and append nothing; a consumer
    without group READ cannot join; a prefixed ACL grants a family of topics; a DENY wins over
    an ALLOW; Metadata hides topics the principal may not describe; the PLAINTEXT listener on
    loopback stays trusted."""
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
    from confluent_kafka.admin import (AclBinding, AclBindingFilter, AclOperation, AclPermissionType, AdminClient, NewTopic,
                                       ResourcePatternType, ResourceType)
    plain_admin = AdminClient({"bootstrap.servers": srv.bootstrap})
    for f in plain_admin.create_topics([NewTopic(t, 1, 1) for t in ["a", "b", "shared-x", "shared-secret"]]).values():
        f.result(15)
    p = Producer({"bootstrap.servers": srv.bootstrap})
    for t in ["shared-x", "shared-secret"]:
        p.produce(t, value=b'{"seed":1}')
    assert p.flush(15) == 0
    srv.strata("users", "add", "root", "--password", PASSWORD)
    acl = lambda *args: srv.strata("acls", "add", "--principal", "User:alice", *args)
    acl("--operation", "Write", "--topic", "a")
    acl("--operation", "Read", "--topic", "shared-", "--prefixed")
    acl("--operation", "Read", "--topic", "shared-secret", "--deny")
    acl("--operation", "Read", "--group", "g1")
    listed = srv.strata("acls", "list").stdout
    assert "Deny" in listed and "Prefixed" in listed, listed
    time.sleep(1.2)  # the server re-reads ACLs written by another process within a second
    alice = dict(librdkafka_conf(srv, "SASL_SSL", "SCRAM-SHA-256"), **{"bootstrap.servers": "127.0.0.1:%d" % srv.ports["SASL_SSL"]})

    def produce(topic):
        errors = []
        pr = Producer(dict(alice, **{"message.timeout.ms": 10000}))
        pr.produce(topic, value=b'{"by":"alice"}', on_delivery=lambda e, m: errors.append(e))
        pr.flush(15)
        return errors[0] if errors else "no delivery report"

    assert produce("a") is None
    err = produce("b")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    lo, hi = Consumer({"bootstrap.servers": srv.bootstrap, "group.id": "x"}).get_watermark_offsets(TopicPartition("b", 0), 10)
    assert hi == 0, "a refused write was appended"

    def consume(topic, group):
        c = Consumer(dict(alice, **{"group.id": group, "auto.offset.reset": "earliest"}))
        c.subscribe([topic])
        deadline = time.time() + 20
        try:
            while time.time() < deadline:
                m = c.poll(0.5)
                if m is None:
                    continue
                if m.error():
                    if m.error().code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED):
                        return m.error().code()
                    continue
                return "read"
        finally:
            c.close()
        return "nothing"

    assert consume("shared-x", "g1") == "read"
    assert consume("shared-x", "g2") == KafkaError.GROUP_AUTHORIZATION_FAILED
    assert consume("shared-secret", "g1") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Metadata: a listing shows what alice may describe (WRITE and READ imply DESCRIBE).
    topics = set(AdminClient(alice).list_topics(timeout=15).topics)
    assert {"a", "shared-x"} <= topics and "b" not in topics, topics
    # alice may not create topics or ACLs; root (a super user) may, through the Kafka APIs.
    alice_admin = AdminClient(alice)
    try:
        alice_admin.create_topics([NewTopic("c", 1, 1)])["c"].result(15)
        raise AssertionError("alice created a topic")
    except Exception as e:
        assert "TOPIC_AUTHORIZATION_FAILED" in str(e) or "authoriz" in str(e).lower(), e
    root = AdminClient(dict(librdkafka_conf(srv, "SASL_SSL", "SCRAM-SHA-256", user="root"), **{"bootstrap.servers": "127.0.0.1:%d" % srv.ports["SASL_SSL"]}))
    write_b = AclBinding(ResourceType.TOPIC, "b", ResourcePatternType.LITERAL, "User:alice", "*", AclOperation.WRITE, AclPermissionType.ALLOW)
    root.create_acls([write_b])[write_b].result(15)
    found = root.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, "User:alice", None,
                                                AclOperation.ANY, AclPermissionType.ANY)).result(15)
    assert len(found) == 5, found
    assert produce("b") is None
    flt = AclBindingFilter(ResourceType.TOPIC, "a", ResourcePatternType.LITERAL, "User:alice", None, AclOperation.WRITE, AclPermissionType.ALLOW)
    assert len(root.delete_acls([flt])[flt].result(15)) == 1
    err = produce("a")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    try:
        alice_admin.create_acls([write_b])[write_b].result(15)
        raise AssertionError("alice created an ACL")
    except Exception as e:
        assert "CLUSTER_AUTHORIZATION_FAILED" in str(e) or "authoriz" in str(e).lower(), e
    # strata acls --remote through the SASL listener as the super user, and refused for alice.
    remote = ["--remote", "--bootstrap", "127.0.0.1:%d" % srv.ports["SASL_PLAINTEXT"], "--security-protocol", "SASL_PLAINTEXT"]
    srv.strata("acls", "add", *remote, "--user", "root", "--password", PASSWORD, "--principal", "User:alice", "--operation", "Describe", "--group", "g1")
    listed = srv.strata("acls", "list", *remote, "--user", "root", "--password", PASSWORD).stdout
    assert "Describe" in listed and "g1" in listed, listed
    r = srv.strata("acls", "add", *remote, "--user", "alice", "--password", PASSWORD, "--principal", "User:alice", "--operation", "All", "--cluster", check=False)
    assert r.returncode != 0 and "error 31" in r.stderr, r.stderr
    # The loopback PLAINTEXT listener is trusted as a whole.
    pp = Producer({"bootstrap.servers": srv.bootstrap})
    pp.produce("a", value=b'{"local":1}')
    assert pp.flush(15) == 0


def test_sighup_reloads_the_certificate(srv):
    """A new certificate written over the files and SIGHUP: new connections get it."""
    import ssl

    def serial():
        ctx = ssl.create_default_context(cafile=cert("ca.pem"))
        with socket.create_connection(("127.0.0.1", srv.ports["SSL"]), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.getpeercert()["serialNumber"]

    before = serial()
    d = certs()
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "renewed.key", "-out", "renewed.csr", "-subj", "/CN=localhost"],
                   cwd=d, check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", "renewed.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                    "-out", "renewed.pem", "-days", "30", "-extfile", "san.ext"], cwd=d, check=True, capture_output=True)
    shutil.copy(os.path.join(d, "renewed.pem"), srv.tls_cert)
    shutil.copy(os.path.join(d, "renewed.key"), srv.tls_key)
    os.chmod(srv.tls_cert, 0o644)
    os.chmod(srv.tls_key, 0o644)
    srv.proc.send_signal(signal.SIGHUP)
    deadline = time.time() + 10
    while serial() == before and time.time() < deadline:
        time.sleep(0.2)
    assert serial() != before, "the certificate was not reloaded"
    assert srv.alive()
    # A broken file on the next SIGHUP keeps the current certificate.
    with open(srv.tls_key, "w") as f:
        f.write("not a key\n")
    current = serial()
    srv.proc.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert srv.alive() and serial() == current
    assert "TLS files not reloaded" in srv.log_text() or any("TLS files not reloaded" in l for l in srv.tail)


def test_data_and_metadata_files_are_not_world_readable(srv):
    for root, dirs, files in os.walk(srv.data):
        for name in dirs + files:
            mode = os.stat(os.path.join(root, name)).st_mode & 0o777
            assert mode & 0o077 == 0, "%s is mode %o" % (os.path.join(root, name), mode)


TESTS = [test_kcat_over_every_listener_and_mechanism, test_confluent_kafka_over_every_listener_and_mechanism,
         test_kafka_python_and_aiokafka_over_every_listener, test_wrong_credentials_are_refused_and_never_logged,
         test_failure_limit_refuses_an_address_that_keeps_failing, test_certificates_untrusted_expired_or_missing_are_refused,
         test_hostile_sasl_exchanges_leave_the_broker_up, test_users_through_the_kafka_admin_api, test_acls_on_authenticated_listeners,
         test_sighup_reloads_the_certificate,
         test_data_and_metadata_files_are_not_world_readable]

# The server each test needs: mTLS required for the certificate test, a low failure limit for
# the limiter test, a high one where failures are the point.
SERVERS = {
    "test_certificates_untrusted_expired_or_missing_are_refused": lambda: SecureServer(client_auth="required"),
    "test_failure_limit_refuses_an_address_that_keeps_failing": lambda: SecureServer(extra=["--config", "sasl.max.failed.authentications=3"]),
    "test_wrong_credentials_are_refused_and_never_logged": lambda: SecureServer(extra=["--config", "sasl.max.failed.authentications=50"]),
    "test_hostile_sasl_exchanges_leave_the_broker_up": lambda: SecureServer(extra=["--config", "sasl.max.failed.authentications=1000"]),
    "test_users_through_the_kafka_admin_api": lambda: SecureServer(extra=["--config", "super.users=User:root"], grant_all=False),
    "test_sighup_reloads_the_certificate": lambda: SecureServer(own_certificate=True),
    "test_acls_on_authenticated_listeners": lambda: SecureServer(extra=["--config", "super.users=User:root"], grant_all=False),
}


if __name__ == "__main__":
    run_suite("security", TESTS, sys.argv, server_for=lambda test: SERVERS.get(test.__name__, SecureServer)())
