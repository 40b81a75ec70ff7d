"""The wall clock in epoch milliseconds: the production default of every injected clock."""

import time


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
