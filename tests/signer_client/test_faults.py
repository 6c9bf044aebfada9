"""The client never hands out a bad reply and recovers from signers that misbehave."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from signer_client import (
    EventCounter,
    FrameTooLarge,
    ReplyVerificationError,
    SignerClient,
    SignerTimeout,
    SignerUnavailable,
)
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS
from tests.signer_client.fault_server import FaultServer

TX: dict[str, Any] = {
    "type": 2,
    "chainId": 31337,
    "nonce": 7,
    "to": ALLOWED_TO,
    "value": 12345,
    "data": b"\x01\x02",
    "gas": 50000,
    "maxFeePerGas": 30 * 10**9,
    "maxPriorityFeePerGas": 10**9,
    "accessList": [],
}


def no_wait() -> Iterator[float]:
    while True:
        yield 0.0


def client(server: FaultServer, events: EventCounter, timeout: float = 2.0) -> SignerClient:
    return SignerClient(server.url, timeout=timeout, on_event=events, backoff=no_wait)


@pytest.mark.parametrize(
    ("action", "check"),
    [
        ("tamper_value", "field:value"),
        ("wrong_key", "sender"),
        ("high_s", "low_s"),
        ("bad_hash", "hash"),
        ("flip_parity", "sender"),
        ("append_byte", "decode"),
    ],
)
async def test_a_reply_that_fails_verification_raises_and_is_counted(
    tmp_path: Path, action: str, check: str
) -> None:
    events = EventCounter()
    async with FaultServer(tmp_path / "s.sock", [action]) as server, client(server, events) as c:
        with pytest.raises(ReplyVerificationError) as info:
            await c.sign_transaction(TX, ANVIL_ADDRESS)
        assert info.value.check == check
        assert events["reply_invalid"] == 1
        assert events["signed"] == 0
        good = await c.sign_transaction(TX, ANVIL_ADDRESS)  # the next honest reply passes
    assert good.raw == server.signed[-1]


async def test_a_truncated_frame_is_counted_and_the_request_is_resent_on_a_new_connection(
    tmp_path: Path,
) -> None:
    events = EventCounter()
    async with (
        FaultServer(tmp_path / "s.sock", ["truncate"]) as server,
        client(server, events) as c,
    ):
        signed = await c.sign_transaction(TX, ANVIL_ADDRESS)
    assert events["frame_truncated"] == 1 and events["retry"] == 1
    assert server.requests == 2 and server.connections == 3  # 2 ordinary + the urgent lane
    assert set(server.signed) == {signed.raw}  # signed twice, one transaction: no double-sign


async def test_an_oversized_frame_is_refused_before_reading_it_and_the_client_recovers(
    tmp_path: Path,
) -> None:
    events = EventCounter()
    async with (
        FaultServer(tmp_path / "s.sock", ["oversize"]) as server,
        client(server, events) as c,
    ):
        with pytest.raises(FrameTooLarge):
            await c.sign_transaction(TX, ANVIL_ADDRESS)
        assert events["frame_too_large"] == 1
        signed = await c.sign_transaction(TX, ANVIL_ADDRESS)
    assert server.connections == 3  # 2 ordinary + the urgent lane
    assert signed.raw == server.signed[-1]


async def test_a_stalled_signer_times_out_and_the_next_request_uses_a_fresh_connection(
    tmp_path: Path,
) -> None:
    events = EventCounter()
    async with (
        FaultServer(tmp_path / "s.sock", ["stall"]) as server,
        client(server, events, timeout=0.3) as c,
    ):
        with pytest.raises(SignerTimeout):
            await c.sign_transaction(TX, ANVIL_ADDRESS)
        assert events["timeout"] == 1
        signed = await c.sign_transaction(TX, ANVIL_ADDRESS)
    assert server.connections == 3  # 2 ordinary + the urgent lane
    assert server.signed == [signed.raw]


async def test_a_signer_dying_mid_request_loses_nothing_and_double_signs_nothing(
    tmp_path: Path,
) -> None:
    import asyncio

    events = EventCounter()
    async with (
        FaultServer(tmp_path / "s.sock", ["ok", "die", "ok", "ok"]) as server,
        client(server, events) as c,
    ):
        requests = [{**TX, "nonce": n} for n in range(4)]
        results = await asyncio.gather(*(c.sign_transaction(r, ANVIL_ADDRESS) for r in requests))
    assert [r.nonce for r in results] == [0, 1, 2, 3]  # every request answered
    assert events["retry"] >= 1
    per_nonce: dict[int, set[bytes]] = {}
    from signer_client import decode_raw

    for raw in server.signed:
        per_nonce.setdefault(decode_raw(raw).fields.nonce, set()).add(raw)
    assert all(len(v) == 1 for v in per_nonce.values())  # one transaction per nonce


async def test_an_unreachable_signer_raises_unavailable_after_backing_off(tmp_path: Path) -> None:
    events = EventCounter()
    c = SignerClient(f"unix://{tmp_path}/none.sock", connect_timeout=0.2, on_event=events)
    with pytest.raises(SignerUnavailable):
        await c.open()
    assert events["connect_failed"] >= 1
    await c.close()


async def test_every_stalled_request_in_flight_times_out_and_the_client_carries_on(
    tmp_path: Path,
) -> None:
    import asyncio

    events = EventCounter()
    async with (
        FaultServer(tmp_path / "s.sock", ["stall", "stall", "stall"]) as server,
        client(server, events, timeout=0.3) as c,
    ):
        requests = [{**TX, "nonce": n} for n in range(3)]
        results = await asyncio.gather(
            *(c.sign_transaction(r, ANVIL_ADDRESS) for r in requests), return_exceptions=True
        )
        assert all(isinstance(r, SignerTimeout) for r in results), results
        assert not c._deadlines  # the shared timer keeps nothing for finished requests
        signed = await c.sign_transaction(TX, ANVIL_ADDRESS)
    assert server.signed == [signed.raw]
