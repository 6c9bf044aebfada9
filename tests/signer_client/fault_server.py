"""A small in-process signer that misbehaves on demand, for the client's failure tests.

Each ``sign_transaction`` request takes the next action from ``actions`` (``"ok"`` once they run
out). Genuine signatures come from the real codec, so "ok" replies pass verification. ``"hold"``
answers honestly but only when the test calls :meth:`FaultServer.release`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from signer_client.framing import FrameDecoder, encode_frame, parse_message
from signer_client.payload import decode_payload
from signer_client.protocol import PROTOCOL_VERSION
from signer_client.signing import LocalKey
from signer_client.txcodec import SECP256K1_N, decode_raw, encode_signed
from tests.enclave.running import ANVIL_KEY, OTHER_KEY

HELLO = {
    "protocol": PROTOCOL_VERSION,
    "mode": "dev",
    "addresses": [LocalKey(ANVIL_KEY).address],
    "chain_ids": [31337],
    "policy_hash": "0x" + "00" * 32,
    "log_public_key": "0x",
}


class FaultServer:
    def __init__(self, path: Path, actions: list[str]) -> None:
        self.path = path
        self.url = f"unix://{path}"
        self.actions = actions
        self.key = LocalKey(ANVIL_KEY)
        self.other = LocalKey(OTHER_KEY)
        self.signed: list[bytes] = []  # every raw tx this server produced, in order
        self.requests = 0
        self.connections = 0
        self.transports: list[asyncio.Transport] = []
        self.held: list[tuple[dict[str, Any], asyncio.Transport]] = []
        self._arrived = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> FaultServer:
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Conn(self), str(self.path)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for transport in self.transports:
            transport.abort()
        await self._server.wait_closed()

    def reply(self, message: dict[str, Any], transport: asyncio.Transport) -> None:
        request_id = message["id"]
        if message["method"] == "hello":
            transport.write(encode_frame({"id": request_id, "result": HELLO}))
            return
        self.requests += 1
        self._arrived.set()
        action = self.actions.pop(0) if self.actions else "ok"
        if action == "stall":
            return
        if action == "hold":
            self.held.append((message, transport))
            return
        self._answer(message, transport, action)

    async def until(self, condition: Callable[[], bool], seconds: float = 2.0) -> None:
        """Wait, request by request, until ``condition()`` holds (no polling)."""
        async with asyncio.timeout(seconds):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    def release(self, count: int | None = None) -> None:
        """Answer the first ``count`` held requests (all when ``None``), honestly."""
        count = len(self.held) if count is None else count
        released, self.held = self.held[:count], self.held[count:]
        for message, transport in released:
            self._answer(message, transport, "ok")

    def _answer(self, message: dict[str, Any], transport: asyncio.Transport, action: str) -> None:
        request_id = message["id"]
        if action == "die":
            transport.abort()
            return
        fields, _ = decode_payload(bytes.fromhex(message["params"]["payload"][2:]))
        key = self.other if action == "wrong_key" else self.key
        raw, tx_hash, _ = key.sign_fields(fields)
        if action == "tamper_value":
            decoded = decode_raw(raw)
            raw = encode_signed(
                fields._replace(value=fields.value + 1),
                decoded.y_parity,
                decoded.r.to_bytes(32, "big"),
                decoded.s.to_bytes(32, "big"),
            )
        elif action == "high_s":
            decoded = decode_raw(raw)
            raw = encode_signed(
                fields,
                1 - decoded.y_parity,
                decoded.r.to_bytes(32, "big"),
                (SECP256K1_N - decoded.s).to_bytes(32, "big"),
            )
        elif action == "flip_parity":
            decoded = decode_raw(raw)
            raw = encode_signed(
                fields,
                1 - decoded.y_parity,
                decoded.r.to_bytes(32, "big"),
                decoded.s.to_bytes(32, "big"),
            )
        elif action == "append_byte":
            raw += b"\x00"
        from signer_client.txcodec import keccak

        tx_hash = keccak(raw)
        if action == "bad_hash":
            tx_hash = bytes(32)
        self.signed.append(raw)
        frame = encode_frame(
            {"id": request_id, "result": {"raw": "0x" + raw.hex(), "hash": "0x" + tx_hash.hex()}}
        )
        if action == "truncate":
            transport.write(frame[: len(frame) // 2])
            transport.close()
        elif action == "oversize":
            transport.write((2 << 20).to_bytes(4, "big") + b"{")
        else:
            transport.write(frame)


class _Conn(asyncio.Protocol):
    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server.connections += 1
        self.transport = transport  # type: ignore[assignment]
        self.server.transports.append(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        for body in self.decoder.feed(data):
            if self.transport.is_closing():
                return
            self.server.reply(parse_message(body), self.transport)
