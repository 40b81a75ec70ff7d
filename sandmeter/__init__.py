"""sandmeter: per-tenant millisecond metering and health for Kata Containers sandboxes.

This shared package holds only what every deployable needs: settings, the wire
format, the names of topics/tables, the local stack and the CLI.
"""

__version__ = "0.1.0"
