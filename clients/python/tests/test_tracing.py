"""Trace context from the producer's ``trace_headers`` hook to the consumer, through the real broker.

The child broker runs without OtlpEndpoint, so it adds no ``traceparent`` of its own: what a consumer reads came from
the producer (the test without a hook checks exactly that).
"""
import itertools
import os
import uuid
from unittest import mock

from broker_client import Consumer, Producer, estela

from .broker_process import DEADLINE, BrokerTestCase
from .test_client import receive

# W3C trace context: version, 16-byte trace id, 8-byte parent span id, flags.
SPAN_IDS = ("%016x" % n for n in itertools.count(1))


def new_traceparent():
    return "00-%s-%s-01" % (uuid.uuid4().hex, next(SPAN_IDS))


class TraceHeadersTest(BrokerTestCase):
    def publish(self, sends, **options):
        """A fresh topic, each (value, headers) of ``sends`` published through one producer; the headers consumed."""
        topic = "traced-%s" % uuid.uuid4().hex
        producer = Producer([self.broker.address], **options)
        try:
            for value, headers in sends:
                producer.send(topic, value, headers=headers)
        finally:
            producer.close(DEADLINE)
        consumer = Consumer(topic, "g", [self.broker.address])
        try:
            return [message.headers for message in receive(consumer, len(sends))]
        finally:
            consumer.close()

    def test_the_hook_is_called_per_send_and_its_context_reaches_the_consumer(self):
        contexts = []

        def current_context():
            contexts.append({"traceparent": new_traceparent(), "tracestate": "vendor=%d" % len(contexts)})
            return contexts[-1]

        received = self.publish([("first", None), ("second", {"app": "x"})], trace_headers=current_context)
        self.assertEqual(2, len(contexts))
        self.assertEqual(contexts[0], received[0])
        self.assertEqual(dict(contexts[1], app="x"), received[1])

    def test_an_explicit_traceparent_is_kept_and_the_hook_adds_nothing_to_it(self):
        mine = new_traceparent()
        hook = mock.Mock(return_value={"traceparent": new_traceparent(), "tracestate": "hook=1"})
        received = self.publish([("job", {"traceparent": mine})], trace_headers=hook)
        self.assertEqual([{"traceparent": mine}], received)
        hook.assert_not_called()

    def test_without_a_hook_no_trace_context_is_added(self):
        self.assertEqual([{}], self.publish([("plain", None)]))

    def test_a_failing_hook_costs_the_trace_not_the_message(self):
        def broken():
            raise RuntimeError("no tracer")

        with self.assertLogs("broker_client.producer", "WARNING") as logs:
            received = self.publish([("a", None)], trace_headers=broken)
            # A value that is not a string fails the whole context, not half of it.
            received += self.publish([("b", None)], trace_headers=lambda: {"traceparent": new_traceparent(), "bad": 1})
        self.assertEqual([{}, {}], received)
        self.assertEqual(2, sum("trace_headers failed" in line for line in logs.output))

    def test_a_hook_that_is_not_callable_is_refused(self):
        with self.assertRaises(TypeError):
            Producer([self.broker.address], trace_headers={"traceparent": new_traceparent()})

    def test_the_estela_producer_passes_the_hook_on(self):
        topic = "job_items-%s" % uuid.uuid4().hex[:8]
        context = {"traceparent": new_traceparent()}
        host, port = self.broker.address.rsplit(":", 1)
        env = {"QUEUE_PLATFORM": "broker", "QUEUE_PLATFORM_LISTENERS": host, "QUEUE_PLATFORM_PORT": port}
        with mock.patch.dict(os.environ, env, clear=True):
            producer = estela.get_producer_interface(trace_headers=lambda: context)
            producer.send(topic, {"jid": "1.2.3"})
            self.assertEqual([], producer.close())
            consumer = estela.get_consumer_interface(topic=topic)
            message = next(iter(consumer))
            consumer.close()
        self.assertEqual(context, message.headers)
