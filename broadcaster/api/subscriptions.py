"""Who follows what: ``broadcaster_subscribe`` status notifications and ``eth_subscribe``
``newHeads``, fed by the tx observers and the head hub.

Built before the tx manager and the API (the service's observers announce every transition
here; the API registers its websocket connections), so neither needs a reference to the other.

Cost per event (DESIGN.md §7 "load limits"): a status notification is serialized *once*, however
many subscriptions want it, and each connection gets *one* queue entry per event: the body and
the prefixes (which carry the subscription ids, built when each subscribed) of its subscriptions
that want it. The connection's writer task, off the reaction path, sends each subscription its
``prefix + body + suffix`` (:func:`expand`). Subscriptions to given ids are indexed by id, so an
event touches only the connections that want it. ``bench/api_notify.py`` measures it
(docs/performance.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson

from broadcaster.api.access import Access
from broadcaster.api.intents import intent_json
from nonce import TxRecord

__all__ = ["Follower", "Outgoing", "Subscriptions", "expand"]

_STATUS_PREFIX = b'{"jsonrpc":"2.0","method":"broadcaster_subscription","params":{"subscription":"'
_HEAD_PREFIX = b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"'
_MIDDLE = b'","result":'
_SUFFIX = b"}}"


Outgoing = tuple[tuple[bytes, ...], bytes]
"""One queue entry: the prefixes of the subscriptions owed a message, and the shared body."""


def expand(item: Outgoing) -> list[bytes]:
    """The websocket messages one queue entry stands for, one per subscription."""
    prefixes, body = item
    return [prefix + body + _SUFFIX for prefix in prefixes]


class Follower(Protocol):
    """One connection that may follow intents (the API's websocket client)."""

    access: Access
    subscriptions: dict[str, frozenset[str] | None]
    outbox: asyncio.Queue[Outgoing]
    dropped: int
    overflowed: asyncio.Event


class Subscriptions:
    """The connections that follow intents or heads, and the notifications they are owed.

    A follower whose queue is full (a bot not reading its socket) loses the notification; that
    is counted (``on_dropped``: the ``api_notifications_dropped`` metric) and its ``overflowed``
    event is set, on which the transport closes the connection (1013): a bot must not go on
    believing a status that has changed without it being told. It reconnects and asks
    ``broadcaster_getIntent``. A slow bot never stalls the service.
    """

    def __init__(self, on_dropped: Callable[[], None] | None = None) -> None:
        self._on_dropped = on_dropped
        self._followers: set[Any] = set()
        self._ids = 0
        # intent id -> follower -> prefixes of its subscriptions to that id
        self._by_intent: dict[str, dict[Any, tuple[bytes, ...]]] = {}
        self._all: dict[Any, tuple[bytes, ...]] = {}  # follower -> its "all intents" subs
        self._heads: dict[Any, dict[str, bytes]] = {}  # follower -> sub id -> prefix (newHeads)
        self._prefixes: dict[tuple[Any, str], bytes] = {}

    def add(self, follower: Follower) -> None:
        self._followers.add(follower)

    def discard(self, follower: Follower) -> None:
        """Forget ``follower`` and every subscription it holds (its connection closed)."""
        self._followers.discard(follower)
        for sub_id in list(follower.subscriptions):
            self.unsubscribe(follower, sub_id)
        self._heads.pop(follower, None)

    def followers(self) -> frozenset[Follower]:
        return frozenset(self._followers)

    def next_id(self) -> str:
        self._ids += 1
        return hex(self._ids)

    # -- registration ------------------------------------------------------------------------

    def subscribe(self, follower: Follower, ids: frozenset[str] | None) -> str:
        """Follow the intents ``ids`` (``None``: every intent ``follower.access`` owns)."""
        sub_id = self.next_id()
        prefix = _STATUS_PREFIX + sub_id.encode() + _MIDDLE
        follower.subscriptions[sub_id] = ids
        self._prefixes[(follower, sub_id)] = prefix
        if ids is None:
            self._all[follower] = (*self._all.get(follower, ()), prefix)
        else:
            for intent_id in ids:
                by_follower = self._by_intent.setdefault(intent_id, {})
                by_follower[follower] = (*by_follower.get(follower, ()), prefix)
        return sub_id

    def subscribe_heads(self, follower: Follower) -> str:
        sub_id = self.next_id()
        self._heads.setdefault(follower, {})[sub_id] = _HEAD_PREFIX + sub_id.encode() + _MIDDLE
        return sub_id

    def unsubscribe(self, follower: Follower, sub_id: str) -> bool:
        heads = self._heads.get(follower)
        if heads is not None and heads.pop(sub_id, None) is not None:
            if not heads:
                del self._heads[follower]
            return True
        if sub_id not in follower.subscriptions:
            return False
        ids = follower.subscriptions.pop(sub_id)
        prefix = self._prefixes.pop((follower, sub_id))
        if ids is None:
            alls = tuple(p for p in self._all.get(follower, ()) if p != prefix)
            if alls:
                self._all[follower] = alls
            else:
                self._all.pop(follower, None)
        else:
            for intent_id in ids:
                by_follower = self._by_intent[intent_id]
                prefixes = tuple(p for p in by_follower[follower] if p != prefix)
                if prefixes:
                    by_follower[follower] = prefixes
                else:
                    del by_follower[follower]
                if not by_follower:
                    del self._by_intent[intent_id]
        return True

    def count(self, follower: Follower) -> int:
        return len(follower.subscriptions) + len(self._heads.get(follower, ()))

    # -- events ------------------------------------------------------------------------------

    def notify(self, record: TxRecord, event: str) -> None:
        """Queue a status notification for every subscription that wants ``record`` (sync; a
        full queue drops it and counts ``dropped``: a slow bot never stalls the service)."""
        targeted = self._by_intent.get(record.intent.id)
        alls = self._all
        if not targeted and not alls:
            return
        body: bytes | None = None
        for follower, prefixes in alls.items():
            if not follower.access.owns(record):
                continue
            if body is None:
                body = _status_body(record, event)
            self._put(follower, prefixes, body)
        if targeted:
            for follower, prefixes in targeted.items():
                if not follower.access.owns(record):
                    continue  # subscribed before the id was someone else's: never told
                if body is None:
                    body = _status_body(record, event)
                self._put(follower, prefixes, body)

    def new_head(self, header: Mapping[str, Any]) -> None:
        """Queue ``header`` (the node's own ``newHeads`` object) for every ``newHeads`` sub."""
        if not self._heads:
            return
        body = orjson.dumps(header)
        for follower, subs in self._heads.items():
            self._put(follower, tuple(subs.values()), body)

    def _put(self, follower: Follower, prefixes: tuple[bytes, ...], body: bytes) -> None:
        try:
            follower.outbox.put_nowait((prefixes, body))
        except asyncio.QueueFull:
            follower.dropped += 1
            follower.overflowed.set()
            if self._on_dropped is not None:
                self._on_dropped()


def _status_body(record: TxRecord, event: str) -> bytes:
    body = intent_json(record)
    body["event"] = event
    return orjson.dumps(body)
