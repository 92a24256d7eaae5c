import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import generate  # noqa: E402


class GeneratedStubsTest(unittest.TestCase):
    def test_committed_stubs_match_a_fresh_generation_from_the_proto(self):
        self.assertEqual([], generate.stale_files(),
                         "stale stubs: run /usr/bin/python3 clients/python/generate.py")
