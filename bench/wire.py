"""Wire format: decode speed and size of a worst-case 50-sandbox batch."""

from __future__ import annotations

import statistics
import time

import numpy as np

from contracts.builder import BatchBuilder
from contracts.wire import Encoder, decode


def _batch(n_sandboxes: int = 50, per_sandbox: int = 300) -> bytes:
    b = BatchBuilder("node-bench")
    rng = np.random.default_rng(1)
    for s in range(n_sandboxes):
        e = b.entity(f"sb{s:04d}", {"tenant": f"t{s % 7}"})
        b.add_many(e, "kata_guest_vm_stat", [f'item="k{i}"' for i in range(per_sandbox)], 1_700_000_000_000,
                   rng.integers(0, 1 << 40, per_sandbox).astype(float).tolist())  # fmt: skip
    return Encoder().encode(b.build(1, 1, 1_700_000_000_000))


def bench_decode(repeats: int = 30) -> None:
    payload = _batch()
    n = len(decode(payload))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        decode(payload)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"wire decode: {n} samples, median {med * 1e3:.2f} ms = {n / med / 1e6:.1f} M samples/s; "
          f"{len(payload) / n:.2f} bytes/sample (random 40-bit values, worst case)")  # fmt: skip


def main() -> None:
    bench_decode()
