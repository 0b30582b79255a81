"""CLI: ``python -m tests.fakes.upstream [--host H] [--port P] [--delay-ms MS]``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Iterable

from .server import FakeUpstream


def _parse_args(argv: Iterable[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.upstream",
        description="Fake OpenAI/Anthropic upstream (knobs: see tests.fakes.upstream docstring).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=9000, help="TCP port, 0 = any free port (default 9000)"
    )
    parser.add_argument(
        "--delay-ms", type=float, default=0, help="delay before each API response (ms)"
    )
    return parser.parse_args(list(argv) if argv is not None else None)


def main(argv: Iterable[str] | None = None) -> int:
    """Run the fake in the foreground until Ctrl-C / SIGTERM; prints its URL."""
    args = _parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with FakeUpstream(host=args.host, port=args.port, delay_ms=args.delay_ms) as up:
        print(up.url, flush=True)
        print(
            f"fake upstream: OpenAI base_url={up.url}/v1  Anthropic base_url={up.url}"
            "  (Ctrl-C to stop)",
            file=sys.stderr,
            flush=True,
        )
        while not done.wait(0.5):
            pass
    return 0



if __name__ == "__main__":
    sys.exit(main())
