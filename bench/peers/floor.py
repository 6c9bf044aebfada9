"""Peer (d): the harness floor. Sends a PRE-signed transaction the instant a reorg frame arrives.

    python -m bench.peers.floor --ws URL --rpc URL --rpc URL --rpc URL [--delay-ms 5]

No event loop, no threads: blocking sockets and ``selectors`` over the websocket and stdin,
the sans-I/O ``websockets.client.ClientProtocol`` for framing, three kept-alive raw HTTP/1.1
sockets with the request bytes built in advance. On ``send K`` it signs the K transactions and
their +10% replacements, sends the originals and arms the replacements; a head whose parent is
not the previous head fires them (one JSON-RPC batch per RPC). What it measures is the machine:
the kernel's loopback, two process wake-ups and a frame parse.

``--delay-ms`` makes it a deliberately slow fake (it sleeps before sending): the harness test
checks that the measured figure shows that delay.
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
from eth_account import Account
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from bench.peers.common import ADDRESS, KEY, MAX_FEE, PRIORITY, bumped, say, tx_dict


def _http_request(host: str, port: int, body: bytes) -> bytes:
    return (
        f"POST / HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _read_response(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += sock.recv(65536)
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += sock.recv(65536)
    return body


class Floor:
    def __init__(self, ws_url: str, rpcs: list[str], delay_s: float) -> None:
        self.delay_s = delay_s
        self.rpcs: list[tuple[socket.socket, str, int]] = []
        for url in rpcs:
            parts = urlsplit(url)
            assert parts.hostname is not None and parts.port is not None
            sock = socket.create_connection((parts.hostname, parts.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.rpcs.append((sock, parts.hostname, parts.port))
        parts = urlsplit(ws_url)
        assert parts.hostname is not None and parts.port is not None
        self.ws = socket.create_connection((parts.hostname, parts.port))
        self.ws.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.protocol = ClientProtocol(parse_uri(ws_url))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        self.account = Account.from_key(KEY)
        self.nonce = 0
        self.last_hash: str | None = None
        self.armed: list[bytes] | None = None  # one request per RPC, ready to write
        self.waiting = False
        self.anchored = False
        self.replies: list[Any] = []

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            if data:
                self.ws.sendall(data)

    def _messages(self) -> list[bytes]:
        data = self.ws.recv(1 << 20)
        if not data:
            raise ConnectionError("harness closed the websocket")
        self.protocol.receive_data(data)
        out = []
        for event in self.protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                out.append(bytes(event.data))
            elif isinstance(event, Response) and event.status_code != 101:
                raise ConnectionError(f"handshake failed: {event.status_code}")
        self._flush()  # pongs
        return out

    def call(self, method: str, params: list[Any]) -> Any:
        self.protocol.send_text(orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                                              "params": params}))  # fmt: skip
        self._flush()
        while True:
            for message in self._messages():
                reply = orjson.loads(message)
                if reply.get("id") == 1:
                    return reply["result"]

    def _batch(self, raws: list[bytes]) -> list[bytes]:
        calls = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_sendRawTransaction",
             "params": ["0x" + raw.hex()]}
            for i, raw in enumerate(raws)
        ]  # fmt: skip
        body = orjson.dumps(calls[0] if len(calls) == 1 else calls)
        return [_http_request(host, port, body) for _, host, port in self.rpcs]

    def _write(self, requests: list[bytes]) -> None:
        for (sock, _, _), request in zip(self.rpcs, requests, strict=True):
            sock.sendall(request)
        for sock, _, _ in self.rpcs:
            _read_response(sock)

    def send(self, k: int) -> None:
        originals, replacements = [], []
        base_fee = 10**9
        for _ in range(k):
            originals.append(self.account.sign_transaction(tx_dict(self.nonce, MAX_FEE, PRIORITY)))
            fee, tip = bumped(MAX_FEE, PRIORITY, base_fee)
            replacements.append(self.account.sign_transaction(tx_dict(self.nonce, fee, tip)))
            self.nonce += 1
        self.armed = self._batch([bytes(s.raw_transaction) for s in replacements])
        self._write(self._batch([bytes(s.raw_transaction) for s in originals]))
        self.waiting = True

    def on_head(self, message: bytes) -> None:
        head = orjson.loads(message)["params"]["result"]
        reorg = self.last_hash is not None and head["parentHash"] != self.last_hash
        self.last_hash = head["hash"]
        if reorg and self.armed is not None:
            armed, self.armed = self.armed, None
            if self.delay_s:
                time.sleep(self.delay_s)
            self._write(armed)
            self.waiting = True
            return
        if not self.anchored:
            self.anchored = True
            say("anchored")
        elif self.waiting and not reorg:
            self.waiting = False  # the harness only extends with our transactions in the block
            say("included")

    def run(self) -> None:
        while not any(isinstance(e, Response) for e in self._handshake()):
            pass
        self.nonce = int(self.call("eth_getTransactionCount", [ADDRESS, "pending"]), 16)
        self.call("eth_subscribe", ["newHeads"])
        say("ready")
        selector = selectors.DefaultSelector()
        selector.register(self.ws, selectors.EVENT_READ, "ws")
        selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "stdin")
        stdin = b""
        while True:
            for key, _ in selector.select():
                if key.data == "ws":
                    for message in self._messages():
                        if b'"eth_subscription"' in message:
                            self.on_head(message)
                    continue
                chunk = os.read(sys.stdin.fileno(), 4096)
                if not chunk:
                    return
                stdin += chunk
                while b"\n" in stdin:
                    line, stdin = stdin.split(b"\n", 1)
                    words = line.decode().split()
                    if words and words[0] == "send":
                        self.send(int(words[1]))
                    elif words and words[0] == "quit":
                        return

    def _handshake(self) -> list[Any]:
        data = self.ws.recv(65536)
        if not data:
            raise ConnectionError("harness closed during the handshake")
        self.protocol.receive_data(data)
        return list(self.protocol.events_received())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ws", required=True)
    parser.add_argument("--rpc", action="append", required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    args = parser.parse_args(argv)
    Floor(args.ws, args.rpc, args.delay_ms / 1000).run()


if __name__ == "__main__":
    main()
