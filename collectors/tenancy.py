"""Maps a sandbox's CRI labels to a tenant; a sandbox with none is `unattributed`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from contracts.names import UNATTRIBUTED


class TenantRule:
    """Tenant = value of `label_key`, optionally mapped through a namespace->tenant table."""

    def __init__(self, label_key: str = "cri_namespace", mapping: Mapping[str, str] | None = None) -> None:
        self.label_key = label_key
        self.mapping = dict(mapping or {})

    @classmethod
    def from_file(cls, label_key: str, path: Path | None) -> TenantRule:
        if path is None:
            return cls(label_key)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"tenant map {path}: {exc}") from exc
        if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
            raise ValueError(f"tenant map {path}: expected a JSON object of namespace -> tenant")
        return cls(label_key, data)

    def tenant(self, labels: Mapping[str, str]) -> str:
        v = labels.get(self.label_key, "")
        if self.mapping:
            v = self.mapping.get(v, "")
        return v or UNATTRIBUTED
