"""``SignerClient.sign_auth`` against the real enclave app with an auth key (DESIGN.md 5a): the
``X-Flashbots-Signature`` value, verified against the attested hello; the auth key never signs a
transaction; an enclave without one refuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from enclave.attestor import measure_pcr0
from signer_client import AttestationPolicy, PolicyDenied, SignerClient, UnknownSender
from signer_client.events import EventCounter
from signer_client.flashbots import recover_header
from signer_client.txcodec import keccak
from tests.enclave.running import (
    ALLOWED_TO,
    ANVIL_ADDRESS,
    AUTH_ADDRESS,
    AUTH_KEY,
    POLICY_TOML,
    Enclave,
    running_enclave,
)

BODY = b'{"jsonrpc":"2.0","id":3,"method":"eth_sendBundle","params":[{"txs":["0x01"]}]}'


@pytest.fixture(scope="module")
def auth_enclave(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Enclave]:
    workdir = tmp_path_factory.mktemp("enclave-auth")
    config = POLICY_TOML + f'auth_address = "{AUTH_ADDRESS}"\n'
    with running_enclave(
        workdir, f"unix://{workdir}/e.sock", config=config, extra_keys=(AUTH_KEY,)
    ) as running:
        yield running


def attested(enclave: Enclave) -> AttestationPolicy:
    return AttestationPolicy((enclave.pki_dir / "root.pem").read_bytes(), measure_pcr0())


async def test_sign_auth_returns_the_flashbots_header_of_the_attested_auth_key(
    auth_enclave: Enclave,
) -> None:
    async with SignerClient(auth_enclave.url, attestation=attested(auth_enclave)) as client:
        assert client.info is not None and client.info.auth_address == AUTH_ADDRESS
        assert AUTH_ADDRESS not in client.info.addresses
        value = await client.sign_auth(BODY)
    reference = Account.sign_message(encode_defunct(text="0x" + keccak(BODY).hex()), AUTH_KEY)
    assert value == f"{AUTH_ADDRESS}:0x{bytes(reference.signature).hex()}"
    assert recover_header(value, BODY) == bytes.fromhex(AUTH_ADDRESS[2:])
    entries = [orjson.loads(line) for line in auth_enclave.audit_log.read_bytes().splitlines()]
    assert any(
        e["kind"] == "auth" and e["data"]["body_hash"] == "0x" + keccak(BODY).hex() for e in entries
    )


async def test_the_auth_key_signs_no_transaction(auth_enclave: Enclave) -> None:
    tx = {
        "type": 2,
        "chainId": 31337,
        "nonce": 0,
        "to": ALLOWED_TO,
        "value": 1,
        "data": b"",
        "gas": 21000,
        "maxFeePerGas": 10**10,
        "maxPriorityFeePerGas": 10**9,
        "accessList": [],
    }
    async with SignerClient(auth_enclave.url) as client:
        with pytest.raises(UnknownSender):
            await client.sign_transaction(tx, AUTH_ADDRESS)
        signed = await client.sign_transaction(tx, ANVIL_ADDRESS)  # the accounts still sign
        assert signed.sender == ANVIL_ADDRESS


async def test_an_enclave_without_an_auth_key_refuses_sign_auth(tmp_path: Path) -> None:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as plain:
        async with SignerClient(plain.url) as client:
            assert client.info is not None and client.info.auth_address is None
            with pytest.raises(PolicyDenied, match="no auth key"):
                await client.sign_auth(BODY)


async def test_sign_auth_without_an_auth_key_counts_no_auth_key_not_a_policy_denial(
    tmp_path: Path,
) -> None:
    """A deployment with auth = "flashbots" rpcs and an enclave with no auth key: each request
    fails, counted as ``no_auth_key`` (signer_errors_total; the SignerErrors alert), never as a
    ``policy_denied`` (which tells the operator an intent broke the policy); once hello says so,
    no round trip to the enclave."""
    events = EventCounter()
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as plain:
        async with SignerClient(plain.url, on_event=events) as client:
            for _ in range(2):
                with pytest.raises(PolicyDenied, match="no auth key"):
                    await client.sign_auth(BODY)
        entries = [orjson.loads(line) for line in plain.audit_log.read_bytes().splitlines()]
    assert events["no_auth_key"] == 2
    assert events["policy_denied"] == 0
    assert not any(e["kind"] == "deny" for e in entries)  # refused before the enclave
