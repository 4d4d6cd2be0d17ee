#!/usr/bin/env python3
"""`strata export --format parquet` read back by two independent Parquet readers, pyarrow and
DuckDB (PyPI), next to a running `strata serve` (as an unprivileged user, relative paths):
every record byte-identical to what confluent-kafka produced (keys, values, headers, timestamps,
offsets), every member column equal to what the JSON says (types inferred per file, escapes,
unicode, numbers in every form, duplicates, non-JSON and non-UTF-8 values, tombstones, aborted
transactions left out), aggregates equal to `strata query`'s, --since/--until equal to strata
query's time bounds, files split by --max-rows. Ends with 'export: N passed, N failed'."""
import glob
import json
import math
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_clients import STRATA, admin_create, run_suite  # noqa: E402

FIXED = ["partition", "offset", "timestamp", "key", "value", "headers"]


def strata(srv, *args, check=True):
    r = subprocess.run(srv.command([STRATA] + list(args)), capture_output=True, text=True, timeout=300, cwd=srv.workdir)
    if check:
        assert r.returncode == 0, "strata %s: exit %d: %s" % (" ".join(args), r.returncode, r.stderr[-800:])
    return r


def produce(srv, topic, records, transactional_abort=(), config=None):
    """records: [(key bytes|None, value bytes|None, headers list|None, timestamp ms, partition)].
    Returns {(partition, offset): record} from the delivery reports. `config`: more producer settings."""
    from confluent_kafka import Producer
    delivered = {}
    errors = []
    p = Producer(dict({"bootstrap.servers": srv.bootstrap, "acks": "all", "linger.ms": 5, "enable.idempotence": True}, **(config or {})))

    def report(rec):
        def cb(err, msg):
            if err:
                errors.append(err)
            else:
                delivered[(msg.partition(), msg.offset())] = rec
        return cb
    for rec in records:
        key, value, headers, ts, part = rec
        p.produce(topic, key=key, value=value, headers=headers, timestamp=ts, partition=part, on_delivery=report(rec))
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors[:3]
    if transactional_abort:
        t = Producer(dict({"bootstrap.servers": srv.bootstrap, "transactional.id": "export-abort"}, **(config or {})))
        t.init_transactions(30)
        t.begin_transaction()
        for key, value, headers, ts, part in transactional_abort:
            t.produce(topic, key=key, value=value, headers=headers, timestamp=ts, partition=part)
        t.flush(30)
        t.abort_transaction(30)
    return delivered


def read_pyarrow(paths):
    import pyarrow.parquet as pq
    rows = []
    schemas = {}
    for path in paths:
        t = pq.read_table(path)
        schemas[os.path.basename(path)] = t.schema
        rows.extend(t.to_pylist())
    return rows, schemas


def read_duckdb(pattern):
    import duckdb
    con = duckdb.connect()
    cur = con.execute("SELECT * FROM read_parquet(?, union_by_name = true)", [pattern])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def nesting(text):
    """The deepest bracket nesting of a JSON text (brackets inside strings do not count)."""
    deepest = level = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            level += 1
            deepest = max(deepest, level)
        elif c in "]}":
            level -= 1
    return deepest


def top_members(text):
    """[(name, parsed value, raw JSON text)] of a strict JSON object, duplicates included, or None
    (also for nesting deeper than 64 levels, where export leaves the document in `value` only)."""
    if nesting(text) > 64:
        return None
    def no_constants(c):
        raise ValueError(c)
    dec = json.JSONDecoder(parse_constant=no_constants)
    ws = " \t\n\r"
    try:
        i = 0
        while i < len(text) and text[i] in ws:
            i += 1
        if i >= len(text) or text[i] != "{":
            return None
        json.loads(text, parse_constant=no_constants)  # the whole document must be strict JSON
        i += 1
        out = []
        while True:
            while text[i] in ws:
                i += 1
            if text[i] == "}":
                break
            name, i = dec.raw_decode(text, i)
            while text[i] in ws:
                i += 1
            assert text[i] == ":"
            i += 1
            while text[i] in ws:
                i += 1
            value, end = dec.raw_decode(text, i)
            out.append((name, value, text[i:end]))
            i = end
            while text[i] in ws:
                i += 1
            if text[i] == ",":
                i += 1
        return out
    except (ValueError, IndexError):
        return None


def lossy(s):
    """What a Parquet string holds for a JSON string: unpaired surrogates as U+FFFD."""
    return s.encode("utf-16", "surrogatepass").decode("utf-16", "replace") if any(0xD800 <= ord(c) <= 0xDFFF for c in s) else s


def millis_z(text):
    """Epoch ms of a `YYYY-MM-DDTHH:MM:SS.sssZ` string with a real date and time, else None."""
    import datetime
    import re
    if not isinstance(text, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z", text):
        return None
    try:
        t = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return int(round(t.timestamp() * 1000))


def expected_member(column_type, value, raw):
    """The cell strata export writes for one JSON member value, by the file's column type."""
    if value is None:
        return None
    if column_type == "timestamp":
        return millis_z(value)
    if column_type == "int64":
        return value
    if column_type == "double":
        return float(value) if not isinstance(value, float) else value
    if column_type == "bool":
        return value
    if isinstance(value, str):
        return lossy(value)
    return raw


def arrow_kind(t):
    import pyarrow as pa
    if pa.types.is_int64(t):
        return "int64"
    if pa.types.is_floating(t):
        return "double"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return "text"


def member_column_names(schema_names, members):
    """Member name -> column name as export assigns them (fixed names get 'value_' prefixes)."""
    used = set(FIXED)
    out = {}
    for m in members:
        name = m
        while name.lower() in used:
            name = "value_" + name
        used.add(name.lower())
        out[m] = name
    return out


def firsts_of(members):
    """{name: (value, raw)} with the first of duplicate members, as SQLite's ->> reads them."""
    firsts = {}
    for name, v, raw in members or []:
        firsts.setdefault(name, (v, raw))
    return firsts


def verify_file(path, delivered):
    """One file: fixed columns byte-identical, member columns as the JSON says."""
    import pyarrow.parquet as pq
    t = pq.read_table(path)
    schema = t.schema
    rows = t.to_pylist()
    names = schema.names
    assert names[:6] == FIXED, names[:6]
    # The members of this file's JSON values, in first-appearance order, and their column types.
    members = []
    parsed = {}
    for r in rows:
        key, value, headers, ts, part = delivered[(r["partition"], r["offset"])]
        text = None
        if value is not None:
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError:
                text = None
        ms = top_members(text) if text is not None else None
        parsed[(r["partition"], r["offset"])] = ms
        for name, _, _ in ms or []:
            if name not in members:
                members.append(name)
    columns = member_column_names(names, members)
    assert sorted(names[6:]) == sorted(columns.values()), (names[6:], columns)
    kinds = {m: arrow_kind(schema.field(columns[m]).type) for m in members}
    # A member is a TIMESTAMP column exactly when every one of its values in the file is such a string.
    for m in members:
        values = [firsts_of(parsed[p]).get(m, (None, None))[0] for p in parsed]
        values = [v for v in values if v is not None]
        want_ts = bool(values) and all(millis_z(v) is not None for v in values)
        assert (kinds[m] == "timestamp") == want_ts, (m, kinds[m], values[:3])
    for r in rows:
        pos = (r["partition"], r["offset"])
        key, value, headers, ts, part = delivered[pos]
        assert int(round(r["timestamp"].timestamp() * 1000)) == ts, (pos, r["timestamp"], ts)
        for col, produced in (("key", key), ("value", value)):
            got = r[col]
            if isinstance(got, str):
                got = got.encode("utf-8")
            assert got == produced, "%s of %s: %r != %r" % (col, pos, got, produced)
        if headers:
            got = json.loads(r["headers"])
            want = {k: (None if v is None else v.decode("utf-8", "replace")) for k, v in headers}
            assert got == want, (pos, got, want)
        else:
            assert r["headers"] is None, (pos, r["headers"])
        firsts = firsts_of(parsed[pos])
        for m in members:
            got = r[columns[m]]
            if m not in firsts:
                assert got is None, "%s of %s: %r, expected null" % (m, pos, got)
                continue
            want = expected_member(kinds[m], *firsts[m])
            if isinstance(want, float) and isinstance(got, float) and math.isnan(want):
                continue
            if kinds[m] == "timestamp":
                assert got is not None and int(round(got.timestamp() * 1000)) == want, (m, pos, got, want)
                continue
            if kinds[m] == "text" and not isinstance(firsts[m][0], str) and firsts[m][0] is not None:
                want = firsts[m][1]  # the member's JSON text as written
            assert got == want and type(got) is type(want), "%s of %s: %r (%s) != %r (%s) in %s" % (
                m, pos, got, type(got).__name__, want, type(want).__name__, kinds[m], os.path.basename(path))
    return rows, kinds, columns


def adversarial_records():
    """Values no generator writes: every JSON corner export must carry exactly."""
    docs = [
        b'{"a":1,"b":"x","n":null,"f":true}',
        b'{"a":-9223372036854775808,"b":"\\u00e9\\n\\"q\\"","f":false}',
        b'{"a":9223372036854775807,"b":"\\ud83d\\ude00 \\u4e2d","nested":{"x":[1,2,{"y":null}]}}',
        b'{"a":0,"b":"","arr":[],"obj":{}}',
        b'  {  "a" : 3 , "b" : "spaced"  }  ',
        b'{"a":4,"a":"dup","b":"first","b":"second"}',
        b'{"num":1.5,"mixed":1}',
        b'{"num":-0,"mixed":"one"}',
        b'{"num":1e3,"mixed":true}',
        b'{"num":12345678901234567890,"mixed":[1]}',
        b'{"num":1E-3,"mixed":{"k":"v"}}',
        b'{"num":-2.5e-300,"mixed":null}',
        b'{"num":1e400}',
        b'{"esc":"\\u0000nul","lone":"\\ud800x","tab":"a\\tb","sl":"\\/"}',
        b'{"offset":"member named offset","Timestamp":7,"value_offset":1}',
        b'{"\\u006bey":"escaped member name","emoji\xf0\x9f\x98\x80":"unicode name"}',
        b'not json at all',
        b'[1,2,3]',
        b'"a string"',
        b'{"truncated":',
        b'\xff\xfe binary \x00 bytes',
        b'{"bad utf8":"\xc3\x28"}',
        b'{}',
        b'{"deep":' + b'[' * 70 + b']' * 70 + b'}',
        b'{"NaN":NaN}',
    ]
    out = []
    ts = 1_700_000_000_000
    for i, d in enumerate(docs):
        key = None if i % 3 == 0 else (b"k-%d" % i if i % 3 == 1 else b"\x00\xffbinkey")
        headers = None if i % 2 else [("h1", b"v%d" % i), ("h2", None), ("très", b"\xe2\x82\xac")]
        out.append((key, d, headers, ts + i, i % 2))
    out.append((b"tomb", None, None, ts + 100, 0))  # a tombstone
    out.append((None, b'{"a":5,"b":"after tombstone"}', None, ts + 101, 0))
    return out


def test_adversarial_values_read_back_exactly(srv):
    admin_create(srv.bootstrap, "odd", 2)
    records = adversarial_records()
    aborted = [(None, b'{"a":999,"aborted":true}', None, 1_700_000_000_500, 0)]
    delivered = produce(srv, "odd", records, transactional_abort=aborted)
    # After the aborted transaction, committed records again (the abort marker is not a row).
    delivered.update(produce(srv, "odd", [(None, b'{"a":6,"b":"after abort"}', None, 1_700_000_000_600, 0)]))
    r = strata(srv, "export", "odd", "--format", "parquet", "--output", "out-odd", "--data", srv.data_arg)
    files = sorted(glob.glob(os.path.join(srv.workdir, "out-odd", "*.parquet")))
    assert len(files) == 2, (files, r.stdout)
    assert not glob.glob(os.path.join(srv.workdir, "out-odd", "*.tmp")), "temporary files left"
    rows = []
    for f in files:
        file_rows, kinds, columns = verify_file(f, delivered)
        rows.extend(file_rows)
    assert {(r["partition"], r["offset"]) for r in rows} == set(delivered), "exported rows differ from the committed records"
    # Types inferred from the file's values (partition 0 holds the even-numbered documents).
    import pyarrow.parquet as pq
    s0 = pq.read_table(files[0]).schema
    s1 = pq.read_table(files[1]).schema
    both = {n: (s0.field(n).type if n in s0.names else None, s1.field(n).type if n in s1.names else None) for n in set(s0.names) | set(s1.names)}
    # Partition 1 has {"a":4,"a":"dup"}: the first of duplicates is the value, so its "a" stays INT64.
    assert str(both["a"][0]) == "int64" and str(both["a"][1]) == "int64", both["a"]
    assert str(both["num"][0]) == "double", both["num"]
    assert str(both["mixed"][0]) == "string" or str(both["mixed"][1]) == "string", both["mixed"]
    assert "value_offset" in s0.names or "value_offset" in s1.names, "the member 'offset' needs a prefixed column"
    # DuckDB reads the same rows as pyarrow.
    duck = read_duckdb(os.path.join(srv.workdir, "out-odd", "*.parquet"))
    assert len(duck) == len(rows)
    by_pos = {(r["partition"], r["offset"]): r for r in rows}
    for d in duck:
        a = by_pos[(d["partition"], d["offset"])]
        for col in ("key", "value", "headers", "b"):
            dv, av = d.get(col), a.get(col)
            if isinstance(dv, (bytes, bytearray)):
                dv = bytes(dv)
                av = av if isinstance(av, bytes) else (av.encode() if av is not None else None)
            assert dv == av, (col, dv, av)


def test_generated_events_match_strata_query(srv):
    admin_create(srv.bootstrap, "ev", 3)
    gen = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gen-events.py")
    lines = subprocess.run([sys.executable, gen, "-n", "30000"], capture_output=True, check=True).stdout.splitlines()
    base = 1_759_276_800_000
    records = []
    for i, line in enumerate(lines):
        doc = json.loads(line)
        key = doc["user_id"].encode()
        headers = [("source", b"gen")] if i % 10 == 0 else None
        records.append((key, line, headers, base + i * 60_000, i % 3))
    delivered = produce(srv, "ev", records)
    strata(srv, "export", "ev", "--format", "parquet", "--output", "out-ev", "--max-rows", "4000", "--data", srv.data_arg)
    files = sorted(glob.glob(os.path.join(srv.workdir, "out-ev", "*.parquet")))
    assert len(files) == 9, [os.path.basename(f) for f in files]  # 10,000 per partition in files of 4,000
    total = 0
    for f in files:
        file_rows, kinds, _ = verify_file(f, delivered)
        total += len(file_rows)
        first, last = os.path.basename(f)[:-8].split("-")[-2:]
        assert int(first) == min(r["offset"] for r in file_rows) and int(last) == max(r["offset"] for r in file_rows)
        assert kinds["latency_ms"] == "int64" and kinds["amount"] == "double" and kinds["ts"] == "timestamp", kinds
    assert total == len(delivered)
    # DuckDB over the files answers as strata query over the log.
    import duckdb
    con = duckdb.connect()
    pattern = os.path.join(srv.workdir, "out-ev", "*.parquet")
    duck = con.execute("SELECT event_type, count(*), round(sum(amount), 2), count(DISTINCT user_id), max(latency_ms) "
                       "FROM read_parquet(?, union_by_name = true) GROUP BY 1 ORDER BY 1", [pattern]).fetchall()
    q = strata(srv, "query", "--format", "jsonl", "--data", srv.data_arg,
               "SELECT value->>'$.event_type' AS t, count(*) AS n, round(sum(value->>'$.amount'), 2) AS s, "
               "count(DISTINCT value->>'$.user_id') AS u, max(value->>'$.latency_ms') AS l FROM ev GROUP BY 1 ORDER BY 1")
    ours = [tuple(json.loads(line).values()) for line in q.stdout.splitlines()]
    assert [tuple(r) for r in duck] == [tuple(r) for r in ours], (duck[:3], ours[:3])
    # A time range: the same records as strata query with the same bounds.
    since, until = "2025-10-03T00:00:00Z", "2025-10-05T12:00:00Z"
    strata(srv, "export", "ev", "--output", "out-range", "--since", since, "--until", until, "--partition", "1", "--data", srv.data_arg)
    got = con.execute("SELECT \"offset\" FROM read_parquet(?) ORDER BY 1", [os.path.join(srv.workdir, "out-range", "*.parquet")]).fetchall()
    q = strata(srv, "query", "--format", "jsonl", "--since", since, "--until", until, "--data", srv.data_arg,
               "SELECT offset FROM ev WHERE partition = 1 ORDER BY 1")
    want = [json.loads(line)["offset"] for line in q.stdout.splitlines()]
    assert [r[0] for r in got] == want and 0 < len(want) < 10000, (len(got), len(want))
    # Members only: no value column, the same member cells.
    strata(srv, "export", "ev", "--output", "out-nv", "--without-value", "--data", srv.data_arg)
    nv = con.execute("SELECT * FROM read_parquet(?, union_by_name = true) ORDER BY partition, \"offset\"",
                     [os.path.join(srv.workdir, "out-nv", "*.parquet")])
    names = [d[0] for d in nv.description]
    a = nv.fetchall()
    assert "value" not in names and names[:5] == ["partition", "offset", "timestamp", "key", "headers"], names
    full = con.execute("SELECT * EXCLUDE (value) FROM read_parquet(?, union_by_name = true) ORDER BY partition, \"offset\"", [pattern])
    b = full.fetchall()
    fnames = [d[0] for d in full.description]
    assert names == fnames, (names, fnames)
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    assert len(a) == len(b) and not diff, (len(a), len(b), diff[:2])
    # Bad arguments are refused with a message, and nothing is written.
    for args, message in ((["ev", "--output", "x", "--partition", "7"], "no partition 7"), (["nope", "--output", "x"], "unknown topic"),
                          (["ev", "--output", "x", "--format", "csv"], "only parquet")):
        r = strata(srv, "export", *args, "--data", srv.data_arg, check=False)
        assert r.returncode != 0 and message in r.stderr, (args, r.stderr)


TESTS = [test_adversarial_values_read_back_exactly, test_generated_events_match_strata_query]


if __name__ == "__main__":
    run_suite("export", TESTS, sys.argv)
