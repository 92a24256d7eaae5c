"""The adapter's configuration from QUEUE_PLATFORM* variables (no broker needed: nothing here connects)."""
import os
import unittest
from unittest import mock

from broker_client import estela
from broker_client._connection import parse_listeners


class EstelaConfigurationTest(unittest.TestCase):
    def test_get_queue_env_vars_returns_every_queue_platform_variable(self):
        env = {"QUEUE_PLATFORM": "broker", "QUEUE_PLATFORM_LISTENERS": "a", "QUEUE_PLATFORM_FOO": "1", "OTHER": "x"}
        with mock.patch.dict(os.environ, env, clear=True):
            self.assertEqual({k: v for k, v in env.items() if k != "OTHER"}, estela.get_queue_env_vars())

    def test_variables_become_lower_cased_keywords_and_kwargs_override_them(self):
        env = {"QUEUE_PLATFORM_LISTENERS": "a,b", "QUEUE_PLATFORM_PORT": "7200", "QUEUE_PLATFORM_TOPIC": "t"}
        with mock.patch.dict(os.environ, env, clear=True):
            settings = estela._settings({"topic": "override"})
        self.assertEqual({"listeners": "a,b", "port": "7200", "topic": "override"}, settings)

    def test_listeners_are_comma_separated_hosts_with_the_port_setting_or_their_own(self):
        self.assertEqual(["a:7200", "b:7300", "10.0.0.1:7200"], parse_listeners("a, b:7300,10.0.0.1", "7200"))
        self.assertEqual(["a:7100"], parse_listeners("a", None))

    def test_a_missing_listeners_variable_is_named_in_the_error(self):
        with mock.patch.dict(os.environ, {"QUEUE_PLATFORM": "broker", "QUEUE_PLATFORM_TOPIC": "t"}, clear=True):
            for factory in (estela.get_producer_interface, estela.get_consumer_interface):
                with self.assertRaises(ValueError) as raised:
                    factory()
                self.assertIn("QUEUE_PLATFORM_LISTENERS", str(raised.exception))

    def test_a_consumer_without_a_topic_names_the_variable(self):
        with mock.patch.dict(os.environ, {"QUEUE_PLATFORM_LISTENERS": "127.0.0.1"}, clear=True):
            with self.assertRaises(ValueError) as raised:
                estela.get_consumer_interface()
        self.assertIn("QUEUE_PLATFORM_TOPIC", str(raised.exception))

    def test_another_platform_is_refused(self):
        with mock.patch.dict(os.environ, {"QUEUE_PLATFORM": "kafka", "QUEUE_PLATFORM_LISTENERS": "a"}, clear=True):
            with self.assertRaises(ValueError) as raised:
                estela.get_producer_interface()
        self.assertIn("kafka", str(raised.exception))

    def test_noisy_libraries_name_grpc(self):
        self.assertIn("grpc", estela.queue_noisy_libraries)
