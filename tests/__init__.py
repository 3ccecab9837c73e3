"""The test suite.

Its processes, and the gateways they start, import the project's modules hundreds of times
in a run. Where the environment sets PYTHONDONTWRITEBYTECODE (as container images often
do), each of them compiled every module, test modules with their rewritten assertions
included, every time: about a third of a run's processor time. The suite compiles them
once, into the ``__pycache__`` directories that git ignores, for itself and the processes it
starts.
"""

import os
import sys

sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
