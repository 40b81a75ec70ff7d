"""sandmeter: per-tenant millisecond metering and health for Kata Containers sandboxes.

This package is the top layer: the entry points that wire the others together (the
`sandmeter` CLI, the demo and the local stack). Everything shared lives in `contracts`.
"""

__version__ = "0.1.0"
