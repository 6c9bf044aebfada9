"""The websocket client connection a heads subscription runs on: messages handled at read.

Nodes send every ``newHeads`` notification as one unfragmented websocket frame. This module lets
the subscription handle such a message inside the connection's ``data_received``, timed from
the moment the event loop read the bytes, instead of after websockets' message queue and a hop
to the reading task. :class:`FrameBoundaries` (pure) knows where frames start, so a read that is
exactly one whole frame can be handed on even before websockets parses it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Final

from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.protocol import Event

__all__ = ["FrameBoundaries", "HeadsConnection"]

_WHOLE_MESSAGE: Final = (Opcode.TEXT, Opcode.BINARY)
_DATA: Final = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)


class FrameBoundaries:
    """Where websocket frames begin in a stream of server-to-client bytes (RFC 6455 §5.2).

    It reads only frame headers, to know whether the next chunk starts a frame, and says when a
    chunk is exactly one whole unmasked FIN text or binary frame: then its payload can be handed
    on before websockets parses the same bytes (see :class:`_HeadsConnection`). Pure; fed every
    chunk the socket delivers, in order.
    """

    __slots__ = ("_head", "_rest")

    def __init__(self) -> None:
        self._rest = 0  # payload bytes of the current frame still to come
        self._head = b""  # the start of a header split across chunks

    def whole_frame(self, data: bytes, limit: int) -> bytes | None:
        """The payload if ``data`` is exactly one complete FIN text/binary frame with no mask
        and at most ``limit`` bytes, starting at a frame boundary; else None. Either way the
        boundaries advance past ``data``."""
        if not self._rest and not self._head and len(data) >= 2 and data[0] in (0x81, 0x82):
            length = data[1]  # the mask bit is 0 for an unmasked frame
            if length < 126:
                start = 2
            elif length == 126 and len(data) >= 4:
                start, length = 4, int.from_bytes(data[2:4], "big")
            else:
                start, length = 0, -1  # 64-bit lengths are never a head: the slow path
            if start and len(data) == start + length and length <= limit:
                return data[start:]
        self.advance(data)
        return None

    def advance(self, data: bytes) -> None:
        view = memoryview(data)
        pos = 0
        if self._rest:
            step = min(self._rest, len(view))
            self._rest -= step
            pos = step
        while pos < len(view):
            head = self._head + bytes(view[pos : pos + 14 - len(self._head)])
            if len(head) < 2:
                self._head, pos = head, len(view)
                break
            length, size = head[1] & 0x7F, 2
            if length == 126:
                size = 4
            elif length == 127:
                size = 10
            if head[1] & 0x80:
                size += 4  # a masking key (a server must not send one; websockets will refuse)
            if len(head) < size:
                self._head, pos = head, len(view)
                break
            if length == 126:
                length = int.from_bytes(head[2:4], "big")
            elif length == 127:
                length = int.from_bytes(head[2:10], "big")
            pos += size - len(self._head)
            self._head = b""
            step = min(length, len(view) - pos)
            pos += step
            self._rest = length - step


class HeadsConnection(ClientConnection):
    """A client connection that hands every single-frame message to ``on_message`` at once.

    ``create_connection`` is websockets' documented hook for customising the connection class.
    The message's bytes are stamped when the event loop reads them (``data_received``). When a
    read holds exactly one whole frame at a frame boundary (how nodes send heads), its payload
    goes to ``on_message`` right there, before websockets parses the frame (~50 µs of its
    parser on a cold cache); websockets then parses the same bytes as always (it keeps the
    protocol state, answers pings, sees closes) and the already-handled frame is skipped. Any
    other single-frame message is handed on from ``process_event``, still inside this call.
    Fragmented messages (a first frame without FIN, then continuations) go through the queue
    for ``recv()``, and so does every message after one while it waits there (``backlog``):
    messages are always handled in the order they arrived.
    """

    on_message: Callable[[bytes, int], None] | None = None
    backlog = 0  # complete messages in the queue, not yet taken by recv()
    max_fast_frame = 1 << 20  # a head is ~1 KB; anything bigger takes websockets' own parser
    _read_ns = 0
    # Frame boundaries are known from the first chunk after the handshake, when the chunk that
    # completed it ended with the response (a 101 has no body); otherwise never (no fast path).
    _boundaries: FrameBoundaries | None = None
    _no_fast = False
    _handled: deque[bytes] | None = None  # payloads handed on before websockets parsed them
    fast_frames = 0  # messages handed on that way (tests look)

    def data_received(self, data: bytes) -> None:
        self._read_ns = now = time.perf_counter_ns()
        boundaries = self._boundaries
        if boundaries is not None:
            payload = boundaries.whole_frame(data, self.max_fast_frame)
            handler = self.on_message
            if payload is not None and handler is not None and not self.backlog:
                if self._handled is None:
                    self._handled = deque()
                self._handled.append(payload)
                self.fast_frames += 1
                handler(payload, now)
        super().data_received(data)
        if boundaries is None and not self._no_fast and self.response is not None:
            if data.endswith(b"\r\n\r\n"):
                self._boundaries = FrameBoundaries()
            else:
                self._no_fast = True  # frames may have come with the response: stay safe

    def process_event(self, event: Event) -> None:
        if type(event) is WsFrame and event.opcode in _DATA:
            handled = self._handled
            if handled and event.fin and event.data == handled[0]:
                handled.popleft()  # handed on in data_received already
                return
            if handled:
                handled.clear()  # not the frame we handed on (cannot happen): never skip later
            handler = self.on_message
            if (
                handler is not None
                and not self.backlog
                and event.fin
                and event.opcode in _WHOLE_MESSAGE
            ):
                data = event.data
                handler(data if type(data) is bytes else bytes(data), self._read_ns)
                return
            if event.fin:
                self.backlog += 1
        super().process_event(event)
