"""Adversarial (review of issue 18's reaction priority): urgent and ordinary waiters cancelled
while every slot (``max_in_flight`` plus the urgent reserve) is held, one of them just as a
finishing request hands it its slot, against the real enclave app (stopped with SIGSTOP so the
written requests stay in flight, then continued). No slot may leak: afterwards the client holds
none, and a full burst of ``max_in_flight`` ordinary plus the reserve's urgent requests is
written at once again."""

from __future__ import annotations

import asyncio
import os
import signal

from signer_client import URGENT_RESERVE, SignerClient, urgent
from tests.enclave.running import ANVIL_ADDRESS, Enclave
from tests.signer_client.test_priority import tx


async def _sign(client: SignerClient, *, hurry: bool) -> None:
    if hurry:
        with urgent():
            await client.sign_transaction(tx(), ANVIL_ADDRESS)
    else:
        await client.sign_transaction(tx(), ANVIL_ADDRESS)


async def test_cancelled_waiters_leak_no_slot(fresh_enclave: Enclave) -> None:
    pid = fresh_enclave.process.pid
    async with SignerClient(fresh_enclave.url, max_in_flight=2, timeout=60) as client:
        await _sign(client, hurry=False)  # connected (hello) before the enclave is stopped
        os.kill(pid, signal.SIGSTOP)
        try:
            waiters: list[asyncio.Task[None]] = []

            async def first_then_cancel_the_waiters() -> None:
                try:
                    await _sign(client, hurry=False)
                finally:
                    # Its slot was just handed to the first urgent waiter (still asleep): cancel
                    # every waiter now, that one included.
                    for task in waiters:
                        task.cancel()

            held = [asyncio.create_task(first_then_cancel_the_waiters())]
            held.append(asyncio.create_task(_sign(client, hurry=False)))
            held += [asyncio.create_task(_sign(client, hurry=True)) for _ in range(URGENT_RESERVE)]
            await asyncio.sleep(0)  # every task took its slot (or queued) in its first step
            assert client._in_flight == 2 + URGENT_RESERVE
            waiters += [asyncio.create_task(_sign(client, hurry=h)) for h in (True, False) * 3]
            await asyncio.sleep(0)
            assert len(client._urgent_waiters) == 3 and len(client._slot_waiters) == 3
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.gather(*held)
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert all(isinstance(r, asyncio.CancelledError) for r in results), results
        assert client._in_flight == 0, "a cancelled waiter leaked its slot"
        assert not client._urgent_waiters and not client._slot_waiters
        burst = [asyncio.create_task(_sign(client, hurry=False)) for _ in range(2)]
        burst += [asyncio.create_task(_sign(client, hurry=True)) for _ in range(URGENT_RESERVE)]
        await asyncio.sleep(0)
        assert client._in_flight == 2 + URGENT_RESERVE
        assert not client._urgent_waiters and not client._slot_waiters
        await asyncio.gather(*burst)
        assert client._in_flight == 0
