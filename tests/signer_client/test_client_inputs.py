"""What sign_transaction accepts: dicts, TxFields (the faster entry point), any sender spelling."""

from __future__ import annotations

from pathlib import Path

import pytest

from signer_client import SignerClient, TxFieldError, tx_from_dict
from signer_client.signing import LocalKey
from tests.enclave.running import ANVIL_ADDRESS, ANVIL_KEY
from tests.signer_client.fault_server import FaultServer
from tests.signer_client.test_faults import TX


async def test_txfields_and_dicts_and_every_sender_spelling_sign_the_same_bytes(
    tmp_path: Path,
) -> None:
    fields = tx_from_dict(TX)
    expected = LocalKey(ANVIL_KEY).sign(fields)
    sender_bytes = bytes.fromhex(ANVIL_ADDRESS[2:])
    async with FaultServer(tmp_path / "s.sock", []) as server, SignerClient(server.url) as client:
        for tx in (TX, fields):
            for sender in (ANVIL_ADDRESS, ANVIL_ADDRESS.lower(), sender_bytes,
                           bytearray(sender_bytes)):  # fmt: skip
                signed = await client.sign_transaction(tx, sender)
                assert signed == expected


async def test_a_hand_built_txfields_that_cannot_be_encoded_is_refused_before_sending(
    tmp_path: Path,
) -> None:
    bad = tx_from_dict(TX)._replace(value=-1)
    async with FaultServer(tmp_path / "s.sock", []) as server, SignerClient(server.url) as client:
        with pytest.raises(TxFieldError):
            await client.sign_transaction(bad, ANVIL_ADDRESS)
        with pytest.raises(TxFieldError):
            await client.sign_transaction(tx_from_dict(TX)._replace(gas="21000"), ANVIL_ADDRESS)  # type: ignore[arg-type]
    assert server.requests == 0
