"""Three levels at the signer client (``signer_client.priority``), against the real enclave app
and its policy over a unix socket: a reaction's own requests, then the lock-holding urgent ones
(presignatures, bumps) first come first served, then the ordinary ones; and priority
inheritance: a request holding a nonce lock is never passed by what a reaction then waits on.

Order only, no timing. Every request here goes on the urgent lane (one connection, answered in
the order it is written), so the order the replies resolve is the order the client wrote them:
with ``max_in_flight`` 4 the first ``4 + URGENT_RESERVE`` requests are written at once and the
rest wait for a slot, in the client's queues. A block of ours asks for one presignature per
transaction, so a backlog of them is what a reaction meets (issue 14 item 4, session 7).
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import orjson

from broadcaster.rpc.orderflow import OrderflowSender
from broadcaster.tx.executor import NonceLock, holding
from signer_client import URGENT_RESERVE, SignerClient, reacting, urgent
from tests.enclave.running import (
    ANVIL_ADDRESS,
    AUTH_ADDRESS,
    AUTH_KEY,
    POLICY_TOML,
    Enclave,
    running_enclave,
)
from tests.signer_client.test_priority_lane import tx

nonces = itertools.count(9000)  # also the review file's: one test's nonces stay in one window
SLOTS = 4
WRITTEN_AT_ONCE = SLOTS + URGENT_RESERVE  # what is in flight before anything waits


async def presign(client: SignerClient, name: str, done: list[str]) -> None:
    """A presignature: level 2 (``urgent``), no lock held."""
    with urgent():
        await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
    done.append(name)


async def bump(client: SignerClient, lock: NonceLock, done: list[str]) -> None:
    """A fee bump: level 2 while holding its nonce's ``lock`` (the executor's ``holding``)."""
    async with lock:
        with holding(lock):
            await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
        done.append("bump")


async def react(client: SignerClient, lock: NonceLock, name: str, done: list[str]) -> None:
    """A reaction needing ``lock``'s nonce: it promotes the holder, then signs at level 1."""
    await lock.for_reaction()
    try:
        with reacting():
            await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
        done.append(name)
    finally:
        lock.release()


async def test_a_reactions_resign_is_answered_before_the_queued_presignatures(
    fresh_enclave: Enclave,
) -> None:
    """Before the levels (one urgent queue, first come first served) it resolved 201st."""
    done: list[str] = []

    async def reaction() -> None:
        with reacting():
            await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
        done.append("reaction")

    async with SignerClient(fresh_enclave.url, max_in_flight=SLOTS, timeout=60) as client:
        await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)  # both lanes warm
        presigns = [f"p{i}" for i in range(200)]
        tasks = [asyncio.create_task(presign(client, name, done)) for name in presigns]
        await asyncio.sleep(0)  # every presignature has its slot or its place in the queue
        assert len(client._urgent_waiters) == 200 - WRITTEN_AT_ONCE
        tasks.append(asyncio.create_task(reaction()))
        await asyncio.gather(*tasks)
    assert done.index("reaction") <= WRITTEN_AT_ONCE, done  # behind the ones written, only
    assert [n for n in done if n != "reaction"] == presigns  # the rest first come first served


async def test_a_bump_holding_its_nonce_lock_is_not_passed_by_later_presignatures(
    fresh_enclave: Enclave,
) -> None:
    """A fee bump waits for a slot at level 2 while holding its nonce's lock (the executor's
    ``NonceLock`` and ``holding``); 100 presignatures are queued after it; then a reaction
    needs that nonce. The reaction promotes the holder: the bump is answered right after what
    was already written, and the reaction (which signs once the bump releases the lock) before
    every presignature queued after the bump. Without the inheritance the bump is answered
    121st and the reaction waits for all 100 presignatures behind it. (What the reaction does
    pass is what was written while the lock changed hands: a loop pass or two of replies.)"""
    done: list[str] = []
    lock = NonceLock()
    async with SignerClient(fresh_enclave.url, max_in_flight=SLOTS, timeout=60) as client:
        await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
        before = [f"p{i}" for i in range(120)]
        after = [f"q{i}" for i in range(100)]
        tasks = [asyncio.create_task(presign(client, name, done)) for name in before]
        tasks.append(asyncio.create_task(bump(client, lock, done)))
        tasks += [asyncio.create_task(presign(client, name, done)) for name in after]
        await asyncio.sleep(0)
        assert lock.locked() and lock.ticket is not None  # the bump waits, holding the lock
        tasks.append(asyncio.create_task(react(client, lock, "reaction", done)))
        await asyncio.gather(*tasks)
    assert done.index("bump") <= WRITTEN_AT_ONCE, done
    assert done.index("bump") < done.index("reaction") < done.index("q0"), done
    assert done.index("reaction") < done.index("p119"), done  # ahead of the bump's backlog too
    assert [n for n in done if n[0] in "pq"] == before + after


async def test_a_reactions_flashbots_auth_is_signed_before_the_queued_presignatures(
    tmp_path: Path,
) -> None:
    """The builder endpoint signs a reaction's body (``hurry``) at the reaction's level, not
    behind the presignatures (the reviewer's first-come-first-served fix put it there)."""
    config = POLICY_TOML + f'auth_address = "{AUTH_ADDRESS}"\n'
    done: list[str] = []
    with running_enclave(
        tmp_path, f"unix://{tmp_path}/e.sock", config=config, extra_keys=(AUTH_KEY,)
    ) as enclave:
        async with SignerClient(enclave.url, max_in_flight=SLOTS, timeout=60) as client:
            sender = OrderflowSender([], sign_auth=client.sign_auth)
            await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
            presigns = [f"p{i}" for i in range(200)]
            tasks = [asyncio.create_task(presign(client, name, done)) for name in presigns]
            await asyncio.sleep(0)
            assert len(client._urgent_waiters) == 200 - WRITTEN_AT_ONCE

            async def auth() -> None:
                body = orjson.dumps({"method": "eth_sendBundle", "params": [{"txs": []}]})
                header = await sender.signed(body, hurry=True)
                assert header.lower().startswith(AUTH_ADDRESS.lower() + ":")
                done.append("auth")

            tasks.append(asyncio.create_task(auth()))
            await asyncio.gather(*tasks)
    assert done.index("auth") <= WRITTEN_AT_ONCE, done
