"""Review of session 8's verification cuts (``new_signed``): a relay on the host in front of the
real enclave app (real policy, real unix socket, no attested channel) tampers with the request or
the genuine reply; the client must refuse every tampered reply, name the failed check and count it
(``reply_invalid``), hand nothing out (``signed`` stays 0), and pass the next honest one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from signer_client import EventCounter, ReplyVerificationError, SignerClient
from signer_client.framing import FrameDecoder, parse_message
from signer_client.payload import decode_payload
from signer_client.txcodec import SECP256K1_N, TxFields, decode_raw, encode_signed, signing_payload
from tests.enclave.running import ALLOWED_TO, ANVIL_ADDRESS, OTHER_ADDRESS, running_enclave
from tests.signer_client.test_attacks_pinning import Relay

OTHER = bytes.fromhex(OTHER_ADDRESS[2:])


def tx(tx_type: int, nonce: int) -> dict[str, Any]:
    base: dict[str, Any] = {"type": tx_type, "chainId": 31337, "nonce": nonce, "to": ALLOWED_TO,
                            "value": 12345, "data": b"\x01\x02", "gas": 50_000}  # fmt: skip
    if tx_type == 2:
        return {**base, "maxFeePerGas": 30 * 10**9, "maxPriorityFeePerGas": 10**9}
    return {**base, "gasPrice": 30 * 10**9}


class TamperingRelay(Relay):
    """``Relay`` that may also rewrite the request (``mutate``) before the enclave sees it."""

    def __init__(self, upstream: str, path: str) -> None:
        super().__init__(upstream, path, rewrite=self._down_rewrite)
        self.mutate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.reply: Callable[[dict[str, Any]], dict[str, Any]] | None = None
        self.last_raw: str | None = None  # the previous genuine raw, for the replay attack

    async def _up(self, reader: Any, writer: Any, up: Any) -> None:
        decoder = FrameDecoder()
        while data := await reader.read(65536):
            for body in decoder.feed(data):
                message = parse_message(body)
                if message.get("method") == "sign_transaction" and self.mutate is not None:
                    body = orjson.dumps(self.mutate(message))
                up.write(len(body).to_bytes(4, "big") + body)

    def _down_rewrite(self, body: bytes) -> bytes:
        reply = orjson.loads(body)
        result = reply.get("result")
        if not isinstance(result, dict) or "raw" not in result:
            return body
        genuine = result["raw"]
        if self.reply is not None:
            reply = self.reply(reply)
        self.last_raw = genuine
        return orjson.dumps(reply)


def _fields(message: dict[str, Any]) -> TxFields:
    return decode_payload(bytes.fromhex(message["params"]["payload"][2:]))[0]


def _with_payload(message: dict[str, Any], f: TxFields) -> dict[str, Any]:
    params = {**message["params"], "payload": "0x" + signing_payload(f).hex()}
    return {**message, "params": params}


def _as_type_1(f: TxFields) -> TxFields:
    """The same intent as an EIP-2930 transaction (type 0 and 2 requests alike)."""
    price = f.gas_price if f.gas_price is not None else f.max_fee_per_gas
    return f._replace(type=1, gas_price=price, max_fee_per_gas=None, max_priority_fee_per_gas=None)


def _resign(reply: dict[str, Any], change: Callable[[int, int, int], tuple[int, int, int]]) -> Any:
    raw = bytes.fromhex(reply["result"]["raw"][2:])
    d = decode_raw(raw)
    y, r, s = change(d.y_parity, d.r, d.s)
    forged = encode_signed(d.fields, y, r.to_bytes(32, "big"), s.to_bytes(32, "big"))
    return {**reply, "result": {**reply["result"], "raw": "0x" + forged.hex()}}


# name -> (request mutation, reply rewrite, the checks it may be refused with)
ATTACKS: dict[str, tuple[Any, Any, set[str]]] = {
    "high_s": (None, lambda rep: _resign(rep, lambda y, r, s: (1 - y, r, SECP256K1_N - s)),
               {"low_s"}),
    "s_zero": (None, lambda rep: _resign(rep, lambda y, r, s: (y, r, 0)), {"low_s"}),
    "r_zero": (None, lambda rep: _resign(rep, lambda y, r, s: (y, 0, s)), {"signature"}),
    "r_is_n": (None, lambda rep: _resign(rep, lambda y, r, s: (y, SECP256K1_N, s)), {"signature"}),
    "wrong_sig": (None, lambda rep: _resign(rep, lambda y, r, s: (y, r ^ 1, s)),
                  {"sender", "signature"}),
    "flip_parity": (None, lambda rep: _resign(rep, lambda y, r, s: (1 - y, r, s)), {"sender"}),
    "r_s_swapped": (None, lambda rep: _resign(rep, lambda y, r, s: (y, s, r)),
                    {"sender", "low_s", "signature"}),
    "wrong_sender": (lambda m: {**m, "params": {**m["params"], "sender": OTHER_ADDRESS.lower()}},
                     None, {"sender"}),
    "swapped_to": (lambda m: _with_payload(m, _fields(m)._replace(to=OTHER)), None, {"field:to"}),
    "swapped_value": (lambda m: _with_payload(m, _fields(m)._replace(value=1)), None,
                      {"field:value"}),
    "swapped_data": (lambda m: _with_payload(m, _fields(m)._replace(data=b"")), None,
                     {"field:data"}),
    "swapped_nonce": (lambda m: _with_payload(m, _fields(m)._replace(nonce=99)), None,
                      {"field:nonce"}),
    "swapped_type": (lambda m: _with_payload(m, _as_type_1(_fields(m))), None, {"field:type"}),
    "wrong_chain_id": (lambda m: _with_payload(m, _fields(m)._replace(chain_id=1)), None,
                       {"field:chain_id"}),
    "hash_mismatch": (None, lambda rep: {**rep, "result": {**rep["result"],
                                                         "hash": "0x" + "00" * 32}}, {"hash"}),
    "hash_not_hex": (None, lambda rep: {**rep, "result": {**rep["result"], "hash": "0xzz"}},
                     {"format"}),
    "raw_missing": (None, lambda rep: {**rep, "result": {}}, {"format"}),
    "appended_byte": (None, lambda rep: {**rep, "result": {"raw": rep["result"]["raw"] + "00"}},
                      {"decode"}),
}  # fmt: skip


@pytest.mark.parametrize("tx_type", [0, 2], ids=["legacy", "1559"])
async def test_every_tampered_reply_from_the_real_enclave_is_refused_named_and_counted(
    tmp_path: Path, tx_type: int
) -> None:
    with running_enclave(tmp_path / "e", f"unix://{tmp_path}/e.sock") as enclave:
        relay = TamperingRelay(enclave.url, str(tmp_path / "relay.sock"))
        url = await relay.start()
        events = EventCounter()
        try:
            async with SignerClient(url, on_event=events, timeout=5) as client:
                nonce = 0
                for name, (mutate, reply, checks) in ATTACKS.items():
                    relay.mutate, relay.reply = mutate, reply
                    with pytest.raises(ReplyVerificationError) as info:
                        await client.sign_transaction(tx(tx_type, nonce), ANVIL_ADDRESS)
                    assert info.value.check in checks, (name, info.value.check)
                    relay.mutate = relay.reply = None
                    # (a rewritten request got the enclave to sign at this nonce: the next one)
                    honest = await client.sign_transaction(tx(tx_type, nonce + 1), ANVIL_ADDRESS)
                    assert honest.nonce == nonce + 1 and honest.raw_hex == relay.last_raw
                    nonce += 2
                # a genuine reply to an earlier request, replayed for this one
                previous = relay.last_raw
                relay.reply = lambda rep: {**rep, "result": {"raw": previous}}
                with pytest.raises(ReplyVerificationError) as info:
                    await client.sign_transaction(tx(tx_type, nonce), ANVIL_ADDRESS)
                assert info.value.check == "field:nonce"
        finally:
            await relay.stop()
    assert events["reply_invalid"] == len(ATTACKS) + 1
    assert events["signed"] == len(ATTACKS)  # only the honest ones
