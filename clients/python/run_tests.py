"""Runs the Python client's tests with Debian's python3 and prints one dotnet-style summary line.

    /usr/bin/python3 clients/python/run_tests.py

The tests start the real broker from src/Broker.Server/bin/Release (built first when missing). Exit code 0 only when
every test passed and at least one ran.
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    sys.path.insert(0, HERE)
    suite = unittest.defaultTestLoader.discover(os.path.join(HERE, "tests"), top_level_dir=HERE)
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    # The same shape as dotnet test's line, so .ci/run sums it with the C# results.
    print("Python tests - Failed: %d, Passed: %d, Skipped: %d, Total: %d" % (failed, passed, skipped, result.testsRun))
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
