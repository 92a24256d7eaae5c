"""API keys (docs/security.md) from the Python client against the real broker running with RequireApiKeys."""
import os
import unittest
import uuid
from unittest import mock

import grpc

from broker_client import BrokerError, Consumer, Producer, PublishFailed, estela
from broker_client._connection import Listeners
from broker_client._generated import broker_pb2, broker_pb2_grpc

from .broker_process import DEADLINE, start_requiring_keys


class ApiKeyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.broker, cls.bootstrap = start_requiring_keys()

    @classmethod
    def tearDownClass(cls):
        cls.broker.close()

    def admin(self, api_key):
        listeners = Listeners([self.broker.address], api_key)
        self.addCleanup(listeners.close)
        return broker_pb2_grpc.AdminStub(listeners.channel)

    def create_key(self, name, grants):
        return self.admin(self.bootstrap).CreateApiKey(broker_pb2.CreateApiKeyRequest(name=name, grants=grants), timeout=DEADLINE)

    def test_a_key_with_the_grants_publishes_and_consumes_and_one_without_is_refused(self):
        topic = "py-auth-%s" % uuid.uuid4().hex
        key = self.create_key("py-worker", ["publish:" + topic, "consume:%s:workers" % topic]).token

        producer = Producer([self.broker.address], api_key=key)
        for i in range(3):
            producer.send(topic, {"n": i})
        producer.close()
        consumer = Consumer(topic, "workers", [self.broker.address], api_key=key)
        try:
            received = [next(iter(consumer)).value["n"] for _ in range(3)]
        finally:
            consumer.close()
        self.assertEqual([0, 1, 2], received)

        # Another group, another topic, no key, a wrong key: refused with the broker's codes, nothing stored.
        with self.assertRaises(BrokerError) as denied:
            Consumer(topic, "auditors", [self.broker.address], api_key=key)
        self.assertEqual(("PERMISSION_DENIED", 1301), (denied.exception.status, denied.exception.error_code))

        for api_key, expected in ((key, ("PERMISSION_DENIED", 1301)), (None, ("UNAUTHENTICATED", 1300)),
                                  (key[:-4] + "abcd", ("UNAUTHENTICATED", 1300))):
            producer = Producer([self.broker.address], api_key=api_key)
            producer.send(topic + "-other", {"n": 9})
            with self.assertRaises(PublishFailed) as failed:
                producer.flush()
            self.assertEqual(expected, (failed.exception.status, failed.exception.error_code))
            producer.close()  # the failure was reported by flush: nothing is left to raise
        with self.assertRaises(grpc.RpcError) as unknown:
            self.admin(key).DescribeTopic(broker_pb2.DescribeTopicRequest(name=topic + "-other"), timeout=DEADLINE)
        self.assertEqual(grpc.StatusCode.PERMISSION_DENIED, unknown.exception.code())
        self.assertEqual(3, self.admin(self.bootstrap).DescribeTopic(broker_pb2.DescribeTopicRequest(name=topic), timeout=DEADLINE).next_offset)

    def test_estela_takes_the_key_from_QUEUE_PLATFORM_API_KEY(self):
        topic = "py-estela-auth-%s" % uuid.uuid4().hex
        key = self.create_key("estela", ["publish:" + topic, "consume:" + topic]).token
        environment = {"QUEUE_PLATFORM": "broker", "QUEUE_PLATFORM_LISTENERS": self.broker.address,
                       "QUEUE_PLATFORM_TOPIC": topic, "QUEUE_PLATFORM_API_KEY": key}
        with mock.patch.dict(os.environ, environment, clear=True):
            producer = estela.get_producer_interface()
            producer.send(topic, {"item": 1})
            self.assertEqual([], producer.close())
            consumer = estela.get_consumer_interface()
            try:
                self.assertEqual({"item": 1}, next(iter(consumer)).value)
            finally:
                consumer.close()

if __name__ == "__main__":
    unittest.main()
