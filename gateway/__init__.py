"""The HTTP edge of the metering gateway: app factory, proxy, metering, problems, CLI."""

__version__ = "0.1.0"  # the one place the version is written (pyproject reads it from here)
