"""Scale recommendations per (tenant, function) from `function_load` (docs/autoscaling.md).

The load of a function is the CPU its sandboxes use, in cores, per second: each usage
interval's `cpu_used_us` spread evenly over its `[start_ms, end_ms)`. One replica's target
is `target_utilization` x its allocated vCPUs (the mean spec of the function's sandboxes).
The KPA (scaling/kpa.py) replays the last `history_s` seconds to the newest second every
node has reported, so the API and the `sandmeter scale` publisher agree on every decision.

Fail closed: when the newest load row anywhere is older than `stale_s`, there is no
recommendation (an error, never a 0 that would scale a function to zero).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from contracts.clickhouse import tables
from scaling.kpa import DEFAULT, KpaConfig, replay

KNOWN_FOR_S = 3600  # a function with load this recent is known (and may be recommended 0)
CONCURRENCY = 100.0  # requests one replica is sized for (Knative's container-concurrency-target-default)


class Stale(Exception):
    """No fresh load data: the caller must not act on a recommendation."""


class UnknownFunction(Exception):
    pass


@dataclass(frozen=True)
class History:
    load: np.ndarray[Any, np.dtype[np.float64]]  # cores or requests in flight, per second, ending at end_s
    ready: np.ndarray[Any, np.dtype[np.int64]]  # sandboxes reporting, per second
    per_replica: float  # cores allocated per sandbox, or the concurrency one replica is sized for
    end_s: int
    unit: str = "cores"  # or "requests"


def newest_ms(ch: Any, now_ms: int) -> int | None:
    rows = ch.execute(
        f"SELECT max(end_ms), count() FROM {tables(ch).function_load} WHERE end_ms > %(since)s",
        {"since": now_ms - KNOWN_FOR_S * 1000},
        settings={"use_numpy": False},
    )
    return int(rows[0][0]) if rows and int(rows[0][1]) else None


def history(
    ch: Any, tenant: str, function: str, end_ms: int, seconds: int, concurrency: float = CONCURRENCY
) -> History:
    """Per-second load and replica counts of the `seconds` before `end_ms` (second-aligned).

    Where the function's sandboxes export an in-flight requests gauge the load is requests in
    flight (each interval's gauge held over it) against `concurrency` per replica; otherwise
    it is cores used against each replica's allocated cores.
    """
    end_s = end_ms // 1000
    first_ms = (end_s - seconds + 1) * 1000
    rows = ch.execute(
        f"SELECT sandbox_id, start_ms, end_ms, cpu_used_us, vcpu_milli, inflight FROM {tables(ch).function_load} FINAL "
        "WHERE tenant = %(t)s AND function = %(f)s AND end_ms > %(lo)s AND start_ms < %(hi)s",
        {"t": tenant, "f": function, "lo": first_ms, "hi": (end_s + 1) * 1000},
        settings={"use_numpy": False},
    )
    first_s = end_s - seconds + 1
    load = np.zeros(seconds)
    if not rows:
        return History(load, np.zeros(seconds, np.int64), 1.0, end_s)
    sid = np.array([r[0] for r in rows], dtype=object)
    start, end, cpu, vcpu, inflight = (np.array([r[i] for r in rows], np.float64) for i in range(1, 6))
    requests = bool((inflight >= 0).any())
    rate = np.maximum(inflight, 0.0) if requests else cpu / ((end - start) * 1000)  # per interval
    # every (interval, second) pair it overlaps, at once: intervals span a few seconds each
    lo = np.maximum(start // 1000, first_s).astype(np.int64)
    hi = np.minimum((end - 1) // 1000, end_s).astype(np.int64)
    width = np.maximum(hi - lo + 1, 0)
    row = np.repeat(np.arange(len(rows)), width)
    sec = lo[row] + (np.arange(len(row)) - np.repeat(np.cumsum(width) - width, width))
    overlap = np.minimum(end[row], (sec + 1) * 1000.0) - np.maximum(start[row], sec * 1000.0)
    np.add.at(load, sec - first_s, rate[row] * overlap / 1000)
    # a sandbox counts as ready from its first to its last reported millisecond in the window
    span = (
        pd.DataFrame({"sid": sid, "start": start, "end": end}).groupby("sid").agg(a=("start", "min"), b=("end", "max"))
    )
    a = np.maximum(span["a"].to_numpy() // 1000 - first_s, 0).astype(np.int64)
    b = np.minimum((span["b"].to_numpy() - 1) // 1000 - first_s, seconds - 1).astype(np.int64)
    edges = np.zeros(seconds + 1, np.int64)
    np.add.at(edges, a[b >= a], 1)
    np.add.at(edges, b[b >= a] + 1, -1)
    ready = np.cumsum(edges[:-1])
    if requests:
        return History(load, ready, concurrency, end_s, "requests")
    per_replica = float(vcpu.mean()) / 1000 if vcpu.any() else 1.0
    return History(load, ready, per_replica, end_s)


def fresh_newest(ch: Any, now_ms: int, stale_s: float) -> int:
    """The newest load data's end (ms); raises Stale when there is none within `stale_s`."""
    newest = newest_ms(ch, now_ms)
    if newest is None or now_ms - newest > stale_s * 1000:
        age = "no load data" if newest is None else f"newest load data is {(now_ms - newest) / 1000:.1f} s old"
        raise Stale(f"{age} (limit {stale_s:g} s): the processor or the collectors are not keeping up")
    return newest


def recommend(
    ch: Any, tenant: str, function: str, now_ms: int, stale_s: float, cfg: KpaConfig = DEFAULT
) -> dict[str, Any]:
    """The current recommendation, in the shape the API serves and KEDA's metrics-api reads."""
    newest = fresh_newest(ch, now_ms, stale_s)
    known = ch.execute(
        f"SELECT count() FROM {tables(ch).function_load} "
        "WHERE tenant = %(t)s AND function = %(f)s AND end_ms > %(since)s",
        {"t": tenant, "f": function, "since": now_ms - KNOWN_FOR_S * 1000},
        settings={"use_numpy": False},
    )
    if not int(known[0][0]):
        raise UnknownFunction(f"no load for {tenant}/{function} in the last {KNOWN_FOR_S // 60} minutes")
    return decide(ch, tenant, function, newest, cfg)


def decide(ch: Any, tenant: str, function: str, newest: int, cfg: KpaConfig = DEFAULT) -> dict[str, Any]:
    """The KPA decision for a known function, up to the newest load data (`fresh_newest`)."""
    end_ms = newest - 1000  # the last second every node has had time to report
    h = history(ch, tenant, function, end_ms, cfg.history_s)
    d = replay(h.load, h.ready, h.per_replica, cfg)[-1]
    return {
        "tenant": tenant,
        "function": function,
        "desired_replicas": d.desired,
        "panic": d.panicking,
        "load": {"total": round(float(h.load[-1]), 6), "stable": round(d.stable, 6), "panic": round(d.panic_load, 6)},
        "ready_replicas": d.ready,
        "per_replica_target": round(cfg.target_utilization * h.per_replica, 6),
        "unit": h.unit,
        "timestamp_ms": (h.end_s + 1) * 1000,
        "window": {"stable_s": cfg.stable_s, "panic_s": cfg.panic_s, "grace_s": cfg.grace_s},
    }


def active_functions(ch: Any, now_ms: int) -> list[tuple[str, str]]:
    rows = ch.execute(
        f"SELECT DISTINCT tenant, function FROM {tables(ch).function_load} "
        "WHERE end_ms > %(since)s ORDER BY tenant, function",
        {"since": now_ms - KNOWN_FOR_S * 1000},
        settings={"use_numpy": False},
    )
    return [(str(t), str(f)) for t, f in rows]
