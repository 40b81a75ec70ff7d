from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import wire
from contracts.builder import BatchBuilder
from contracts.wire import CorruptError, EventKind, TruncatedError, UnknownVersionError, decode, encode

label = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)


@st.composite
def batches(draw: st.DrawFn) -> wire.SampleBatch:
    b = BatchBuilder(draw(label), {"zone": draw(label)})
    ents = [b.entity(f"sb{i}", {"tenant": draw(label)}) for i in range(draw(st.integers(0, 5)))]
    base = draw(st.integers(0, 2**40))
    for _ in range(draw(st.integers(0, 60))):
        b.add(
            draw(st.sampled_from([0, *ents])),
            draw(st.sampled_from(["m_a", "m_b", "kata_guest_cpu_time"])),
            draw(st.sampled_from(["", 'item="idle"', 'cpu="0",item="user"'])),
            base + draw(st.integers(-100_000, 100_000)),
            draw(st.floats(allow_nan=False)),
        )
    for e in ents[: draw(st.integers(0, len(ents)))]:
        b.event(e, draw(st.sampled_from(list(EventKind))), base + draw(st.integers(0, 5000)))
    return b.build(draw(st.integers(0, 2**63)), draw(st.integers(0, 2**63)), base)


@settings(max_examples=200, deadline=None)
@given(batches())
def test_round_trip(b: wire.SampleBatch) -> None:
    d = decode(encode(b))
    assert (d.node, d.boot_epoch_ms, d.seq, d.scrape_ts_ms) == (b.node, b.boot_epoch_ms, b.seq, b.scrape_ts_ms)
    assert d.batch_id == b.batch_id
    assert [(e.id, dict(e.labels)) for e in d.entities] == [(e.id, dict(e.labels)) for e in b.entities]
    assert tuple(d.metrics) == tuple(b.metrics) and tuple(d.subs) == tuple(b.subs)
    for col in ("entity", "metric", "sub", "ts_ms", "value", "ev_entity", "ev_kind", "ev_ts_ms"):
        np.testing.assert_array_equal(getattr(d, col), getattr(b, col), err_msg=col)


def _sample() -> bytes:
    b = BatchBuilder("node-1")
    e = b.entity("sb1", {"tenant": "t"})
    b.add(e, "cgroup_cpu_usage_usec", "", 1_700_000_000_000, 1234.0)
    return encode(b.build(1, 2, 1_700_000_000_000))


def test_unknown_version_rejected() -> None:
    raw = bytearray(_sample())
    raw[3] = 9
    with pytest.raises(UnknownVersionError):
        decode(bytes(raw))


@pytest.mark.parametrize("cut", [0, 5, 9, 20])
def test_truncated_rejected(cut: int) -> None:
    with pytest.raises(wire.WireError):
        decode(_sample()[:cut])


def test_corrupt_payload_rejected() -> None:
    raw = bytearray(_sample())
    raw[-1] ^= 0xFF
    with pytest.raises(CorruptError, match="checksum"):
        decode(bytes(raw))


def test_short_body_with_valid_crc_is_truncated() -> None:
    import zstandard

    body = zstandard.ZstdCompressor().compress(b"\x00" * 10)
    raw = struct.pack("<3sBBxI", b"SMB", 1, 1, zlib.crc32(body)) + body
    with pytest.raises(TruncatedError):
        decode(raw)


def test_index_out_of_range_is_corrupt() -> None:
    b = BatchBuilder("n")
    b.add(0, "m", "", 10, 1.0)
    good = b.build(0, 0, 10)
    bad = wire.SampleBatch(**{**good.__dict__, "metric": np.array([3], np.uint16)})
    with pytest.raises(CorruptError, match="metric index"):
        decode(encode(bad))


def test_batch_id_is_deterministic() -> None:
    assert decode(_sample()).batch_id == "node-1/1/2"
    assert _sample() == _sample()
