"""Wire format v1: one Kafka message holds one scrape of one node.

The layout is columnar so a batch decodes into numpy arrays with no per-sample Python
work; the full byte layout is in docs/wire-format.md. In short::

    envelope  "SMB" | version u8 | flags u8 | pad u8 | crc32(body) u32 | body
    body      zstd( header | meta JSON | sample columns | event columns )  (flag bit 0)
    header    boot_epoch_ms u64 | seq u64 | scrape_ts_ms u64 | n_samples u32 | n_events u32
              | meta_len u32
    meta      {"node", "entities": [[id, {labels}], ...], "metrics": [...], "subs": [...]}
    samples   entity u16[n] | metric u16[n] | sub u16[n] | ts_offset_ms i32[n] | value f64[n]
    events    entity u16[e] | kind u8[e] | ts_offset_ms i32[e]

Entity 0 is the node itself (host metrics); the others are sandboxes. `sub` indexes the
series' remaining labels (e.g. ``item="utime"``). The batch id (node, boot epoch, sequence)
is deterministic, so a replayed message can be recognised and deduplicated downstream.
"""

from __future__ import annotations

import functools
import json
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt
import zstandard

VERSION: Final = 1
MAGIC: Final = b"SMB"
FLAG_ZSTD: Final = 0x01
HEADER_KEY: Final = "sandmeter-format"
BATCH_ID_KEY: Final = "sandmeter-batch-id"
MAX_TABLE: Final = 0xFFFF
MAX_DECOMPRESSED: Final = 256 << 20

_ENVELOPE = struct.Struct("<3sBBxI")
_HEADER = struct.Struct("<QQQIII")
_SAMPLE_ROW_BYTES: Final = 2 + 2 + 2 + 4 + 8
_EVENT_ROW_BYTES: Final = 2 + 1 + 4

U16 = npt.NDArray[np.uint16]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


class WireError(ValueError):
    """A payload that cannot be decoded; `reason` is a short stable code for counters."""

    reason = "corrupt"


class UnknownVersionError(WireError):
    reason = "unknown_version"


class TruncatedError(WireError):
    reason = "truncated"


class CorruptError(WireError):
    reason = "corrupt"


class EncodeError(ValueError):
    """A batch that does not fit the format (too many entities, offsets out of range)."""


class EventKind(IntEnum):
    START = 1
    STOP = 2


@dataclass(frozen=True)
class Entity:
    """A sandbox (or the node itself, id "") and its labels (tenant, cri_*, spec)."""

    id: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class SampleBatch:
    node: str
    boot_epoch_ms: int
    seq: int
    scrape_ts_ms: int
    entities: Sequence[Entity]
    metrics: Sequence[str]
    subs: Sequence[str]
    entity: U16
    metric: U16
    sub: U16
    ts_ms: I64
    value: F64
    ev_entity: U16 = field(default_factory=lambda: np.zeros(0, np.uint16))
    ev_kind: U8 = field(default_factory=lambda: np.zeros(0, np.uint8))
    ev_ts_ms: I64 = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def batch_id(self) -> str:
        return batch_id(self.node, self.boot_epoch_ms, self.seq)

    def __len__(self) -> int:
        return int(self.value.shape[0])


def sub_label(**labels: str) -> str:
    """The canonical sub-label string of a series: keys sorted, Prometheus quoting."""
    return ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))


def batch_id(node: str, boot_epoch_ms: int, seq: int) -> str:
    return f"{node}/{boot_epoch_ms}/{seq}"


def kafka_headers(batch_id: str) -> list[tuple[str, bytes]]:
    return [(HEADER_KEY, str(VERSION).encode()), (BATCH_ID_KEY, batch_id.encode())]


class Encoder:
    """Encodes batches; holds one zstd context so repeated encodes do not reallocate."""

    def __init__(self, level: int = 3) -> None:
        self._zstd = zstandard.ZstdCompressor(level=level)

    def encode(self, b: SampleBatch) -> bytes:
        n, e = len(b), int(b.ev_kind.shape[0])
        for name, size in (("entities", len(b.entities)), ("metrics", len(b.metrics))):
            if size > MAX_TABLE:
                raise EncodeError(f"{name}: {size} entries, at most {MAX_TABLE} per batch")
        if len(b.subs) > MAX_TABLE:
            raise EncodeError(f"subs: {len(b.subs)} entries, at most {MAX_TABLE} per batch")
        if any(a.shape[0] != n for a in (b.entity, b.metric, b.sub, b.ts_ms)):
            raise EncodeError("sample columns differ in length")
        if b.ev_entity.shape[0] != e or b.ev_ts_ms.shape[0] != e:
            raise EncodeError("event columns differ in length")
        ts_off = _offsets(b.ts_ms, b.scrape_ts_ms)
        ev_off = _offsets(b.ev_ts_ms, b.scrape_ts_ms)
        meta = json.dumps(
            {
                "node": b.node,
                "entities": [[x.id, dict(x.labels)] for x in b.entities],
                "metrics": list(b.metrics),
                "subs": list(b.subs),
            },
            separators=(",", ":"),
        ).encode()
        body = b"".join(
            (
                _HEADER.pack(b.boot_epoch_ms, b.seq, b.scrape_ts_ms, n, e, len(meta)),
                meta,
                np.ascontiguousarray(b.entity, "<u2").tobytes(),
                np.ascontiguousarray(b.metric, "<u2").tobytes(),
                np.ascontiguousarray(b.sub, "<u2").tobytes(),
                ts_off.tobytes(),
                np.ascontiguousarray(b.value, "<f8").tobytes(),
                np.ascontiguousarray(b.ev_entity, "<u2").tobytes(),
                np.ascontiguousarray(b.ev_kind, "u1").tobytes(),
                ev_off.tobytes(),
            )
        )
        packed = self._zstd.compress(body)
        return _ENVELOPE.pack(MAGIC, VERSION, FLAG_ZSTD, zlib.crc32(packed)) + packed


def _offsets(ts: I64, base: int) -> npt.NDArray[np.int32]:
    off = np.asarray(ts, np.int64) - np.int64(base)
    if off.size and (off.min() < -(2**31) or off.max() >= 2**31):
        raise EncodeError("a timestamp is more than 24 days away from the scrape time")
    return off.astype("<i4")


def encode(batch: SampleBatch) -> bytes:
    return Encoder().encode(batch)


def decode(payload: bytes) -> SampleBatch:
    """Decodes one message; raises a WireError subclass, and nothing else, for anything malformed."""
    if len(payload) < _ENVELOPE.size:
        raise TruncatedError(f"{len(payload)} bytes, shorter than the {_ENVELOPE.size}-byte envelope")
    magic, version, flags, crc = _ENVELOPE.unpack_from(payload)
    if magic != MAGIC:
        raise CorruptError(f"bad magic {magic!r}")
    if version != VERSION:
        raise UnknownVersionError(f"wire version {version}, this decoder reads {VERSION}")
    packed = memoryview(payload)[_ENVELOPE.size :]
    if zlib.crc32(packed) != crc:
        raise CorruptError("checksum mismatch")
    body = _decompress(bytes(packed)) if flags & FLAG_ZSTD else bytes(packed)
    try:
        return _decode_body(body)
    except WireError:
        raise
    except Exception as exc:  # e.g. meta JSON nested past the recursion limit: still just a bad payload
        raise CorruptError(f"{type(exc).__name__}: {exc}") from exc


def _decompress(packed: bytes) -> bytes:
    try:
        out: bytes = zstandard.ZstdDecompressor().decompress(packed, max_output_size=MAX_DECOMPRESSED)
    except zstandard.ZstdError as exc:
        raise CorruptError(f"zstd: {exc}") from exc
    return out


@functools.lru_cache(maxsize=1024)
def _meta(raw: bytes) -> tuple[str, tuple[Entity, ...], tuple[str, ...], tuple[str, ...]]:
    """Node, entities, metrics and sub-labels from the meta JSON. A node's scrapes mostly repeat
    their meta byte for byte, so the parsed tables are kept (and shared: they are immutable)."""
    try:
        meta = json.loads(raw)
        node = str(meta["node"])
        entities = tuple(Entity(str(i), {str(k): str(v) for k, v in lb.items()}) for i, lb in meta["entities"])
        metrics = tuple(str(m) for m in meta["metrics"])
        subs = tuple(str(s) for s in meta["subs"])
        # JSON escapes can spell lone surrogates, which no UTF-8 column (nor log line) can hold
        for text in (node, *metrics, *subs, *(x for e in entities for x in (e.id, *e.labels, *e.labels.values()))):
            text.encode()
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptError(f"meta: {exc}") from exc
    return node, entities, metrics, subs


def _decode_body(body: bytes) -> SampleBatch:
    if len(body) < _HEADER.size:
        raise TruncatedError("body shorter than its header")
    boot, seq, scrape_ts, n, e, meta_len = _HEADER.unpack_from(body)
    if scrape_ts >= 2**62:  # epoch ms; far beyond any clock, and it must stay an int64 after adding offsets
        raise CorruptError(f"scrape time {scrape_ts} out of range")
    need = _HEADER.size + meta_len + n * _SAMPLE_ROW_BYTES + e * _EVENT_ROW_BYTES
    if len(body) != need:
        kind = TruncatedError if len(body) < need else CorruptError
        raise kind(f"body has {len(body)} bytes, header announces {need}")
    pos = _HEADER.size
    node, entities, metrics, subs = _meta(body[pos : pos + meta_len])
    pos += meta_len
    base = np.int64(scrape_ts)

    def col(dtype: str, count: int) -> npt.NDArray[np.generic]:
        nonlocal pos
        arr = np.frombuffer(body, dtype=dtype, count=count, offset=pos)
        pos += arr.nbytes
        return arr

    entity, metric, sub = col("<u2", n), col("<u2", n), col("<u2", n)
    ts = col("<i4", n).astype(np.int64) + base
    value = col("<f8", n).astype(np.float64)
    ev_entity, ev_kind = col("<u2", e), col("u1", e)
    ev_ts = col("<i4", e).astype(np.int64) + base
    for name, arr, size in (
        ("entity", entity, len(entities)),
        ("metric", metric, len(metrics)),
        ("sub", sub, len(subs)),
        ("event entity", ev_entity, len(entities)),
    ):
        if arr.size and int(arr.max()) >= size:
            raise CorruptError(f"{name} index {int(arr.max())} out of range ({size} entries)")
    if e and not np.isin(ev_kind, [k.value for k in EventKind]).all():
        raise CorruptError("unknown event kind")
    return SampleBatch(
        node=node,
        boot_epoch_ms=boot,
        seq=seq,
        scrape_ts_ms=scrape_ts,
        entities=entities,
        metrics=metrics,
        subs=subs,
        entity=entity.astype(np.uint16),
        metric=metric.astype(np.uint16),
        sub=sub.astype(np.uint16),
        ts_ms=ts,
        value=value,
        ev_entity=ev_entity.astype(np.uint16),
        ev_kind=ev_kind.astype(np.uint8),
        ev_ts_ms=ev_ts,
    )
