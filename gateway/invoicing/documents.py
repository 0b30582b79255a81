"""The PDFs the gateway renders itself, with fpdf2 (https://py-pdf.github.io/fpdf2/): the
receipt of an invoice Stripe has no PDF for, and the monthly usage statement — what an account
consumed, by operation and model, in the deployment's unit — which Stripe cannot produce.

Rendering is a pure function of the document's data: the same data gives the same bytes (the
PDF's creation date is the document's own date, never the clock), so `etag` — a hash of the
data and this module's layout version — is a strong validator (RFC 9110 §8.8.1): equal ETags
mean byte-identical PDFs. The layout itself is gateway.invoicing.pdf_layout, imported on first use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from policies.units import UnitOfAccount
from storage.ports import MirroredInvoice, UsageLine

LAYOUT_VERSION = "1"  # bump when the layout changes: it changes every ETag


def etag(kind: str, data: Any) -> str:
    """A strong ETag (quoted) of a document of `kind` rendered from `data` (JSON-able, or
    dataclasses)."""
    canonical = json.dumps([kind, LAYOUT_VERSION, data], sort_keys=True, default=_plain,
                           separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, UnitOfAccount):
        return [value.kind.value, value.currency]
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def receipt_pdf(inv: MirroredInvoice, unit: UnitOfAccount) -> bytes:
    """A receipt of a mirrored invoice: number, status, dates, lines (with what each credited,
    in `unit`) and totals in the invoice's currency."""
    from gateway.invoicing import pdf_layout  # fpdf2 loads Pillow and fontTools: only when used

    return pdf_layout.receipt(inv, unit)


def statement_pdf(account_id: str, month: str, start_ms: int, lines: Sequence[UsageLine],
                  unit: UnitOfAccount) -> bytes:
    """The usage statement of `account_id` for `month` (`YYYY-MM`, starting at `start_ms`):
    one row per group of STATEMENT_GROUPS (calls, tokens, charged and unbilled in `unit`) and
    the totals."""
    from gateway.invoicing import pdf_layout  # fpdf2 loads Pillow and fontTools: only when used

    return pdf_layout.statement(account_id, month, start_ms, lines, unit)
