"""The relay forwards an SSE response event by event (SPEC §6): each event goes out as soon as its
blank line arrived, byte for byte as the upstream sent it, whatever way TCP cut the stream into
chunks. The splitter is `split_events`; the relay (gateway/proxy/relay.py) feeds it every chunk."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.usage import split_events

FAST = settings(max_examples=300, deadline=None)


def split_whole(stream: bytes) -> tuple[list[bytes], bytes]:
    """The events of `stream` read in one piece, and what is left of it (a partial event)."""
    buffer = bytearray(stream)
    return split_events(buffer), bytes(buffer)


def split_chunked(chunks: list[bytes]) -> tuple[list[bytes], bytes]:
    """The events of the same stream read chunk by chunk, as the relay reads it."""
    buffer = bytearray()
    events: list[bytes] = []
    for chunk in chunks:
        buffer += chunk
        events += split_events(buffer)
    return events, bytes(buffer)


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    """`stream` cut at the given offsets (any order, repeats allowed: empty chunks)."""
    points = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def test_complete_events_come_out_with_their_blank_line() -> None:
    buffer = bytearray(b"data: 1\n\nevent: x\ndata: 2\n\n")
    assert split_events(buffer) == [b"data: 1\n\n", b"event: x\ndata: 2\n\n"]
    assert buffer == b""


def test_a_partial_event_stays_in_the_buffer_until_its_blank_line_arrives() -> None:
    buffer = bytearray(b"data: 1\n\ndata: 2\n")
    assert split_events(buffer) == [b"data: 1\n\n"]
    assert buffer == b"data: 2\n"
    buffer += b"\n"
    assert split_events(buffer) == [b"data: 2\n\n"]
    assert buffer == b""


def test_no_blank_line_yet_means_no_event() -> None:
    buffer = bytearray(b"data: {\"partial\": ")
    assert split_events(buffer) == []
    assert buffer == b"data: {\"partial\": "


def test_crlf_framed_events_are_split_at_their_crlf_blank_line() -> None:
    buffer = bytearray(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\ndata: 3\r\n")
    assert split_events(buffer) == [b"event: a\r\ndata: 1\r\n\r\n", b"data: 2\r\n\r\n"]
    assert buffer == b"data: 3\r\n"


def test_lf_and_crlf_events_may_follow_each_other() -> None:
    buffer = bytearray(b"data: 1\r\n\r\ndata: 2\n\ndata: 3\r\n\r\n")
    assert split_events(buffer) == [b"data: 1\r\n\r\n", b"data: 2\n\n", b"data: 3\r\n\r\n"]


def test_a_crlf_blank_line_cut_between_chunks_is_still_one_event() -> None:
    assert split_chunked([b"data: 1\r\n\r", b"\ndata: 2\r", b"\n\r\n"]) == (
        [b"data: 1\r\n\r\n", b"data: 2\r\n\r\n"], b"")


def test_comments_and_done_are_events_like_any_other() -> None:
    events, rest = split_whole(b": keep-alive\n\ndata: [DONE]\n\n")
    assert events == [b": keep-alive\n\n", b"data: [DONE]\n\n"] and rest == b""


# Streams made of the bytes that matter to framing, so that blank lines of both kinds, lone CRs
# and partial terminators are common.
framing_bytes = st.binary(max_size=200).map(
    lambda raw: bytes(b"\n\r:d {}"[b % 7] for b in raw))
sse_streams = st.one_of(
    framing_bytes,
    st.lists(st.tuples(st.sampled_from([b"data: {\"a\":1}", b"event: x\ndata: y", b": c", b""]),
                       st.sampled_from([b"\n\n", b"\r\n\r\n"])), max_size=12)
    .map(lambda evs: b"".join(body + end for body, end in evs)),
)


@FAST
@given(stream=sse_streams, cuts=st.lists(st.integers(min_value=0), max_size=12))
def test_any_chunking_of_a_stream_yields_the_same_events(stream: bytes, cuts: list[int]) -> None:
    assert split_chunked(cut(stream, cuts)) == split_whole(stream)


@FAST
@given(stream=sse_streams)
def test_no_byte_is_lost_added_or_changed(stream: bytes) -> None:
    events, rest = split_whole(stream)
    assert b"".join(events) + rest == stream
    for event in events:
        assert event.endswith((b"\n\n", b"\r\n\r\n"))
    assert b"\n\n" not in rest and b"\r\n\r\n" not in rest


@FAST
@given(stream=sse_streams)
def test_every_event_ends_at_its_first_blank_line(stream: bytes) -> None:
    events, _ = split_whole(stream)
    for event in events:
        assert b"\n\n" not in event[:-1] and b"\r\n\r\n" not in event[:-1]
