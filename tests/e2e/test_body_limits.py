"""Bodies are bounded while they are read, before any authentication: a huge body to the Stripe
webhook, a server-signed (HMAC) billing endpoint, the batch preflight with a valid key or an
admin endpoint is answered `413 payload-too-large` after about GATEWAY_MAX_BODY_BYTES, and the
gateway process never holds it (its peak RSS does not move).

The gateway runs as `gateway serve` in its own process (httptools, uvloop: the production
server), so its memory is measured alone. The client streams a chunked body generated lazily
on a raw socket and stops as soon as the gateway answers or stops reading — what it managed to
send is bounded by the limit plus the kernel's socket buffers, not by the 200 MB it offers.
"""

from __future__ import annotations

import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.production._support import E2E_POLICY, GatewayProcess, ledger_for, spawn_gateway

ADMIN_TOKEN = "a" * 40
HMAC_KEYS = "k1:" + "s" * 40
MIB = 1024 * 1024
OFFERED = 200 * MIB  # what each request offers to send
SENT_AT_MOST = 32 * MIB  # the 1 MiB limit + socket buffers on both sides, with room to spare
RSS_GROWTH_AT_MOST_KB = 8 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           upstream: FakeUpstream) -> Iterator[tuple[GatewayProcess, str]]:
    """A `gateway serve` process on a fresh SQLite file, and an API key of a funded account."""
    tmp_path = tmp_path_factory.mktemp("limits")
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    gw = spawn_gateway(E2E_POLICY, {
        "GATEWAY_DATABASE_URL": db, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_HMAC_KEYS": HMAC_KEYS, "STRIPE_WEBHOOK_SECRET": "whsec_limits",
        "OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-upstream-openai"},
        tmp_path)
    try:
        gw.wait_healthy()
        _account, key = ledger_for(db, E2E_POLICY).funded(60_000)
        yield gw, key
    finally:
        gw.stop()


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident set size so far (VmHWM, kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/PID/status")


def post_huge_chunked(port: int, path: str, headers: dict[str, str],
                      offered: int = OFFERED) -> tuple[int, int, dict[str, str], Any]:
    """POST a chunked body of `offered` bytes (64 KiB chunks, generated as sent) on a raw
    socket, sending only while the server reads and has not answered. Returns (body bytes
    sent, status, response headers, JSON body)."""
    chunk = 64 * 1024
    piece = b"%x\r\n" % chunk + b"x" * chunk + b"\r\n"
    head = "".join(f"{k}: {v}\r\n" for k, v in {
        "host": "127.0.0.1", "content-type": "application/json",
        "transfer-encoding": "chunked", **headers}.items())
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\n{head}\r\n".encode())
        sock.setblocking(False)
        sent = offset = 0
        while sent < offered:
            readable, writable, _ = select.select([sock], [sock], [], 30)
            if readable:
                break  # the server answered (or closed): it reads no more of this body
            assert writable, "the server neither read nor answered for 30 s"
            try:
                offset += sock.send(piece[offset:])
            except (BrokenPipeError, ConnectionResetError):
                break
            if offset == len(piece):
                sent, offset = sent + chunk, 0
        else:
            sock.setblocking(True)
            sock.sendall(b"0\r\n\r\n")
        sock.setblocking(True)
        return (sent, *_read_response(sock))


def _read_response(sock: socket.socket) -> tuple[int, dict[str, str], Any]:
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        assert more, f"connection closed before a response: {data!r}"
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    length = int(headers["content-length"])
    while len(body) < length:
        more = sock.recv(65536)
        assert more, "connection closed mid-response"
        body += more
    return status, headers, json.loads(body[:length])


def test_huge_bodies_are_refused_while_read_and_never_buffered(
    served: tuple[GatewayProcess, str],
) -> None:
    gw, key = served
    targets = [
        ("/v1/billing/webhooks/stripe", {"stripe-signature": "t=1,v1=00"}),
        ("/v1/billing/packages/purchase",
         {"x-hmac-signature": "keyId=k1, ts=1, nonce=nonce-nonce-nonce-1, sig=00"}),
        ("/v1/billing/check-sufficient-batch", {"authorization": f"Bearer {key}"}),
        ("/v1/admin/accounts", {"authorization": f"Bearer {ADMIN_TOKEN}"}),
    ]
    before = peak_rss_kb(gw.pid)
    for path, headers in targets:
        sent, status, resp_headers, doc = post_huge_chunked(gw.port, path, headers)
        assert status == 413, (path, status, doc)
        assert resp_headers["content-type"] == "application/problem+json"
        assert resp_headers["connection"] == "close"
        assert doc["type"] == f"http://127.0.0.1:{gw.port}/problems/payload-too-large"
        assert doc["status"] == 413 and "1048576" in doc["detail"]
        assert sent < SENT_AT_MOST, (path, sent)
    growth = peak_rss_kb(gw.pid) - before
    assert growth < RSS_GROWTH_AT_MOST_KB, f"peak RSS grew by {growth} kB"
    assert gw.alive()


def test_a_declared_length_over_the_limit_is_refused_before_reading(
    served: tuple[GatewayProcess, str],
) -> None:
    gw, key = served
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as sock:
        sock.sendall(b"POST /v1/billing/check-sufficient-batch HTTP/1.1\r\nhost: x\r\n"
                     b"content-type: application/json\r\ncontent-length: 209715200\r\n"
                     b"authorization: Bearer " + key.encode() + b"\r\n\r\n")
        status, headers, doc = _read_response(sock)  # nothing of the body was sent
    assert status == 413 and headers["connection"] == "close"
    assert doc["type"].endswith("/problems/payload-too-large")
    assert "209715200" in doc["detail"]


def test_a_body_of_exactly_the_limit_is_served(served: tuple[GatewayProcess, str]) -> None:
    gw, key = served
    body = json.dumps({"operations": [{"operation": "chat", "estimate_seconds": 1}]}).encode()
    body = body[:-1] + b" " * (MIB - len(body)) + b"}"  # JSON whitespace up to 1 MiB
    assert len(body) == MIB
    with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/billing/check-sufficient-batch HTTP/1.1\r\nhost: x\r\n"
                     b"content-type: application/json\r\ncontent-length: %d\r\n"
                     b"authorization: Bearer %s\r\n\r\n" % (len(body), key.encode()) + body)
        status, _headers, doc = _read_response(sock)
    assert status == 200, doc
    assert doc[0]["operation"] == "chat"  # the bare BatchOperationResult[] of seed 001
