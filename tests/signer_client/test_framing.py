"""The sans-I/O framing core splits, caps and rejects frames without touching a socket."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signer_client.errors import FrameTooLarge, ProtocolError, TruncatedFrame
from signer_client.framing import MAX_FRAME, FrameDecoder, encode_frame, parse_message

messages = st.lists(
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(-(2**63), 2**63 - 1), st.text())),
    min_size=1,
    max_size=8,
)


@given(msgs=messages, cuts=st.lists(st.integers(min_value=1, max_value=64), max_size=50))
def test_frames_survive_any_split_of_the_byte_stream(
    msgs: list[dict[str, object]], cuts: list[int]
) -> None:
    stream = b"".join(encode_frame(m) for m in msgs)
    decoder = FrameDecoder()
    out: list[bytes] = []
    pos = 0
    for cut in cuts:
        out += decoder.feed(stream[pos : pos + cut])
        pos += cut
    out += decoder.feed(stream[pos:])
    assert [parse_message(b) for b in out] == msgs
    decoder.eof()


def test_an_oversized_length_is_rejected_before_the_body_arrives() -> None:
    decoder = FrameDecoder()
    with pytest.raises(FrameTooLarge) as info:
        decoder.feed((MAX_FRAME + 1).to_bytes(4, "big") + b"{")
    assert info.value.length == MAX_FRAME + 1


def test_a_frame_of_exactly_the_cap_is_accepted() -> None:
    body = b'"' + b"a" * (MAX_FRAME - 2) + b'"'
    assert FrameDecoder().feed(len(body).to_bytes(4, "big") + body) == [body]


def test_a_stream_ending_inside_a_frame_is_truncated() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(encode_frame({"id": 1})[:-2]) == []
    with pytest.raises(TruncatedFrame):
        decoder.eof()


def test_encoding_refuses_to_send_an_oversized_frame() -> None:
    with pytest.raises(FrameTooLarge):
        encode_frame({"x": "a" * MAX_FRAME})


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"s"'])
def test_a_frame_body_must_be_a_json_object(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_message(body)
