"""CRI labels of a sandbox from its OCI bundle, readable from the moment it is created.

containerd writes the pod's identity into the sandbox's `config.json` annotations, so a
sandbox is attributed at first sight, before kata-monitor has scraped it, and even when it
lives shorter than one scrape.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Final

ANNOTATIONS: Final = {
    "io.kubernetes.cri.sandbox-namespace": "cri_namespace",
    "io.kubernetes.cri.sandbox-name": "cri_name",
    "io.kubernetes.cri.sandbox-uid": "cri_uid",
}


def bundle_labels(bundle_dirs: Sequence[Path], sandbox: str) -> dict[str, str]:
    """The sandbox's cri_* labels; empty when no readable bundle has them."""
    for d in bundle_dirs:
        try:
            spec = json.loads((d / sandbox / "config.json").read_text())
        except (OSError, ValueError):
            continue
        notes = spec.get("annotations") if isinstance(spec, dict) else None
        if isinstance(notes, dict):
            return {label: str(notes[key]) for key, label in ANNOTATIONS.items() if key in notes}
    return {}
