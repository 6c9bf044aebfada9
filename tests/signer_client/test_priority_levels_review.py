"""Adversarial review of the three signer levels and priority inheritance (react8), against the
real enclave app and its policy over a unix socket: a promoted ticket whose request was
cancelled or already answered, two reactions promoting one holder, the urgent lane lost while
a promoted request and the presignatures are in flight. Order and slot accounting only, no
timing (the ``wait_for`` guards turn a deadlock into a failure instead of a hang)."""

from __future__ import annotations

import asyncio

from broadcaster.tx.executor import NonceLock, holding
from signer_client import SignerClient
from signer_client.client import URGENT_LANE
from tests.enclave.running import ANVIL_ADDRESS, Enclave
from tests.signer_client.test_priority_lane import tx
from tests.signer_client.test_priority_levels import (
    SLOTS,
    WRITTEN_AT_ONCE,
    bump,
    nonces,
    presign,
    react,
)

GUARD = 60.0  # a deadlock fails the test instead of hanging it


async def test_a_holder_cancelled_while_queued_then_promoted_leaks_no_slot(
    fresh_enclave: Enclave,
) -> None:
    """The bump's request is cancelled while it waits (its task is), and only then does a
    reaction find the lock... held no more: nothing to promote, the reaction is answered ahead
    of the queued presignatures, and every slot comes back."""
    done: list[str] = []
    lock = NonceLock()
    holder_waiting = asyncio.Event()

    async def bump() -> None:
        async with lock:
            with holding(lock):
                holder_waiting.set()
                await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
            done.append("bump")

    async with SignerClient(fresh_enclave.url, max_in_flight=SLOTS, timeout=60) as client:
        await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
        tasks = [asyncio.create_task(presign(client, f"p{i}", done)) for i in range(60)]
        holder = asyncio.create_task(bump())
        await asyncio.sleep(0)
        assert holder_waiting.is_set() and lock.ticket is not None
        ticket = lock.ticket
        assert ticket.on_promote is not None  # the bump waits for a slot
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        assert not lock.locked() and lock.ticket is None and ticket.on_promote is None
        ticket.promote()  # a late promotion of the dead ticket: nothing happens
        assert all(holder not in q for q in client._waiters)
        tasks.append(asyncio.create_task(react(client, lock, "reaction", done)))
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the reaction's request is made (it finds the lock free)
        queued = len(client._urgent_waiters)  # presignatures not yet written: the last ones
        assert queued > 0
        await asyncio.wait_for(asyncio.gather(*tasks), GUARD)
        assert client._in_flight == 0 and not any(client._waiters)
    assert "bump" not in done
    assert done.index("reaction") < done.index(f"p{60 - queued}"), done


async def test_two_reactions_promoting_one_holder_move_it_once(fresh_enclave: Enclave) -> None:
    """Two reactions want the same nonce (a re-sign and a noop, say) while a bump holds it and
    waits behind 120 presignatures: the bump is moved to the reaction queue once, answered
    before every presignature queued after it, and both reactions follow it, in order."""
    done: list[str] = []
    lock = NonceLock()

    async with SignerClient(fresh_enclave.url, max_in_flight=SLOTS, timeout=60) as client:
        await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
        before = [f"p{i}" for i in range(120)]
        after = [f"q{i}" for i in range(60)]
        tasks = [asyncio.create_task(presign(client, n, done)) for n in before]
        tasks.append(asyncio.create_task(bump(client, lock, done)))
        tasks += [asyncio.create_task(presign(client, n, done)) for n in after]
        await asyncio.sleep(0)
        assert lock.locked() and lock.ticket is not None
        tasks.append(asyncio.create_task(react(client, lock, "r1", done)))
        tasks.append(asyncio.create_task(react(client, lock, "r2", done)))
        await asyncio.sleep(0)
        queued = [w for q in client._waiters for w in q]
        assert len(queued) == len(set(queued))  # no waiter twice
        await asyncio.wait_for(asyncio.gather(*tasks), GUARD)
        assert client._in_flight == 0 and not any(client._waiters)
    assert done.index("bump") <= WRITTEN_AT_ONCE, done
    assert done.index("bump") < done.index("r1") < done.index("r2"), done
    assert done.index("r2") < done.index("p119"), done
    assert [n for n in done if n[0] in "pq"] == before + after


async def test_a_ticket_promoted_after_its_first_request_was_answered(
    fresh_enclave: Enclave,
) -> None:
    """The holder's first request is answered; a reaction then promotes the ticket; the
    holder's second request under the same ticket (a nonce_conflict's re-price) goes at the
    reaction's level, ahead of the presignatures queued meanwhile."""
    done: list[str] = []
    lock = NonceLock()
    first_done = asyncio.Event()
    go_on = asyncio.Event()

    async def bump() -> None:
        async with lock:
            with holding(lock):
                await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
                first_done.set()
                await go_on.wait()
                await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
            done.append("bump")

    async with SignerClient(fresh_enclave.url, max_in_flight=SLOTS, timeout=60) as client:
        await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
        holder = asyncio.create_task(bump())
        await asyncio.wait_for(first_done.wait(), GUARD)
        presigns = [f"p{i}" for i in range(100)]
        tasks = [asyncio.create_task(presign(client, n, done)) for n in presigns]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(react(client, lock, "reaction", done)))
        await asyncio.sleep(0)
        go_on.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)  # the holder's second request is made, at the reaction's level
        queued = len(client._urgent_waiters)  # presignatures not yet written: the last ones
        assert queued > 0
        tasks.append(holder)
        await asyncio.wait_for(asyncio.gather(*tasks), GUARD)
        assert client._in_flight == 0 and not any(client._waiters)
    assert done.index("bump") < done.index(f"p{100 - queued}"), done
    assert done.index("bump") < done.index("reaction") < done.index("p99"), done


async def test_the_urgent_lane_lost_under_a_promoted_holder_and_presignatures(
    fresh_enclave: Enclave,
) -> None:
    """The urgent lane's connection drops while the presignatures are in flight on it and a
    promoted bump waits: every request is answered on the ordinary lane meanwhile (no lost
    wake-up, no slot leaked), the bump and the reaction still pass the presignatures queued
    after the bump."""
    done: list[str] = []
    lock = NonceLock()

    async with SignerClient(fresh_enclave.url, max_in_flight=SLOTS, timeout=60) as client:
        await client.sign_transaction(tx(next(nonces)), ANVIL_ADDRESS)
        before = [f"p{i}" for i in range(80)]
        after = [f"q{i}" for i in range(60)]
        tasks = [asyncio.create_task(presign(client, n, done)) for n in before]
        tasks.append(asyncio.create_task(bump(client, lock, done)))
        tasks += [asyncio.create_task(presign(client, n, done)) for n in after]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(react(client, lock, "reaction", done)))
        await asyncio.sleep(0)
        lane = client._lanes[URGENT_LANE]
        assert lane is not None and lane.transport is not None
        lane.transport.abort()
        await asyncio.wait_for(asyncio.gather(*tasks), GUARD)
        assert client._in_flight == 0 and not any(client._waiters)
    assert done.index("bump") < done.index("reaction") < done.index("q0"), done
    assert sorted(done) == sorted(["bump", "reaction", *before, *after])
