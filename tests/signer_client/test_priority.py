"""Urgent requests (``signer_client.urgent()``: a reorg reaction's re-signs) go ahead of the
ordinary requests waiting for a slot, against the real enclave app over a unix socket.

Ordering only (no timing): the enclave answers in the order it reads requests, so a request's
place in the completion order is its place in the queue.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from signer_client import URGENT_RESERVE, SignerClient, urgent
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, Enclave

_nonces = itertools.count(5000)


def tx() -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 31337,
        "nonce": next(_nonces),
        "to": ALLOWED_TO,
        "value": 1,
        "data": b"",
        "gas": 21000,
        "maxFeePerGas": 30 * 10**9,
        "maxPriorityFeePerGas": 2 * 10**9,
        "accessList": [],
    }


async def _sign(client: SignerClient, name: str, done: list[str], *, hurry: bool) -> None:
    if hurry:
        with urgent():
            await client.sign_transaction(tx(), ANVIL_ADDRESS)
    else:
        await client.sign_transaction(tx(), ANVIL_ADDRESS)
    done.append(name)


async def test_an_urgent_request_is_written_past_the_waiting_backlog(
    fresh_enclave: Enclave,
) -> None:
    done: list[str] = []
    async with SignerClient(fresh_enclave.url, max_in_flight=1) as client:
        # Started in this order: o0 takes the one slot, o1..o19 wait for it, then u.
        tasks = [asyncio.create_task(_sign(client, f"o{i}", done, hurry=False)) for i in range(20)]
        tasks.append(asyncio.create_task(_sign(client, "u", done, hurry=True)))
        await asyncio.gather(*tasks)
    assert done.index("u") <= 1, done  # behind o0 at most (already written), never o1..o19
    assert [n for n in done if n != "u"] == [f"o{i}" for i in range(20)]  # FIFO among them


async def test_urgent_waiters_take_the_next_slot_before_ordinary_waiters(
    fresh_enclave: Enclave,
) -> None:
    """Every slot taken (max_in_flight ordinary + the urgent reserve): a later urgent request
    waits too, but it is handed the first slot that frees, ahead of the ordinary waiters."""
    done: list[str] = []
    async with SignerClient(fresh_enclave.url, max_in_flight=2) as client:
        names = ["o0", "o1"] + [f"r{i}" for i in range(URGENT_RESERVE)]
        names += [f"w{i}" for i in range(5)] + ["u0", "u1"]
        tasks = [
            asyncio.create_task(_sign(client, name, done, hurry=name.startswith(("r", "u"))))
            for name in names
        ]
        await asyncio.gather(*tasks)
    # Two lanes (the urgent one answered apart): completions are ordered within a lane only.
    # The slot hand-off shows as: both urgent waiters written (and so answered) before the
    # first ordinary waiter, which is written only once the urgent reserve has drained.
    waiting = [f"w{i}" for i in range(5)]
    assert [n for n in done if n in waiting] == waiting, done  # FIFO among them
    first_w = done.index("w0")
    assert done.index("u0") < first_w and done.index("u1") < first_w, done
    assert done.index("o0") < first_w and done.index("o1") < first_w, done  # one lane, FIFO
