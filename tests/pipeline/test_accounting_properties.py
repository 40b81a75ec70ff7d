"""Properties of the accountant over generated scenarios (hypothesis), through the real wire
encoding and the real checkpoint encoding:

1. Rows are a pure function of a node's batch sequence: any split into flushes, any crash
   with a restart from the last checkpoint, and old batches sent again give identical usage
   and lifecycle rows (same keys, same values).
2. A sandbox's tenant and labels are fixed at its first attributed batch: earlier rows are
   `unattributed`, later ones keep it whatever later labels say; each contradicting batch is
   counted.
3. Integrals are clipped to [start, stop): allocation is exactly spec x lifetime, memory used
   exactly memory x lifetime (however late the final reading), CPU exactly the counters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import pairwise
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import names as n
from contracts.builder import BatchBuilder
from contracts.wire import EventKind, SampleBatch, decode, encode
from pipeline.accounting import Accountant, Result, export_state, import_state
from pipeline.checkpoint import decode_state, encode_state

T0 = 1_800_000_000_000
SCRAPE_MS = 100
DOWNTIME = SCRAPE_MS + 1
GIB = 1 << 30
NODE = "node-1"


@dataclass(frozen=True)
class Sandbox:
    id: str
    start: int  # ms after T0
    life: int
    vcpu: int
    mem: int  # memory.current, constant
    cpu_rate: int  # µs per ms
    # a VM restart this long after the start (>= two scrapes): nothing runs for DOWNTIME, longer
    # than a scrape, so its last value before the reset is read, then the counters start from 0
    reset_at: int | None
    labels: tuple[str, ...]  # per appearance: "none", "unattributed", "tenant-X", "tenant-X/name=Y"
    final_lag: int  # how long after the stop the final reading comes

    @property
    def stop(self) -> int:
        return self.start + self.life

    def cpu_at(self, t: int) -> int:
        """The counter at `t` (ms after T0)."""
        t = min(t, self.stop) - self.start
        if self.reset_at is None or t < self.reset_at:
            return t * self.cpu_rate
        return (
            max(0, t - self.reset_at - DOWNTIME) * self.cpu_rate
            if t >= self.reset_at + DOWNTIME
            else (self.reset_at * self.cpu_rate)
        )

    @property
    def cpu_truth(self) -> int:
        """Everything the counters counted: before the reset, and since."""
        if self.reset_at is None:
            return self.life * self.cpu_rate
        return self.reset_at * self.cpu_rate + max(0, self.life - self.reset_at - DOWNTIME) * self.cpu_rate


def label_dict(spec: str, sb: str) -> dict[str, str]:
    if spec == "none":
        return {}
    if spec == "unattributed":
        return {"tenant": n.UNATTRIBUTED, "cri_name": f"pod-{sb}"}
    tenant, _, name = spec.partition("/")
    return {"tenant": tenant, "cri_namespace": tenant, "cri_name": name or f"pod-{sb}"}


sandboxes = st.lists(
    st.builds(
        Sandbox,
        id=st.sampled_from(["a", "b", "c", "d"]),
        start=st.integers(0, 400),
        life=st.integers(1, 700),
        vcpu=st.sampled_from([500, 1000, 2000]),
        mem=st.integers(1, 4).map(lambda g: g * GIB // 4),
        cpu_rate=st.integers(1, 2000),
        reset_at=st.one_of(st.none(), st.integers(2 * SCRAPE_MS, 600)),
        labels=st.lists(
            st.sampled_from(["none", "unattributed", "tenant-x", "tenant-y", "tenant-x/name=other"]),
            min_size=1,
            max_size=12,
        ).map(tuple),
        final_lag=st.integers(0, 30),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda s: s.id,
).map(lambda sbs: [s if s.reset_at is None or s.reset_at < s.life else Sandbox(**{**s.__dict__, "reset_at": None})
                   for s in sbs])  # fmt: skip


def sequence(sbs: list[Sandbox]) -> list[SampleBatch]:
    """What a collector sends: a scrape every SCRAPE_MS with every live sandbox (its start in
    the first one), and at each stop a batch with the start again, the final reading and the stop."""
    happenings: list[tuple[int, int, str, Sandbox | None]] = []  # (time, order, kind, sandbox)
    end = max(s.stop for s in sbs) + SCRAPE_MS
    happenings += [(t, 1, "scrape", None) for t in range(SCRAPE_MS, end, SCRAPE_MS)]
    happenings += [(s.stop, 0, "stop", s) for s in sbs]
    seen = {s.id: 0 for s in sbs}
    started: set[str] = set()
    out: list[SampleBatch] = []
    for t, _, kind, stopping in sorted(happenings, key=lambda h: (h[0], h[1])):
        b = BatchBuilder(NODE)
        if kind == "stop":
            assert stopping is not None
            live, ts, scrape = [stopping], t + stopping.final_lag, t
        else:
            live, ts, scrape = [s for s in sbs if s.start <= t < s.stop], t, t
        for s in live:
            spec = s.labels[min(seen[s.id], len(s.labels) - 1)]
            seen[s.id] += 1
            e = b.entity(s.id, label_dict(spec, s.id))
            if kind == "stop" or s.id not in started:
                b.event(e, EventKind.START, T0 + s.start)
                started.add(s.id)
            for metric, value in ((n.M_CG_CPU_USAGE_US, s.cpu_at(ts)), (n.M_CG_MEM_CURRENT, s.mem),
                                  (n.M_SPEC_VCPU_MILLI, s.vcpu), (n.M_SPEC_MEM_BYTES, 2 * GIB)):  # fmt: skip
                b.add(e, metric, "", T0 + ts, float(value))
            if kind == "stop":
                b.event(e, EventKind.STOP, T0 + s.stop)
        if live:
            out.append(decode(encode(b.build(1, len(out), T0 + scrape))))
    return out


def rows(results: list[Result]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    usage = pd.concat([r.usage for r in results]) if results else pd.DataFrame()
    u = sorted(tuple(x) for x in usage.itertuples(index=False)) if len(usage) else []
    life = sorted(x for r in results for x in r.lifecycle)
    return u, life


def run(batches: list[SampleBatch], cuts: list[int]) -> list[Result]:
    acct = Accountant()
    bounds = [0, *sorted(set(cuts)), len(batches)]
    return [acct.process(batches[a:b]) for a, b in pairwise(bounds) if b > a]


def dedup(u: list[tuple[Any, ...]]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    """Rows by their storage key (tenant, sandbox, end, batch), as ReplacingMergeTree keeps them;
    fails if one key ever carried two different rows."""
    out: dict[tuple[Any, ...], tuple[Any, ...]] = {}
    for r in u:
        key = (r[0], r[1], r[4], r[-1])
        assert out.setdefault(key, r) == r, (key, out[key], r)
    return out


FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def older_copy(b: SampleBatch, seq: int, back_ms: int) -> SampleBatch:
    """`b` again under a new sequence number with every sample `back_ms` older: a batch whose
    readings are older than ones already sent (a source clock that stepped back)."""
    return replace(b, seq=seq, ts_ms=b.ts_ms - back_ms, ev_entity=b.ev_entity[:0], ev_kind=b.ev_kind[:0],
                   ev_ts_ms=b.ev_ts_ms[:0])  # fmt: skip


@FAST
@given(sbs=sandboxes, data=st.data())
def test_rows_do_not_depend_on_flush_boundaries(sbs: list[Sandbox], data: st.DataObject) -> None:
    batches = sequence(sbs)
    for _ in range(data.draw(st.integers(0, 2), label="older batches inserted")):
        at = data.draw(st.integers(1, len(batches)))
        batches.insert(at, older_copy(batches[at - 1], 1000 + at, data.draw(st.integers(1, 50))))
    cuts = data.draw(st.lists(st.integers(0, len(batches)), max_size=6))
    assert rows(run(batches, cuts)) == rows(run(batches, []))


@FAST
@given(sbs=sandboxes, data=st.data())
def test_a_crash_and_a_restart_from_the_last_checkpoint_write_the_same_rows(
    sbs: list[Sandbox], data: st.DataObject
) -> None:
    batches = sequence(sbs)
    k = len(batches)
    checkpoint = data.draw(st.integers(0, k), label="checkpoint after batch")
    crash = data.draw(st.integers(checkpoint, k), label="crash after batch")
    cuts = data.draw(st.lists(st.integers(0, k), max_size=4), label="flush boundaries")
    first = Accountant()
    written = [first.process(batches[a:b]) for a, b in _spans(0, checkpoint, cuts)]
    saved = decode_state(encode_state(export_state(first)))  # what the checkpoint row holds
    written += [first.process(batches[a:b]) for a, b in _spans(checkpoint, crash, cuts)]  # then killed -9
    second = Accountant()
    import_state(second, saved)
    written += [second.process(batches[a:b]) for a, b in _spans(checkpoint, k, cuts)]  # replays the rest
    u, life = rows(written)
    want_u, want_life = rows(run(batches, []))
    assert dedup(u) == dedup(want_u)
    assert sorted(set(life)) == want_life


def _spans(lo: int, hi: int, cuts: list[int]) -> list[tuple[int, int]]:
    bounds = [lo, *sorted(c for c in set(cuts) if lo < c < hi), hi]
    return [(a, b) for a, b in pairwise(bounds) if b > a]


@FAST
@given(sbs=sandboxes, data=st.data())
def test_old_batches_sent_again_change_no_row(sbs: list[Sandbox], data: st.DataObject) -> None:
    batches = sequence(sbs)
    resent = data.draw(st.lists(st.sampled_from(batches), max_size=4))
    cuts = data.draw(st.lists(st.integers(0, len(batches) + len(resent)), max_size=4))
    u, life = rows(run(batches + resent, cuts))
    assert (u, life) == rows(run(batches, []))


@FAST
@given(sbs=sandboxes, data=st.data())
def test_the_tenant_is_fixed_at_the_first_attributed_batch(sbs: list[Sandbox], data: st.DataObject) -> None:
    batches = sequence(sbs)
    results = run(batches, data.draw(st.lists(st.integers(0, len(batches)), max_size=4)))
    usage = pd.concat([r.usage for r in results])
    seq_of = {b.batch_id: b.seq for b in batches}
    conflicts = 0
    for s in sbs:
        fixed: tuple[int, str, dict[str, str]] | None = None  # (first attributed seq, tenant, labels)
        for b in batches:
            e = next((e for e in b.entities if e.id == s.id), None)
            if e is None:
                continue
            t = e.labels.get("tenant") or n.UNATTRIBUTED
            if fixed is None and t != n.UNATTRIBUTED:
                fixed = (b.seq, t, dict(e.labels))
            elif fixed is not None and t != n.UNATTRIBUTED:
                conflicts += any(fixed[2].get(k, v) != v for k, v in e.labels.items())
        for _, r in usage[usage["sandbox_id"] == s.id].iterrows():
            want = n.UNATTRIBUTED if fixed is None or seq_of[r["batch_id"]] < fixed[0] else fixed[1]
            assert r["tenant"] == want, (s.id, r["batch_id"], r["tenant"], want)
    assert sum(r.label_conflicts for r in results) == conflicts


@FAST
@given(sbs=sandboxes)
def test_integrals_are_clipped_to_the_lifetime(sbs: list[Sandbox]) -> None:
    [r] = run(sequence(sbs), [])
    got = r.usage.groupby("sandbox_id")[["cpu_used_us", "vcpu_alloc_mcpu_ms", "mem_used_byte_ms"]].sum()
    for s in sbs:
        cpu, alloc, mem = (int(x) for x in got.loc[s.id])
        assert cpu == s.cpu_truth
        assert alloc == s.vcpu * s.life
        assert mem == s.mem * s.life  # however late the final reading came
