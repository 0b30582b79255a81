"""The HTTP edge of the metering gateway: app factory, proxy, metering, problems, CLI."""
