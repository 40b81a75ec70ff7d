"""kata-monitor `/metrics`: Prometheus text of every sandbox's shim, agent and QEMU.

A real kata-monitor sends ~300 series per sandbox (15,700 lines for 50 sandboxes), the same
series every time. The common case runs in C (`collectors/_expfmt.c`): one pass over the
bytes cuts each `head value` line, looks its head up in a cache of the series seen before
(parsed and checked in Python once, the first time) and reads its value as `float()` does,
making one short-lived object per line where splitting the body made two kept ones (the
Python path cost ~5.3 ms of CPU for 50 sandboxes, the scan ~2.3 ms). The result is a
columnar Block. The scan accepts only bodies that Python would cut into exactly those
tokens, and gives way to the Python path for everything else (a timestamp, a space inside a
label value, other whitespace, a malformed head, a value it does not read): there the body
is cut into tokens by `bytes.split`, the values become floats a digit column at a time, and
a body whose tokens are out of step takes the line-by-line path, which checks and counts
every line.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from collectors import _expfmt
from collectors.base import Block, Reading, SourceError
from contracts.names import KATA_HYPERVISOR_PREFIX, M_INFLIGHT

KEPT_PREFIXES = (
    KATA_HYPERVISOR_PREFIX, "kata_shim_", "kata_guest_", "kata_agent_", "kata_virtiofsd_",
    M_INFLIGHT,  # a per-sandbox in-flight requests gauge, where an exporter provides one
)  # fmt: skip
_KEPT = tuple(p.encode() for p in KEPT_PREFIXES)
CRI_KEYS = ("cri_uid", "cri_name", "cri_namespace")
SKIP, BAD = -1, -2  # series codes: a family not kept (or kata-monitor's own), a malformed head

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class ParseCache:
    """Series heads (`name{labels}`) seen before -> their index in the series tables, or a code."""

    def __init__(self, max_series: int = 500_000) -> None:
        self._max = max_series
        self._reset()

    def _reset(self) -> None:
        self.series: dict[bytes, int] = {}
        self.table = _expfmt.HeadTable()  # the same heads and codes, for the C scan
        self.why: dict[bytes, str] = {}  # malformed heads -> the error to count each time
        self.sandboxes: list[str] = []
        self.metrics: list[str] = []
        self.subs: list[str] = []
        self.cri: list[dict[str, str]] = []  # per sandbox index: its cri_* labels
        self._sb_ix: dict[str, int] = {}
        self._m_ix: dict[str, int] = {}
        self._s_ix: dict[str, int] = {}
        self._cols: list[list[int]] = [[], [], []]  # per series: sandbox, metric, sub index
        self._arrays: tuple[npt.NDArray[np.int64], ...] | None = None

    def columns(self) -> tuple[npt.NDArray[np.int64], ...]:
        """Per series index: (sandbox, metric, sub) table indexes, as arrays."""
        if self._arrays is None:
            self._arrays = tuple(np.array(c, np.int64) for c in self._cols)
        return self._arrays

    def codes(self, heads: list[bytes]) -> npt.NDArray[np.int64]:
        """The code of every head, parsing and checking the ones not seen before."""
        if len(self.series) >= self._max:  # only here, never mid-body: codes before it would be stale
            self._reset()
        get, code = self.series.get, self.code
        return np.array([c if (c := get(h)) is not None else code(h) for h in heads], np.int64)

    def code(self, head: bytes) -> int:
        """The series index of a head, parsing and checking it the first time."""
        got = self.series.get(head)
        if got is not None:
            return got
        code, why = self._parse(head.decode("utf-8", errors="replace"))
        self.series[head] = code
        self.table.add(head, code)
        if why:
            self.why[head] = why
        return code

    def _parse(self, head: str) -> tuple[int, str]:
        brace = head.find("{")
        name, labels = (head, "") if brace < 0 else (head[:brace], head[brace + 1 :])
        if brace >= 0 and not labels.endswith("}"):
            return BAD, f"malformed line: {head[:80]!r}"
        if not head.startswith(KEPT_PREFIXES):
            return (SKIP, "") if head[:1].isalpha() else (BAD, f"malformed line: {head[:80]!r}")
        if _NAME.fullmatch(name) is None:
            return BAD, f"malformed line: {head[:80]!r}"
        parsed = _parse_labels(labels[:-1])
        if parsed is None:
            return BAD, f"malformed labels: {head[:80]!r}"
        sandbox, sub, cri = parsed
        if not sandbox:
            return BAD, f"no sandbox_id: {head[:80]!r}"
        sb = self._intern(self._sb_ix, self.sandboxes, sandbox)
        if sb == len(self.cri):
            self.cri.append(cri)
        self._cols[0].append(sb)
        self._cols[1].append(self._intern(self._m_ix, self.metrics, name))
        self._cols[2].append(self._intern(self._s_ix, self.subs, sub))
        self._arrays = None
        return len(self._cols[0]) - 1, ""

    @staticmethod
    def _intern(ix: dict[str, int], table: list[str], v: str) -> int:
        got = ix.get(v)
        if got is None:
            got = ix[v] = len(table)
            table.append(v)
        return got


def _parse_labels(text: str) -> tuple[str, str, dict[str, str]] | None:
    pos, labels = 0, {}
    while pos < len(text):
        m = _LABEL.match(text, pos)
        if not m or m.end() == pos:
            return None
        labels[m[1]] = m[2]
        pos = m.end()
    sandbox = labels.pop("sandbox_id", "")
    cri = {k: labels.pop(k) for k in CRI_KEYS if k in labels}
    sub = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return sandbox, sub, cri


def _strip_comments(body: bytes) -> bytes:
    """The body without its `#` lines (HELP and TYPE: two per family). The search is for the
    single byte `#` (a memchr in C; a two-byte needle like `\\n#` is searched an order of
    magnitude slower), and a `#` not at a line start (inside a label value) is passed over."""
    at = body.find(b"#")
    if at < 0:
        return body
    parts: list[bytes] = []
    start = 0  # where the kept text not yet in `parts` begins
    while at >= 0:
        if at and body[at - 1] != 0x0A:  # inside a line
            at = body.find(b"#", at + 1)
            continue
        parts.append(body[start:at])
        end = body.find(b"\n", at)
        start = len(body) if end < 0 else end + 1
        at = body.find(b"#", start)
    parts.append(body[start:])
    return b"".join(parts)


def parse(body: bytes | str, ts_ms: int, cache: ParseCache | None = None) -> Reading:
    """Parses exposition text; malformed lines are counted and skipped."""
    cache = cache or ParseCache()
    raw = body.encode() if isinstance(body, str) else body
    scanned = _scanned(raw, ts_ms, cache)
    return scanned if scanned is not None else _parse_python(raw, ts_ms, cache)


def _parse_python(raw: bytes, ts_ms: int, cache: ParseCache) -> Reading:
    """Any body, in Python: the tokens in step where they can be, else line by line."""
    tokens = _data_tokens(raw)
    if tokens is None:
        tokens = _strip_comments(raw).split()
    if len(tokens) % 2 == 0:  # every line may be `head value`: the fast path
        out = _reading(tokens[0::2], tokens[1::2], ts_ms, cache)
        # any line that is not `head value` puts the tokens out of step, and a value then
        # stands where a head should (a number, never a series): take the lines one by one
        if not out.errors:
            return out
    return _reading(*_line_by_line(_strip_comments(raw)), ts_ms, cache)


def _scanned(raw: bytes, ts_ms: int, cache: ParseCache) -> Reading | None:
    """The reading of a body the C scan accepts, or None for the Python path: any head that is
    malformed or any kept value the scan did not read (the Python path counts them)."""
    if len(cache.series) >= cache._max:  # as `codes` does, only between bodies
        cache._reset()
    got = cache.table.scan(raw)
    if got is None:
        return None
    codes_b, values_b, parsed_b, unknown = got
    idx = np.frombuffer(codes_b, np.int64)
    if unknown:
        idx = idx.copy()
        for i, head in unknown:
            idx[i] = cache.code(head)
    keep = np.flatnonzero(idx >= 0)
    if (idx == BAD).any() or not np.frombuffer(parsed_b, np.uint8)[keep].all():
        return None
    out = Reading("kata_monitor", ts_ms)
    _fill(out, cache, idx[keep], np.frombuffer(values_b, np.float64)[keep])
    return out


def _data_tokens(body: bytes) -> list[bytes] | None:
    """The tokens of the body without its comment lines, cut from the body itself (a stripped
    copy of 2.3 MB costs more in fresh pages than in copying); None, to strip first, when a
    `#` stands inside a line. Otherwise the tokens that start with `#` are exactly the
    comments' first tokens, in order, so each comment is the next such token and the ones
    after it, checked against the comment line's own tokens."""
    tokens = body.split()
    at = body.find(b"#")
    kept: list[bytes] = []
    taken = 0  # tokens kept or passed over
    while at >= 0:
        if at and body[at - 1] != 0x0A:
            return None
        end = body.find(b"\n", at)
        line = body[at : len(body) if end < 0 else end].split()
        pos = tokens.index(line[0], taken)  # there: it is the next token that starts with `#`
        if tokens[pos : pos + len(line)] != line:
            return None
        kept += tokens[taken:pos]
        taken = pos + len(line)
        at = -1 if end < 0 else body.find(b"#", end + 1)
    if not taken:
        return tokens
    kept += tokens[taken:]
    return kept


def _line_by_line(text: bytes) -> tuple[list[bytes], list[bytes]]:
    """Heads and values of lines that are not exactly `head value` (timestamps, spaces in
    label values, garbage), checked one by one; a line it cannot split keeps a head that
    fails the series check, so it is counted there."""
    heads, values = [], []
    for line in text.split(b"\n"):
        line = line.strip()
        if not line:
            continue
        brace, close = line.find(b"{"), line.rfind(b"}")
        if brace >= 0 and close > brace:
            head, rest = line[: close + 1], line[close + 1 :].split()
            if line[close + 1 : close + 2] not in (b" ", b"\t"):
                rest = []
        else:
            head, *rest = line.split()
        ok = 1 <= len(rest) <= 2 and (len(rest) == 1 or rest[1].lstrip(b"-").isdigit())
        kept = line.startswith(_KEPT)
        heads.append(head if ok or not kept else b"\x00" + line)  # \x00: never a valid head
        values.append(rest[0] if ok else b"nan")
    return heads, values


def _reading(heads: list[bytes], values: list[bytes], ts_ms: int, cache: ParseCache) -> Reading:
    out = Reading("kata_monitor", ts_ms)
    idx = cache.codes(heads)
    for h in (heads[i] for i in np.flatnonzero(idx == BAD)[:5].tolist()):
        out.error(cache.why.get(h, f"malformed line: {h[:80]!r}"))
    out.errors = int((idx == BAD).sum())
    keep = np.flatnonzero(idx >= 0)
    try:
        v = floats(np.array(values, dtype=bytes)[keep]) if values else np.zeros(0, np.float64)
    except ValueError:  # a value that is not a number: counted, its sample dropped
        v, ok = _floats([values[i] for i in keep.tolist()], out)
        keep = keep[ok]
    _fill(out, cache, idx[keep], v)
    return out


def _fill(out: Reading, cache: ParseCache, codes: npt.NDArray[np.int64], v: npt.NDArray[np.float64]) -> None:
    """The samples of series `codes` (all kept) with values `v`, and their sandboxes' labels."""
    sb, met, sub = (c[codes] for c in cache.columns())
    out.blocks.append(Block(cache.sandboxes, cache.metrics, cache.subs, sb, met, sub, v))
    for s in np.unique(sb).tolist():
        out.labels[cache.sandboxes[s]] = cache.cri[s]


def floats(s: npt.NDArray[np.bytes_]) -> npt.NDArray[np.float64]:
    """`s.astype(np.float64)`, the same values and the same ValueError, with the common case
    (plain integers of at most 18 digits) parsed a digit column at a time: numpy's own
    conversion parses string by string."""
    n, w = s.shape[0], s.dtype.itemsize
    if not n or w > 18:
        return s.astype(np.float64)
    cols = np.ascontiguousarray(s.view(np.uint8).reshape(n, w).T)  # column j: every value's byte j
    acc = np.zeros(n, np.int64)
    ok = np.ones(n, bool)  # so far: digits, then only the padding numpy adds
    digits = np.ones(n, bool)  # no padding seen yet
    for j in range(w):
        c = cols[j]
        d = c - np.uint8(48)  # a non-digit wraps to >= 10
        isd = d < 10
        pad = c == 0
        ok &= pad | (isd & digits)
        digits &= isd
        np.multiply(acc, 10, out=acc, where=digits)
        np.add(acc, d, out=acc, where=digits)
    ok &= cols[0] != 0  # not empty
    out = acc.astype(np.float64)
    if not ok.all():
        out[~ok] = s[~ok].astype(np.float64)
    return out


def _floats(vals: list[bytes], out: Reading) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    got, ok = [], []
    for x in vals:
        try:
            got.append(float(x))
            ok.append(True)
        except ValueError:
            ok.append(False)
            out.error(f"bad value: {x[:40]!r}")
    return np.array(got, np.float64), np.array(ok, bool)


class KataMonitorSource:
    name = "kata_monitor"
    remote = True  # read in a thread of its own: an endpoint that can hang (CollectorAgent)

    def __init__(
        self, url: str, timeout_s: float, clock_ms: Callable[[], int], cache: ParseCache | None = None
    ) -> None:
        self.url = url.rstrip("/") + "/metrics"
        self.timeout_s = timeout_s
        self.clock_ms = clock_ms
        self.cache = cache or ParseCache()

    def read(self, sandboxes: frozenset[str]) -> Reading:
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout_s) as resp:
                body = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SourceError(self.name, f"GET {self.url}: {exc}") from exc
        return parse(body, self.clock_ms(), self.cache)
