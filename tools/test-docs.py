#!/usr/bin/env python3
"""Runs the shell examples of the documentation, verbatim, as a user would paste them.

    python3 tools/test-docs.py [-v] [--keep] [--timeout S] [FILE.md ...]   (default: README.md docs/cli.md)

Every ```sh, ```bash, ```shell or ```console block is run with `bash -e` (a failing line fails the
block), in order, in one fresh temporary directory per Markdown file (so a block can use what an
earlier block of the same file made), where `./tools` is a symlink to the repository's tools/.
`console` blocks run their `$ `-prompted lines only (output lines are not checked).

- `./tools/strata` runs $STRATA_BIN, by default the repository's .build/debug/strata (build it
  first: `swift build`), so nothing is built here and the user needs no write access to .build.
- As root, the blocks run as nobody:nogroup (the temporary directory is theirs), in a network
  namespace of their own with only loopback, so a block's `./tools/strata serve &` gets the default
  port 127.0.0.1:9092 even when the machine's is taken. Where that is impossible a line says so and
  the blocks run as the current user, on the machine's network.
- Each block runs in a process group of its own; whatever it left running (a backgrounded
  `serve`) gets SIGTERM when the block ends, SIGKILL 10 s later. A block is stopped after
  --timeout seconds (default 120).

An HTML comment on the line before the fence controls a block:
    <!-- doc-test: skip (why) -->        not run, counted as skipped
    <!-- doc-test: timeout=300 -->        this block's own time limit, in seconds
The last line is `docs: N passed, N failed, N skipped`; the exit status is 1 when a block failed.
"""
import argparse
import ctypes
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
DEFAULT_FILES = ["README.md", "docs/cli.md"]
LANGS = {"sh", "bash", "shell", "console"}
DIRECTIVE = re.compile(r"^\s*<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})\s*([^`\s]*)[^`]*$")
TERM_GRACE_S = 10


class Block:
    def __init__(self, path, line, lang, text, directive):
        self.path, self.line, self.lang, self.text = path, line, lang, text
        self.skip_reason = None
        self.timeout = None
        self.error = None  # a malformed directive: reported as a failure
        if directive is None:
            return
        m = re.fullmatch(r"skip(?:\s*\((.*)\))?", directive)
        t = re.fullmatch(r"timeout\s*=\s*(\d+)", directive)
        if m:
            self.skip_reason = m.group(1) or "no reason given"
        elif t:
            self.timeout = int(t.group(1))
        else:
            self.error = f"unknown doc-test directive {directive!r} (known: 'skip (why)', 'timeout=S')"

    def script(self):
        if self.lang != "console":
            return self.text
        # `$ cmd` lines (and their `\` continuations) are the commands; the rest is output.
        out, cont = [], False
        for line in self.text.splitlines():
            if cont or line.startswith("$ "):
                out.append(line if cont else line[2:])
                cont = line.endswith("\\")
        return "\n".join(out) + "\n" if out else self.text


def shown(path):
    rel = os.path.relpath(path, ROOT)
    return path if rel.startswith("..") else rel


def extract(path):
    """The shell blocks of a Markdown file, each with the doc-test directive right before its fence."""
    blocks, rel = [], shown(path)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    i, prev = 0, ""
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                prev = lines[i]
            i += 1
            continue
        indent, fence, lang = len(m.group(1)), m.group(2), m.group(3).lower()
        start, body = i + 1, []
        i += 1
        while i < len(lines):
            close = lines[i].strip()
            if close.startswith(fence[0] * len(fence)) and set(close) == {fence[0]}:
                break
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        if lang in LANGS:
            d = DIRECTIVE.match(prev)
            blocks.append(Block(rel, start, lang, "\n".join(body) + "\n", d.group(1) if d else None))
        prev = ""
    return blocks


def become_subreaper():
    """Orphans of a block (a `serve &` whose shell ended) become our children, so they are reaped."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def reap():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def group_alive(pgid):
    reap()
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(pgid):
    """SIGTERM to whatever the block left running, SIGKILL after a grace period. Returns what was left."""
    if not group_alive(pgid):
        return ""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return ""
    deadline = time.monotonic() + TERM_GRACE_S
    while time.monotonic() < deadline:
        if not group_alive(pgid):
            return "left processes running: stopped them with SIGTERM"
        time.sleep(0.1)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while group_alive(pgid):
        time.sleep(0.05)
    return f"left processes running that ignored SIGTERM for {TERM_GRACE_S} s: killed them"


def port_in_use(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Sandbox:
    """How the blocks are started: as whom, and in which network namespace."""

    def __init__(self, strata_bin):
        self.prefix, self.uid, self.gid, self.notes = [], None, None, []
        if os.geteuid() != 0:
            self.notes.append(f"running the blocks as the current user (uid {os.geteuid()})")
        else:
            self._drop_privileges(strata_bin)
        if os.geteuid() == 0 and self._try(["unshare", "--net", "--", "ip", "link", "set", "lo", "up"]):
            self.prefix = ["unshare", "--net", "--", "bash", "-c", 'ip link set lo up && exec "$@"', "netns"] \
                + self.prefix
            self.notes.append("each block in a network namespace of its own (loopback only, port 9092 free)")
        else:
            self.notes.append("no network namespace (needs root, unshare and ip): the blocks use this machine's network")
            if port_in_use(9092):
                self.notes.append("WARNING: 127.0.0.1:9092 is in use on this machine: examples that start "
                                  "`strata serve` will fail")

    @staticmethod
    def _try(cmd):
        try:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _drop_privileges(self, strata_bin):
        try:
            uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
        except KeyError:
            try:
                uid = pwd.getpwnam("nobody").pw_uid
                gid = grp.getgrnam("nobody").gr_gid
            except KeyError:
                self.notes.append("cannot run the blocks unprivileged: no user nobody: running them as root")
                return
        candidates = []
        if shutil.which("setpriv"):
            candidates.append(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"])
        if shutil.which("runuser"):
            candidates.append(["runuser", "-u", pwd.getpwuid(uid).pw_name, "-g", grp.getgrgid(gid).gr_name, "--"])
        check = ["bash", "-c", 'test "$(id -u)" != 0 && test -x "$1" && test -r "$2"', "check",
                 strata_bin, os.path.join(ROOT, "tools", "strata")]
        for prefix in candidates:
            if self._try(prefix + check):
                self.prefix, self.uid, self.gid = prefix, uid, gid
                self.notes.append(f"running the blocks as nobody (uid {uid}, gid {gid}) via {prefix[0]}")
                return
        why = "neither setpriv nor runuser works" if candidates else "neither setpriv nor runuser is installed"
        self.notes.append(f"cannot run the blocks unprivileged ({why}, or nobody cannot run "
                          f"{strata_bin} / read tools/): running them as root")

    def workdir(self):
        d = tempfile.mkdtemp(prefix="strata-docs-")
        os.symlink(os.path.join(ROOT, "tools"), os.path.join(d, "tools"))
        if self.uid is not None:
            os.chown(d, self.uid, self.gid)
            os.lchown(os.path.join(d, "tools"), self.uid, self.gid)
        return d


def run_block(block, n, sandbox, workdir, scriptdir, env, timeout, verbose):
    script = os.path.join(scriptdir, f"block-{n}.sh")
    with open(script, "w", encoding="utf-8") as f:
        f.write(block.script())
    os.chmod(script, 0o644)
    log_path = os.path.join(scriptdir, f"block-{n}.log")
    started = time.monotonic()
    with open(log_path, "wb") as log:
        # Output to a file, not a pipe: a backgrounded server keeps its copy open after the shell ends.
        proc = subprocess.Popen(sandbox.prefix + ["bash", "-e", script], cwd=workdir, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        timed_out = False
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out, rc = True, None
        leftover = stop_group(proc.pid)
        if rc is None:
            rc = proc.wait()
    elapsed = time.monotonic() - started
    with open(log_path, "rb") as f:
        output = f.read().decode("utf-8", "replace")
    ok = rc == 0 and not timed_out
    where = f"{block.path}:{block.line}"
    if ok:
        print(f"ok    {where} ({elapsed:.1f} s)" + (f" [{leftover}]" if leftover and verbose else ""))
    else:
        why = f"timed out after {timeout} s" if timed_out else f"exit status {rc}"
        print(f"FAIL  {where} ({elapsed:.1f} s): {why}")
        print("      block:")
        for line in block.script().rstrip("\n").splitlines():
            print(f"      | {line}")
    if output.strip() and (verbose or not ok):
        lines = output.rstrip("\n").splitlines()
        shown = lines if verbose else lines[-40:]
        print("      output" + ("" if len(shown) == len(lines) else f" (last {len(shown)} of {len(lines)} lines)") + ":")
        for line in shown:
            print(f"      > {line[:300]}")
    sys.stdout.flush()
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="*", help="Markdown files (default: README.md docs/cli.md)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per block (default 120)")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every block's output")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    a = ap.parse_args()

    files = [os.path.abspath(p) for p in a.files] or [os.path.join(ROOT, p) for p in DEFAULT_FILES]
    strata_bin = os.path.abspath(os.environ.get("STRATA_BIN") or os.path.join(ROOT, ".build", "debug", "strata"))
    if not os.access(strata_bin, os.X_OK):
        print(f"docs: {strata_bin} is missing: build it first (swift build), or set STRATA_BIN")
        print("docs: 0 passed, 1 failed, 0 skipped")
        return 1

    become_subreaper()
    sandbox = Sandbox(strata_bin)
    print(f"docs: {', '.join(shown(p) for p in files)} with STRATA_BIN={strata_bin}")
    for note in sandbox.notes:
        print(f"docs: {note}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    env["STRATA_BIN"] = strata_bin

    passed = failed = skipped = 0
    started = time.monotonic()
    for path in files:
        try:
            blocks = extract(path)
        except OSError as e:
            print(f"FAIL  {path}: {e}")
            failed += 1
            continue
        workdir = sandbox.workdir()
        scriptdir = tempfile.mkdtemp(prefix="strata-docs-scripts-")
        os.chmod(scriptdir, 0o755)
        env_file = dict(env, HOME=workdir, PWD=workdir)
        print(f"docs: {shown(path)}: {len(blocks)} shell blocks, in {workdir}")
        try:
            for n, block in enumerate(blocks, 1):
                if block.error:
                    print(f"FAIL  {block.path}:{block.line}: {block.error}")
                    failed += 1
                elif block.skip_reason is not None:
                    print(f"skip  {block.path}:{block.line} ({block.skip_reason})")
                    skipped += 1
                elif run_block(block, n, sandbox, workdir, scriptdir, env_file, block.timeout or a.timeout,
                               a.verbose):
                    passed += 1
                else:
                    failed += 1
        finally:
            if a.keep:
                print(f"docs: kept {workdir} and {scriptdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
                shutil.rmtree(scriptdir, ignore_errors=True)
    print(f"docs: {time.monotonic() - started:.0f} s")
    print(f"docs: {passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
