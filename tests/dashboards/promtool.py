"""Helpers for the promtool rule tests: input series, the labels scrape targets carry, and
annotations rendered as Prometheus renders the few template forms the rules use."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dashboards import rules

PROC = {"instance": "processor:9465", "job": rules.PROCESSOR_JOB}
API = {"instance": "api:8080", "job": rules.API_JOB}
SCALE = {"instance": "scale:9466", "job": rules.SCALE_JOB}
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="make test installs Debian's prometheus")


def coll(node: str = "n1") -> dict[str, str]:
    """A collector target's labels: the file_sd / relabel `node` label comes with every series."""
    return {"instance": f"{node}:9464", "job": rules.COLLECTOR_JOB, "node": node}


def series(name: str, labels: dict[str, str], values: str | list[float]) -> dict[str, str]:
    body = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    if isinstance(values, list):
        values = " ".join(f"{v:g}" for v in values)
    return {"series": f"{name}{{{body}}}", "values": values}


def humanize_duration(v: float) -> str:
    """Prometheus' humanizeDuration for values of a second or more."""
    s = int(v)
    d, h, m, sec = s // 86400, s // 3600 % 24, s // 60 % 60, s % 60
    if d:
        return f"{d}d {h}h {m}m {sec}s"
    if h:
        return f"{h}h {m}m {sec}s"
    if m:
        return f"{m}m {sec}s"
    return f"{v:.4g}s"


def expand(template: str, labels: dict[str, str], value: float) -> str:
    """The few Go-template forms the rules use, as Prometheus renders them."""
    out = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m[1], ""), template)
    out = out.replace("{{ $value | humanizePercentage }}", f"{value * 100:.4g}%")
    out = out.replace("{{ $value | humanizeDuration }}", humanize_duration(value))
    return out.replace("{{ $value }}", f"{value:g}")


def expected(alert: rules.Alert, labels: dict[str, str], value: float) -> dict[str, Any]:
    """What promtool must find for `alert` firing with `labels` and `value`."""
    return {
        "exp_labels": {"severity": alert.severity, **labels},
        "exp_annotations": {
            "summary": expand(alert.summary, labels, value),
            "description": expand(alert.description, labels, value),
            "runbook_url": rules.RUNBOOK + alert.name.lower(),
        },
    }


def run_promtool(tmp: Path, rules_text: str, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` over `tests` against a rule file holding `rules_text`."""
    (tmp / "rules.yml").write_text(rules_text)
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp / "tests.yml").write_text(json.dumps(doc, indent=1))
    return subprocess.run(["promtool", "test", "rules", "tests.yml"], cwd=tmp, capture_output=True, text=True)
