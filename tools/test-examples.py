#!/usr/bin/env python3
"""Builds the embedded-API examples (Examples/*, SwiftPM packages that depend on Strata by
relative path) and runs them as a user would: from a fresh temporary directory, with the
examples' relative data directory (./strata-data), as nobody when run as root.

    python3 tools/test-examples.py [-v]

- Both packages build into one scratch directory outside the repository
  ($XDG_CACHE_HOME/strata/examples-build, default ~/.cache/...), so the second reuses the first's
  build of Strata; the binaries are copied into the temporary directory, so the unprivileged user
  needs no access to the build.
- PurchasesPerUser: 20,000 purchases counted per user and minute (exact totals and top users), a
  second `count` emits nothing new, 5,000 more purchases continue the counts.
- OrderEnricher: 5,000 orders enriched exactly once, a second run adds nothing, 1,000 more are
  enriched; then 60,000 orders and the service SIGKILLed mid-run: the next run finishes the work
  and read_committed readers see every order exactly once.
The last line is `examples: N passed, N failed`; the exit status is 1 when a check failed.
"""
import argparse
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "strata", "examples-build")
EXAMPLES = {"PurchasesPerUser": "purchases-per-user", "OrderEnricher": "order-enricher"}

passed = 0
failed = 0
verbose = False


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name}{': ' + detail if detail else ''}")


def build():
    os.makedirs(CACHE, exist_ok=True)
    for package, product in EXAMPLES.items():
        path = os.path.join(ROOT, "Examples", package)
        start = time.time()
        r = subprocess.run(["swift", "build", "--package-path", path, "--scratch-path", CACHE, "--product", product],
                           capture_output=True, text=True)
        print(f"built {product} in {time.time() - start:.0f} s" if r.returncode == 0 else r.stdout[-4000:] + r.stderr[-4000:])
        if r.returncode != 0:
            return False
    return True


def as_user():
    """The uid/gid the examples run as: nobody when we are root."""
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def run(workdir, *args, timeout=300):
    ids = as_user()

    def demote():
        if ids:
            os.setgid(ids[1])
            os.setuid(ids[0])
    r = subprocess.run(["./" + args[0], *args[1:]], cwd=workdir, capture_output=True, text=True, timeout=timeout,
                       preexec_fn=demote)
    if verbose or r.returncode != 0:
        print(f"$ {' '.join(args)}  (exit {r.returncode})\n{r.stdout}{r.stderr}")
    return r


def workdir():
    d = tempfile.mkdtemp(prefix="strata-example-")
    os.chmod(d, 0o777)
    bindir = os.path.join(CACHE, "debug")
    for product in EXAMPLES.values():
        shutil.copy(os.path.join(bindir, product), d)
    return d


def expected_purchases(n):
    """Totals per user of the first n purchases, as the example generates them."""
    totals = {}
    for i in range(n):
        u = (i * 7919) % 1000
        user = f"user-{u * u // 20000}"
        totals[user] = totals.get(user, 0) + 1
    return totals


def top3(totals):
    return [f"  {u}: {n}" for u, n in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))[:3]]


def purchases():
    d = workdir()
    try:
        r = run(d, "purchases-per-user", "produce", "20000")
        check("purchases: produce 20000", r.returncode == 0 and "produced 20000 purchases" in r.stdout, r.stdout + r.stderr)
        r = run(d, "purchases-per-user", "count")
        lines = r.stdout.splitlines()
        m = re.search(r"windows emitted this run: (\d+)", r.stdout)
        check("purchases: first count emits every user-minute", m is not None and int(m.group(1)) > 0, r.stdout + r.stderr)
        check("purchases: 20000 counted, exact", "purchases counted: 20000 in" in r.stdout, r.stdout)
        check("purchases: top users exact", lines[-3:] == top3(expected_purchases(20000)), f"{lines[-3:]} != {top3(expected_purchases(20000))}")
        first = r.stdout.split("\n", 1)[1]
        r = run(d, "purchases-per-user", "count")
        check("purchases: second count emits nothing", "windows emitted this run: 0" in r.stdout, r.stdout + r.stderr)
        check("purchases: second count reports the same totals", r.stdout.split("\n", 1)[1] == first, r.stdout)
        r = run(d, "purchases-per-user", "produce", "5000")
        check("purchases: produce 5000 more", "produced 5000 purchases (25000 in all)" in r.stdout, r.stdout + r.stderr)
        r = run(d, "purchases-per-user", "count")
        m = re.search(r"windows emitted this run: (\d+)", r.stdout)
        check("purchases: a count after more input continues", m is not None and int(m.group(1)) > 0 and "purchases counted: 25000 in" in r.stdout,
              r.stdout + r.stderr)
        check("purchases: top users exact after more input", r.stdout.splitlines()[-3:] == top3(expected_purchases(25000)), r.stdout)
        check("purchases: data in the relative ./strata-data", os.path.isdir(os.path.join(d, "strata-data", "logs", "purchases-0")), str(os.listdir(d)))
    finally:
        shutil.rmtree(d, ignore_errors=True)


def enricher():
    d = workdir()
    try:
        r = run(d, "order-enricher", "produce", "5000")
        check("enricher: produce 5000", "produced 5000 orders" in r.stdout, r.stdout + r.stderr)
        r = run(d, "order-enricher", "run")
        check("enricher: first run enriches all", "enriched this run: 5000" in r.stdout and "orders-enriched: 5000 orders, 2500 gold" in r.stdout,
              r.stdout + r.stderr)
        r = run(d, "order-enricher", "run")
        check("enricher: second run adds nothing", "enriched this run: 0" in r.stdout and "orders-enriched: 5000 orders, 2500 gold" in r.stdout,
              r.stdout + r.stderr)
        run(d, "order-enricher", "produce", "1000")
        r = run(d, "order-enricher", "run")
        check("enricher: a run after more input continues", "enriched this run: 1000" in r.stdout and "orders-enriched: 6000 orders, 3000 gold" in r.stdout,
              r.stdout + r.stderr)
        # A crash mid-run: SIGKILL while it enriches 60,000 orders; the next run completes the
        # work and committed readers see each order once.
        run(d, "order-enricher", "produce", "60000")
        ids = as_user()

        def demote():
            if ids:
                os.setgid(ids[1])
                os.setuid(ids[0])
        p = subprocess.Popen(["./order-enricher", "run"], cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=demote)
        time.sleep(0.6)
        killed = p.poll() is None
        if killed:
            p.send_signal(signal.SIGKILL)
        p.wait()
        r = run(d, "order-enricher", "run")
        m = re.search(r"enriched this run: (\d+)", r.stdout)
        check("enricher: SIGKILL mid-run, the next run finishes: each order exactly once",
              "orders-enriched: 66000 orders, 33000 gold" in r.stdout and m is not None,
              f"killed={killed} " + r.stdout + r.stderr)
        print(f"     (killed mid-run: {killed}; the run after it enriched {m.group(1) if m else '?'})")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def doc_sources():
    """Each `<!-- example-source: PATH -->` block of docs/embedding.md must be that file, verbatim."""
    doc = open(os.path.join(ROOT, "docs", "embedding.md")).read()
    blocks = re.findall(r"<!-- example-source: (\S+) -->\n```swift\n(.*?)```", doc, re.S)
    check("docs/embedding.md shows example sources", len(blocks) > 0)
    for path, text in blocks:
        source = open(os.path.join(ROOT, path)).read()
        check(f"docs/embedding.md block is {path}", text == source, "the block differs from the file: copy the file into the doc")


def main():
    global verbose
    ap = argparse.ArgumentParser()
    ap.add_argument("-v", action="store_true")
    verbose = ap.parse_args().v
    doc_sources()
    if not build():
        check("examples build", False)
    else:
        purchases()
        enricher()
    print(f"examples: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
