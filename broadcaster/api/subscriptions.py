"""Who follows which intents: ``broadcaster_subscribe`` notifications, fed by the tx observers.

Built before the tx manager and the API (the service's observers announce every transition
here; the API registers its websocket connections), so neither needs a reference to the other.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import orjson

from broadcaster.api.intents import intent_json
from nonce import TxRecord

__all__ = ["Follower", "Subscriptions"]


class Follower(Protocol):
    """One connection that may follow intents (the API's websocket client)."""

    subscriptions: dict[str, frozenset[str] | None]
    outbox: asyncio.Queue[bytes]
    dropped: int


class Subscriptions:
    """The connections that follow intents, and the notifications they are owed."""

    def __init__(self) -> None:
        self._followers: set[Any] = set()
        self._ids = 0

    def add(self, follower: Follower) -> None:
        self._followers.add(follower)

    def discard(self, follower: Follower) -> None:
        self._followers.discard(follower)

    def followers(self) -> frozenset[Follower]:
        return frozenset(self._followers)

    def next_id(self) -> str:
        self._ids += 1
        return hex(self._ids)

    def notify(self, record: TxRecord, event: str) -> None:
        """Queue a status notification for every subscription that wants ``record`` (sync; a
        full queue drops it and counts ``dropped``: a slow bot never stalls the service)."""
        if not self._followers:
            return
        intent_id = record.intent.id
        body: dict[str, Any] | None = None
        for follower in self._followers:
            for sub_id, ids in follower.subscriptions.items():
                if ids is not None and intent_id not in ids:
                    continue
                if body is None:
                    body = intent_json(record)
                    body["event"] = event
                message = orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "method": "broadcaster_subscription",
                        "params": {"subscription": sub_id, "result": body},
                    }
                )
                try:
                    follower.outbox.put_nowait(message)
                except asyncio.QueueFull:
                    follower.dropped += 1
