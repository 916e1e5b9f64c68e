"""Strongroom's command-line client: it knows the broker only through its HTTP API."""

__version__ = "0.1.0"

# Printed by `strongroom --version` on both the click path and main()'s fast path, so they cannot drift.
VERSION_LINE = f"strongroom {__version__}"
