"""The metered call: pipeline (auth, route, admit, forward), settlement, SSE relay, usage."""
