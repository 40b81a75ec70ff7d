"""The `sandmeter` command: one subcommand per module of this package.

Settings come from SANDMETER_* environment variables (each service's settings class, built
here at the entry point and passed down).
"""

from __future__ import annotations

import argparse
import logging
import sys

from sandmeter.cli import api, collect, dashboards, demo, migrate, process, scale, simulate, stack

SUBCOMMANDS = (stack, migrate, collect, simulate, process, scale, api, dashboards, demo)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sandmeter", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="cmd", required=True)
    for module in SUBCOMMANDS:
        module.add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if a.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # the driver logs each refused connection with a traceback; callers report failures themselves
    logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)
    rc: int = a.fn(a)
    return rc


if __name__ == "__main__":
    sys.exit(main())
