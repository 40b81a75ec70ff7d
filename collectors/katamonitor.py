"""kata-monitor `/metrics`: Prometheus text of every sandbox's shim, agent and QEMU."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable

from collectors.base import Reading, SourceError
from contracts.names import KATA_HYPERVISOR_PREFIX, M_INFLIGHT

KEPT_PREFIXES = (
    KATA_HYPERVISOR_PREFIX, "kata_shim_", "kata_guest_", "kata_agent_", "kata_virtiofsd_",
    M_INFLIGHT,  # a per-sandbox in-flight requests gauge, where an exporter provides one
)  # fmt: skip
CRI_KEYS = ("cri_uid", "cri_name", "cri_namespace")

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class ParseCache:
    """Label text -> (sandbox_id, sub-labels, cri labels); series repeat every scrape."""

    def __init__(self, max_entries: int = 500_000) -> None:
        self._d: dict[str, tuple[str, str, dict[str, str]] | None] = {}
        self._max = max_entries
        self.names: dict[str, bool] = {}  # metric name -> valid

    def get(self, text: str) -> tuple[str, str, dict[str, str]] | None:
        try:
            return self._d[text]
        except KeyError:
            pass
        parsed = _parse_labels(text)
        if len(self._d) >= self._max:
            self._d.clear()
        self._d[text] = parsed
        return parsed


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


def _split(line: str, names: dict[str, bool]) -> tuple[str, str, str] | None:
    """(name, label text, value) of a sample line, or None if it is malformed.

    String operations, not one regex per line: a real kata-monitor sends ~300 series per
    sandbox, and this runs over all of them every scrape. Label text is checked by the
    cache's parser the first time it is seen.
    """
    brace = line.find("{")
    if brace >= 0:
        close = line.rfind("}")
        if close < brace:
            return None
        name, labels, rest = line[:brace], line[brace + 1 : close], line[close + 1 :].split()
        if not line[close + 1 : close + 2].isspace():
            return None
    else:
        parts = line.split()
        name, labels, rest = parts[0], "", parts[1:]
    ok = names.get(name)
    if ok is None:
        ok = names[name] = _NAME.fullmatch(name) is not None
    if not ok or not 1 <= len(rest) <= 2 or (len(rest) == 2 and not rest[1].lstrip("-").isdigit()):
        return None
    return name, labels, rest[0]


def parse(text: str, ts_ms: int, cache: ParseCache | None = None) -> Reading:
    """Parses exposition text; malformed lines are counted and skipped."""
    cache = cache or ParseCache()
    out = Reading("kata_monitor", ts_ms)
    rows = out.rows
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        if not line.startswith(KEPT_PREFIXES):
            if line.startswith("kata_") or line[0].isalpha():
                continue
            out.error(f"malformed line: {line[:80]!r}")
            continue
        split = _split(line, cache.names)
        if split is None:
            out.error(f"malformed line: {line[:80]!r}")
            continue
        name, label_text, value_text = split
        parsed = cache.get(label_text)
        if parsed is None:
            out.error(f"malformed labels: {line[:80]!r}")
            continue
        sandbox, sub, cri = parsed
        if not sandbox:
            out.error(f"no sandbox_id: {line[:80]!r}")
            continue
        try:
            value = float(value_text)
        except ValueError:
            out.error(f"bad value: {line[:80]!r}")
            continue
        rows.add(sandbox, name, sub, value)
        if sandbox not in out.labels:
            out.labels[sandbox] = cri
    return out


class KataMonitorSource:
    name = "kata_monitor"

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
                text = resp.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise SourceError(self.name, f"GET {self.url}: {exc}") from exc
        return parse(text, self.clock_ms(), self.cache)
