#!/usr/bin/env python3
"""`gateway serve` with uvicorn's worker health-check timeout raised to 600 s, for
workers_instructions.sh: a worker running under valgrind answers the supervisor's pings far
slower than uvicorn's default 5 s allows, and the supervisor would restart it again and again.
Run with the gateway's own Python: `python serve_slow_workers.py serve --workers 2 ...`.
"""
from __future__ import annotations

import sys

if __name__ == "__main__":  # the workers import this module again (multiprocessing spawn)
    import uvicorn.config

    _init = uvicorn.config.Config.__init__

    def _patient(self: uvicorn.config.Config, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("timeout_worker_healthcheck", 600)
        _init(self, *args, **kwargs)  # type: ignore[arg-type]

    uvicorn.config.Config.__init__ = _patient  # type: ignore[method-assign]
    from gateway.cli import main

    sys.exit(main())
