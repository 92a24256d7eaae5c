"""Producer and Consumer against the real broker (a child process on 127.0.0.1, port 0)."""
import datetime
import json
import socket
import time
import unittest
import uuid

from broker_client import BrokerError, BufferFull, Consumer, Producer, PublishFailed, RetryBackoff
from broker_client._generated import broker_pb2, broker_pb2_grpc
from broker_client._connection import Listeners

from .broker_process import DEADLINE, BrokerProcess, BrokerTestCase


def new_topic(prefix="t"):
    return "%s-%s" % (prefix, uuid.uuid4().hex)


def free_port_with_nothing_listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def describe(address, topic):
    listeners = Listeners([address])
    try:
        return broker_pb2_grpc.AdminStub(listeners.channel).DescribeTopic(
            broker_pb2.DescribeTopicRequest(name=topic), timeout=DEADLINE)
    finally:
        listeners.close()


def group_floor(address, topic, group):
    return {g.name: g for g in describe(address, topic).groups}[group].ack_floor


def receive(consumer, count):
    """Exactly ``count`` messages, each within the deadline, by iteration (which acks the previous one)."""
    messages = []
    for _ in range(count):
        message = consumer.poll(DEADLINE)
        if message is None:
            raise AssertionError("only %d of %d messages arrived" % (len(messages), count))
        messages.append(message)
    return messages


class ClientTest(BrokerTestCase):
    def producer(self, **options):
        producer = Producer([self.broker.address], **options)
        self.addCleanup(producer.close, DEADLINE)
        return producer

    def consumer(self, topic, group="g", **options):
        consumer = Consumer(topic, group, [self.broker.address], **options)
        self.addCleanup(consumer.close)
        return consumer

    def test_send_and_flush_make_messages_durable_in_order(self):
        topic = new_topic()
        producer = self.producer(linger=0.05, max_batch_messages=7)
        for i in range(100):
            producer.send(topic, {"i": i})
        producer.flush(DEADLINE)
        self.assertEqual(100, describe(self.broker.address, topic).next_offset)
        consumer = self.consumer(topic)
        self.assertEqual(list(range(100)), [m.value["i"] for m in receive(consumer, 100)])

    def test_iteration_acks_the_previous_message_and_close_acks_the_last(self):
        topic = new_topic()
        producer = self.producer()
        for i in range(3):
            producer.send(topic, {"i": i}, key="k%d" % i, headers={"h": str(i)})
        producer.flush(DEADLINE)
        with Consumer(topic, "g", [self.broker.address]) as consumer:
            seen = []
            for message in consumer:
                seen.append((message.value["i"], message.key, message.headers, message.offset, message.attempt))
                if len(seen) == 3:
                    break
        self.assertEqual([(i, b"k%d" % i, {"h": str(i)}, i, 1) for i in range(3)], seen)
        # All three were acknowledged (two by iteration, the last by close): the group's floor is past them.
        self.assertEqual(3, {g.name: g for g in describe(self.broker.address, topic).groups}["g"].ack_floor)

    def test_iteration_sends_its_batched_acks_as_soon_as_no_message_is_waiting(self):
        topic = new_topic()
        producer = self.producer()
        for i in range(3):
            producer.send(topic, {"i": i})
        producer.flush(DEADLINE)
        consumer = self.consumer(topic)
        self.assertEqual([0, 1, 2], [m.offset for m in receive(consumer, 3)])
        self.assertIsNone(consumer.poll(0.2))  # acks the third; nothing waits, so the batched acks go out
        deadline = time.monotonic() + DEADLINE
        while group_floor(self.broker.address, topic, "g") < 3 and time.monotonic() < deadline:
            time.sleep(0.02)  # polling the broker's answer, not waiting for correctness
        self.assertEqual(3, group_floor(self.broker.address, topic, "g"))

    def test_strict_close_releases_the_last_message_so_it_comes_back_unacknowledged(self):
        topic = new_topic()
        producer = self.producer()
        for i in range(20):
            producer.send(topic, {"i": i})
        producer.flush(DEADLINE)
        with Consumer(topic, "g", [self.broker.address], strict=True, max_in_flight=10) as consumer:
            first = consumer.poll(DEADLINE)
        self.assertEqual(0, {g.name: g for g in describe(self.broker.address, topic).groups}["g"].ack_floor)
        # The last message and the prefetched ones were released after a stop, not left to the stream's end: each
        # comes back as a first attempt, not as a failed delivery.
        again = receive(self.consumer(topic), 20)
        self.assertEqual((first.offset, {"i": 0}), (again[0].offset, again[0].value))
        self.assertEqual([(i, 1) for i in range(20)], sorted((m.value["i"], m.attempt) for m in again))

    def test_batch_hands_out_up_to_max_count_and_nack_brings_a_message_back(self):
        topic = new_topic()
        producer = self.producer()
        for i in range(10):
            producer.send(topic, {"i": i})
        producer.flush(DEADLINE)
        consumer = self.consumer(topic)
        first = []
        while len(first) < 4:
            first += consumer.batch(max_count=4 - len(first), max_wait=DEADLINE)
        self.assertEqual([0, 1, 2, 3], [m.value["i"] for m in first])
        consumer.ack(first[:3])
        consumer.nack(first[3], reason="database down")
        rest = []
        while len(rest) < 7:
            rest += consumer.batch(max_count=7 - len(rest), max_wait=DEADLINE)
        by_offset = {m.offset: m for m in rest}
        self.assertEqual({3, 4, 5, 6, 7, 8, 9}, set(by_offset))
        self.assertEqual(2, by_offset[3].attempt)
        consumer.ack(rest)
        self.assertEqual(10, {g.name: g for g in describe(self.broker.address, topic).groups}["g"].ack_floor)

    def test_a_consumer_reads_a_reset_group_from_its_new_position_without_help(self):
        topic = new_topic()
        producer = self.producer()
        for i in range(5):
            producer.send(topic, {"i": i})
        producer.flush(DEADLINE)
        consumer = self.consumer(topic)
        first = []
        while len(first) < 5:
            first += consumer.batch(max_count=5 - len(first), max_wait=DEADLINE)
        consumer.ack(first)
        listeners = Listeners([self.broker.address])
        try:
            answer = broker_pb2_grpc.AdminStub(listeners.channel).ResetGroup(broker_pb2.ResetGroupRequest(
                topic=topic, group="g", position=broker_pb2.START_POSITION_OFFSET, offset=2), timeout=DEADLINE)
        finally:
            listeners.close()
        self.assertEqual(2, answer.ack_floor)
        # The broker ended the stream (UNAVAILABLE, 1203); the consumer subscribes again and reads from offset 2.
        again = receive(consumer, 3)
        self.assertEqual([(2, 1), (3, 1), (4, 1)], [(m.offset, m.attempt) for m in again])

    def test_unicode_datetimes_and_a_1_mib_item_round_trip(self):
        topic = new_topic()
        when = datetime.datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=datetime.timezone.utc)
        unicode_item = {"title": "Zürich — 東京 — 🕷️", "when": when, "day": when.date(), "other": uuid.UUID(int=7)}
        # The largest message the broker takes by default: exactly 1 MiB of JSON.
        filler = 1048576 - len(json.dumps({"jid": "1", "payload": ""}).encode())
        big_item = {"jid": "1", "payload": "x" * filler}
        producer = self.producer()
        producer.send(topic, unicode_item)
        producer.send(topic, big_item)
        producer.flush(DEADLINE)
        first, second = receive(self.consumer(topic), 2)
        self.assertEqual({"title": "Zürich — 東京 — 🕷️", "when": "2024-05-17T12:30:45.123456+00:00", "day": "2024-05-17",
                          "other": str(uuid.UUID(int=7))}, first.value)
        self.assertEqual(1048576, len(second.payload))
        self.assertEqual(big_item, second.value)

    def test_flush_reports_refused_messages_and_the_others_are_durable(self):
        topic = new_topic()
        producer = self.producer()
        producer.send(topic, {"ok": 1})
        producer.send("bad/name", {"ok": 0})
        producer.send(topic, {"ok": 2})
        with self.assertRaises(PublishFailed) as raised:
            producer.flush(DEADLINE)
        self.assertEqual(["bad/name"], [topic for topic, _, _ in raised.exception.failures])
        self.assertEqual(1002, raised.exception.failures[0][2].error_code)
        self.assertEqual(2, describe(self.broker.address, topic).next_offset)
        producer.flush(DEADLINE)  # reported once

    def test_unavailable_is_retried_on_the_next_listener(self):
        topic = new_topic()
        producer = self.producer(retry_backoff=0.01)
        producer.close(DEADLINE)
        dead = "127.0.0.1:%d" % free_port_with_nothing_listening()
        with Producer([dead, self.broker.address], retry_backoff=0.01) as producer:
            self.assertTrue(producer.get_connection(DEADLINE))
            for i in range(5):
                producer.send(topic, {"i": i})
            producer.flush(DEADLINE)
        self.assertEqual(5, describe(self.broker.address, topic).next_offset)

    def test_a_full_buffer_applies_backpressure_and_flush_reports_what_never_got_through(self):
        dead = "127.0.0.1:%d" % free_port_with_nothing_listening()
        producer = Producer([dead], buffer_messages=2, max_batch_messages=1, delivery_timeout=1.0, retry_backoff=0.01)
        self.assertFalse(producer.get_connection(0.2))
        accepted = 0
        with self.assertRaises(BufferFull):
            while accepted < 100:
                producer.send("t", {"n": accepted}, timeout=0.05)
                accepted += 1
        # At most one round taken by the stuck publisher (16 batches of 1) plus the buffer's 2.
        self.assertLessEqual(accepted, 18)
        with self.assertRaises(PublishFailed) as raised:
            producer.flush(DEADLINE)
        self.assertEqual(accepted, len(raised.exception.failures))
        self.assertEqual("UNAVAILABLE", raised.exception.status)
        producer.close(DEADLINE)

    def test_a_group_retry_backoff_holds_a_nacked_message_for_its_schedule(self):
        topic = new_topic()
        producer = self.producer()
        producer.send(topic, {"job": 1})
        producer.flush(DEADLINE)
        consumer = self.consumer(topic, max_deliveries=3, retry_backoff=RetryBackoff(0.4, 0.8))
        first = consumer.batch(max_count=1, max_wait=DEADLINE)[0]
        nacked_at = time.monotonic()
        consumer.nack(first, reason="database down")
        second = consumer.batch(max_count=1, max_wait=DEADLINE)[0]
        self.assertGreaterEqual(time.monotonic() - nacked_at, 0.4)  # not before its time; without a backoff: at once
        self.assertEqual((first.offset, 2), (second.offset, second.attempt))
        group = {g.name: g for g in describe(self.broker.address, topic).groups}["g"]
        self.assertEqual((3, 400, 800, 2.0), (group.settings.max_deliveries, group.settings.retry_backoff.initial_ms,
                                              group.settings.retry_backoff.max_ms, group.settings.retry_backoff.multiplier))
        consumer.ack(second)

    def test_a_repeated_message_id_is_enqueued_once_and_delivered_with_its_id(self):
        topic = new_topic()
        producer = self.producer()
        producer.send(topic, {"job": 1}, message_id="job-1")
        producer.send(topic, {"job": 2}, message_id="job-2")
        producer.flush(DEADLINE)
        producer.send(topic, {"job": 1, "retried": True}, message_id="job-1")  # a retry of the same job
        producer.flush(DEADLINE)
        self.assertEqual(2, describe(self.broker.address, topic).next_offset)
        consumer = self.consumer(topic)
        messages = consumer.batch(max_count=2, max_wait=DEADLINE)
        while len(messages) < 2:
            messages += consumer.batch(max_count=2 - len(messages), max_wait=DEADLINE)
        self.assertEqual([({"job": 1}, "job-1"), ({"job": 2}, "job-2")],
                         [(m.value, m.headers["broker-message-id"]) for m in messages])
        consumer.ack(messages)

    def test_an_ordered_group_hands_out_one_message_per_key_until_it_is_acked(self):
        topic = new_topic()
        producer = self.producer()
        for key, n in [("a", 0), ("a", 1), ("b", 0), ("a", 2)]:
            producer.send(topic, {"key": key, "n": n}, key=key)
        producer.flush(DEADLINE)
        consumer = self.consumer(topic, ordered_by_key=True)
        first = []
        while len(first) < 2:
            first += consumer.batch(max_count=2 - len(first), max_wait=DEADLINE)
        self.assertEqual([("a", 0), ("b", 0)], sorted((m.value["key"], m.value["n"]) for m in first))
        self.assertEqual([], consumer.batch(max_count=10, max_wait=0.3))  # a1 waits for a0
        consumer.ack(first)
        for n in (1, 2):
            (message,) = consumer.batch(max_count=1, max_wait=DEADLINE)
            self.assertEqual({"key": "a", "n": n}, message.value)
            self.assertEqual([], consumer.batch(max_count=10, max_wait=0.2))
            consumer.ack(message)
        group = {g.name: g for g in describe(self.broker.address, topic).groups}["g"]
        self.assertTrue(group.settings.ordered_by_key)

    def test_a_group_with_key_patterns_and_a_header_filter_receives_only_what_they_match(self):
        topic = new_topic()
        producer = self.producer()
        for key, tier in [("orders.paid.eu", "gold"), ("orders.paid.us", "gold"), ("orders.late.eu", "basic"),
                          ("logs.app", "gold"), ("orders.refund.eu", "gold")]:
            producer.send(topic, {"key": key}, key=key, headers={"tier": tier})
        producer.flush(DEADLINE)
        consumer = self.consumer(topic, key_patterns=["orders.*.eu"], header_filter={"tier": "gold"})
        received = []
        while len(received) < 2:
            received += consumer.batch(max_count=2 - len(received), max_wait=DEADLINE)
        self.assertEqual([], consumer.batch(max_count=1, max_wait=0.3))
        self.assertEqual(["orders.paid.eu", "orders.refund.eu"], [m.value["key"] for m in received])
        consumer.ack(received)
        self.assertEqual(5, group_floor(self.broker.address, topic, "g"))

    def test_a_group_with_priority_levels_hands_out_the_urgent_job_first(self):
        topic = new_topic()
        producer = self.producer()
        for n in range(3):
            producer.send(topic, {"n": n})
        producer.send(topic, {"n": "urgent"}, priority=7)
        producer.flush(DEADLINE)
        consumer = self.consumer(topic, priority_levels=8, max_in_flight=1)
        order = []
        for _ in range(4):
            (message,) = consumer.batch(max_count=1, max_wait=DEADLINE)
            order.append(message.value["n"])
            self.assertEqual("7" if message.value["n"] == "urgent" else None, message.headers.get("broker-priority"))
            consumer.ack(message)
        self.assertEqual(["urgent", 0, 1, 2], order)

    def test_a_bad_retry_backoff_is_refused_with_its_reason(self):
        with self.assertRaises(BrokerError) as raised:
            Consumer(new_topic(), "g", [self.broker.address], retry_backoff=RetryBackoff(1, 0.5))
        self.assertEqual("INVALID_ARGUMENT", raised.exception.status)
        self.assertIn("maximum delay", str(raised.exception))

    def test_a_consumer_on_a_refused_group_name_raises_a_typed_error(self):
        with self.assertRaises(BrokerError) as raised:
            Consumer(new_topic(), "bad/group", [self.broker.address])
        self.assertEqual(("INVALID_ARGUMENT", 1002), (raised.exception.status, raised.exception.error_code))


class DurabilityTest(unittest.TestCase):
    def test_what_flush_confirmed_survives_a_sigkill_of_the_broker(self):
        broker = BrokerProcess().start()
        self.addCleanup(broker.close)
        topic = new_topic()
        with Producer([broker.address]) as producer:
            for i in range(50):
                producer.send(topic, {"i": i})
            producer.flush(DEADLINE)
        broker.kill()
        restarted = BrokerProcess(broker.data_dir).start()
        self.addCleanup(restarted.kill)
        with Consumer(topic, "g", [restarted.address]) as consumer:
            self.assertEqual(list(range(50)), [m.value["i"] for m in receive(consumer, 50)])

    def test_a_delayed_message_arrives_at_its_time_not_before_also_across_a_sigkill(self):
        broker = BrokerProcess().start()
        self.addCleanup(broker.close)
        topic = new_topic()
        sent_ms = time.time() * 1000
        # Delays of seconds, not less: a loaded machine (the whole suite on two cores) can take a second or more to
        # get here, and the kill below must come while both messages still wait.
        with Producer([broker.address]) as producer:
            producer.send(topic, {"job": "later"}, delay=datetime.timedelta(seconds=6))
            producer.send(topic, {"job": "at eta"}, eta=datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=5))
            producer.send(topic, {"job": "now"})
            with self.assertRaises(ValueError):
                producer.send(topic, {"job": "both"}, delay=1, eta=time.time() + 1)
            producer.flush(DEADLINE)
        scheduled = describe(broker.address, topic).scheduled
        if time.time() * 1000 < sent_ms + 5000:  # read before the first was due: both were waiting
            self.assertEqual(2, scheduled)
        # Killed during the delay: the scheduled messages are durable, and fire after the restart.
        broker.kill()
        restarted = BrokerProcess(broker.data_dir).start()
        self.addCleanup(restarted.kill)
        messages, arrivals = [], []
        with Consumer(topic, "g", [restarted.address]) as consumer:
            for _ in range(3):
                message = consumer.poll(DEADLINE)
                self.assertIsNotNone(message, "only %d of 3 messages arrived" % len(messages))
                arrivals.append(time.time() * 1000)
                messages.append(message)
        self.assertEqual(["now", "at eta", "later"], [m.value["job"] for m in messages])
        self.assertIsNone(messages[0].scheduled_offset)
        self.assertEqual([1, 0], [m.scheduled_offset for m in messages[1:]])
        self.assertGreaterEqual(messages[2].deliver_at_unix_ms, sent_ms + 6000)
        for message, arrived_ms in zip(messages[1:], arrivals[1:]):
            # Not before its time (one clock: the broker runs on this machine); published before it was due.
            self.assertGreaterEqual(arrived_ms, message.deliver_at_unix_ms)
            self.assertLess(message.publish_time_unix_ms, message.deliver_at_unix_ms)
