"""Sans-I/O framing for the signer wire protocol (DESIGN.md section 6).

A frame is a 4-byte big-endian length followed by that many bytes of JSON (orjson). The length is
checked against :data:`MAX_FRAME` (1 MiB) as soon as the 4 header bytes are in, before any of the
body is buffered, so a hostile peer cannot make us allocate. Like ``websockets.protocol``, this
module never touches a socket: adapters call :meth:`FrameDecoder.feed` with whatever bytes arrived
and get whole message bodies back.
"""

from __future__ import annotations

from typing import Any

import orjson

from signer_client.errors import FrameTooLarge, ProtocolError, TruncatedFrame

__all__ = ["MAX_FRAME", "FrameDecoder", "encode_frame", "parse_message"]

MAX_FRAME = 1 << 20

_dumps = orjson.dumps
_loads = orjson.loads


def encode_frame(message: Any) -> bytes:
    """Serialise ``message`` with orjson and prefix its length."""
    body = _dumps(message)
    n = len(body)
    if n > MAX_FRAME:
        raise FrameTooLarge(n, MAX_FRAME)
    return n.to_bytes(4, "big") + body


def parse_message(body: bytes) -> dict[str, Any]:
    """Decode one frame body; it must be a JSON object."""
    try:
        message = _loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"frame body is not JSON: {exc}") from exc
    if type(message) is not dict:
        raise ProtocolError("frame body is not a JSON object")
    return message


class FrameDecoder:
    """Accumulates bytes and splits them into frame bodies.

    After a :class:`FrameTooLarge` the stream cannot be resynchronised; the adapter must close the
    connection. :meth:`eof` raises :class:`TruncatedFrame` if the stream stopped inside a frame.
    """

    __slots__ = ("_buf", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every complete frame body, in order."""
        buf = self._buf
        if not buf and len(data) >= 4:
            # Fast path: a whole single frame in one read (the common case on a local socket).
            n = int.from_bytes(data[:4], "big")
            if n > self.max_frame:
                raise FrameTooLarge(n, self.max_frame)
            if len(data) == n + 4:
                return [bytes(data[4:])]
        buf += data
        out = []
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            n = int.from_bytes(buf[pos : pos + 4], "big")
            if n > self.max_frame:
                raise FrameTooLarge(n, self.max_frame)
            if end - pos - 4 < n:
                break
            out.append(bytes(buf[pos + 4 : pos + 4 + n]))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buf)

    def eof(self) -> None:
        """The peer closed the stream; fail if it did so inside a frame."""
        if self._buf:
            n = len(self._buf)
            self._buf.clear()
            raise TruncatedFrame(f"stream ended with {n} bytes of an unfinished frame")
