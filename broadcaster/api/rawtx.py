"""The rules a raw transaction (``eth_sendRawTransaction``) must pass before we track it (pure).

DESIGN.md §7: bytes signed elsewhere are rebroadcast as they are, after a reorg too, so we only
take bytes that are safe to repeat:

- ``chain-id``: a chain id (EIP-155, or the typed envelopes of EIP-2930/EIP-1559, which always
  carry one) equal to ours. A legacy transaction without one is valid on every chain: resending
  it forever would replay it wherever the key has funds.
- ``low-s``: ``s <= secp256k1n / 2`` (EIP-2, homestead). The high-s twin of a signature is a
  second valid encoding of the same transaction under another hash; nodes refuse it, and
  tracking it would make the hash a bot follows differ from the one that gets mined.
- ``sender``: the recovered sender is one of the caller's accounts (a tenant's ``accounts``;
  full access: any sender).
- ``ours``: no EIP-7702 authorization in it is signed by one of this broadcaster's accounts
  (the chain would move that account's nonce, which the broadcaster allocates, and delegate its
  code to whatever the authorization names, outside the enclave's ``allowed_delegates``; the
  same rule ``broadcaster_sendBundle`` applies to its raw members).
- ``nonce-gap``: the nonce is at most ``[fees] max_gap_fill`` beyond the sender's next nonce:
  the nonces in between would be holes only noops could fill.

Each refusal is a :class:`RawTxRefused` naming its rule; the API answers it as ``-32602``
with the rule in the message
(``invalid params: params[0]: raw transaction refused (low-s): ...``).
"""

from __future__ import annotations

from collections.abc import Collection

from broadcaster.api.access import Access
from broadcaster.errors import BroadcasterError
from signer_client.authorization import Authorization, authorization_hash
from signer_client.errors import TransactionError
from signer_client.signing import SignedTx, recover_pubkey, signed_from_raw
from signer_client.txcodec import SECP256K1_HALF_N, TxFields, decode_raw, keccak

__all__ = [
    "RULES",
    "RawTxRefused",
    "authority_of",
    "check_authorities",
    "check_nonce_gap",
    "check_raw_transaction",
]

RULES = ("decode", "chain-id", "low-s", "sender", "ours", "nonce-gap")


class RawTxRefused(BroadcasterError, ValueError):
    """A raw transaction broke ``rule`` (one of :data:`RULES`)."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"raw transaction refused ({rule}): {reason}")
        self.rule = rule
        self.reason = reason


def check_raw_transaction(
    raw: bytes, *, chain_id: int, access: Access
) -> tuple[TxFields, SignedTx]:
    """Decode ``raw``, check the chain id, low-s and sender rules; the nonce rule needs the
    sender's next nonce (:func:`check_nonce_gap`)."""
    try:
        decoded = decode_raw(raw)
    except TransactionError as exc:
        raise RawTxRefused("decode", f"not a signed transaction: {exc}") from exc
    fields = decoded.fields
    if fields.chain_id is None:
        raise RawTxRefused(
            "chain-id",
            "a legacy transaction without an EIP-155 chain id is valid on every chain (a replay "
            f"risk): sign it with chainId {chain_id}",
        )
    if fields.chain_id != chain_id:
        raise RawTxRefused(
            "chain-id", f"signed for chain {fields.chain_id}, this broadcaster serves {chain_id}"
        )
    if decoded.s > SECP256K1_HALF_N:
        raise RawTxRefused(
            "low-s",
            "the signature's s is above secp256k1n/2 (EIP-2): use the low-s form, as every "
            "standard signer does",
        )
    try:
        fields, signed = signed_from_raw(raw)
    except TransactionError as exc:
        raise RawTxRefused("decode", f"not a signed transaction: {exc}") from exc
    if not access.may_send_from(signed.sender):
        raise RawTxRefused(
            "sender", f"signed by {signed.sender}, which is not an account of this token"
        )
    return fields, signed


def check_nonce_gap(nonce: int, next_nonce: int | None, max_gap_fill: int) -> None:
    """Refuse a nonce more than ``max_gap_fill`` beyond ``next_nonce`` (``None``: unknown)."""
    if next_nonce is not None and nonce > next_nonce + max_gap_fill:
        raise RawTxRefused(
            "nonce-gap",
            f"nonce {nonce} is more than max_gap_fill = {max_gap_fill} beyond the sender's next "
            f"nonce {next_nonce}",
        )


def authority_of(auth: Authorization) -> str | None:
    """The EIP-7702 authority (lowercase) that signed ``auth``; ``None`` if it recovers to
    nothing (the chain skips such a tuple)."""
    digest = authorization_hash(auth.chain_id, auth.address, auth.nonce)
    try:
        pubkey = recover_pubkey(digest, auth.y_parity, auth.r, auth.s)
    except (ValueError, OverflowError):
        return None
    return "0x" + keccak(pubkey[1:])[12:].hex()


def check_authorities(fields: TxFields, ours: Collection[str]) -> None:
    """Refuse (rule ``ours``) a type-4 transaction carrying an authorization signed by one of
    ``ours`` (lowercase addresses); see the module docstring."""
    for index, auth in enumerate(fields.authorizations):
        authority = authority_of(auth)
        if authority is not None and authority in ours:
            raise RawTxRefused(
                "ours",
                f"authorizationList[{index}] is an EIP-7702 authorization by {authority}, an "
                "account of this broadcaster: it would move a nonce the broadcaster allocates "
                "and delegate the account's code; ask for it with broadcaster_sendIntent "
                "(authorizations) so the enclave's allowed_delegates apply",
            )
