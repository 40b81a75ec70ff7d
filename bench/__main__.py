"""`make bench`: every benchmark under bench/, each printing medians of repeated runs."""

from bench import api, collector, processor, scaleout, wire

if __name__ == "__main__":
    wire.main()
    collector.main()
    processor.main()
    scaleout.main()  # 1 vs 2 processors in a group; cluster insert rates (docs/capacity.md)
    api.main()  # about 12 minutes and 27 GB of temporary disk for 864 M minute rows
