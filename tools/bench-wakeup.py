#!/usr/bin/env python3
"""Wake-up latency of long-poll Fetches parked across many partitions, through the Kafka protocol.

Parks --waiters Fetch requests (one per connection, as a consumer does) spread over --partitions
partitions of a fresh topic, then appends one small batch at a time to one partition and times,
on the client, how long until the Fetch responses of that partition's waiters arrive (the append's
Produce is sent at t0). Each woken waiter parks again at the new end. Then it measures the Produce
round trip to a partition nobody waits on, with every waiter parked and again with none, in the
same run. Client-side times include both requests' trips through loopback: an upper bound of the
broker's own wake-up time.

  tools/bench-wakeup.py --bootstrap 127.0.0.1:9092 [--partitions 1000] [--waiters 10000] [--samples 300]

Needs the strata binary (STRATA_BIN, default .build/release/strata) only to create the topics.
"""
import argparse
import asyncio
import os
import resource
import struct
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# CRC-32C (Castagnoli), table-driven: RecordBatch v2 checksums.
_TABLE = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _TABLE.append(c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def varint(n):
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def record_batch(value, timestamp_ms):
    body = bytes([0]) + varint(0) + varint(0) + varint(-1) + varint(len(value)) + value + varint(0)
    record = varint(len(body)) + body
    after_crc = struct.pack(">hiqqqhii", 0, 0, timestamp_ms, timestamp_ms, -1, -1, -1, 1) + record
    crc = crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)  # leader epoch, magic, crc, rest
    return struct.pack(">qiibI", 0, batch_length, -1, 2, crc) + after_crc


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def frame(api_key, version, correlation, body, client_id="bench-wakeup"):
    header = struct.pack(">hhi", api_key, version, correlation) + string(client_id)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def fetch_body(topic, partition, offset, max_wait_ms):
    return (struct.pack(">iiiib", -1, max_wait_ms, 1, 1 << 20, 0) + struct.pack(">i", 1) + string(topic)
            + struct.pack(">i", 1) + struct.pack(">iqi", partition, offset, 1 << 20))


def produce_body(topic, partition, batch):
    return (struct.pack(">hhi", -1, 1, 30000) + struct.pack(">i", 1) + string(topic) + struct.pack(">i", 1)
            + struct.pack(">i", partition) + struct.pack(">i", len(batch)) + batch)


async def read_frame(reader):
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def percentiles(samples):
    s = sorted(samples)
    if not s:
        return "no samples"
    def at(q):
        return s[min(len(s) - 1, int(q * len(s)))] * 1000
    return f"p50 {at(0.5):.3f} ms, p90 {at(0.9):.3f} ms, p99 {at(0.99):.3f} ms, max {s[-1] * 1000:.3f} ms ({len(s)} samples)"


class Waiter:
    def __init__(self, partition):
        self.partition = partition
        self.offset = 0
        self.reader = None
        self.writer = None
        self.correlation = 0

    async def connect(self, host, port):
        self.reader, self.writer = await asyncio.open_connection(host, port)

    def park(self, topic):
        self.correlation += 1
        self.writer.write(frame(1, 4, self.correlation, fetch_body(topic, self.partition, self.offset, 60000)))


async def produce(reader, writer, topic, partition, correlation):
    writer.write(frame(0, 3, correlation, produce_body(topic, partition, record_batch(b'{"wake":1}', int(time.time() * 1000)))))
    await writer.drain()
    body = await read_frame(reader)
    return body


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--waiters", type=int, default=10000)
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--topic", default=f"wakeup-{os.getpid()}")
    args = ap.parse_args()
    host, port = args.bootstrap.rsplit(":", 1)
    port = int(port)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.waiters + 100 > hard:
        sys.exit(f"bench-wakeup: {args.waiters} connections need an open-file limit above {hard}")
    strata = os.environ.get("STRATA_BIN", os.path.join(ROOT, ".build", "release", "strata"))
    idle_topic = args.topic + "-idle"
    for name, n in ((args.topic, args.partitions), (idle_topic, 1)):
        subprocess.run([strata, "topics", "create", name, "--partitions", str(n), "--bootstrap", args.bootstrap],
                       check=True, stdout=subprocess.DEVNULL)

    producer_r, producer_w = await asyncio.open_connection(host, port)
    correlation = 0

    async def produce_rtt(topic, partition):
        nonlocal correlation
        correlation += 1
        t0 = time.perf_counter()
        await produce(producer_r, producer_w, topic, partition, correlation)
        return time.perf_counter() - t0

    # Baseline: produce round trips to the idle topic with nothing parked anywhere.
    for _ in range(50):
        await produce_rtt(idle_topic, 0)
    quiet = [await produce_rtt(idle_topic, 0) for _ in range(args.samples)]

    waiters = [Waiter(i % args.partitions) for i in range(args.waiters)]
    for start in range(0, len(waiters), 500):
        await asyncio.gather(*(w.connect(host, port) for w in waiters[start:start + 500]))
    for w in waiters:
        w.park(args.topic)
    await asyncio.gather(*(w.writer.drain() for w in waiters))
    await asyncio.sleep(2.0)  # let every Fetch reach the broker and park
    by_partition = {}
    for w in waiters:
        by_partition.setdefault(w.partition, []).append(w)

    first_wake, last_wake, produce_times = [], [], []
    for k in range(args.samples):
        p = (k * 7919) % args.partitions
        group = by_partition[p]
        t0 = time.perf_counter()
        correlation += 1
        producer_w.write(frame(0, 3, correlation, produce_body(args.topic, p, record_batch(b'{"wake":1}', int(time.time() * 1000)))))
        reads = [asyncio.ensure_future(read_frame(w.reader)) for w in group]
        produced = asyncio.ensure_future(read_frame(producer_r))
        arrivals = []
        for fut in asyncio.as_completed(reads):
            await fut
            arrivals.append(time.perf_counter() - t0)
        await produced
        produce_times.append(time.perf_counter() - t0)
        first_wake.append(arrivals[0])
        last_wake.append(arrivals[-1])
        for w in group:
            w.offset += 1
            w.park(args.topic)
        await asyncio.gather(*(w.writer.drain() for w in group))

    busy = [await produce_rtt(idle_topic, 0) for _ in range(args.samples)]
    print(f"wakeup: {args.waiters} parked Fetches over {args.partitions} partitions ({args.waiters // args.partitions} per partition)")
    print(f"wakeup: append -> first waiter's response received: {percentiles(first_wake)}")
    print(f"wakeup: append -> last of the partition's waiters:  {percentiles(last_wake)}")
    print(f"wakeup: the append's own Produce round trip:         {percentiles(produce_times)}")
    print(f"wakeup: Produce round trip to a partition nobody waits on, {args.waiters} parked: {percentiles(busy)}")
    print(f"wakeup: the same with nothing parked (same run):                 {percentiles(quiet)}")
    for w in waiters:
        w.writer.close()
    producer_w.close()


if __name__ == "__main__":
    asyncio.run(main())
