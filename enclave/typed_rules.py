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
``blob_count``           at most :data:`MAX_BLOBS_PER_TX` blob hashes (EIP-7594, Osaka: geth's
                         ``params.BlobTxMaxBlobs``); more is a transaction no pool takes, signed
                         only to tie up a nonce.
``nonce_conflict``       (``sign_authorization``) nonce protection for authorizations: at a signed
                         ``(chain, authority, nonce)`` the enclave signs only the same delegate
                         again (the same signature: RFC 6979), never another one, so the host
                         cannot hold two delegations of one nonce and pick later
                         (:class:`AuthorizationNonces`; restored from the log's ``authorize``
                         entries). Bounded like transaction nonces: at most ``nonce_window``
                         remembered per ``(chain, authority)``, refused when full
                         (``nonce_window``), none below the transaction window's floor
                         (``nonce_too_low``: those nonces are used).

Replacing a blob transaction (nonce protection) takes +100% on all three fee fields, geth's
blobpool rule (``core/txpool/blobpool``: ``blobpool.PriceBump = 100``), or ``bump_percent`` if
higher; see :func:`bump_percent_for`.
"""

from __future__ import annotations

from signer_client.errors import PolicyDenied
from signer_client.txcodec import TxFields

__all__ = [
    "BLOB_PRICE_BUMP",
    "MAX_BLOBS_PER_TX",
    "AuthorizationNonces",
    "bump_percent_for",
    "check_authorization",
    "check_typed",
]

BLOB_PRICE_BUMP = 100
MAX_BLOBS_PER_TX = 6


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
        if len(f.blob_hashes) > MAX_BLOBS_PER_TX:
            raise PolicyDenied(
                "blob_count", f"{len(f.blob_hashes)} blobs; a transaction carries at most "
                f"{MAX_BLOBS_PER_TX}",
            )  # fmt: skip
    elif f.type == 4:
        for i, auth in enumerate(f.authorizations):
            try:
                check_authorization(auth.chain_id, auth.address, chain_ids, delegates)
            except PolicyDenied as exc:
                raise PolicyDenied(exc.rule, f"authorizationList[{i}]: {exc.reason}") from None


def bump_percent_for(tx_type: int, bump_percent: int) -> int:
    """The fee raise a replacement of a ``tx_type`` transaction needs."""
    return max(bump_percent, BLOB_PRICE_BUMP) if tx_type == 3 else bump_percent


class AuthorizationNonces:
    """The delegate signed at each ``(chain, authority, nonce)`` (see ``nonce_conflict`` above)."""

    def __init__(self, window: int) -> None:
        self._window = window
        self._signed: dict[tuple[int, bytes], dict[int, bytes]] = {}

    def check(self, chain_id: int, sender: bytes, nonce: int, address: bytes, floor: int) -> None:
        """Raise :class:`PolicyDenied` unless ``address`` may be signed at ``nonce``."""
        if nonce < floor:
            raise PolicyDenied(
                "nonce_too_low", f"authorization nonce {nonce} is below the window ({floor})"
            )
        signed = self._signed.get((chain_id, sender), {})
        known = signed.get(nonce)
        if known is None:
            if len(signed) >= self._window:
                raise PolicyDenied(
                    "nonce_window",
                    f"{len(signed)} authorization nonces remembered: refused, never forgotten",
                )
        elif known != address:
            raise PolicyDenied(
                "nonce_conflict",
                f"authorization nonce {nonce} already signed for 0x{known.hex()}: never another "
                "delegate at the same nonce",
            )

    def record(self, chain_id: int, sender: bytes, nonce: int, address: bytes) -> None:
        self._signed.setdefault((chain_id, sender), {})[nonce] = address

    def forget_below(self, chain_id: int, sender: bytes, floor: int) -> None:
        """The transaction window's floor moved up: nonces below it are refused from now on."""
        signed = self._signed.get((chain_id, sender))
        if signed:
            for n in [n for n in signed if n < floor]:
                del signed[n]
