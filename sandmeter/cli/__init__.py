"""The `sandmeter` command: one subcommand per module of this package.

Settings come from SANDMETER_* environment variables (each service's settings class, built
here at the entry point and passed down); `sandmeter <command> --help` lists them.
"""

from __future__ import annotations

import argparse
import logging
import sys

from sandmeter import __version__
from sandmeter.cli import (
    api,
    collect,
    dashboards,
    demo,
    invoices,
    migrate,
    process,
    reconcile,
    retention,
    scale,
    simulate,
    stack,
)
from sandmeter.cli.common import CliError, ServiceParser

SUBCOMMANDS = (
    stack, migrate, collect, simulate, process, reconcile, retention, scale, api, invoices, dashboards, demo,
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sandmeter", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks on errors")
    p.add_argument("--version", action="version", version=f"sandmeter {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=ServiceParser)
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
    try:
        rc: int = a.fn(a)
    except CliError as exc:
        print(f"sandmeter {a.cmd}: {exc.message}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if a.verbose:
            raise
        print(f"sandmeter {a.cmd}: {type(exc).__name__}: {exc} (run `sandmeter -v {a.cmd}` for the traceback)",
              file=sys.stderr)  # fmt: skip
        return 1
    return rc


if __name__ == "__main__":
    sys.exit(main())
