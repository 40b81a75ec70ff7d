from __future__ import annotations

import threading
import time
from pathlib import Path

from prometheus_client import CollectorRegistry

from collectors.agent import CollectorAgent
from collectors.base import Reading, SourceError
from collectors.lifecycle import SandboxWatcher
from collectors.tenancy import TenantRule
from contracts.names import COLLECTOR_LABEL_CONFLICTS as LABEL_CONFLICTS
from contracts.names import COLLECTOR_SCRAPE_ERRORS as SCRAPE_ERRORS
from contracts.wire import Encoder, EventKind, SampleBatch


class ListSink:
    def __init__(self) -> None:
        self.enc = Encoder()
        self.batches: list[SampleBatch] = []

    def put(self, batch: SampleBatch) -> None:
        self.enc.encode(batch)  # raises EncodeError as the Kafka sink would
        self.batches.append(batch)

    def close(self, timeout_s: float) -> None:
        pass


class FixedSource:
    def __init__(self, name: str, ts: int, fail: bool = False) -> None:
        self.name, self.ts, self.fail = name, ts, fail

    def read(self, sandboxes: frozenset[str]) -> Reading:
        if self.fail:
            raise SourceError(self.name, "endpoint down")
        r = Reading(self.name, self.ts)
        r.rows.add("", "host_load", 'item="load1"', 0.5)
        return r


def agent(tmp_path: Path, *sources: FixedSource) -> tuple[CollectorAgent, ListSink, CollectorRegistry]:
    reg, sink = CollectorRegistry(), ListSink()
    a = CollectorAgent("n1", list(sources), SandboxWatcher([tmp_path], lambda: 1000), sink, TenantRule(), reg,
                       clock_ms=lambda: 1_000_000)  # fmt: skip
    return a, sink, reg


def test_failing_source_counted_others_delivered(tmp_path: Path) -> None:
    a, sink, reg = agent(tmp_path, FixedSource("good", 1_000_000), FixedSource("bad", 0, fail=True))
    a.scrape()
    assert [len(b) for b in sink.batches] == [1]
    assert reg.get_sample_value(SCRAPE_ERRORS, {"source": "bad"}) == 1
    a.close()


def test_unencodable_batch_counted_not_fatal_and_seq_kept(tmp_path: Path) -> None:
    far = 1_000_000 + 40 * 86_400_000  # a source clock 40 days off: outside the wire format's range
    a, sink, reg = agent(tmp_path, FixedSource("skewed", far))
    a.scrape()
    assert sink.batches == [] and reg.get_sample_value(SCRAPE_ERRORS, {"source": "encode"}) == 1
    a.sources = [FixedSource("good", 1_000_000)]
    a._pending.clear()
    a.scrape()
    assert [b.seq for b in sink.batches] == [0]  # no gap: a dropped batch used no sequence number
    a.close()


class HungSource(FixedSource):
    """A kata-monitor that accepted the connection and never answers."""

    remote = True

    def __init__(self, name: str = "kata_monitor") -> None:
        super().__init__(name, 1_000_000)
        self.release = threading.Event()
        self.calls = 0

    def read(self, sandboxes: frozenset[str]) -> Reading:
        self.calls += 1
        self.release.wait(30)
        return super().read(sandboxes)


def test_a_hung_source_never_delays_the_others(tmp_path: Path) -> None:
    hung = HungSource()
    a, sink, reg = agent(tmp_path, hung, FixedSource("host", 1_000_000))
    a.source_timeout_s = 0.2
    for _ in range(3):
        t0 = time.monotonic()
        a.scrape()
        assert time.monotonic() - t0 < 1.0  # the timeout, not the hung read, bounds a scrape
    assert [len(b) for b in sink.batches] == [1, 1, 1]  # host metrics every time
    assert hung.calls == 1  # still stuck: not asked again, no pile of blocked threads
    assert reg.get_sample_value(SCRAPE_ERRORS, {"source": "kata_monitor"}) == 3
    hung.release.set()
    a.close()


class HungFile(HungSource):
    """A local source stuck in a read (a /proc file of a process in D state)."""

    remote = False


def test_a_hung_local_source_costs_the_sources_after_it_one_scrape_at_most(tmp_path: Path) -> None:
    """Local sources take turns in one thread: the ones behind a hung read miss that scrape,
    then are read in the next scrape's turn without it; the remote one never waits."""
    hung, after = HungFile("proc"), FixedSource("pod_net", 1_000_000)
    a, sink, reg = agent(tmp_path, HungSource(), FixedSource("cgroup", 1_000_000), hung, after)
    a.source_timeout_s = 0.2
    a.sources[0].release.set()  # type: ignore[attr-defined]  # kata-monitor answers
    for _ in range(4):
        t0 = time.monotonic()
        a.scrape()
        assert time.monotonic() - t0 < 1.0
    assert [len(b) for b in sink.batches] == [2, 3, 3, 3]  # pod_net missed only the first scrape
    assert hung.calls == 1
    assert reg.get_sample_value(SCRAPE_ERRORS, {"source": "proc"}) == 4
    assert reg.get_sample_value(SCRAPE_ERRORS, {"source": "pod_net"}) == 1
    hung.release.set()
    a.close()


class SlowSource(FixedSource):
    """A local source that is slow but healthy (a node with many sandboxes, /proc under pressure)."""

    def read(self, sandboxes: frozenset[str]) -> Reading:
        time.sleep(0.15)
        return super().read(sandboxes)


def test_local_sources_taking_turns_each_get_the_whole_timeout(tmp_path: Path) -> None:
    """Two local sources of 0.15 s each, a 0.2 s timeout: each is within it from the start of
    its own turn, so both are delivered every scrape (a deadline from the scrape's start would
    cut off the second every time)."""
    a, sink, reg = agent(tmp_path, SlowSource("cgroup", 1_000_000), SlowSource("proc", 1_000_000))
    a.source_timeout_s = 0.2
    for _ in range(3):
        a.scrape()
    assert [len(b) for b in sink.batches] == [2, 2, 2]
    assert reg.get_sample_value(SCRAPE_ERRORS, {"source": "proc"}) == 0
    a.close()


def test_stop_batch_carries_the_start_of_a_sandbox_that_no_scrape_saw(tmp_path: Path) -> None:
    a, sink, _ = agent(tmp_path)
    a.watcher._on_start, a.watcher._on_stop = a.on_start, a.on_stop  # hooks, but no watcher thread
    try:
        (tmp_path / "sb1").mkdir()
        a.watcher.scan()
        (tmp_path / "sb1").rmdir()
        a.watcher.scan()  # stopped before any scrape drained its start
        [b] = sink.batches
        kinds = [(b.entities[e].id, EventKind(int(k))) for e, k in zip(b.ev_entity, b.ev_kind, strict=True)]
        assert kinds == [("sb1", EventKind.START), ("sb1", EventKind.STOP)]
        assert b.ev_ts_ms[0] <= b.ev_ts_ms[1]
    finally:
        a.close()


def test_a_scrape_queues_the_stops_before_it_and_holds_only_sandboxes_alive_at_its_stamp(tmp_path: Path) -> None:
    a, sink, _ = agent(tmp_path, FixedSource("good", 1_000_000))
    a.watcher._on_start, a.watcher._on_stop = a.on_start, a.on_stop  # hooks, but no watcher thread
    try:
        for sb in ("sb1", "sb2"):
            (tmp_path / sb).mkdir()
        a.watcher.scan()
        (tmp_path / "sb1").rmdir()  # gone just before the scrape, and no watcher thread has seen it
        scrape = a.scrape()
        *before, last = sink.batches
        assert last is scrape and a.watcher.alive() == {"sb2"}
        stops = [
            (b.entities[e].id, EventKind(int(k))) for b in before for e, k in zip(b.ev_entity, b.ev_kind, strict=True)
        ]
        assert ("sb1", EventKind.STOP) in stops  # its stop batch went first: no allocation runs past the stop
    finally:
        a.close()


class KataOnly(FixedSource):
    """kata-monitor reporting a sandbox the directory scan does not know, with its CRI labels."""

    def __init__(self, namespace: str = "acme") -> None:
        super().__init__("kata_monitor", 1_000_000)
        self.namespace = namespace

    def read(self, sandboxes: frozenset[str]) -> Reading:
        r = Reading(self.name, self.ts)
        r.rows.add("sbk", "kata_guest_load", 'item="load1"', 0.5)
        r.labels["sbk"] = {"cri_namespace": self.namespace, "cri_name": "fn-k"}
        return r


def tenants(b: SampleBatch) -> dict[str, str]:
    return {e.id: e.labels.get("tenant", "") for e in b.entities if e.id}


def test_a_sandbox_only_kata_monitor_reports_keeps_its_tenant_scrape_after_scrape(tmp_path: Path) -> None:
    a, sink, _ = agent(tmp_path, KataOnly())
    try:
        for _ in range(5):  # the clean-up used to drop its labels from the second scrape on
            a.scrape()
        assert [tenants(b) for b in sink.batches] == [{"sbk": "acme"}] * 5
    finally:
        a.close()


def test_labels_are_fixed_at_first_attribution_and_a_contradiction_is_counted(tmp_path: Path) -> None:
    src = KataOnly()
    a, sink, reg = agent(tmp_path, src)
    try:
        a.scrape()
        src.namespace = "other"  # a source that says otherwise later: kept as first seen, counted
        a.scrape()
        a.learn("sbk", {"cri_uid": "u-1"}, "bundle")  # nothing new names a tenant: no conflict either
        assert [tenants(b) for b in sink.batches] == [{"sbk": "acme"}] * 2
        assert reg.get_sample_value(LABEL_CONFLICTS) == 1
        assert a.labels("sbk") == {"cri_namespace": "acme", "cri_name": "fn-k"}
    finally:
        a.close()


def test_labels_of_a_sandbox_nothing_reports_any_more_are_dropped_after_two_scrapes(tmp_path: Path) -> None:
    src = KataOnly()
    a, _, _ = agent(tmp_path, src)
    try:
        a.scrape()
        a.sources = [FixedSource("host", 1_000_000)]  # kata-monitor no longer knows sbk
        a._pending.clear()
        for _ in range(3):
            a.scrape()
        assert a.labels("sbk") == {}
    finally:
        a.close()


def test_a_sandbox_that_stops_during_a_scrape_leaves_that_scrape_for_its_stop_batch(tmp_path: Path) -> None:
    class StopsMidRead(FixedSource):
        def read(self, sandboxes: frozenset[str]) -> Reading:
            r = Reading(self.name, self.ts)
            for sb in sorted(sandboxes):
                r.rows.add(sb, "cgroup_cpu_usage_usec", "", 7.0)
            (tmp_path / "sb1").rmdir()  # gone while the sources read
            return r

    a, sink, _ = agent(tmp_path, StopsMidRead("cgroup", 1_000_000))
    a.watcher._on_start, a.watcher._on_stop = a.on_start, a.on_stop  # hooks, but no watcher thread
    try:
        (tmp_path / "sb1").mkdir()
        (tmp_path / "sb2").mkdir()
        a.scrape()
        stop, scrape = sink.batches
        assert [EventKind(int(k)) for k in stop.ev_kind] == [EventKind.START, EventKind.STOP]
        assert {e.id for e in scrape.entities if e.id} == {"sb2"}  # nothing of sb1 after its stop
        assert {scrape.entities[e].id for e in scrape.ev_entity} == {"sb2"}
    finally:
        a.close()
