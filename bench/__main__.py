"""`make bench`: every benchmark under bench/, each printing medians of repeated runs."""

from bench import collector, wire

if __name__ == "__main__":
    wire.main()
    collector.main()
