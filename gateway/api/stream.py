"""`GET /v1/billing/stream/{userId}` (and `GET /v1/billing/stream`, seed 000's path: the API
key's own account, or `?userId=` on a server-signed request): the account's live events as
Server-Sent Events.

Events (seeds 000 "SSE Balance Updates"; SPEC §8): balance.updated, bucket.created,
bucket.expired, credit.applied, package.fulfilled, rollover.created, resume.ready — each with
the account's increasing `id`. Per the WHATWG EventSource model:
- a fresh connection (no `Last-Event-ID`) starts with a balance.updated snapshot whose `id` is
  the account's current sequence, then every newer event;
- a reconnection with `Last-Event-ID: N` (header, or `?lastEventId=N` for clients that cannot
  set headers) replays every event after N from the bounded log, first sending
  `history.truncated` (data: last_event_id, oldest_available_id) when events after N were
  already pruned, so the client knows to refetch its balance;
- a comment line is sent every GATEWAY_STREAM_KEEPALIVE_S seconds (sse-starlette's ping) so
  proxies keep the connection open;
- `retry: 3000` asks browsers to reconnect after 3 s.
Delivery: the event bus wakes the stream; the log (the EventLog port) is the source of truth
and is re-read on any gap and every GATEWAY_STREAM_POLL_S seconds, so events committed by any
gateway process arrive whether or not Redis is reachable. The balance.updated of each settled
call is live only: a stream that missed some (a replay, a lost bus message) gets one fresh
balance snapshot with the current id instead.
Auth as the other billing reads: the account's own key or a server-to-server HMAC signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import own_account, services_for
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    NO_STORE,
    USER_ERRORS,
    USER_ID,
    Operation,
    Param,
    Reply,
    web_routes,
)
from gateway.problems import BadRequest, NotFound
from gateway.services import Services
from policies.units import UnitKind, UnitOfAccount
from storage.engine import events as log
from storage.ports import (
    AccountEvent,
    BalanceSnapshot,
    StoreUnavailable,
    Subscription,
    UnknownAccount,
)

REPLAY_PAGE = 500
RETRY_MS = 3000


def in_unit(event_type: str, data: dict[str, Any], unit: UnitOfAccount) -> dict[str, Any]:
    """An event's data as the stream sends it. balance.updated: in a time deployment its
    `*_seconds` totals and `reason` (the exact `ledger` figures left out); in a currency or
    tokens deployment `unit` and the exact amounts `total`, `paid`, `bonus`, `available`,
    `held`, `debt` (with `*_micros` twins for a currency) instead of seconds, and `charged`
    for a consumption. Other events pass unchanged."""
    if event_type != log.BALANCE_UPDATED or "ledger" not in data:
        return data
    rest = {k: v for k, v in data.items() if k != "ledger"}
    if unit.kind is UnitKind.TIME:
        return rest
    out: dict[str, Any] = {k: v for k, v in rest.items()
                           if not k.endswith("_seconds") and k != "charged_ms"}
    out["unit"] = unit.api_name
    for name, units in data["ledger"].items():
        out.update(unit.json_fields(name, int(units)))
    if "charged_ms" in rest:  # consumption: the call's charge (ledger units despite the name)
        out.update(unit.json_fields("charged", int(rest["charged_ms"])))
    return out


def _sse(event: AccountEvent, unit: UnitOfAccount) -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps(in_unit(event.type, event.data, unit)).decode(),
                           event=event.type, id=str(event.seq))


def _snapshot(snap: BalanceSnapshot, seq: int, unit: UnitOfAccount,
              retry: int | None = None) -> ServerSentEvent:
    """balance.updated (reason `snapshot`) of a balance read, carrying the current id `seq`."""
    data = in_unit(log.BALANCE_UPDATED, log.balance_data(
        [(b.source, b.remaining) for b in snap.buckets], snap.held, snap.debt, "snapshot"), unit)
    return ServerSentEvent(data=orjson.dumps(data).decode(), event=log.BALANCE_UPDATED,
                           id=str(seq), retry=retry)


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id") or request.query_params.get("lastEventId")
    if raw is None or raw == "":
        return None
    if re.fullmatch(r"[0-9]{1,18}", raw) is None:
        raise BadRequest("Last-Event-ID must be an event id received from this stream.")
    return int(raw)


async def stream(request: Request) -> Response:
    """`GET /v1/billing/stream[/{userId}]`: the account's live events (see the module doc)."""
    s = services_for(request)
    account_id = await own_account(request)
    last = _last_event_id(request)
    sub = await s.bus.subscribe(account_id)  # before reading the log: nothing slips by
    try:
        first, last = await _opening(s, account_id, last)
    except UnknownAccount:
        s.bus.unsubscribe(sub)
        raise NotFound(f"No account {account_id!r}.") from None
    except BaseException:
        s.bus.unsubscribe(sub)
        raise
    s.metrics.billing_streams.inc()
    return EventSourceResponse(
        _Feed(s, account_id, sub, last).events(first), ping=s.settings.stream_keepalive_s,
        headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        send_timeout=30)


_STREAM_DESCRIPTION = """\
The account's changes as Server-Sent Events, until the client disconnects. Each event has
`event: <type>`, `id: <the account's event number>` (increasing) and `data: <one JSON object>`;
a comment line is sent every `GATEWAY_STREAM_KEEPALIVE_S` seconds (15 by default), and the
opening snapshot or `history.truncated` carries `retry: 3000` (reconnect after 3 s).

Without `Last-Event-ID` the stream opens with a `balance.updated` snapshot (`reason`
`snapshot`) whose `id` is the account's current event number, then sends every newer event.
With `Last-Event-ID: N` (or `?lastEventId=N`) it first replays the logged events after N from
the bounded log; it starts with `history.truncated` when some of those were already pruned (or
N is not an id of this account's stream). The `balance.updated` of each settled call (`reason`
`consumption`) is sent live only: a stream that missed some (on a replay, or after a lost live
message) gets one fresh `balance.updated` snapshot carrying the current id instead — balance
is state, the newest wins.

Seconds are whole seconds rounded down; times are RFC 3339 UTC with whole seconds. Event types
and their `data`:

- `balance.updated`: `total_seconds`, `paid_seconds`, `bonus_seconds`, `available_seconds` (as
  in the balance's `totals`: `bonus_seconds` is the daily buckets', `paid_seconds` every other
  bucket's, welcome and gift included) and `reason`, what changed it: a ledger entry type
  (`consumption`, `package_credit`, `subscription_credit`, `daily_bonus`, `welcome_bonus`,
  `gift_credit`, `adjustment`, `expiry`, `rollover_discard`) or `snapshot`.
- `bucket.created`: `bucket_id`, `source` (`subscription`, `package`, `daily`, `welcome`,
  `gift`), `seconds`, `expires_at` (null: never expires).
- `rollover.created`: `bucket_id`, `seconds`, `expires_at`, `from_bucket` (the subscription
  bucket whose unused time it carries).
- `credit.applied`: `type` (the ledger entry type), `seconds`, `reason`, `bucket_id`, and
  `debt_netted_seconds` when part of the credit paid off overdraft.
- `bucket.expired`: `bucket_id`, `source`, `seconds` (what was left); at expiry also
  `expired_at` and `rolled_over_seconds`, when a rollover is discarded (downgrade,
  cancellation) `reason` instead.
- `package.fulfilled`: `package_key`, `minutes` (time deployments; `amount`, `amount_micros`
  for a currency, and `unit` in currency and tokens deployments), `session_id` (the Checkout
  Session), `operation_id` (null unless bought to unblock a call).
- `resume.ready`: `operation_id`, `instance` (`urn:op:<operation_id>`, the 402's `instance`),
  `package_key`: the blocked call can be retried with its `X-Resume-Token`.
- `balance.low`, `balance.depleted`, `balance.recovered`: `balance`, `threshold` (in the
  API's unit), `unit` — a low-balance alert, once per crossing (`/v1/billing/alerts/{userId}`).
- `refund.applied`, `payment.failed`, `subscription.updated`: a refund applied, an auto
  top-up or invoice payment failed, a subscription change (also sent to outgoing webhook endpoints).
- `history.truncated` (no `id`): `last_event_id`, `oldest_available_id`; refetch the balance.

Not for caching or buffering: `Cache-Control: no-store`, `X-Accel-Buffering: no`."""

_STREAM_REPLIES = (
    Reply(200, "An endless `text/event-stream` (see the operation's description).",
          media_type="text/event-stream",
          headers={**NO_STORE, "X-Accel-Buffering": {
              "description": "Asks reverse proxies not to buffer the stream.",
              "schema": {"type": "string", "const": "no"}}}),)
_STREAM_PARAMS = (
    Param("Last-Event-ID", "header", {"type": "string", "pattern": "^[0-9]{0,18}$"},
          "The `id` of the last event received: the stream resumes after it. Sent by "
          "EventSource on reconnection; anything but an id is a 400."),
    Param("lastEventId", "query", {"type": "string", "pattern": "^[0-9]{0,18}$"},
          "The same, for clients that cannot set headers (the header wins)."),
)

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/v1/billing/stream/{userId}", "streamBillingEvents",
        "An account's live billing events (Server-Sent Events)", "billing", ACCOUNT_OR_SIGNED,
        _STREAM_REPLIES, USER_ERRORS, params=(USER_ID, *_STREAM_PARAMS),
        description=_STREAM_DESCRIPTION, endpoint=stream),
    Operation(
        "GET", "/v1/billing/stream", "streamOwnBillingEvents",
        "The caller's live billing events (seed 000's decided path)", "billing",
        ACCOUNT_OR_SIGNED, _STREAM_REPLIES, USER_ERRORS,
        params=(Param("userId", "query", {"type": "string", "minLength": 1},
                      "The account (`acct_…`): required on a server-signed request; with an "
                      "API key it may be omitted (the key's own account) and any other id is "
                      "a 404."),
                *_STREAM_PARAMS),
        description="`GET /v1/billing/stream/{userId}` for the API key's own account, or for "
                    "`?userId=` on a server-signed request.\n\n" + _STREAM_DESCRIPTION,
        endpoint=stream),
)
STREAM_ROUTES = web_routes(OPERATIONS)


async def _opening(
    s: Services, account_id: str, last: int | None
) -> tuple[list[ServerSentEvent], int]:
    """(events a stream starts with, the id it continues after): on a fresh connection (`last`
    None) a balance snapshot carrying the current id; on a reconnection whose events after
    `last` were pruned, `history.truncated`. Raises NotFound (no such account), UnknownAccount,
    StoreUnavailable."""
    position = await s.event_log.stream_position(account_id)
    if position is None:
        raise NotFound(f"No account {account_id!r}.")
    if last is None:
        return [_snapshot(await s.ledger.balance(account_id), position[0], s.policy.unit,
                          retry=RETRY_MS)], position[0]
    if last > position[0] or (last < position[0] and last + 1 < position[1]):
        # Events after `last` were pruned (or the id is not of this account's log).
        return [ServerSentEvent(
            data=orjson.dumps({"last_event_id": last,
                               "oldest_available_id": position[1]}).decode(),
            event="history.truncated", retry=RETRY_MS)], min(last, position[0])
    return [], last


class _Feed:
    """One open stream of an account's events: its bus subscription and `last`, the id of the
    newest event sent."""

    def __init__(self, s: Services, account_id: str, sub: Subscription, last: int) -> None:
        self.s = s
        self.account_id = account_id
        self.sub = sub
        self.last = last

    async def snapshot(self, seq: int) -> ServerSentEvent | None:
        """balance.updated as of now, carrying the current id `seq`."""
        try:
            return _snapshot(await self.s.ledger.balance(self.account_id), seq,
                             self.s.policy.unit)
        except (StoreUnavailable, UnknownAccount):
            return None

    async def catch_up(self, after: int, before: int | None = None) -> list[ServerSentEvent]:
        """What the log holds after `after` (below `before`, when a live event `before`
        follows); then, when events that are not logged happened since (balance.updated
        of calls), one fresh snapshot with the current id."""
        out: list[ServerSentEvent] = []
        while True:
            try:
                page, current = await self.s.event_log.catch_up(self.account_id, after,
                                                                REPLAY_PAGE)
            except StoreUnavailable:
                return out  # try again at the next poll
            for event in page:
                if before is not None and event.seq >= before:
                    return out
                out.append(_sse(event, self.s.policy.unit))
                self.last = after = event.seq
            if len(page) < REPLAY_PAGE:
                break
        if before is None and current > self.last:
            snap = await self.snapshot(current)
            if snap is not None:
                out.append(snap)
                self.last = current
        return out

    async def next_events(self) -> list[ServerSentEvent]:
        """Wait for the next bus event (at most GATEWAY_STREAM_POLL_S); returns what to send:
        the log's events when the wait was quiet, events were dropped or a gap opened, then the
        bus event itself unless already sent."""
        sub = self.sub
        event = None
        with contextlib.suppress(TimeoutError):
            event = await asyncio.wait_for(sub.queue.get(), self.s.settings.stream_poll_s)
        lagged, sub.lagged = sub.lagged, False
        out: list[ServerSentEvent] = []
        if event is None or lagged:  # a quiet poll or dropped events: the log
            out += await self.catch_up(self.last)
        if event is None or event.seq <= self.last:
            return out
        if event.seq > self.last + 1:  # a gap: what the log has in between first
            out += await self.catch_up(self.last, before=event.seq)
        self.last = event.seq
        out.append(_sse(event, self.s.policy.unit))
        return out

    async def events(self, first: list[ServerSentEvent]) -> AsyncIterator[Any]:
        """`first`, what the log holds after `last`, then live events until the client leaves
        (which ends the subscription)."""
        try:
            for item in first:
                yield item
            for item in await self.catch_up(self.last):
                yield item
            while True:
                for item in await self.next_events():
                    yield item
        finally:
            self.s.bus.unsubscribe(self.sub)
            self.s.metrics.billing_streams.dec()
