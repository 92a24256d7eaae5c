import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import generate  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools"))
import generate_errors  # noqa: E402


class GeneratedStubsTest(unittest.TestCase):
    def test_committed_stubs_match_a_fresh_generation_from_the_proto(self):
        self.assertEqual([], generate.stale_files(),
                         "stale stubs: run /usr/bin/python3 clients/python/generate.py")


class GeneratedErrorCodesTest(unittest.TestCase):
    def test_every_form_of_the_error_codes_matches_a_fresh_generation_from_errors_json(self):
        self.assertEqual([], generate_errors.stale_files(),
                         "stale error files: run /usr/bin/python3 tools/generate_errors.py")

    def test_a_refusal_carries_its_typed_code(self):
        from broker_client import BrokerError, ErrorCode
        self.assertIs(ErrorCode.TOPIC_NOT_FOUND, BrokerError("x", "NOT_FOUND", 1001).code)
        self.assertIsNone(BrokerError("x", "NOT_FOUND", 4242).code)
        self.assertIsNone(BrokerError("x").code)
