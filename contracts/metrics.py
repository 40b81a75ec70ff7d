"""Prometheus helpers shared by the services."""

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter


def counter(name: str, doc: str, registry: CollectorRegistry, labels: Sequence[str] = ()) -> Counter:
    """A Counter registered under its full exposed name (`..._total`, as dashboards use it)."""
    if not name.endswith("_total"):
        raise ValueError(f"counter names end in _total: {name}")
    return Counter(name.removesuffix("_total"), doc, list(labels), registry=registry)
