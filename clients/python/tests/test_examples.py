"""examples/python: the spider and the SQLite inserter as child processes against the real broker."""
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid

import grpc
from broker_client import Consumer

from .broker_process import DEADLINE, ROOT, BrokerTestCase
from .test_client import describe, group_floor

EXAMPLES = os.path.join(ROOT, "examples", "python")


def wait_for(condition, what):
    """Polls ``condition`` until true within the deadline (awaiting an outside process's effect, not sleeping)."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.01)


def stored(address, topic):
    """How many messages ``topic`` has taken so far; 0 while it does not exist yet."""
    try:
        return describe(address, topic).next_offset
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return 0
        raise


def count_rows(db_path):
    if not os.path.exists(db_path):
        return 0
    db = sqlite3.connect(db_path, timeout=DEADLINE)
    try:
        return db.execute("SELECT count(*) FROM items").fetchone()[0]
    except sqlite3.OperationalError:  # the inserter has not created the table yet
        return 0
    finally:
        db.close()


class ExamplesTest(BrokerTestCase):
    def setUp(self):
        self.prefix = "ex%s-" % uuid.uuid4().hex[:8]
        self.folder = tempfile.mkdtemp(prefix="broker-examples-")
        self.db_path = os.path.join(self.folder, "items.sqlite")
        self.children = []
        self.addCleanup(self.kill_children)

    def kill_children(self):
        for child in self.children:
            if child.poll() is None:
                child.kill()
            child.wait(DEADLINE)
            child.stdout.close()

    def env(self, topic=None):
        host, port = self.broker.address.rsplit(":", 1)
        env = dict(os.environ, QUEUE_PLATFORM="broker", QUEUE_PLATFORM_LISTENERS=host, QUEUE_PLATFORM_PORT=port,
                   QUEUE_PLATFORM_MAX_TIMEOUT="60", QUEUE_PLATFORM_UNRELATED="ignored")
        if topic:
            env["QUEUE_PLATFORM_TOPIC"] = topic
        return env

    def start(self, script, args, topic=None):
        child = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, script)] + args, env=self.env(topic),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
        self.children.append(child)
        return child

    def run_spider(self, items):
        spider = self.start("spider.py", ["--jid", "7.8.9", "--items", str(items), "--topic-prefix", self.prefix])
        output, _ = spider.communicate(timeout=DEADLINE * 2)
        self.assertEqual(0, spider.returncode, output)
        return output

    def start_inserter(self, *extra):
        return self.start("inserter.py", ["--db", self.db_path, "--chunk", "10", "--max-wait", "0.2"] + list(extra),
                          topic=self.prefix + "job_items")

    def test_the_inserter_sigkilled_mid_chunk_and_restarted_leaves_every_item_exactly_once(self):
        items = 3000
        output = self.run_spider(items)
        self.assertIn("%d items, %d messages" % (items, 3 * items + 1), output)
        topics = {name: describe(self.broker.address, self.prefix + name).next_offset
                  for name in ("job_items", "job_requests", "job_logs", "job_stats")}
        self.assertEqual({"job_items": items, "job_requests": items, "job_logs": items, "job_stats": 1}, topics)

        first = self.start_inserter()
        wait_for(lambda: count_rows(self.db_path) > 0, "the first committed chunk")
        first.kill()  # SIGKILL: chunks in hand (committed or not, acked or not) are abandoned mid-way
        first.wait(DEADLINE)
        at_kill = count_rows(self.db_path)
        self.assertLess(at_kill, items, "the inserter finished before it was killed; the test proved nothing")

        second = self.start_inserter()
        wait_for(lambda: count_rows(self.db_path) == items, "all items in the table")
        wait_for(lambda: group_floor(self.broker.address, self.prefix + "job_items", "group_%sjob_items" % self.prefix)
                 == items, "every item acknowledged")
        second.send_signal(signal.SIGTERM)
        output, _ = second.communicate(timeout=DEADLINE)
        self.assertEqual(0, second.returncode, output)

        db = sqlite3.connect(self.db_path)
        rows = db.execute('SELECT "offset", jid, payload FROM items').fetchall()
        db.close()
        self.assertEqual(items, len(rows))
        self.assertEqual(list(range(items)), sorted(offset for offset, _, _ in rows))
        self.assertEqual({"7.8.9"}, {jid for _, jid, _ in rows})
        self.assertEqual(sorted('"n": %d,' % n for n in range(items)),
                         sorted(payload[1:payload.index(",") + 1] for _, _, payload in rows))

    def test_a_database_error_is_retried_then_dead_lettered_with_its_reason_not_dropped(self):
        from broker_client import Producer
        topic = self.prefix + "job_items"
        with Producer([self.broker.address]) as producer:
            for n in range(4):
                producer.send(topic, {"jid": "1.1.1", "payload": {"n": n}, "unique": "True"})
            producer.send(topic, {"payload": {"n": "no jid: NOT NULL fails"}})
            producer.send(topic, b"\xff not json")
        inserter = self.start_inserter("--retry-delay", "0.05")
        wait_for(lambda: stored(self.broker.address, topic + ".dlq") == 2 and count_rows(self.db_path) == 4,
                 "four items inserted and two dead letters")
        inserter.send_signal(signal.SIGTERM)
        output, _ = inserter.communicate(timeout=DEADLINE)
        self.assertEqual(0, inserter.returncode, output)

        with Consumer(topic + ".dlq", "inspect", [self.broker.address]) as dead:
            letters = sorted((dead.poll(DEADLINE) for _ in range(2)), key=lambda m: int(m.headers["broker-dlq-original-offset"]))
        self.assertEqual(["4", "5"], [m.headers["broker-dlq-original-offset"] for m in letters])
        self.assertEqual("5", letters[0].headers["broker-dlq-delivery-count"])
        self.assertEqual("max deliveries (5) reached; last failure: nacked", letters[0].headers["broker-dlq-reason"])
        self.assertIn("NOT NULL constraint failed: items.jid", letters[0].headers["broker-dlq-last-error"])
        self.assertIn("not a JSON item", letters[1].headers["broker-dlq-reason"])
        self.assertEqual("1", letters[1].headers["broker-dlq-delivery-count"])
