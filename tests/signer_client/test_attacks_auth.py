"""The auth key (DESIGN.md 5a) against a compromised parent instance, written as the attacker:
a relay in front of the genuine, attested enclave that swaps ``hello``'s ``auth_address`` for a key
of its own (so its bundles would carry *its* reputation, or so it could forge headers), or that
answers ``sign_auth`` itself. The enclave is the real app with its real policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from signer_client import AttestationError, ReplyVerificationError, SignerClient
from signer_client.flashbots import auth_signing_hash
from signer_client.signing import LocalKey
from tests.enclave.running import AUTH_ADDRESS, AUTH_KEY, POLICY_TOML, running_enclave
from tests.signer_client.test_attacks_pinning import Relay, attestation

BODY = b'{"jsonrpc":"2.0","id":9,"method":"eth_sendBundle","params":[{"txs":["0x02"]}]}'
CONFIG = POLICY_TOML + f'auth_address = "{AUTH_ADDRESS}"\n'
THIEF = LocalKey("0x" + "5a" * 32)  # a key the parent holds


async def test_a_relay_that_swaps_the_hellos_auth_address_fails_the_attestation(
    tmp_path: Path,
) -> None:
    def swap(body: bytes) -> bytes:
        message = orjson.loads(body)
        result = message.get("result")
        if isinstance(result, dict) and "auth_address" in result:
            result["auth_address"] = THIEF.address
        return orjson.dumps(message)

    with running_enclave(
        tmp_path / "e", f"unix://{tmp_path}/e.sock", config=CONFIG, extra_keys=(AUTH_KEY,)
    ) as enclave:
        relay = Relay(enclave.url, str(tmp_path / "r.sock"), rewrite=swap)
        url = await relay.start()
        try:
            with pytest.raises(AttestationError) as info:
                await SignerClient.connect(url, attestation=attestation(enclave))
            assert info.value.check == "user_data"
        finally:
            await relay.stop()


async def test_a_relay_that_adds_an_auth_address_to_a_keyless_enclave_fails_it_too(
    tmp_path: Path,
) -> None:
    """An enclave without an auth key; the relay claims one it holds: hello binds the field
    when it is there, so adding it breaks the attestation as removing or swapping it does."""

    def add(body: bytes) -> bytes:
        message = orjson.loads(body)
        result = message.get("result")
        if isinstance(result, dict) and "policy_hash" in result:
            result["auth_address"] = THIEF.address
        return orjson.dumps(message)

    with running_enclave(tmp_path / "e", f"unix://{tmp_path}/e.sock") as enclave:
        relay = Relay(enclave.url, str(tmp_path / "r.sock"), rewrite=add)
        url = await relay.start()
        try:
            with pytest.raises(AttestationError) as info:
                await SignerClient.connect(url, attestation=attestation(enclave))
            assert info.value.check == "user_data"
        finally:
            await relay.stop()


async def test_a_relay_that_answers_sign_auth_itself_is_refused(tmp_path: Path) -> None:
    """The relay signs the body hash with the genuine auth key's *shape* but its own key, and
    names the genuine address: no channel MAC, and it would not recover to the attested key."""
    forged = 0

    def answer(message: dict[str, Any]) -> dict[str, Any] | None:
        nonlocal forged
        if message.get("method") != "sign_auth":
            return None
        forged += 1
        digest = bytes.fromhex(message["params"]["body_hash"][2:])
        sig = THIEF.sign_hash(auth_signing_hash(digest))
        return {
            "id": message["id"],
            "result": {"address": AUTH_ADDRESS, "signature": "0x" + sig.hex()},
        }

    with running_enclave(
        tmp_path / "e", f"unix://{tmp_path}/e.sock", config=CONFIG, extra_keys=(AUTH_KEY,)
    ) as enclave:
        relay = Relay(enclave.url, str(tmp_path / "r.sock"), answer=answer)
        url = await relay.start()
        try:
            async with SignerClient(url, attestation=attestation(enclave), timeout=5) as client:
                assert client.info is not None and client.info.auth_address == AUTH_ADDRESS
                with pytest.raises(ReplyVerificationError):
                    await client.sign_auth(BODY)
        finally:
            await relay.stop()
    assert forged == 1


async def test_without_attestation_a_forged_sign_auth_reply_still_must_recover_to_hello(
    tmp_path: Path,
) -> None:
    """Dev mode (no channel MAC): the relay's signature by another key naming the hello's auth
    address is refused by the recovery check alone."""

    def answer(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("method") != "sign_auth":
            return None
        digest = bytes.fromhex(message["params"]["body_hash"][2:])
        sig = THIEF.sign_hash(auth_signing_hash(digest))
        return {
            "id": message["id"],
            "result": {"address": AUTH_ADDRESS, "signature": "0x" + sig.hex()},
        }

    with running_enclave(
        tmp_path / "e", f"unix://{tmp_path}/e.sock", config=CONFIG, extra_keys=(AUTH_KEY,)
    ) as enclave:
        relay = Relay(enclave.url, str(tmp_path / "r.sock"), answer=answer)
        url = await relay.start()
        try:
            async with SignerClient(url, timeout=5) as client:
                with pytest.raises(ReplyVerificationError, match="signed by"):
                    await client.sign_auth(BODY)
        finally:
            await relay.stop()
