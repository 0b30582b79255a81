"""Which caller headers reach an upstream (SPEC §6): an allow-list, never a deny-list.

The upstream bills the operator's key, so a caller header must not choose what that key buys
(`OpenAI-Organization`, `OpenAI-Project`) or switch on features the policy does not price
(`anthropic-beta`, `OpenAI-Beta`). Forwarded are only:

- the names built in for the route's protocol (`BUILT_IN`: content type, accept, user agent,
  idempotency key; `anthropic-version` on Anthropic routes) and the SDKs' `x-stainless-*`
  telemetry (`BUILT_IN_PREFIXES`);
- the names an upstream adds in the policy (`forward_headers: [x-foo]`);
- feature headers per value (`forward_header_values: {anthropic-beta: [prompt-caching-…]}`):
  of a comma-separated value only the listed items pass; none left, no header.

Everything else is dropped. `ForwardRules` is computed once per route when the policy compiles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# Never forwarded, whatever a policy says: credentials (the caller's are never passed on, the
# upstream's are injected), hop-by-hop headers (RFC 9110 §7.6.1), framing and encoding (the
# gateway re-frames bodies and needs them unencoded), the client's address.
NEVER_FORWARDED = frozenset({
    "authorization", "x-api-key", "cookie", "x-resume-token", "proxy-authorization",
    "connection", "keep-alive", "proxy-authenticate", "proxy-connection", "te", "trailer",
    "trailers", "transfer-encoding", "upgrade", "host", "content-length", "accept-encoding",
    "expect", "forwarded", "x-forwarded-for", "x-real-ip",
})
NEVER_FORWARDED_PREFIXES = ("x-gateway-",)

_COMMON = frozenset({"content-type", "accept", "user-agent", "idempotency-key"})
BUILT_IN: dict[str, frozenset[str]] = {
    "openai_chat": _COMMON,
    "openai_responses": _COMMON,
    "openai_embeddings": _COMMON,
    "anthropic_messages": _COMMON | {"anthropic-version"},
    "plain": _COMMON,
}
BUILT_IN_PREFIXES = ("x-stainless-",)  # the openai and anthropic SDKs' client telemetry
# Feature switches that pass only per value, with no value allowed unless the policy lists it.
FEATURE_HEADERS = ("anthropic-beta", "openai-beta")


@dataclass(frozen=True, slots=True)
class ForwardRules:
    """A route's compiled header allow-list, in the ASGI form (lower-case latin-1 bytes).

    `names`: headers forwarded as sent; `prefixes`: name prefixes forwarded as sent;
    `values`: feature headers → the items of their comma-separated value that may pass.
    """

    names: frozenset[bytes]
    prefixes: tuple[bytes, ...]
    values: Mapping[bytes, frozenset[str]]

    def allowed_items(self, name: bytes, value: bytes) -> str | None:
        """The allowed items of feature header `name`'s `value`, joined by ",", or None when
        `name` is no feature header of these rules or none of its items is allowed."""
        allowed = self.values.get(name)
        if allowed is None:
            return None
        text = value.decode("latin-1")
        if text in allowed:  # the common case: one allowed item
            return text
        if "," not in text:
            return text.strip() if text.strip() in allowed else None
        kept = [item for item in (p.strip() for p in text.split(",")) if item in allowed]
        return ",".join(kept) if kept else None


def forwardable(name: str) -> bool:
    """False for a (lower-case) header name no policy may forward."""
    return name not in NEVER_FORWARDED and not name.startswith(NEVER_FORWARDED_PREFIXES)


def compile_rules(
    protocol: str, extra: Iterable[str], values: Mapping[str, Iterable[str]]
) -> ForwardRules:
    """The rules of a route of `protocol` on an upstream with `forward_headers` = `extra` and
    `forward_header_values` = `values` (names lower-case, validated by policies.schema)."""
    names = (BUILT_IN.get(protocol, _COMMON) | set(extra)) - set(values)
    return ForwardRules(
        names=frozenset(n.encode("latin-1") for n in names),
        prefixes=tuple(p.encode("latin-1") for p in BUILT_IN_PREFIXES),
        values={k.encode("latin-1"): frozenset(v) for k, v in values.items()},
    )
