"""Policy rules of blob (EIP-4844, type 3) and set-code (EIP-7702, type 4) transactions, and of
the authorizations the enclave signs (DESIGN.md section 6). Pure; :class:`enclave.policy.Policy`
calls them.

``delegate_not_allowed`` an authorization (signed here, or carried by a type-4 transaction) may
                         delegate only to an address in ``allowed_delegates``: delegating an
                         account to the wrong contract hands over everything in it. Unset (the
                         default) means no delegation at all. The zero address (EIP-7702's
                         "clear the delegation") is a delegate like any other: list it to allow it.
``chain_id``             an authorization's chain id is in ``chain_ids``; chain id 0 (valid on
                         every chain, replayable anywhere) only if 0 is listed.
``blob_fee_cap``         ``maxFeePerBlobGas <= max_fee_per_blob_gas``.

Replacing a blob transaction (nonce protection) takes +100% on all three fee fields, geth's
blobpool rule (``core/txpool/blobpool``: ``blobpool.PriceBump = 100``), or ``bump_percent`` if
higher; see :func:`bump_percent_for`.
"""

from __future__ import annotations

from signer_client.errors import PolicyDenied
from signer_client.txcodec import TxFields

__all__ = ["BLOB_PRICE_BUMP", "bump_percent_for", "check_authorization", "check_typed"]

BLOB_PRICE_BUMP = 100


def check_authorization(
    chain_id: int, address: bytes, chain_ids: frozenset[int], delegates: frozenset[bytes]
) -> None:
    """Raise :class:`PolicyDenied` unless an authorization to ``address`` on ``chain_id`` is
    allowed."""
    if chain_id not in chain_ids:
        what = "0 (any chain)" if chain_id == 0 else str(chain_id)
        raise PolicyDenied("chain_id", f"authorization for chain id {what} is not allowed")
    if address not in delegates:
        raise PolicyDenied("delegate_not_allowed", f"0x{address.hex()} is not in allowed_delegates")


def check_typed(
    f: TxFields, chain_ids: frozenset[int], delegates: frozenset[bytes], max_blob_fee: int
) -> None:
    """The type-3 and type-4 rules of a transaction (nothing for types 0-2)."""
    if f.type == 3:
        blob_fee = f.max_fee_per_blob_gas
        if blob_fee is None or blob_fee > max_blob_fee:
            raise PolicyDenied("blob_fee_cap", f"blob fee cap {blob_fee} exceeds {max_blob_fee}")
    elif f.type == 4:
        for i, auth in enumerate(f.authorizations):
            try:
                check_authorization(auth.chain_id, auth.address, chain_ids, delegates)
            except PolicyDenied as exc:
                raise PolicyDenied(exc.rule, f"authorizationList[{i}]: {exc.reason}") from None


def bump_percent_for(tx_type: int, bump_percent: int) -> int:
    """The fee raise a replacement of a ``tx_type`` transaction needs."""
    return max(bump_percent, BLOB_PRICE_BUMP) if tx_type == 3 else bump_percent
