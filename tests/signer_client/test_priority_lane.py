"""The urgent lane: the enclave app answers a reorg reaction's request ahead of the ordinary
requests already queued on the other connection (issue 14; DESIGN.md section 8's "reaction p99
unchanged while intents stream").

Real enclave app (subprocess, its real policy and audit log) over a real unix socket. The
enclave is stopped (SIGSTOP) while the client writes 200 ordinary requests and then one urgent
one, so all of them sit in the sockets when it resumes: the order of its answers is then set by
the enclave alone. Order only, no timing: where the urgent signature lands among the 200 in the
enclave's own audit log (the order it signed in). Answered first come first served it would be
the 201st.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
from collections.abc import Callable
from typing import Any

from enclave.attestor import measure_pcr0
from enclave.server import BATCH
from signer_client import SignerClient, urgent
from signer_client.attestation import AttestationPolicy
from signer_client.client import ORDINARY, URGENT_LANE
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, Enclave

_nonces = itertools.count(7000)
BACKLOG = 200


def tx(nonce: int) -> dict[str, Any]:
    return {
        "type": 2,
        "chainId": 31337,
        "nonce": nonce,
        "to": ALLOWED_TO,
        "value": 1,
        "data": b"",
        "gas": 21000,
        "maxFeePerGas": 30 * 10**9,
        "maxPriorityFeePerGas": 2 * 10**9,
        "accessList": [],
    }


async def _sign(client: SignerClient, nonce: int, done: list[int], *, hurry: bool) -> None:
    if hurry:
        with urgent():
            await client.sign_transaction(tx(nonce), ANVIL_ADDRESS)
    else:
        await client.sign_transaction(tx(nonce), ANVIL_ADDRESS)
    done.append(nonce)


def _signed_nonces(enclave: Enclave) -> list[int]:
    lines = enclave.audit_log.read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [int(e["data"]["nonce"]) for e in entries if e["kind"] == "sign"]


async def test_an_urgent_request_is_answered_ahead_of_the_queued_backlog(
    fresh_enclave: Enclave,
) -> None:
    ordinary = [next(_nonces) for _ in range(BACKLOG)]
    hurried = next(_nonces)
    done: list[int] = []
    async with SignerClient(fresh_enclave.url, max_in_flight=BACKLOG + 8, timeout=30) as client:
        await client.sign_transaction(tx(next(_nonces)), ANVIL_ADDRESS)  # both lanes warm
        pid = fresh_enclave.process.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            tasks = [asyncio.create_task(_sign(client, n, done, hurry=False)) for n in ordinary]
            # Every ordinary frame written before the urgent one: all of them pending on the
            # ordinary lane, then one more loop pass for the coalesced frames' flush. (A fixed
            # sleep was not enough on a loaded machine.)
            await _until(lambda: len(client._lanes[ORDINARY].pending) == BACKLOG)  # type: ignore[union-attr]
            await asyncio.sleep(0)
            tasks.append(asyncio.create_task(_sign(client, hurried, done, hurry=True)))
            await _until(lambda: len(client._lanes[URGENT_LANE].pending) == 1)  # type: ignore[union-attr]
            await asyncio.sleep(0)
        finally:
            os.kill(pid, signal.SIGCONT)
        await asyncio.gather(*tasks)
    assert sorted(done) == sorted([*ordinary, hurried])  # every one signed and verified
    signed = [n for n in _signed_nonces(fresh_enclave) if n in set(ordinary) | {hurried}]
    assert len(signed) == BACKLOG + 1
    # The enclave signed it after at most the one batch it was answering when it read it.
    # (The order the client then resolves replies in is not asserted: one read of the
    # ordinary socket can resolve a hundred replies before the urgent socket's turn when the
    # machine is loaded; the enclave's order is the property of the lane.)
    assert signed.index(hurried) <= BATCH, signed.index(hurried)
    assert [n for n in signed if n != hurried] == ordinary  # the backlog kept its order


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached within 10,000 loop passes")


async def test_both_lanes_are_attested_and_bound_to_the_same_key(enclave: Enclave) -> None:
    policy = AttestationPolicy((enclave.pki_dir / "root.pem").read_bytes(), measure_pcr0())
    async with SignerClient(enclave.url, attestation=policy) as client:
        lanes = client._lanes
        assert all(c is not None and c.mac_key is not None for c in lanes)
        # Distinct channels (each its own nonce and ephemeral key), one enclave.
        assert lanes[ORDINARY].mac_key != lanes[URGENT_LANE].mac_key  # type: ignore[union-attr]
        with urgent():
            await client.sign_transaction(tx(next(_nonces)), ANVIL_ADDRESS)
        await client.sign_transaction(tx(next(_nonces)), ANVIL_ADDRESS)


async def test_the_first_request_opens_both_lanes_so_a_reaction_pays_no_handshake(
    enclave: Enclave,
) -> None:
    """The service never calls ``open()``: its first request connects. Both lanes come up then,
    so a reaction's first urgent request finds its lane open. Opened only then, the urgent
    lane's handshake (and the service's log re-check every new connection triggers before
    anything is signed) stalled the reaction's later re-signs until the tip moved and the
    dropped original bytes were mined instead (e2e test_service_reorg live-resign-3)."""
    events: list[str] = []
    client = SignerClient(enclave.url, on_event=events.append)
    try:
        await client.sign_transaction(tx(next(_nonces)), ANVIL_ADDRESS)
        assert events.count("connected") == 2 and client.connected
        before = len(events)
        with urgent():
            await client.sign_transaction(tx(next(_nonces)), ANVIL_ADDRESS)
        assert "connected" not in events[before:], events[before:]
        # The urgent lane lost alone: an urgent request goes on the ordinary lane at once and
        # the urgent lane is re-opened behind it (no handshake in front of the request).
        lost = client._lanes[URGENT_LANE]
        assert lost is not None and lost.transport is not None
        lost.transport.abort()
        await asyncio.sleep(0)  # connection_lost
        with urgent():
            signed = await client.sign_transaction(tx(next(_nonces)), ANVIL_ADDRESS)
        assert signed.raw
        assert client._reopen is not None
        await client._reopen
        assert client.connected and client._lanes[URGENT_LANE] is not lost
    finally:
        await client.close()
