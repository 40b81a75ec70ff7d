"""kata-monitor `/metrics`: Prometheus text of every sandbox's shim, agent and QEMU."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable

from collectors.base import Reading, SourceError

KEPT_PREFIXES = ("kata_hypervisor_", "kata_shim_", "kata_guest_", "kata_agent_", "kata_virtiofsd_")
CRI_KEYS = ("cri_uid", "cri_name", "cri_namespace")

# name, optional {labels} (quoted values may hold any escaped character), value, optional ts
_LINE = re.compile(
    r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{((?:[^"}]|"(?:[^"\\]|\\.)*")*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?[ \t]*$'
)
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


class ParseCache:
    """Label text -> (sandbox_id, sub-labels, cri labels); series repeat every scrape."""

    def __init__(self, max_entries: int = 500_000) -> None:
        self._d: dict[str, tuple[str, str, dict[str, str]] | None] = {}
        self._max = max_entries

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
        m = _LINE.match(line)
        if m is None:
            out.error(f"malformed line: {line[:80]!r}")
            continue
        parsed = cache.get(m[2] or "")
        if parsed is None:
            out.error(f"malformed labels: {line[:80]!r}")
            continue
        sandbox, sub, cri = parsed
        if not sandbox:
            out.error(f"no sandbox_id: {line[:80]!r}")
            continue
        try:
            value = float(m[3])
        except ValueError:
            out.error(f"bad value: {line[:80]!r}")
            continue
        rows.add(sandbox, m[1], sub, value)
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
