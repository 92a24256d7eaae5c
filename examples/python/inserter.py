"""estela's item inserter on this broker: items into SQLite in chunks, acknowledged only after the commit.

    QUEUE_PLATFORM=broker QUEUE_PLATFORM_LISTENERS=127.0.0.1 QUEUE_PLATFORM_PORT=7100 QUEUE_PLATFORM_TOPIC=job_items \\
        /usr/bin/python3 examples/python/inserter.py --db items.sqlite

Where estela's Kafka inserter loses an item when it dies mid-chunk (auto-commit) and drops one after three hand-made
retries, this one:
- takes a chunk (``batch``), inserts it in one transaction, and acks the chunk only after the commit: a crash before
  the ack brings the chunk back;
- inserts idempotently, keyed by topic and offset (``ON CONFLICT DO NOTHING``): a chunk that comes back after a crash
  between commit and ack is not inserted twice, so the table holds every item exactly once;
- on a database error retries the chunk item by item, acks what went in and nacks the rest with a delay and the
  error as reason: after the group's max deliveries (default 5) an item lands in the dead-letter topic
  ``<topic>.dlq`` with its story, instead of being dropped;
- sends a payload that is not JSON to the dead-letter topic at once (it can never succeed).
SIGTERM or Ctrl-C: finishes the chunk in hand and closes (what it never started goes back unstarted).
"""
import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "clients", "python"))

from broker_client import estela  # noqa: E402

log = logging.getLogger("inserter")

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    topic       TEXT    NOT NULL,
    "offset"    INTEGER NOT NULL,
    jid         TEXT    NOT NULL,
    payload     TEXT    NOT NULL,
    is_unique   TEXT,
    inserted_at REAL    NOT NULL,
    PRIMARY KEY (topic, "offset")
)
"""
# Only a repeat of (topic, offset) is skipped; NOT NULL and other constraint failures still raise (INSERT OR IGNORE
# would silently skip those too, losing the item).
INSERT = """
INSERT INTO items (topic, "offset", jid, payload, is_unique, inserted_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (topic, "offset") DO NOTHING
"""


def row(message):
    item = message.value
    return (message.topic, message.offset, item.get("jid"), json.dumps(item.get("payload"), ensure_ascii=False),
            item.get("unique"), time.time())


class Inserter:
    def __init__(self, consumer, db, retry_delay):
        self.consumer = consumer
        self.db = db
        self.retry_delay = retry_delay
        self.inserted = 0
        self.failed = 0

    def handle(self, chunk):
        rows, poison = [], []
        for message in chunk:
            try:
                rows.append((message, row(message)))
            except (ValueError, AttributeError) as error:  # not JSON, or not an object
                poison.append((message, error))
        for message, error in poison:
            log.warning("offset %d is not a JSON item (%s): to the dead-letter topic", message.offset, error)
            self.consumer.nack(message, dead_letter=True, reason="not a JSON item: %s" % error)
        if not rows:
            return
        try:
            with self.db:  # one transaction: commit, or roll back on error
                self.db.executemany(INSERT, [r for _, r in rows])
            self.consumer.ack([m for m, _ in rows])
            self.inserted += len(rows)
        except sqlite3.Error as error:
            log.warning("chunk of %d failed (%s): item by item", len(rows), error)
            self.one_by_one(rows)

    def one_by_one(self, rows):
        good = []
        for message, values in rows:
            try:
                with self.db:
                    self.db.execute(INSERT, values)
                good.append(message)
            except sqlite3.Error as error:
                self.failed += 1
                log.warning("offset %d (attempt %d) failed: %s; retry in %.1f s", message.offset, message.attempt,
                            error, self.retry_delay)
                self.consumer.nack(message, delay=self.retry_delay, reason="database error: %s" % error)
        if good:
            self.consumer.ack(good)
            self.inserted += len(good)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="SQLite database file")
    parser.add_argument("--chunk", type=int, default=100, help="items per transaction")
    parser.add_argument("--max-wait", type=float, default=1.0, help="seconds to wait for a chunk to fill")
    parser.add_argument("--retry-delay", type=float, default=10.0, help="seconds before a failed item is retried")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stdout)
    for name in estela.queue_noisy_libraries:
        logging.getLogger(name).setLevel(logging.WARNING)

    db = sqlite3.connect(args.db)
    db.execute(SCHEMA)
    consumer = estela.get_consumer_interface()
    if not consumer.get_connection():
        sys.exit("inserter: the broker does not answer (QUEUE_PLATFORM_LISTENERS)")
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    inserter = Inserter(consumer, db, args.retry_delay)
    log.info("consuming %s into %s", consumer.consumer.topic, args.db)
    try:
        while not stopping:
            chunk = consumer.batch(args.chunk, args.max_wait)
            if chunk:
                inserter.handle(chunk)
                log.info("inserted %d so far (%d failed attempts)", inserter.inserted, inserter.failed)
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
        db.close()
    log.info("stopped: %d inserted, %d failed attempts", inserter.inserted, inserter.failed)


if __name__ == "__main__":
    main()
