"""The test suite.

Its processes, and the gateways they start, import the project's modules hundreds of times
in a run. Where the environment sets PYTHONDONTWRITEBYTECODE (as container images often
do), each of them compiled every module, test modules with their rewritten assertions
included, every time: about a third of a run's processor time. The suite compiles them
once, into the ``__pycache__`` directories that git ignores, for itself and the processes it
starts.

They also import as the gateway's programs do (gateway/collector.py): with the cycle
collector off until the tests are collected, when what the imports made is frozen out of
its sight (conftest.py), instead of walked by every later full pass of a test process.
"""

import gc
import os
import sys

sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
gc.disable()
