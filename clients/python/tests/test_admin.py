"""The Python Admin client against a child broker: groups listed across topics, peek (dead letters with their
headers, read without consuming), redrive with a limit and a target, group deletion, errors by code."""
import time
import uuid

from broker_client import Admin, BrokerError, Consumer, Producer

from .broker_process import DEADLINE, BrokerTestCase
from .test_client import describe


class AdminTest(BrokerTestCase):
    def dead_letters(self, topic, count):
        """Publishes ``count`` items and dead-letters all of them in group "workers"; returns once they are stored."""
        with Producer([self.broker.address]) as producer:
            for i in range(count):
                producer.send(topic, {"item": i})
        with Consumer(topic, "workers", [self.broker.address], max_in_flight=count) as consumer:
            taken = []
            while len(taken) < count:
                taken += consumer.batch(count - len(taken), DEADLINE)
            consumer.nack(taken, dead_letter=True, reason="price missing")
        deadline = time.monotonic() + DEADLINE
        while describe(self.broker.address, topic + ".dlq").next_offset < count:  # routing is asynchronous
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.02)

    def test_groups_peek_redrive_with_limit_and_target_and_delete(self):
        topic = "adm-%s" % uuid.uuid4().hex[:8]
        self.dead_letters(topic, 5)
        with Admin(self.broker.address) as admin:
            groups, _ = admin.list_groups(topic)
            self.assertEqual(["workers"], [g.group.name for g in groups if not g.group.name.startswith("__")])
            self.assertEqual(topic + ".dlq", groups[0].dead_letter_topic)

            peeked = admin.peek(topic + ".dlq", max_messages=3)
            self.assertEqual([0, 1, 2], [m.offset for m in peeked])
            self.assertEqual("price missing", peeked[0].headers["broker-dlq-reason"])
            self.assertEqual(5, len(admin.peek(topic + ".dlq", max_messages=10)))  # peeking took nothing

            self.assertEqual((2, 0), admin.redrive(topic + ".dlq", max_messages=2))
            self.assertEqual(7, describe(self.broker.address, topic).next_offset)
            other = "adm-other-%s" % uuid.uuid4().hex[:8]
            with Producer([self.broker.address]) as producer:
                producer.send(other, {"seed": True})
            self.assertEqual((3, 0), admin.redrive(topic + ".dlq", target_topic=other))
            self.assertEqual(4, describe(self.broker.address, other).next_offset)

            admin.delete_group(topic, "workers")
            self.assertNotIn("workers", [g.name for g in describe(self.broker.address, topic).groups])
            with self.assertRaises(BrokerError) as missing:
                admin.delete_group(topic, "workers")
            self.assertEqual(("NOT_FOUND", 1009), (missing.exception.status, missing.exception.error_code))
