"""A simulated fleet of Kata nodes (files, /proc, kata-monitor) with exact ground truth."""

from collectors.sim.model import FaultSpec, FleetSpec
from collectors.sim.runner import Simulator

__all__ = ["FaultSpec", "FleetSpec", "Simulator"]
