#!/usr/bin/env python3
"""End-to-end latency through a Kafka broker: a producer process sends N events/s for S seconds
(confluent-kafka, acks=1, linger.ms=0), each carrying its send time; a consumer process (assigned,
long-polling) records receive time - send time. Prints p50/p90/p99/p99.9/max in ms.
Usage: latency.py BOOTSTRAP [rate=10000] [seconds=10] [topic=latency]"""
import multiprocessing as mp
import sys
import time


def consume(bootstrap, topic, expected, out):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "latency-probe", "enable.auto.commit": False,
                  "fetch.wait.max.ms": int(__import__("os").environ.get("FETCH_WAIT_MS", "100")), "fetch.min.bytes": 1})
    # From the current end: only what is produced from now on.
    for attempt in range(100):
        try:
            c.list_topics(topic, timeout=5)
            _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)
            break
        except Exception:
            time.sleep(0.1)  # the topic was created a moment ago; metadata catches up
    else:
        out.put("error")
        return
    c.assign([TopicPartition(topic, 0, high)])
    lat = []
    deadline = time.time() + 120
    out.put("ready")
    while len(lat) < expected and time.time() < deadline:
        m = c.poll(0.2)  # (consume(n, t) would wait for n messages or t seconds)
        if m is None or m.error():
            continue
        sent = int(m.value()[:19])
        lat.append((time.time_ns() - sent) / 1e6)
    c.close()
    out.put(lat)


def main():
    bootstrap = sys.argv[1]
    rate = int(sys.argv[2]) if len(sys.argv) > 2 else 10000
    seconds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    topic = sys.argv[4] if len(sys.argv) > 4 else "latency"
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive until the result is in
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(10)
    except Exception as e:
        if "TOPIC_ALREADY_EXISTS" not in str(e):
            raise
    total = rate * seconds
    q = mp.Queue()
    consumer = mp.Process(target=consume, args=(bootstrap, topic, total, q))
    consumer.start()
    if q.get(timeout=60) != "ready":
        sys.exit("latency probe: the consumer could not start")
    p = Producer({"bootstrap.servers": bootstrap, "acks": "1", "linger.ms": 0, "partitioner": "murmur2_random"})
    pad = b"x" * 160
    start = time.perf_counter()
    # Paced by sleeping, not spinning: on 2 cores a spinning producer would starve the broker and
    # the consumer and measure the machine, not the broker.
    for i in range(total):
        due = start + i / rate
        ahead = due - time.perf_counter()
        if ahead > 0.0005:
            time.sleep(ahead)
        p.produce(topic, value=b"%019d " % time.time_ns() + pad, partition=0)
        p.poll(0)
    p.flush(30)
    lat = q.get(timeout=180)
    consumer.join()
    lat.sort()
    pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
    print("latency over %d events at %d/s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms"
          % (len(lat), rate, pick(0.5), pick(0.9), pick(0.99), pick(0.999), lat[-1]))


if __name__ == "__main__":
    main()
