"""Which function (workload) a sandbox belongs to, for scale recommendations.

Rules from a TOML file (`FUNCTIONS_FILE`), first match wins:

    [[functions]]
    name = "thumbnails"
    namespace = "tenant-a"        # optional: the CRI namespace must equal this
    pod_prefix = "thumb-"         # optional: the pod (CRI name) must start with this
    label = "app=thumbnails"      # optional: a sandbox label must have this value

A sandbox no rule matches belongs to its pod's owner by Kubernetes naming: the pod name
without its last two `-` segments (`resize-7d9f8b6c5-x2x4q` -> `resize`, the Deployment), or
the whole pod name when it has fewer, or the sandbox id when there is no pod name.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from contracts.names import FUNCTION_RE


@dataclass(frozen=True)
class FunctionRule:
    name: str
    namespace: str | None = None
    pod_prefix: str | None = None
    label: tuple[str, str] | None = None

    def matches(self, labels: Mapping[str, str]) -> bool:
        return (
            (self.namespace is None or labels.get("cri_namespace") == self.namespace)
            and (self.pod_prefix is None or labels.get("cri_name", "").startswith(self.pod_prefix))
            and (self.label is None or labels.get(self.label[0]) == self.label[1])
        )


class Functions:
    def __init__(self, rules: tuple[FunctionRule, ...] = ()) -> None:
        self.rules = rules

    @classmethod
    def from_file(cls, path: Path | None) -> Functions:
        if path is None:
            return cls()
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"functions file {path}: {exc}") from exc
        rules = []
        for i, r in enumerate(doc.get("functions", [])):
            name = r.get("name", "")
            if not FUNCTION_RE.match(str(name)) or set(r) - {"name", "namespace", "pod_prefix", "label"}:
                raise ValueError(f"functions file {path}: functions[{i}]: a name and namespace/pod_prefix/label only")
            label = None
            if "label" in r:
                k, sep, v = str(r["label"]).partition("=")
                if not sep:
                    raise ValueError(f"functions file {path}: functions[{i}].label: key=value")
                label = (k, v)
            rules.append(FunctionRule(name, r.get("namespace"), r.get("pod_prefix"), label))
        return cls(tuple(rules))

    def of(self, labels: Mapping[str, str], sandbox_id: str) -> str:
        for r in self.rules:
            if r.matches(labels):
                return r.name
        pod = labels.get("cri_name", "")
        parts = pod.split("-")
        return "-".join(parts[:-2]) if len(parts) >= 3 else (pod or sandbox_id)
