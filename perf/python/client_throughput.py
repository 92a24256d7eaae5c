"""Throughput of the Python client (clients/python) against a Release broker on this machine.

    /usr/bin/python3 perf/python/client_throughput.py [--messages 200000] [--size 1024] [--address host:port]

Without --address it starts the broker as a child process on 127.0.0.1 (a fresh data folder, built first when
missing). Phases, one after the other, one Python process each side:
  produce   send() of N JSON messages of about --size bytes, then flush(): send rate and durable rate;
  iterate   group "iterate": for-loop iteration with its implicit acks, until N messages;
  batch     group "batch": batch(500, 1 s) + one ack() per batch, until N messages.
Both groups exist before the first publish, so neither finds the topic truncated under it.
"""
import argparse
import os
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "tests"))

from broker_client import Consumer, Producer  # noqa: E402


def percentile(sorted_values, p):
    return sorted_values[min(len(sorted_values) - 1, int(p / 100.0 * len(sorted_values)))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=200000)
    parser.add_argument("--size", type=int, default=1024, help="approximate JSON message size in bytes")
    parser.add_argument("--address", help="a running broker; default: start a child broker")
    args = parser.parse_args()

    broker = None
    address = args.address
    if address is None:
        from broker_process import BrokerProcess
        broker = BrokerProcess().start()
        address = broker.address
    try:
        run(address, args.messages, args.size)
    finally:
        if broker is not None:
            broker.close()


def run(address, n, size):
    topic = "perf-py-" + uuid.uuid4().hex[:8]
    item = {"jid": "1.2.3", "unique": "x", "payload": ""}
    item["payload"] = "x" * max(0, size - len(str(item).encode()) - 4)
    iterate = Consumer(topic, "iterate", [address], max_in_flight=1000)
    batch = Consumer(topic, "batch", [address], max_in_flight=1000)
    print("python client, %d messages of ~%d B JSON, broker %s" % (n, size, address))

    producer = Producer([address])
    started = time.perf_counter()
    for _ in range(n):
        producer.send(topic, item)
    sent = time.perf_counter() - started
    producer.flush()
    durable = time.perf_counter() - started
    producer.close()
    print("produce  send %8.0f msg/s   durable (flush returned) %8.0f msg/s" % (n / sent, n / durable))

    started = time.perf_counter()
    received = 0
    gaps = []
    last = started
    for _ in iterate:
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
        received += 1
        if received == n:
            break
    elapsed = time.perf_counter() - started
    iterate.close()
    gaps.sort()
    print("iterate  %8.0f msg/s   gap between messages p50 %.1f us  p99 %.1f us  p99.9 %.1f us  max %.1f ms" % (
        n / elapsed, percentile(gaps, 50) * 1e6, percentile(gaps, 99) * 1e6, percentile(gaps, 99.9) * 1e6,
        gaps[-1] * 1e3))

    started = time.perf_counter()
    received = 0
    ack_times = []
    while received < n:
        chunk = batch.batch(500, 1.0)
        t = time.perf_counter()
        batch.ack(chunk)
        ack_times.append(time.perf_counter() - t)
        received += len(chunk)
    elapsed = time.perf_counter() - started
    batch.close()
    ack_times.sort()
    print("batch    %8.0f msg/s   ack(500) until durable p50 %.2f ms  p99 %.2f ms  max %.2f ms" % (
        n / elapsed, percentile(ack_times, 50) * 1e3, percentile(ack_times, 99) * 1e3, ack_times[-1] * 1e3))


if __name__ == "__main__":
    main()
