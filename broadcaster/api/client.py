"""A small typed client for bots: the intent API over one websocket.

    async with await BroadcasterClient.connect("ws://127.0.0.1:8650", token="...") as api:
        sent = await api.send_intent(to="0x...", value=1, gas=21_000,
                                     max_fee_per_gas=30 * GWEI, max_priority_fee_per_gas=GWEI)
        status = await api.get_intent(sent["id"])
        async for note in api.subscribe([sent["id"]]):
            print(note["event"], note["status"])

Requests are pipelined on one connection and matched by id; subscription notifications are routed
to their iterators. Errors from the service raise :class:`ApiError` with the JSON-RPC code.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from broadcaster.errors import BroadcasterError

__all__ = ["GWEI", "ApiError", "BroadcasterClient"]

GWEI = 10**9


class ApiError(BroadcasterError):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


def _quantity(value: int | None) -> str | None:
    return None if value is None else hex(value)


class BroadcasterClient:
    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._subscriptions: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self._early: dict[str, list[dict[str, Any]]] = {}
        self._ended: set[str] = set()  # subscriptions whose late notifications are dropped
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, *, token: str) -> BroadcasterClient:
        ws = await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            proxy=None,
        )
        return cls(ws)

    async def __aenter__(self) -> BroadcasterClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._ws.close()
        except ConnectionClosed:
            pass  # the service went away first: nothing left to close politely
        self._reader.cancel()
        try:
            await self._reader
        except asyncio.CancelledError:
            pass

    async def _read(self) -> None:
        try:
            async for message in self._ws:
                payload = orjson.loads(message)
                for item in payload if isinstance(payload, list) else [payload]:
                    self._route(item)
        except ConnectionClosed:
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("connection to the broadcaster closed"))

    def _route(self, item: dict[str, Any]) -> None:
        if item.get("method") == "broadcaster_subscription":
            params = item["params"]
            queue = self._subscriptions.get(params["subscription"])
            if queue is not None:
                queue.put_nowait(params["result"])
            elif params["subscription"] not in self._ended:  # before subscribe() returned its id
                self._early.setdefault(params["subscription"], []).append(params["result"])
            return
        fut = self._pending.pop(item.get("id"), None)  # type: ignore[arg-type]
        if fut is None or fut.done():
            return
        if "error" in item:
            error = item["error"]
            fut.set_exception(ApiError(error["code"], error["message"], error.get("data")))
        else:
            fut.set_result(item.get("result"))

    async def request(self, method: str, *params: Any) -> Any:
        request_id = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        try:
            await self._ws.send(
                orjson.dumps(
                    {"jsonrpc": "2.0", "id": request_id, "method": method, "params": list(params)}
                ).decode()
            )
        except ConnectionClosed as exc:
            self._pending.pop(request_id, None)
            raise ConnectionError(f"connection to the broadcaster closed: {exc}") from exc
        return await fut

    async def send_intent(
        self,
        *,
        to: str | None,
        value: int = 0,
        data: bytes = b"",
        gas: int,
        max_fee_per_gas: int | None = None,
        max_priority_fee_per_gas: int | None = None,
        valid_until_block: int | None = None,
        key: str | None = None,
        sender: str | None = None,
        blobs: Sequence[bytes] | None = None,
        max_fee_per_blob_gas: int | None = None,
        authorization_list: Sequence[Mapping[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """``broadcaster_sendIntent``: returns ``{id, from, nonce, hash, status}``.

        ``blobs`` (131,072 bytes each) with ``max_fee_per_blob_gas`` make an EIP-4844 blob
        intent (the service computes the commitments and proofs). ``authorization_list`` makes
        an EIP-7702 set-code intent: ``{"address": delegate}`` for the enclave to sign with the
        sender's key (at the tx nonce + 1), or an item signed elsewhere (``chainId``, ``address``,
        ``nonce``, ``yParity``, ``r``, ``s``); int values go as 0x quantities."""
        intent: dict[str, Any] = {
            "to": to,
            "value": hex(value),
            "data": "0x" + data.hex(),
            "gas": hex(gas),
        }
        for name, number in (
            ("maxFeePerGas", max_fee_per_gas),
            ("maxPriorityFeePerGas", max_priority_fee_per_gas),
            ("validUntilBlock", valid_until_block),
        ):
            if number is not None:
                intent[name] = _quantity(number)
        if key is not None:
            intent["key"] = key
        if sender is not None:
            intent["from"] = sender
        if blobs is not None:
            intent["blobs"] = ["0x" + bytes(blob).hex() for blob in blobs]
        if max_fee_per_blob_gas is not None:
            intent["maxFeePerBlobGas"] = _quantity(max_fee_per_blob_gas)
        if authorization_list is not None:
            intent["authorizationList"] = [
                {k: _quantity(v) if isinstance(v, int) else v for k, v in item.items()}
                for item in authorization_list
            ]
        result: dict[str, Any] = await self.request("broadcaster_sendIntent", intent)
        return result

    async def get_intent(self, intent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("broadcaster_getIntent", intent_id)
        return result

    async def cancel_intent(self, intent_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("broadcaster_cancelIntent", intent_id)
        return result

    async def subscribe(self, intent_ids: list[str] | None = None) -> AsyncIterator[dict[str, Any]]:
        """Status notifications (all intents, or only ``intent_ids``) until the caller stops.

        The subscription is made on the first iteration; closing the iterator (``break`` out of
        ``async with contextlib.aclosing(...)``) unsubscribes on the service too.
        """
        params = [intent_ids] if intent_ids else []
        sub_id: str = await self.request("broadcaster_subscribe", *params)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscriptions[sub_id] = queue
        for early in self._early.pop(sub_id, []):
            queue.put_nowait(early)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscriptions.pop(sub_id, None)
            self._ended.add(sub_id)
            self._early.pop(sub_id, None)
            # Else the service keeps sending (and counting it against max_subscriptions).
            with contextlib.suppress(ConnectionError, ApiError):
                await self.request("broadcaster_unsubscribe", sub_id)
