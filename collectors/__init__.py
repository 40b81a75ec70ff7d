"""Node collectors: sources read kata-monitor, cgroups, /proc and sandbox lifecycle into one
batch per scrape, delivered to Kafka through a disk spool. `collectors.sim` simulates nodes."""

from collectors.agent import CollectorAgent, build_agent, run_agent, wait_for_stops
from collectors.settings import CollectorSettings
from collectors.sink import BatchSink, KafkaSink

__all__ = [
    "BatchSink",
    "CollectorAgent",
    "CollectorSettings",
    "KafkaSink",
    "build_agent",
    "run_agent",
    "wait_for_stops",
]
