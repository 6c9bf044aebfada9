"""The ``Signer`` seam and an in-process fake for other packages' unit tests.

Code that needs signatures should depend on :class:`Signer` (a Protocol) and receive either a
connected :class:`~signer_client.SignerClient` or a :class:`FakeSigner`. The fake signs with real
keys through the same codec, so its bytes are exactly what the enclave would return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from signer_client.errors import SignerError, UnknownSender
from signer_client.signing import LocalKey, SignedTx
from signer_client.txcodec import TxFields, parse_address, tx_from_dict

__all__ = ["ANVIL_DEV_KEY", "FakeSigner", "Signer"]

#: anvil's account 0 (0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266); public, for dev and tests only.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


@runtime_checkable
class Signer(Protocol):
    """Anything that turns an eth-account style tx dict into a verified :class:`SignedTx`."""

    async def sign_transaction(
        self, tx: Mapping[str, Any] | TxFields, sender: str | bytes
    ) -> SignedTx: ...


class FakeSigner:
    """In-process signer with the client's interface.

    ``FakeSigner()`` holds anvil's dev key 0; pass keys to hold others. ``signed`` records every
    transaction handed out; :meth:`fail_next` makes the next call raise (e.g. ``PolicyDenied``).
    """

    def __init__(self, *private_keys: str | bytes) -> None:
        keys = [LocalKey(k) for k in (private_keys or (ANVIL_DEV_KEY,))]
        self._keys = {k.address_bytes: k for k in keys}
        self.addresses: tuple[str, ...] = tuple(k.address for k in keys)
        self.signed: list[SignedTx] = []
        self._failures: list[SignerError] = []
        self.closed = False

    def fail_next(self, error: SignerError) -> None:
        self._failures.append(error)

    async def sign_transaction(
        self, tx: Mapping[str, Any] | TxFields, sender: str | bytes
    ) -> SignedTx:
        if self._failures:
            raise self._failures.pop(0)
        fields = tx if isinstance(tx, TxFields) else tx_from_dict(tx)
        key = self._keys.get(parse_address(sender, "sender"))
        if key is None:
            raise UnknownSender(f"no key for {sender!r}")
        signed = key.sign(fields)
        self.signed.append(signed)
        return signed

    async def close(self) -> None:
        self.closed = True

    async def __aenter__(self) -> FakeSigner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
