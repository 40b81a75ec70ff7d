"""`make bench`: every benchmark under bench/, each printing medians of repeated runs."""

from bench import collector, processor, wire

if __name__ == "__main__":
    wire.main()
    collector.main()
    processor.main()
