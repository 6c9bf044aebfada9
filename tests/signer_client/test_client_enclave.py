"""The client talks to the real enclave app process over a unix socket and over TCP."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from eth_account import Account

from enclave.attestor import measure_pcr0
from signer_client import (
    AttestationError,
    AttestationPolicy,
    EventCounter,
    PolicyDenied,
    SignerClient,
    UnknownSender,
)
from tests.enclave.running import (
    ALLOWED_TO,
    ANVIL_ADDRESS,
    ANVIL_KEY,
    OTHER_ADDRESS,
    OTHER_KEY,
    Enclave,
    start_enclave,
)

_nonces = itertools.count(1000)


def tx(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": 2,
        "chainId": 31337,
        "nonce": next(_nonces),
        "to": ALLOWED_TO,
        "value": 10**15,
        "data": b"",
        "gas": 21000,
        "maxFeePerGas": 30 * 10**9,
        "maxPriorityFeePerGas": 2 * 10**9,
        "accessList": [],
    }
    base.update(overrides)
    return base


async def test_a_signed_transaction_is_verified_and_byte_identical_to_eth_account(
    enclave: Enclave,
) -> None:
    legacy = {
        k: v
        for k, v in tx().items()
        if k not in ("type", "maxFeePerGas", "maxPriorityFeePerGas", "accessList")
    }
    access_list = [{"address": ALLOWED_TO, "storageKeys": ["0x" + "11" * 32]}]
    requests = [
        tx(accessList=access_list, data=b"\x01" * 100),
        {**legacy, "gasPrice": 10**9},
        {**legacy, "type": 1, "gasPrice": 10**9, "accessList": access_list, "nonce": next(_nonces)},
    ]
    async with await SignerClient.connect(enclave.url) as client:
        for request in requests:
            signed = await client.sign_transaction(request, ANVIL_ADDRESS)
            expected = Account.sign_transaction(request, ANVIL_KEY)
            assert signed.raw == bytes(expected.raw_transaction)
            assert signed.hash == bytes(expected.hash)
            assert signed.sender == ANVIL_ADDRESS
            assert signed.nonce == request["nonce"]


async def test_hello_reports_addresses_chain_ids_policy_hash_mode_and_version(
    enclave: Enclave,
) -> None:
    async with SignerClient(enclave.url) as client:
        info = client.info
        assert info is not None
        assert info.addresses == (ANVIL_ADDRESS, OTHER_ADDRESS)
        assert info.chain_ids == (31337, 1)
        assert info.mode == "dev"
        assert info.protocol == 2
        assert info.policy_hash.startswith("0x") and len(info.policy_hash) == 66


async def test_pipelined_concurrent_requests_all_return_matched_by_id(enclave: Enclave) -> None:
    async with SignerClient(enclave.url, max_in_flight=32) as client:
        requests = [(tx(value=i), ANVIL_ADDRESS if i % 2 else OTHER_ADDRESS) for i in range(200)]
        results = await asyncio.gather(*(client.sign_transaction(t, s) for t, s in requests))
    for (request, sender), signed in zip(requests, results, strict=True):
        key = ANVIL_KEY if sender == ANVIL_ADDRESS else OTHER_KEY
        assert signed.raw == bytes(Account.sign_transaction(request, key).raw_transaction)


@pytest.mark.parametrize(
    ("overrides", "rule"),
    [
        ({"chainId": 5}, "chain_id"),
        ({"to": "0x000000000000000000000000000000000000dEaD"}, "to_not_allowed"),
        ({"to": None}, "contract_creation"),
        ({"value": 10**22}, "value_cap"),
        ({"gas": 10**7}, "gas_cap"),
        ({"maxFeePerGas": 10**13}, "fee_cap"),
        ({"maxPriorityFeePerGas": 10**11}, "tip_cap"),
    ],
)
async def test_policy_denials_carry_their_rule_and_reason(
    enclave: Enclave, overrides: dict[str, Any], rule: str
) -> None:
    events = EventCounter()
    async with SignerClient(enclave.url, on_event=events) as client:
        with pytest.raises(PolicyDenied) as info:
            await client.sign_transaction(tx(**overrides), ANVIL_ADDRESS)
    assert info.value.code == "policy_denied"
    assert info.value.rule == rule
    assert info.value.reason
    assert events["policy_denied"] == 1


async def test_a_self_transfer_is_allowed_even_outside_the_allowlist(enclave: Enclave) -> None:
    async with SignerClient(enclave.url) as client:
        signed = await client.sign_transaction(tx(to=ANVIL_ADDRESS, value=0), ANVIL_ADDRESS)
    assert signed.sender == ANVIL_ADDRESS


async def test_a_different_payload_at_a_signed_nonce_needs_a_ten_percent_fee_bump(
    enclave: Enclave,
) -> None:
    first = tx()
    async with SignerClient(enclave.url) as client:
        original = await client.sign_transaction(first, ANVIL_ADDRESS)
        again = await client.sign_transaction(first, ANVIL_ADDRESS)
        assert again.raw == original.raw  # identical payload: identical bytes, not a new tx
        with pytest.raises(PolicyDenied) as info:
            await client.sign_transaction({**first, "value": 1}, ANVIL_ADDRESS)
        assert info.value.rule == "nonce_conflict"
        with pytest.raises(PolicyDenied):  # only one fee field bumped
            await client.sign_transaction({**first, "maxFeePerGas": 33 * 10**9}, ANVIL_ADDRESS)
        bumped = {**first, "maxFeePerGas": 33 * 10**9, "maxPriorityFeePerGas": 22 * 10**8}
        replacement = await client.sign_transaction(bumped, ANVIL_ADDRESS)
        assert replacement.nonce == original.nonce and replacement.raw != original.raw


async def test_an_unknown_sender_is_refused(enclave: Enclave) -> None:
    async with SignerClient(enclave.url) as client:
        with pytest.raises(UnknownSender):
            await client.sign_transaction(tx(), "0x000000000000000000000000000000000000dEaD")


async def test_the_attestation_is_verified_before_first_use(enclave: Enclave) -> None:
    policy = AttestationPolicy((enclave.pki_dir / "root.pem").read_bytes(), measure_pcr0())
    events = EventCounter()
    async with SignerClient(enclave.url, attestation=policy, on_event=events) as client:
        assert client.attested is not None
        assert client.attested.pcrs[0] == measure_pcr0()
        assert client.info is not None
        assert "0x" + client.attested.public_key.hex() == client.info.log_public_key
        await client.sign_transaction(tx(), ANVIL_ADDRESS)
    assert events["attested"] == 2  # one per lane (ordinary, urgent)


async def test_a_signer_attested_under_another_root_is_refused(
    enclave: Enclave, tmp_path: Any
) -> None:
    from enclave.attestor import create_dev_pki

    other_root, _ = create_dev_pki(tmp_path / "other")
    policy = AttestationPolicy(other_root.read_bytes(), measure_pcr0())
    with pytest.raises(AttestationError) as info:
        await SignerClient.connect(enclave.url, attestation=policy)
    assert info.value.check == "root"


async def test_a_signer_running_another_image_is_refused(enclave: Enclave) -> None:
    policy = AttestationPolicy((enclave.pki_dir / "root.pem").read_bytes(), b"\x01" * 48)
    events = EventCounter()
    with pytest.raises(AttestationError) as info:
        await SignerClient.connect(enclave.url, attestation=policy, on_event=events)
    assert info.value.check == "pcr0"
    assert events["attestation_failed"] == 1


async def test_a_restarted_enclave_is_reconnected_and_keeps_nonce_protection(
    fresh_enclave: Enclave, tmp_path: Any
) -> None:
    events = EventCounter()
    first = tx()
    async with SignerClient(fresh_enclave.url, timeout=10, on_event=events) as client:
        original = await client.sign_transaction(first, ANVIL_ADDRESS)
        fresh_enclave.process.kill()  # dies hard, no goodbye
        fresh_enclave.process.wait()
        restarted = start_enclave(tmp_path, fresh_enclave.url)
        try:
            assert (await client.sign_transaction(first, ANVIL_ADDRESS)).raw == original.raw
            with pytest.raises(PolicyDenied) as info:  # the audit log taught it the nonce
                await client.sign_transaction({**first, "value": 7}, ANVIL_ADDRESS)
            assert info.value.rule == "nonce_conflict"
        finally:
            restarted.stop()
    assert events["connected"] == 4  # both lanes at first, both again (the first request)
    assert events["disconnected"] >= 1


async def test_a_busy_polling_enclave_serves_the_same_signatures(tmp_path: Any) -> None:
    enclave = start_enclave(tmp_path, f"unix://{tmp_path}/e.sock", extra=["--busy-poll"])
    try:
        request = tx()
        async with SignerClient(enclave.url) as client:
            signed = await client.sign_transaction(request, ANVIL_ADDRESS)
        assert signed.raw == bytes(Account.sign_transaction(request, ANVIL_KEY).raw_transaction)
    finally:
        enclave.stop()
    assert enclave.process.returncode == 0  # SIGTERM still stops it cleanly


async def test_busy_poll_keeps_the_loop_turning_until_stopped() -> None:
    from enclave.server import BusyPoll

    loop = asyncio.get_running_loop()
    poller = BusyPoll(loop)
    poller.start()
    for _ in range(5):
        await asyncio.sleep(0)
        assert poller._handle is not None and not poller._handle.cancelled()  # re-armed each turn
    handle = poller._handle
    poller.stop()
    poller.stop()  # idempotent
    assert handle.cancelled() and poller._handle is None
