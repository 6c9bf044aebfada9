"""Every broadcast RPC is asked ``eth_chainId`` before it gets a transaction (DESIGN.md §3, trust).

A transaction signed for chain 31337 sent to a node of chain 1 is refused at best; a
misconfigured ``[[rpcs]]`` entry pointing at another chain (a testnet node behind a production
name, a fork) must not be a silent sink, and its reads (nonce counts, receipts) must not be taken
as facts. :func:`screen_rpcs` asks each endpoint once at start, over HTTP (a ``ws(s)://`` RPC is
asked at the HTTP endpoint the node serves beside it); an endpoint that answers another chain is
kept out, with a :class:`ChainIdMismatch` naming it (the service logs it and counts
``invalid_messages_total{client=<rpc>,reason="chain_id_mismatch"}``). An endpoint that does not
answer at start is kept (it may come up later): that is logged, and it is not re-checked later.
Every kind of ``[[rpcs]]`` is asked (DESIGN.md 5a: a private RPC or builder of another chain would
hold our private intents); a builder named in ``bundle_only`` serves only the bundle API, so its
JSON-RPC error to ``eth_chainId`` keeps it unverified, while a chain id it does answer is judged.

The head clients are checked by their subscription on every connect
(``heads.subscriber.SubscriptionOptions.chain_id``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from broadcaster.errors import BroadcasterError

__all__ = ["ChainIdMismatch", "ChainIdScreen", "judge_chain_id", "screen_rpcs"]

log = logging.getLogger(__name__)

Post = Callable[[str, Any], Awaitable[Any]]


class ChainIdMismatch(BroadcasterError, ValueError):
    """An RPC endpoint answered ``eth_chainId`` with another chain: it is kept out."""

    def __init__(self, name: str, url: str, expected: int, answered: object) -> None:
        super().__init__(
            f"rpc {name} ({url}): eth_chainId answered {answered!r:.80}, configured chain is "
            f"{expected} ({hex(expected)}): kept out"
        )
        self.name = name
        self.url = url
        self.expected = expected
        self.answered = answered


@dataclass(frozen=True, slots=True)
class ChainIdScreen:
    kept: list[str]  # names of the endpoints that may be used
    refused: list[ChainIdMismatch]
    unchecked: list[str]  # no answer at start: kept, unverified


def judge_chain_id(name: str, url: str, expected: int, reply: object) -> ChainIdMismatch | None:
    """Pure: the verdict on one JSON-RPC reply object to ``eth_chainId``."""
    result = reply.get("result") if type(reply) is dict else None
    try:
        answered = int(result, 16) if type(result) is str and result.startswith("0x") else None
    except ValueError:
        answered = None
    if answered == expected:
        return None
    return ChainIdMismatch(name, url, expected, result if result is not None else reply)


def http_url(url: str) -> str:
    """The HTTP JSON-RPC URL a node serves beside a websocket one (anvil, geth, reth do)."""
    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return url
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}{parts.path}"


async def screen_rpcs(
    rpcs: Sequence[tuple[str, str]],
    expected: int,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109 - a per-request HTTP timeout, not the call's
    post: Post | None = None,
    bundle_only: Sequence[str] = (),
) -> ChainIdScreen:
    """Ask every ``(name, url)`` for ``eth_chainId`` at once; sort them into kept and refused."""
    session: aiohttp.ClientSession | None = None

    async def http_post(url: str, body: Any) -> Any:
        nonlocal session
        if session is None:
            session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout))
        async with session.post(
            url, data=orjson.dumps(body), headers={"content-type": "application/json"}
        ) as response:
            return orjson.loads(await response.read())

    send = post or http_post

    async def ask(name: str, url: str) -> ChainIdMismatch | str | None:
        body = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}
        try:
            reply = await send(http_url(url), body)
        except (aiohttp.ClientError, TimeoutError, OSError, orjson.JSONDecodeError) as exc:
            return f"{type(exc).__name__}: {exc}"
        if name in bundle_only and not (type(reply) is dict and "result" in reply):
            return f"a bundle-only endpoint answered no chain id: {reply!r:.80}"
        return judge_chain_id(name, url, expected, reply)

    try:
        verdicts = await asyncio.gather(*(ask(name, url) for name, url in rpcs))
    finally:
        if session is not None:
            await session.close()
    kept: list[str] = []
    refused: list[ChainIdMismatch] = []
    unchecked: list[str] = []
    for (name, _), verdict in zip(rpcs, verdicts, strict=True):
        if isinstance(verdict, ChainIdMismatch):
            refused.append(verdict)
            continue
        kept.append(name)
        if isinstance(verdict, str):
            unchecked.append(name)
            log.warning("rpc %s: eth_chainId not answered at start (%s): kept, unverified",
                        name, verdict)  # fmt: skip
    return ChainIdScreen(kept, refused, unchecked)
