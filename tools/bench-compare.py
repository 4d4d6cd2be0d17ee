#!/usr/bin/env python3
"""Same-run comparison of two `strata` builds through the Kafka protocol (release builds):
both servers run side by side and every measurement alternates between them (A B A B ...), so
machine noise hits both alike. Reports best-of-runs and the ratio B/A for:
  kcat produce acks=1 (plain), acks=all on a flush.mode=sync topic, acks=1 with lz4 and zstd;
  server CPU seconds per GB of (decompressed) data for each of those;
  strata bench produce (prebuilt 1000-event batches, 8 in flight) acks=1 and acks=all;
  end-to-end latency at 10k events/s (tools/compat/latency.py).
Usage: bench-compare.py BASELINE_STRATA CANDIDATE_STRATA [events=1000000] [runs=3]
Events come from tools/gen-events.py. Needs kcat and confluent-kafka (tools/ensure-deps.sh --compat)."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tick


class Server:
    def __init__(self, binary, label, work):
        self.label = label
        self.data = os.path.join(work, "data-" + label)
        self.log = open(os.path.join(work, "serve-%s.log" % label), "w+")
        self.proc = subprocess.Popen([binary, "serve", "--data", self.data, "--listen", "127.0.0.1:0"],
                                     stderr=self.log, stdout=subprocess.DEVNULL)
        for _ in range(300):
            self.log.seek(0)
            m = re.search(r"Kafka listener on 127\.0\.0\.1:(\d+)", self.log.read())
            if m:
                self.bootstrap = "127.0.0.1:" + m.group(1)
                return
            time.sleep(0.1)
        raise RuntimeError("%s did not start" % binary)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(60)


def timed(cmd, server):
    c0, t0 = cpu_seconds(server.proc.pid), time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.time() - t0, cpu_seconds(server.proc.pid) - c0


def main():
    base_bin, new_bin = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1_000_000
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    work = tempfile.mkdtemp(prefix="strata-compare-")
    events = os.path.join(work, "events.jsonl")
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen-events.py"), "-n", str(n), "-o", events], check=True)
    size = os.path.getsize(events)
    servers = [Server(base_bin, "baseline", work), Server(new_bin, "candidate", work)]
    cases = [("kcat produce acks=1", ["-X", "acks=1"]), ("kcat produce acks=all, sync topic", ["-X", "acks=all"]),
             ("kcat produce acks=1 lz4", ["-X", "acks=1", "-z", "lz4"]), ("kcat produce acks=1 zstd", ["-X", "acks=1", "-z", "zstd"])]
    results = {}  # (case, label) -> [(wall, cpu)]
    try:
        for run in range(runs):
            for case, args in cases:
                for s in (servers if run % 2 == 0 else servers[::-1]):
                    topic = "t-%d-%d" % (run, cases.index((case, args)))
                    wall, cpu = timed(["kcat", "-b", s.bootstrap, "-t", topic, "-P", "-l", events] + args, s)
                    results.setdefault((case, s.label), []).append((wall, cpu))
            for acks in ("1", "all"):
                case = "strata bench produce acks=%s" % acks
                for s in (servers if run % 2 == 0 else servers[::-1]):
                    out = subprocess.run([new_bin, "bench", "produce", "--bootstrap", s.bootstrap, "--topic", "sb-%s-%d" % (acks, run),
                                          "--events", str(n), "--acks", acks], capture_output=True, text=True, check=True).stdout
                    m = re.search(r"([\d.]+)\s*s\b", out)
                    rate = re.search(r"([\d,]+) events/s", out)
                    results.setdefault((case, s.label), []).append((float(m.group(1)) if m else float("nan"), float("nan")))
                    results.setdefault((case + " (line)", s.label), []).append((0, 0, out.strip().splitlines()[-1] if out.strip() else ""))
        print("events: %d (%.0f MB of JSON lines), best of %d runs, same run, alternating" % (n, size / 1e6, runs))
        print("%-40s %12s %12s %8s   %s" % ("", "baseline", "candidate", "cand/base", "server CPU s per GB (base -> cand)"))
        for case, _ in cases + [("strata bench produce acks=1", None), ("strata bench produce acks=all", None)]:
            a = results.get((case, "baseline"), [])
            b = results.get((case, "candidate"), [])
            if not a or not b:
                continue
            wa, wb = min(x[0] for x in a), min(x[0] for x in b)
            ra, rb = n / wa, n / wb
            cpu = ""
            if a[0][1] == a[0][1]:  # not NaN
                ca, cb = min(x[1] for x in a), min(x[1] for x in b)
                cpu = "%.2f -> %.2f" % (ca / (size / 1e9), cb / (size / 1e9))
            print("%-40s %9.0f e/s %9.0f e/s %8.2f   %s" % (case, ra, rb, rb / ra, cpu))
        for s in servers:
            print("latency at 10k events/s, %s:" % s.label, flush=True)
            subprocess.run([sys.executable, os.path.join(ROOT, "tools", "compat", "latency.py"), s.bootstrap, "10000", "10", "latency"])
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
