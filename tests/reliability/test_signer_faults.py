"""Signer faults: the enclave app dies, stalls, answers slowly, answers garbage or with the wrong
key, while the service takes intents.

The service's ``[signer] url`` points at a fault-injecting signer on a unix socket (the
``FaultServer`` of tests/signer_client, plus ``slow`` and ``garbage``); its only ``[[rpcs]]``
entry is a recording endpoint in front of anvil, so every byte the service ever broadcast is
kept. Each intent meets one fault on its first signing. Once, the signer is shut down entirely
(socket gone) while an intent comes in, and started again later. Checked:

- the API answers every intent (never an internal error) and no intent goes ``failed`` for a
  transient fault: while the signer is down the intent waits as ``pending``;
- every intent ends mined exactly once, with no nonce gap;
- nothing unverified was ever broadcast: every raw tx the RPC received recovers to the dev
  account and carries an intent's payload (or is a 0-value filler), and none of the replies the
  faulty signer produced (wrong key, tampered value, high-s, flipped parity...) reached the RPC.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from broadcaster.api.client import BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, start_anvil
from signer_client.txcodec import decode_raw
from tests.reliability.common import (
    TOKEN,
    assert_exactly_once,
    knob,
    report,
    running_service,
    seed,
    send_valued,
    service_config,
    until,
)
from tests.reliability.rpc_recorder import RecordingRpc
from tests.signer_client.fault_server import FaultServer

pytestmark = pytest.mark.e2e  # a real anvil mining a block a second

FAULTS = [
    "ok", "stall", "die", "slow", "garbage", "wrong_key", "tamper_value", "high_s",
    "flip_parity", "append_byte", "bad_hash", "truncate", "oversize",
]  # fmt: skip
# Replies whose raw bytes are themselves wrong. (``bad_hash`` sends correct bytes with a wrong
# claimed hash: the reply is refused, and the retry signs the very same bytes, deterministically.)
ROUNDS = knob("RELIABILITY_SIGNER_ROUNDS", len(FAULTS))
UNVERIFIED = {"wrong_key", "tamper_value", "high_s", "flip_parity", "append_byte"}


class FaultySigner(FaultServer):
    """``FaultServer`` plus ``slow`` (the right answer, late) and ``garbage`` (a frame whose
    body is not JSON). Keeps the raw bytes of every reply that must never be broadcast."""

    def __init__(self, path: Path, actions: list[str]) -> None:
        super().__init__(path, actions)
        self.bad: list[bytes] = []
        self.faults: dict[str, int] = {}

    def reply(self, message: dict[str, Any], transport: Any) -> None:
        if message["method"] == "hello" or not self.actions:
            super().reply(message, transport)
            return
        action = self.actions[0]
        self.faults[action] = self.faults.get(action, 0) + 1
        if action == "slow":
            self.actions[0] = "ok"
            asyncio.get_running_loop().call_later(0.8, super().reply, message, transport)
            return
        if action == "garbage":
            self.actions.pop(0)
            self.requests += 1
            transport.write((9).to_bytes(4, "big") + b"not json!")
            return
        before = len(self.signed)
        super().reply(message, transport)
        if action in UNVERIFIED and len(self.signed) > before:
            self.bad.append(self.signed[-1])


async def test_signer_faults_never_lose_an_intent_nor_broadcast_an_unverified_tx(
    tmp_path: Path,
) -> None:
    rng = random.Random(seed("signer-faults"))
    sock = tmp_path / "signer.sock"
    values: list[int] = []
    ids: list[str] = []
    answers: dict[str, int] = {}
    async with start_anvil("chain", block_time=1) as node, RecordingRpc(node.http_url) as rpc:
        signer = FaultySigner(sock, [])
        await signer.__aenter__()
        config = service_config(
            tmp_path,
            clients=[("anvil", node.ws_url)],
            rpcs=[("rec", rpc.url)],
            signer_url=signer.url,
        )
        text = config.read_text().replace("[signer]\n", "[signer]\ntimeout_seconds = 0.5\n", 1)
        # The fault signer keeps no audit log (it answers every request as a sign request):
        # with the audit on, signing would wait, rightly, for a log check it can never pass.
        assert "[audit]" not in text
        text += "\n[audit]\nenabled = false\n"
        config.write_text(text)
        try:
            async with (
                running_service(config) as running,
                await BroadcasterClient.connect(running.api_url, token=TOKEN) as api,
            ):

                async def send() -> dict[str, Any]:
                    answer = await send_valued(api, values, ids, 50_000)
                    answers[answer["status"]] = answers.get(answer["status"], 0) + 1
                    assert answer["status"] != "failed", answer
                    return answer

                for i in range(ROUNDS):
                    signer.actions[:] = [
                        FAULTS[i % len(FAULTS)] if i < len(FAULTS) else rng.choice(FAULTS)
                    ]
                    await send()

                # The enclave app dies: no socket at all. An intent arrives meanwhile and waits.
                await signer.__aexit__(None, None, None)
                sock.unlink(missing_ok=True)
                down = await send()
                state = await api.get_intent(down["id"])
                assert state["status"] == "pending", state
                # ... and it comes back (a new process on the same socket path).
                bad, faults = signer.bad, signer.faults
                signer = FaultySigner(sock, [])
                signer.bad, signer.faults = bad, faults
                await signer.__aenter__()

                async def all_included() -> bool:
                    states = [await api.get_intent(i) for i in ids]
                    assert not [s for s in states if s["status"] == "failed"], states
                    return all(s["status"] in ("included", "finalized") for s in states)

                await until(all_included, "every intent included", limit=120, step=0.5)
                signer_errors = running.samples("broadcaster_signer_errors_total")
                assert running.alive()
        finally:
            await signer.__aexit__(None, None, None)
        mined = await assert_exactly_once(node, values)

    dev = DEV_ADDRESS.lower()
    intents = set(values)
    for raw in rpc.raws:
        assert raw not in signer.bad, "a reply that failed verification was broadcast"
        sender = Account.recover_transaction(raw).lower()
        assert sender == dev, f"broadcast a tx signed by {sender}"
        fields = decode_raw(raw).fields
        noop = fields.value == 0 and fields.to.hex() == dev[2:]
        assert noop or fields.value in intents, f"broadcast a tx no intent asked for: {fields}"
    report(
        "signer-faults",
        intents=len(values),
        faults_injected=signer.faults,
        api_first_answers=answers,
        unverified_replies_produced=len(signer.bad),
        unverified_replies_broadcast=sum(raw in rpc.raws for raw in signer.bad),
        raw_txs_broadcast=len(rpc.raws),
        mined=len(mined),
        signer_events=signer_errors,
        intents_pending_while_signer_down=1,
    )
    assert intents <= {int(t["value"], 16) for t in mined.values()}
