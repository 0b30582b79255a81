"""The unbilled spool: calls that ran while the ledger store was unreachable (route fail mode
`allow`, or a settlement that failed after the upstream answered) are appended to a local JSONL
file, so they can be settled later by `gateway reconcile` (SPEC §9: "recorded as unbilled").

Each line: {"record": CallRecord fields, "charge": units, "on_shortfall": rule, "at_ms": epoch ms,
"hold_id": the call's hold or null} — reconciling releases the hold too.
Appends are flushed and fsynced (this path only runs during an outage). Reconciliation settles
each line idempotently by request id, so running it twice charges nothing twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.ports import CallRecord


class UnbilledSpool:
    """Append-only JSONL spool at `path`."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, record: CallRecord, charge: int, on_shortfall: str, at_ms: int,
               hold_id: str | None = None) -> None:
        """Record one unbilled call. Raises OSError when the file cannot be written."""
        line = json.dumps({"record": dataclasses.asdict(record), "charge": charge,
                           "on_shortfall": on_shortfall, "at_ms": at_ms, "hold_id": hold_id},
                          separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def entries(self) -> Iterator[tuple[CallRecord, int, str, str | None]]:
        """(record, charge, on_shortfall, hold_id) of every well-formed line; bad lines raise
        ValueError naming the line number."""
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    doc: dict[str, Any] = json.loads(line)
                    yield (CallRecord(**doc["record"]), int(doc["charge"]),
                           str(doc["on_shortfall"]), doc.get("hold_id"))
                except (ValueError, KeyError, TypeError) as exc:
                    raise ValueError(f"{self.path}:{n}: not an unbilled-call entry ({exc})") \
                        from None
