"""A spider-like producer: what estela's spider entrypoint publishes for one job, through the estela adapter.

    QUEUE_PLATFORM=broker QUEUE_PLATFORM_LISTENERS=127.0.0.1 QUEUE_PLATFORM_PORT=7100 \\
        /usr/bin/python3 examples/python/spider.py --jid 1.2.3 --items 1000

For each scraped page it sends one request record, one item (``{"jid", "payload", "unique"}``) and log lines, and at
the end the job's stats, to the topics job_requests, job_items, job_logs and job_stats, as estela's entrypoint does.
``send`` never waits for the network; ``flush()`` at the end returns once everything is durable on the broker.
"""
import argparse
import datetime
import logging
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))

from broker_client import estela  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jid", default="1.1.1", help="estela job id: spider.job.project")
    parser.add_argument("--items", type=int, default=1000, help="items to scrape")
    parser.add_argument("--topic-prefix", default="", help="prepended to every topic name (tests use their own)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in estela.queue_noisy_libraries:
        logging.getLogger(name).setLevel(logging.WARNING)

    producer = estela.get_producer_interface()
    if not producer.get_connection():
        sys.exit("spider: the broker does not answer (QUEUE_PLATFORM_LISTENERS)")
    topic = {name: args.topic_prefix + name for name in ("job_items", "job_requests", "job_logs", "job_stats")}
    started = datetime.datetime.now(datetime.timezone.utc)
    clock = time.perf_counter()
    for n in range(args.items):
        url = "https://example.com/product/%d" % n
        producer.send(topic["job_requests"], {"jid": args.jid, "payload": {
            "url": url, "status": 200, "method": "GET", "duration": 12, "response_size": 2048,
            "fingerprint": "%040x" % n, "time": datetime.datetime.now(datetime.timezone.utc)}})
        producer.send(topic["job_items"], {"jid": args.jid, "unique": "True", "payload": {
            "n": n, "url": url, "title": "Product %d — Zürich" % n, "price": round(9.99 + n % 100, 2)}})
        producer.send(topic["job_logs"], {"jid": args.jid, "payload": {
            "log": "Scraped from <200 %s>" % url, "datetime": time.time()}})
    producer.send(topic["job_stats"], {"jid": args.jid, "payload": {
        "item_scraped_count": args.items, "start_time": started,
        "finish_time": datetime.datetime.now(datetime.timezone.utc), "finish_reason": "finished"}})
    failures = producer.close()  # flush: returns once every message above is durable, or lists the failed ones
    elapsed = time.perf_counter() - clock
    print("spider %s: %d items, %d messages in %.2f s (%.0f msg/s), %d failed"
          % (args.jid, args.items, 3 * args.items + 1, elapsed, (3 * args.items + 1) / elapsed, len(failures)))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
