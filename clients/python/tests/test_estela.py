"""estela's own calls, configured by environment variables alone, against the real broker."""
import datetime
import os
import uuid
from unittest import mock

from broker_client import estela

from .broker_process import DEADLINE, BrokerTestCase
from .test_client import describe


class EstelaAdapterTest(BrokerTestCase):
    def environment(self, topic):
        host, port = self.broker.address.rsplit(":", 1)
        return {"QUEUE_PLATFORM": "broker", "QUEUE_PLATFORM_LISTENERS": host, "QUEUE_PLATFORM_PORT": port,
                "QUEUE_PLATFORM_TOPIC": topic, "QUEUE_PLATFORM_MAX_TIMEOUT": "60",
                "QUEUE_PLATFORM_FOO": "unknown settings are accepted and ignored"}

    def test_producer_and_consumer_as_estela_uses_them(self):
        topic = "job_items-%s" % uuid.uuid4().hex[:8]
        scraped = datetime.datetime(2024, 1, 2, 3, 4, 5)
        with mock.patch.dict(os.environ, self.environment(topic), clear=True):
            producer = estela.get_producer_interface()
            self.assertTrue(producer.get_connection())
            for i in range(20):
                producer.send(topic, {"jid": "1.2.3", "payload": {"n": i, "at": scraped}, "unique": "True"})
            self.assertEqual([], producer.flush())
            producer.close()

            consumer = estela.get_consumer_interface()
            self.assertTrue(consumer.get_connection())
            values = []
            for message in consumer:
                values.append(message.value)
                if len(values) == 20:
                    break
            consumer.close()
        self.assertEqual([{"jid": "1.2.3", "payload": {"n": i, "at": "2024-01-02T03:04:05"}, "unique": "True"}
                          for i in range(20)], values)
        groups = {g.name: g for g in describe(self.broker.address, topic).groups}
        self.assertEqual(20, groups["group_%s" % topic].ack_floor)

    def test_keyword_arguments_override_the_environment(self):
        topic = "job_logs-%s" % uuid.uuid4().hex[:8]
        env = self.environment("not-this-one")
        env["QUEUE_PLATFORM_LISTENERS"] = "127.0.0.1"
        env["QUEUE_PLATFORM_PORT"] = "1"
        host, port = self.broker.address.rsplit(":", 1)
        with mock.patch.dict(os.environ, env, clear=True):
            producer = estela.get_producer_interface(listeners=host, port=port)
            producer.send(topic, {"log": "line"})
            self.assertEqual([], producer.close())
            consumer = estela.get_consumer_interface(listeners=host, port=port, topic=topic)
            message = next(iter(consumer))
            consumer.close()
        self.assertEqual({"log": "line"}, message.value)

    def test_max_timeout_as_estela_passes_it_or_under_its_older_name(self):
        topic = "job_stats-%s" % uuid.uuid4().hex[:8]
        env = self.environment(topic)
        del env["QUEUE_PLATFORM_MAX_TIMEOUT"]
        with mock.patch.dict(os.environ, env, clear=True):
            as_estela_calls_it = estela.get_consumer_interface(topic=topic, max_timeout=str(10))
            older_name = estela.get_consumer_interface(topic=topic, queue_max_timeout="7")
            default = estela.get_consumer_interface(topic=topic)
        for consumer in (as_estela_calls_it, older_name, default):
            consumer.close()
        self.assertEqual([10.0, 7.0, 300.0], [c.consumer.max_timeout for c in (as_estela_calls_it, older_name, default)])
