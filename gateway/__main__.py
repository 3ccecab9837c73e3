"""``gateway`` and ``python -m gateway``."""

import sys

from gateway.collector import frozen_imports


def main() -> int:
    with frozen_imports():
        from gateway.cli import main as run  # noqa: PLC0415 - imported with the collector off

    return run()


if __name__ == "__main__":
    sys.exit(main())
