#!/usr/bin/env python3
"""librdkafka's own integration suite (tests/0NNN-*.c|cpp of librdkafka 2.14.2) against `strata serve`.

Builds librdkafka once per machine outside the repository (cached per version), starts one
`strata serve --config num.partitions=4` (as nobody when run as root, like test_clients.py) and
runs each test of the chosen list with `TESTS=NNNN ./test-runner -p1 -Q -E` under a per-test
timeout. Each result is compared with docs/compat/librdkafka.tsv: a test expected to pass that does
not is a regression (exit 1); a test expected to fail or skip that passes is "improved".
Ends with the table of every test and the line 'librdkafka: N passed, N failed' (failed =
regressions).

  tools/compat/librdkafka.py                   # the list in STRATA_LIBRDKAFKA_TESTS (default: extended)
  STRATA_LIBRDKAFKA_TESTS=74 tools/compat/librdkafka.py     # the 74 tests of ../shared/suites/README.md
  tools/compat/librdkafka.py 0041 0056         # just these
  tools/compat/librdkafka.py --record          # also rewrite the tsv with today's results

Environment: STRATA_BIN (default .build/debug/strata), STRATA_CACHE_DIR (default
$XDG_CACHE_HOME/strata or ~/.cache/strata), STRATA_SHARED_DIR (default ../shared next to the
repository), STRATA_LIBRDKAFKA_TIMEOUT (per test, default 120 s), STRATA_LIBRDKAFKA_BUDGET (the
whole run, default 2400 s: later tests are not run and count as failed), STRATA_VERBOSE=1 (broker log),
STRATA_LIBRDKAFKA_QUICK=0 (without -Q: more data and subtests; longer, and the expected results
are for -Q), STRATA_LIBRDKAFKA_KAFKA_VERSION=X.Y.Z.W (the broker version the tests assume;
default 2.4.0.0). Logs: $STRATA_CACHE_DIR/librdkafka-2.14.2-logs/NNNN.log and broker-N.log (the
run before: librdkafka-2.14.2-logs.previous). STRATA_LIBRDKAFKA_EXPECTED: another expected-results file.
A test expected to pass that fails is run a second time; passing then, it is reported as flaky.
"""
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from test_clients import ROOT, STRATA, Server, run_as  # noqa: E402

VERSION = "2.14.2"
CONFIGURE = ["./configure", "--disable-curl", "--disable-sasl", "--disable-ssl"]
EXPECTED = os.environ.get("STRATA_LIBRDKAFKA_EXPECTED") or os.path.join(ROOT, "docs", "compat", "librdkafka.tsv")
TIMEOUT = float(os.environ.get("STRATA_LIBRDKAFKA_TIMEOUT", "120"))
BUDGET = float(os.environ.get("STRATA_LIBRDKAFKA_BUDGET", "2400"))  # the whole run; tests after it are not run (fail)
# librdkafka's tests expect Kafka's test clusters (4 partitions per auto-created topic). Small
# segments and indexes, as before disk was reserved in steps: they keep the address space of the
# hundreds of partitions the suite creates small and make its segments roll.
BROKER_CONFIG = ["--config", "num.partitions=4", "--config", "log.segment.bytes=8388608", "--config", "log.index.size.max.bytes=1048576"]
# The expected results are for quick mode (-Q) and the runner's default broker version (2.4.0.0,
# which some tests read to pick their expectations); these two change both, for exploring.
QUICK = os.environ.get("STRATA_LIBRDKAFKA_QUICK", "1") != "0"
KAFKA_VERSION = os.environ.get("STRATA_LIBRDKAFKA_KAFKA_VERSION", "")

# The tests a single-node Kafka-compatible peer keeps in its CI allow-list (../shared/suites/README.md).
LIST_74 = """0001 0002 0003 0004 0005 0006 0007 0008 0012 0013 0016 0017 0018 0019 0020 0021 0022 0025
0026 0033 0035 0036 0038 0039 0040 0041 0042 0043 0045 0046 0050 0051 0055 0056 0057 0058 0060
0061 0062 0063 0065 0067 0070 0073 0074 0076 0078 0083 0084 0085 0086 0089 0090 0095 0100 0102
0106 0113 0114 0116 0120 0121 0122 0123 0125 0127 0131 0132 0136 0137 0149 0150 0151 0152""".split()

# Every other test of 2.14.2 that talks to a broker and needs no ZooKeeper, Kafka CLI scripts,
# Java, SSL, SASL, sockem (-E) or a broker without topic auto-creation; see docs/compat/README.md
# for the ones left out and why. 0103 and 0129 are the transaction tests.
LIST_MORE = """0011 0014 0015 0029 0030 0031 0034 0044 0048 0053 0054 0059 0069 0081 0082 0091 0092
0093 0099 0101 0103 0110 0112 0118 0129 0130 0140""".split()

LISTS = {"74": LIST_74, "extended": sorted(LIST_74 + LIST_MORE)}
DEFAULT_LIST = "extended"

ANSI = re.compile(r"\x1b\[[0-9;]*m|\x1b\(B")
ROW = re.compile(r"^\|\s*(\d{4}_\S+)\s*\|\s*(PASSED|FAILED|SKIPPED|RUNNING|DNS)\s*\|\s*([\d.]+)s\s*\|\s*(.*)$")


def say(msg):
    print("librdkafka: " + msg, flush=True)


# ---------------------------------------------------------------- build

def cache_dir():
    base = os.environ.get("STRATA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "strata")
    return base


def shared_tarball():
    candidates = [os.environ.get("STRATA_SHARED_DIR"), os.path.join(ROOT, "..", "shared")]
    for d in candidates:
        if d:
            p = os.path.join(d, "suites", "librdkafka-%s.tar.gz" % VERSION)
            if os.path.exists(p):
                return os.path.abspath(p)
    raise SystemExit("librdkafka: librdkafka-%s.tar.gz not found under %s (set STRATA_SHARED_DIR)"
                     % (VERSION, " or ".join(os.path.join(d, "suites") for d in candidates if d)))


def ensure_toolchain():
    missing = [t for t in ("cc", "c++", "make") if not shutil.which(t)]
    if not missing:
        return
    if os.geteuid() == 0:
        say("installing build-essential (missing: %s)" % " ".join(missing))
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "build-essential"], check=True, env=env, timeout=1200)
    else:
        raise SystemExit("librdkafka: building librdkafka needs %s: sudo apt-get install -y build-essential" % ", ".join(missing))


def build():
    """The librdkafka source tree with libs and tests built; built once, reused afterwards."""
    cache = cache_dir()
    os.makedirs(cache, exist_ok=True)
    tree = os.path.join(cache, "librdkafka-" + VERSION)
    stamp = os.path.join(tree, ".strata-built")
    want = " ".join(CONFIGURE) + "\n"

    def built():
        try:
            with open(stamp) as f:
                return f.read() == want and os.access(os.path.join(tree, "tests", "test-runner"), os.X_OK)
        except OSError:
            return False

    if built():
        return tree
    with open(os.path.join(cache, "librdkafka-%s.lock" % VERSION), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another run may be building it right now
        if built():
            return tree
        ensure_toolchain()
        tarball = shared_tarball()
        work = tree + ".build-%d" % os.getpid()
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        say("building librdkafka %s in %s (once per machine; a few minutes)" % (VERSION, tree))
        started = time.time()
        with tarfile.open(tarball) as tar:
            top = tar.getmembers()[0].name.split("/")[0]
            tar.extractall(work, filter="tar") if hasattr(tarfile, "tar_filter") else tar.extractall(work)
        src = os.path.join(work, top)
        log = os.path.join(cache, "librdkafka-%s-build.log" % VERSION)
        with open(log, "w") as out:
            for cmd in (CONFIGURE, ["make", "-j2", "libs"], ["make", "-j2", "-C", "tests", "build"]):
                out.write("$ %s\n" % " ".join(cmd))
                out.flush()
                r = subprocess.run(cmd, cwd=src, stdout=out, stderr=subprocess.STDOUT, timeout=3600)
                if r.returncode != 0:
                    raise SystemExit("librdkafka: `%s` failed (exit %d); see %s" % (" ".join(cmd), r.returncode, log))
        with open(os.path.join(src, ".strata-built"), "w") as f:
            f.write(want)
        shutil.rmtree(tree, ignore_errors=True)
        os.rename(src, tree)
        shutil.rmtree(work, ignore_errors=True)
        say("built librdkafka %s in %.0f s" % (VERSION, time.time() - started))
    return tree


# ---------------------------------------------------------------- broker

class Broker:
    """One strata serve for the whole run; replaced by a fresh one when a test kills it."""

    def __init__(self, logdir):
        self.args = BROKER_CONFIG
        self.srv = None
        self.partitions_note = None
        self.logdir = logdir
        self.started = 0

    def start(self):
        deadline = time.time() + 300  # the binary is rebuilt from time to time: wait for it
        while True:
            srv = Server(args=self.args)
            self.started += 1
            srv.log_path = os.path.join(self.logdir, "broker-%d.log" % self.started)
            try:
                self.srv = srv.start()
                return self.srv
            except Exception as e:  # noqa: BLE001
                srv.cleanup()
                msg = str(e)
                if self.args and ("unknown broker setting" in msg or "num.partitions" in msg):
                    self.partitions_note = ("WARNING: this strata does not know --config num.partitions=4; running with its "
                                            "default partition count (tests that need 4 partitions per auto-created topic will fail)")
                    say(self.partitions_note)
                    self.args = []
                    continue
                if time.time() > deadline:
                    raise SystemExit("librdkafka: cannot start %s: %s" % (STRATA, msg))
                say("strata serve did not start (%s); retrying in 30 s" % msg[:200])
                time.sleep(30)

    def stop(self):
        if self.srv:
            self.srv.cleanup()
            self.srv = None


# ---------------------------------------------------------------- run

def run_one(tree, test, bootstrap, logdir):
    """Runs one test number; returns (result, seconds, detail, variants)."""
    tests = os.path.join(tree, "tests")
    with open(os.path.join(tests, "test.conf"), "w") as f:
        f.write("bootstrap.servers=%s\n" % bootstrap)
    env = dict(os.environ)
    libs = [os.path.join(tree, "src"), os.path.join(tree, "src-cpp")]
    env["LD_LIBRARY_PATH"] = ":".join(libs + ([env["LD_LIBRARY_PATH"]] if env.get("LD_LIBRARY_PATH") else []))
    env["TESTS"] = test
    env.pop("TEST_KAFKA_VERSION", None)
    env.pop("KAFKA_VERSION", None)
    if KAFKA_VERSION:
        env["TEST_KAFKA_VERSION"] = KAFKA_VERSION
    log_path = os.path.join(logdir, test + ".log")
    started = time.time()
    timed_out = False
    with open(log_path, "w") as log:
        proc = subprocess.Popen(["./test-runner", "-p1"] + (["-Q"] if QUICK else []) + ["-E"], cwd=tests, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait(timeout=30)
    seconds = time.time() - started
    for name in os.listdir(tests):  # the runner leaves a stats file per test
        if name.startswith("stats_") and name.endswith(".json"):
            try:
                os.unlink(os.path.join(tests, name))
            except OSError:
                pass
    with open(log_path, errors="replace") as f:
        text = ANSI.sub("", f.read())
    variants = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m and m.group(1).startswith(test + "_"):
            variants.append((m.group(1), m.group(2), m.group(4).strip().rstrip("|").strip()))
    if timed_out:
        why = first_failure(text)
        return "fail", seconds, "timed out after %d s%s" % (TIMEOUT, (": " + why) if why else ""), variants
    failed = [v for v in variants if v[1] != "PASSED" and v[1] != "SKIPPED"]
    if failed:
        name, state, why = failed[0]
        return "fail", seconds, "%s %s: %s" % (name, state, first_failure(text) or why), variants
    if rc != 0:
        return "fail", seconds, "test-runner exit %d: %s" % (rc, first_failure(text) or "no failure message"), variants
    if variants and all(v[1] == "SKIPPED" for v in variants):
        return "skip", seconds, variants[0][2] or "skipped", variants
    skipped = [v for v in variants if v[1] == "SKIPPED"]
    detail = ""
    if skipped:
        detail = "%d of %d variants skipped" % (len(skipped), len(variants))
    return "pass", seconds, detail, variants


FAILURE = re.compile(r'^### Test "([^"]+)" failed at ([^ ]+) at [^#]*###\s*$')


def first_failure(text):
    """'NAME at FILE:LINE: message' of the first test failure in a test-runner log (not <MAIN>'s)."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = FAILURE.match(line)
        if m:
            msg = lines[i + 1].strip() if i + 1 < len(lines) else ""
            found.append("%s at %s: %s" % (m.group(1), m.group(2), msg[:300]))
    real = [f for f in found if not f.startswith("<MAIN>")]
    return (real or found or [""])[0]


def read_expected():
    expected = {}
    if not os.path.exists(EXPECTED):
        return expected
    with open(EXPECTED) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cols = line.split("\t")
            if cols[0] == "test":
                continue
            expected[cols[0]] = (cols[1] if len(cols) > 1 else "pass", cols[2] if len(cols) > 2 else "")
    return expected


def verdict(result, expected):
    if expected is None:
        return "new"
    if result == expected:
        return "ok"
    if expected == "pass":
        return "REGRESSION"
    if result == "pass":
        return "improved"
    return "changed"


def record(results, expected):
    """Rewrites the tsv with today's results, keeping the reasons of unchanged rows."""
    keep = dict(expected)
    for test, (result, _, detail, _) in results.items():
        old = expected.get(test)
        reason = old[1] if old and old[0] == result else ("" if result == "pass" else "TODO: " + detail)
        keep[test] = (result, reason)
    header = []
    if os.path.exists(EXPECTED):
        with open(EXPECTED) as f:
            header = [l for l in f if l.startswith("#")]
    os.makedirs(os.path.dirname(EXPECTED), exist_ok=True)
    with open(EXPECTED, "w") as f:
        f.writelines(header)
        f.write("test\texpected\treason\n")
        for test in sorted(keep):
            f.write("%s\t%s\t%s\n" % (test, keep[test][0], keep[test][1]))
    say("wrote %s" % EXPECTED)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    do_record = "--record" in sys.argv[1:]
    choice = os.environ.get("STRATA_LIBRDKAFKA_TESTS", DEFAULT_LIST)
    if args:
        tests, label = [a.zfill(4) for a in args], "selected"
    elif choice in LISTS:
        tests, label = LISTS[choice], choice
    else:
        tests, label = [t.zfill(4) for t in re.split(r"[,\s]+", choice) if t], "selected"
    tree = build()
    expected = read_expected()
    # One run at a time per cache: the runs share tests/test.conf and the log directory.
    run_lock = open(os.path.join(cache_dir(), "librdkafka-%s.run.lock" % VERSION), "w")
    try:
        fcntl.flock(run_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        say("another run is using %s; waiting for it" % tree)
        fcntl.flock(run_lock, fcntl.LOCK_EX)
    logdir = os.path.join(cache_dir(), "librdkafka-%s-logs" % VERSION)
    if os.path.isdir(logdir):  # the previous run's logs stay next to this run's, as ...-logs.previous
        shutil.rmtree(logdir + ".previous", ignore_errors=True)
        os.rename(logdir, logdir + ".previous")
    os.makedirs(logdir)
    say(run_as().describe())
    broker = Broker(logdir)
    srv = broker.start()
    say("%s list: %d tests against %s (%s), per-test timeout %d s%s%s; logs in %s"
        % (label, len(tests), srv.bootstrap, " ".join(broker.args) or "no broker settings", TIMEOUT,
           "" if QUICK else ", full mode (not -Q: the expected results are for -Q)",
           (", TEST_KAFKA_VERSION=" + KAFKA_VERSION) if KAFKA_VERSION else "", logdir))
    results = {}
    run_started = time.time()
    try:
        for test in tests:
            exp = expected.get(test)
            if time.time() - run_started > BUDGET:
                results[test] = ("fail", 0.0, "not run: the run exceeded its %d s budget (STRATA_LIBRDKAFKA_BUDGET)" % BUDGET, False)
                print("  %s fail  not run (budget)" % test, flush=True)
                continue
            attempts = []
            while True:
                result, seconds, detail, variants = run_one(tree, test, srv.bootstrap, logdir)
                if not srv.alive():
                    rc = srv.proc.returncode
                    result, detail = "fail", "the broker died during this test (exit %s); %s" % (rc, detail)
                    say("the broker died during %s (exit %s); its last lines (all in %s):\n%s\nlibrdkafka: starting a fresh broker"
                        % (test, rc, srv.log_path, "".join("    " + l for l in list(srv.tail)[-12:]).rstrip()))
                    broker.stop()
                    srv = broker.start()
                    attempts.append((result, seconds, detail))
                    break
                attempts.append((result, seconds, detail))
                # A test expected to pass that fails runs once more (its first log stays as NNNN-1.log):
                # passing then makes it "flaky" (reported, not a regression).
                if result == "pass" or not exp or exp[0] != "pass" or len(attempts) > 1:
                    break
                os.replace(os.path.join(logdir, test + ".log"), os.path.join(logdir, test + "-1.log"))
            flaky = len(attempts) > 1 and result == "pass"
            if flaky:
                detail = "failed, then passed on a second run: %s" % attempts[0][2]
            seconds = sum(a[1] for a in attempts)
            results[test] = (result, seconds, detail, flaky)
            v = "flaky" if flaky else verdict(result, exp[0] if exp else None)
            print("  %s %-5s %-10s %6.1fs  %s" % (test, result, v if v != "ok" else "", seconds, detail), flush=True)
    finally:
        broker.stop()
    total = time.time() - run_started

    print()
    print("%-5s %-6s %-8s %-10s %7s  %s" % ("test", "result", "expected", "verdict", "seconds", "detail / expected reason"))
    counts = {}
    verdicts = {}
    for test in tests:
        result, seconds, detail, flaky = results[test]
        exp = expected.get(test)
        v = verdicts[test] = "flaky" if flaky else verdict(result, exp[0] if exp else None)
        counts[result] = counts.get(result, 0) + 1
        note = detail
        if exp and exp[1] and result != "pass":
            note = exp[1] + ((" [" + detail + "]") if v != "ok" and detail else "")
        print("%-5s %-6s %-8s %-10s %7.1f  %s" % (test, result, exp[0] if exp else "-", v, seconds, note))
    regressions = [t for t in tests if verdicts[t] == "REGRESSION"]
    flaky = [t for t in tests if verdicts[t] == "flaky"]
    improved = [t for t in tests if verdicts[t] == "improved"]
    print()
    say("%d tests in %.0f s: %d pass, %d fail, %d skip; %d improved%s, %d flaky%s, %d regressions%s"
        % (len(tests), total, counts.get("pass", 0), counts.get("fail", 0), counts.get("skip", 0),
           len(improved), (" (" + " ".join(improved) + ")") if improved else "",
           len(flaky), (" (" + " ".join(flaky) + ")") if flaky else "", len(regressions),
           ("; " + broker.partitions_note) if broker.partitions_note else ""))
    if regressions:
        say("regressions: %s (logs in %s)" % (" ".join(regressions), logdir))
    if do_record:
        record(results, expected)
    print("librdkafka: %d passed, %d failed" % (counts.get("pass", 0), len(regressions)), flush=True)
    sys.exit(1 if regressions else 0)


if __name__ == "__main__":
    main()
