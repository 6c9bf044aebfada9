"""How requests leave the client: coalesced writes per loop pass, and the in-flight limit."""

from __future__ import annotations

import asyncio
from pathlib import Path

from signer_client import SignerClient, decode_raw
from signer_client.client import COALESCE_FRAMES, _Connection
from tests.enclave.running import ANVIL_ADDRESS
from tests.signer_client.fault_server import FaultServer
from tests.signer_client.test_faults import TX


class _Recorder:
    """Just enough of an ``asyncio.Transport`` to see every ``write`` call."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))


def _connection() -> tuple[_Connection, _Recorder]:
    conn = _Connection(lambda kind: None)
    transport = _Recorder()
    conn.transport = transport  # type: ignore[assignment]
    return conn, transport


async def test_a_lone_request_is_written_at_once_not_on_the_next_loop_pass() -> None:
    conn, transport = _connection()
    conn.send(b"one")
    assert transport.writes == [b"one"]  # before anything else runs: no added latency
    await asyncio.sleep(0)
    assert transport.writes == [b"one"]
    conn.send(b"two")  # a new pass: written at once again
    assert transport.writes == [b"one", b"two"]


async def test_requests_sent_in_one_loop_pass_leave_in_few_writes_in_order() -> None:
    conn, transport = _connection()
    frames = [bytes([i]) * 3 for i in range(2 * COALESCE_FRAMES + 4)]
    for frame in frames:
        conn.send(frame)
    # The first at once, then one write per COALESCE_FRAMES queued...
    assert transport.writes == [
        frames[0],
        b"".join(frames[1 : 1 + COALESCE_FRAMES]),
        b"".join(frames[1 + COALESCE_FRAMES : 1 + 2 * COALESCE_FRAMES]),
    ]
    await asyncio.sleep(0)  # ... and the rest at the start of the next pass
    assert len(transport.writes) == 4
    assert b"".join(transport.writes) == b"".join(frames)


async def test_frames_queued_on_a_connection_that_died_are_dropped_not_written() -> None:
    conn, transport = _connection()
    conn.send(b"first")
    conn.send(b"queued")
    conn.closed = True  # its requests were failed with it and get re-sent on the next one
    await asyncio.sleep(0)
    assert transport.writes == [b"first"]


async def test_max_in_flight_holds_callers_back_and_lets_them_in_first_come_first_served(
    tmp_path: Path,
) -> None:
    async with (
        FaultServer(tmp_path / "s.sock", ["hold"] * 5) as server,
        SignerClient(server.url, max_in_flight=2) as client,
    ):
        tasks = [
            asyncio.create_task(client.sign_transaction({**TX, "nonce": n}, ANVIL_ADDRESS))
            for n in range(5)
        ]
        for arrived in (2, 3, 4, 5):
            # Never more than two at the signer; each answer lets exactly one more in.
            await server.until(lambda n=arrived: server.requests == n)  # type: ignore[misc]
            assert len(server.held) == 2
            server.release(1)
        server.release()
        results = await asyncio.gather(*tasks)
    assert [r.nonce for r in results] == [0, 1, 2, 3, 4]
    # Answered in arrival order, so this is the order they were let in: first come, first served.
    assert [decode_raw(raw).fields.nonce for raw in server.signed] == [0, 1, 2, 3, 4]


async def test_a_caller_cancelled_while_waiting_for_a_slot_leaks_no_slot(tmp_path: Path) -> None:
    async with (
        FaultServer(tmp_path / "s.sock", ["hold"]) as server,
        SignerClient(server.url, max_in_flight=1) as client,
    ):
        first = asyncio.create_task(client.sign_transaction(TX, ANVIL_ADDRESS))
        await server.until(lambda: len(server.held) == 1)
        waiting = asyncio.create_task(client.sign_transaction({**TX, "nonce": 8}, ANVIL_ADDRESS))
        await asyncio.sleep(0)  # let it queue for the slot
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
        server.release()
        assert (await first).nonce == TX["nonce"]
        # The one slot is free again: a later caller gets it (it would wait forever if not).
        later = await asyncio.wait_for(
            client.sign_transaction({**TX, "nonce": 9}, ANVIL_ADDRESS), 2
        )
    assert later.nonce == 9
    assert waiting.cancelled()
    assert server.requests == 2  # the cancelled caller never sent anything


async def test_a_slot_handed_to_a_caller_cancelled_at_that_moment_passes_to_the_next(
    tmp_path: Path,
) -> None:
    async with (
        FaultServer(tmp_path / "s.sock", []) as server,
        SignerClient(server.url, max_in_flight=1) as client,
    ):
        client._in_flight = 1  # a request in flight (stand-in), so these two queue
        second = asyncio.create_task(client.sign_transaction({**TX, "nonce": 8}, ANVIL_ADDRESS))
        third = asyncio.create_task(client.sign_transaction({**TX, "nonce": 9}, ANVIL_ADDRESS))
        await asyncio.sleep(0)
        client._release_slot()  # the stand-in finishes: its slot goes to `second`...
        second.cancel()  # ... cancelled before it could run: the slot must reach `third`
        await asyncio.gather(second, return_exceptions=True)
        assert (await asyncio.wait_for(third, 2)).nonce == 9
        assert client._in_flight == 0
    assert second.cancelled()
    assert server.requests == 1
