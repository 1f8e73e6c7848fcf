#!/usr/bin/env python3
"""Run the splunk-app tests with the standard library's unittest.

    python3 splunk-app/tests/run.py                 # action tests (interop too if its env is set)
    python3 splunk-app/tests/run.py --interop-only  # only tests/test_interop_receiver.py
    python3 splunk-app/tests/run.py --with-interop  # action + interop tests (interop fails without env)

The interop tests need OPSMESH_RECEIVER_URL and OPSMESH_RECEIVER_SECRET; they run by default
only when one of them is set. The last line is "splunk-app: N passed, N failed, N skipped".
"""
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
INTEROP = "test_interop_receiver"


def main(argv):
    sys.path.insert(0, HERE)
    loader = unittest.defaultTestLoader
    interop_env = bool(os.environ.get("OPSMESH_RECEIVER_URL") or os.environ.get("OPSMESH_RECEIVER_SECRET"))
    if "--interop-only" in argv:
        modules = [INTEROP]
    else:
        modules = sorted(name[:-3] for name in os.listdir(HERE)
                         if name.startswith("test_") and name.endswith(".py") and name[:-3] != INTEROP)
        if "--with-interop" in argv or interop_env:
            modules.append(INTEROP)
    suite = unittest.TestSuite(loader.loadTestsFromName(name) for name in modules)
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped
    sys.stdout.flush()
    sys.stderr.flush()
    print("splunk-app: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
