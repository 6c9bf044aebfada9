"""The client against a compromised parent instance, written as the attacker (DESIGN.md section 6a):
a relay that passes hello and attestation to the genuine enclave and signs the rest itself, an
enclave run with a loosened policy, a signer that holds other accounts or runs in another mode.
The enclave is the real app over a real unix socket; the relay is a real socket in between."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from enclave.attestor import measure_pcr0
from enclave.config import load_config
from signer_client import (
    AttestationError,
    AttestationPolicy,
    EventCounter,
    HelloMismatch,
    PolicyDenied,
    ReplyVerificationError,
    SignerClient,
    SignerPins,
)
from signer_client.framing import FrameDecoder, encode_frame, parse_message
from signer_client.payload import decode_payload
from signer_client.signing import LocalKey
from signer_client.txcodec import encode_signed, keccak
from tests.enclave.running import ANVIL_ADDRESS, ANVIL_KEY, POLICY_TOML, Enclave, running_enclave

OUTSIDE = "0x000000000000000000000000000000000000dEaD"  # not in the enclave's allowlist


def big_tx() -> dict[str, Any]:
    return {
        "type": 2, "chainId": 31337, "nonce": 0, "to": OUTSIDE, "value": 10**24, "data": b"",
        "gas": 21_000, "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 10**8,
    }  # fmt: skip


def attestation(enclave: Enclave) -> AttestationPolicy:
    return AttestationPolicy((enclave.pki_dir / "root.pem").read_bytes(), measure_pcr0())


def policy_hash(config: str, tmp_path: Path) -> str:
    path = tmp_path / "policy.toml"
    path.write_text(config)
    return load_config(str(path)).policy.policy_hash()


class Relay:
    """The attacker on the parent: a unix socket in front of the genuine enclave, frame by frame.
    ``answer(message)`` may answer a request itself (returns a reply) or let it through (None);
    ``rewrite(reply)`` may change what the enclave answered."""

    def __init__(
        self,
        upstream: str,
        path: str,
        answer: Callable[[dict[str, Any]], dict[str, Any] | None] = lambda m: None,
        rewrite: Callable[[bytes], bytes] = lambda body: body,
    ) -> None:
        self.upstream = upstream.removeprefix("unix://")
        self.path = path
        self.answer = answer
        self.rewrite = rewrite
        self.server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> str:
        self.server = await asyncio.start_unix_server(self._accept, self.path)
        return f"unix://{self.path}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(self.upstream)
        self._writers += [writer, up_writer]
        self._tasks += [
            asyncio.ensure_future(self._up(reader, writer, up_writer)),
            asyncio.ensure_future(self._down(up_reader, writer)),
        ]

    async def _up(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, up: asyncio.StreamWriter
    ) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for body in decoder.feed(data):
                forged = self.answer(parse_message(body))
                if forged is not None:
                    writer.write(encode_frame(forged))
                else:
                    up.write(len(body).to_bytes(4, "big") + body)

    async def _down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for body in decoder.feed(data):
                body = self.rewrite(body)
                writer.write(len(body).to_bytes(4, "big") + body)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class KeyThief:
    """Answers ``sign_transaction`` itself, signed with the account key it stole from the
    parent's disk, whatever the enclave's policy says (10^24 wei outside the allowlist)."""

    def __init__(self) -> None:
        self.key = LocalKey(ANVIL_KEY)
        self.forged = 0

    def __call__(self, message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("method") != "sign_transaction":
            return None  # hello and attestation go to the genuine enclave
        payload = bytes.fromhex(message["params"]["payload"][2:])
        fields, body = decode_payload(payload)
        sig = self.key.sign_hash(keccak(payload))
        raw = encode_signed(fields, sig[64], sig[:32], sig[32:64], body)
        self.forged += 1
        return {"id": message["id"], "result": {"raw": "0x" + raw.hex()}}


async def test_a_relay_that_signs_by_itself_after_a_genuine_attestation_is_refused(
    tmp_path: Path,
) -> None:
    thief = KeyThief()
    with running_enclave(tmp_path / "e", f"unix://{tmp_path}/e.sock") as enclave:
        relay = Relay(enclave.url, str(tmp_path / "relay.sock"), answer=thief)
        url = await relay.start()
        events = EventCounter()
        try:
            client = await SignerClient.connect(
                url, attestation=attestation(enclave), on_event=events, timeout=5
            )
            try:
                assert client.attested is not None  # the genuine enclave attested through it
                with pytest.raises(ReplyVerificationError) as info:
                    await client.sign_transaction(big_tx(), ANVIL_ADDRESS)
                assert info.value.check == "channel"
            finally:
                await client.close()
        finally:
            await relay.stop()
    assert thief.forged == 1  # the relay did answer, with a valid signature by the key...
    assert events["channel_invalid"] == 1  # ... and the client refused it: no channel MAC
    assert events["signed"] == 0


async def test_an_honest_relay_in_between_works_and_the_policy_holds(tmp_path: Path) -> None:
    with running_enclave(tmp_path / "e", f"unix://{tmp_path}/e.sock") as enclave:
        relay = Relay(enclave.url, str(tmp_path / "relay.sock"))  # e.g. a vsock-proxy
        url = await relay.start()
        try:
            async with SignerClient(url, attestation=attestation(enclave), timeout=5) as client:
                ok = {**big_tx(), "to": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "value": 1}
                signed = await client.sign_transaction(ok, ANVIL_ADDRESS)
                assert signed.nonce == 0
                with pytest.raises(PolicyDenied):  # the genuine enclave's policy still decides
                    await client.sign_transaction({**big_tx(), "nonce": 1}, ANVIL_ADDRESS)
                head = await client.audit_head()  # signed by the attested key, checked
                assert head["seq"] >= 1
        finally:
            await relay.stop()


async def test_an_enclave_run_with_a_loosened_policy_is_refused_naming_the_field(
    tmp_path: Path,
) -> None:
    pinned = policy_hash(POLICY_TOML, tmp_path)
    loosened = POLICY_TOML.replace(  # 1000 ETH cap -> 10^12 ETH
        'max_value = "1000000000000000000000"', 'max_value = "1000000000000000000000000000000"'
    )
    assert policy_hash(loosened, tmp_path) != pinned
    with running_enclave(tmp_path / "e", f"unix://{tmp_path}/e.sock", config=loosened) as enclave:
        events = EventCounter()
        pins = SignerPins(mode="dev", policy_hash=pinned, accounts=(ANVIL_ADDRESS,))
        with pytest.raises(HelloMismatch) as info:
            await SignerClient.connect(
                enclave.url, attestation=attestation(enclave), pins=pins, on_event=events
            )
        assert info.value.field == "policy_hash"
        assert events["hello_mismatch"] == 1
        # The genuine policy passes the same pins.
    with running_enclave(tmp_path / "g", f"unix://{tmp_path}/g.sock") as genuine:
        pins = SignerPins(mode="dev", policy_hash=pinned, accounts=(ANVIL_ADDRESS,),
                          chain_ids=(31337,))  # fmt: skip
        async with SignerClient(genuine.url, attestation=attestation(genuine), pins=pins) as c:
            assert c.info is not None and c.info.policy_hash == pinned


@pytest.mark.parametrize(
    ("pins", "field"),
    [
        (SignerPins(mode="nitro"), "mode"),
        (SignerPins(accounts=("0x000000000000000000000000000000000000bEEF",)), "accounts"),
        (SignerPins(chain_ids=(5,)), "chain_ids"),
    ],
)
async def test_a_signer_that_is_not_the_pinned_one_is_refused_before_first_use(
    tmp_path: Path, pins: SignerPins, field: str
) -> None:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        with pytest.raises(HelloMismatch) as info:
            await SignerClient.connect(enclave.url, pins=pins)
        assert info.value.field == field
        assert field in str(info.value)


async def test_a_relay_that_rewrites_hello_to_match_the_pins_fails_the_attestation(
    tmp_path: Path,
) -> None:
    """The relay reports the pinned policy hash while the enclave behind it runs another one:
    the document's user_data commits to the enclave's real hello."""
    pinned = policy_hash(POLICY_TOML, tmp_path)
    loosened = POLICY_TOML.replace("max_gas = 1000000", "max_gas = 30000000")
    with running_enclave(tmp_path / "e", f"unix://{tmp_path}/e.sock", config=loosened) as enclave:

        def claim_pinned(body: bytes) -> bytes:
            message = orjson.loads(body)
            result = message.get("result")
            if isinstance(result, dict) and "policy_hash" in result:
                result["policy_hash"] = pinned
            return orjson.dumps(message)

        relay = Relay(enclave.url, str(tmp_path / "r.sock"), rewrite=claim_pinned)
        url = await relay.start()
        try:
            with pytest.raises(AttestationError) as info:
                await SignerClient.connect(
                    url, attestation=attestation(enclave), pins=SignerPins(policy_hash=pinned)
                )
            assert info.value.check == "user_data"
        finally:
            await relay.stop()


async def test_a_relay_that_replays_a_genuine_reply_from_an_earlier_connection_is_refused(
    tmp_path: Path,
) -> None:
    """The relay keeps a genuine, MACed ``sign_transaction`` reply from one connection and, on the
    next (a fresh client: the same request id comes round again), answers with it instead of
    asking the enclave. The MAC key is agreed per connection (fresh client key and nonce), so the
    old MAC is not the new channel's; and an id rewritten to fit breaks the MAC anyway."""
    ok = {**big_tx(), "to": "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", "value": 1}
    kept: list[bytes] = []

    def keep(body: bytes) -> bytes:
        if b'"raw"' in body:
            kept.append(body)
        return body

    with running_enclave(tmp_path / "e", f"unix://{tmp_path}/e.sock") as enclave:
        relay = Relay(enclave.url, str(tmp_path / "r.sock"), rewrite=keep)
        url = await relay.start()
        try:
            async with SignerClient(url, attestation=attestation(enclave), timeout=5) as client:
                await client.sign_transaction(ok, ANVIL_ADDRESS)
        finally:
            await relay.stop()
        assert len(kept) == 1
        old = kept[0]
        for variant in ("same id", "id rewritten"):

            def answer(message: dict[str, Any], variant: str = variant) -> dict[str, Any] | None:
                if message.get("method") != "sign_transaction":
                    return None
                reply = orjson.loads(old)
                if variant == "id rewritten" or reply["id"] != message["id"]:
                    reply["id"] = message["id"]
                return reply  # the genuine raw and its genuine (old channel's) MAC

            relay = Relay(enclave.url, str(tmp_path / "r.sock"), answer=answer)
            url = await relay.start()
            events = EventCounter()
            try:
                async with SignerClient(
                    url, attestation=attestation(enclave), on_event=events, timeout=5
                ) as client:
                    with pytest.raises(ReplyVerificationError) as info:
                        await client.sign_transaction(ok, ANVIL_ADDRESS)
                    assert info.value.check == "channel", variant
            finally:
                await relay.stop()
            assert events["channel_invalid"] == 1 and events["signed"] == 0, variant
