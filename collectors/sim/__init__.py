"""A simulated fleet of Kata nodes (files, /proc, kata-monitor) with exact ground truth."""

from collectors.sim.runner import Simulator, collector_settings
from collectors.sim.spec import Dist, FaultSpec, FleetSpec

__all__ = ["Dist", "FaultSpec", "FleetSpec", "Simulator", "collector_settings"]
