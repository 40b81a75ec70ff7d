"""`make bench`: every benchmark under bench/, each printing medians of repeated runs.

The API benchmark runs 100 tenants by default, so the whole run takes a few minutes;
`--full` (`make bench BENCH_ARGS=--full`) runs the issue's 1,000 tenants (about 15 more
minutes and 22 GB of temporary disk for 864 M minute rows).
"""

import argparse

from bench import api, collector, processor, scaleout, wire

if __name__ == "__main__":
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    p.add_argument("--full", action="store_true", help=f"API at {api.FULL_TENANTS} tenants; state at 1M series")
    full = p.parse_args().full
    wire.main()
    collector.main()
    processor.main(full=full)  # --full: the state of 1M series too
    scaleout.main()  # 1 vs 2 processors in a group; cluster insert rates (docs/capacity.md)
    api.main(api.FULL_TENANTS if full else api.DEFAULT_TENANTS)
