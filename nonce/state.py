"""Transaction states, the transition table and the values the book keeps (DESIGN.md §5).

A :class:`TxRecord` is one ``(sender, nonce)`` slot booked for one :class:`Intent`; it keeps every
:class:`Attempt` ever signed for that nonce. Its ``state`` is the intent's status as the intent
API reports it (``broadcaster_getIntent``). The slot's chain facts live beside the state:
``block``/``included_hash`` say which attempt sits in which canonical block, ``settled`` that the
inclusion is final. They matter on their own for ``cancelled``/``expired``/``failed`` records:
such a record may carry a 0-value self-transfer (a *noop* attempt) that consumes its nonce so that
later nonces of the sender are not stuck; the noop is tracked, reorged and re-sent like any other
transaction while the intent's status stays ``cancelled``/``expired``/``failed``.

Transition table (``TRANSITIONS``; anything else raises :class:`~nonce.errors.InvalidTransition`)::

    pending   -> signed                      the first attempt was signed
              -> included                    after a crash: its attempt was journaled, the
                                             "signed" change was not, and the chain mined it
              -> cancelled | expired | failed  (before any signature: the nonce is a hole)
    signed    -> broadcast                   handed to at least one RPC
              -> included                    seen in a canonical block (a restart, a fast node)
              -> cancelled | expired | failed
    broadcast -> included
              -> signed                      a replacement attempt (fee bump) awaits broadcast
              -> cancelled | expired | failed
    included  -> finalized                   its block is finality_depth deep
              -> reorged                     its block left the canonical chain
    reorged   -> signed                      re-signed at the same nonce with bumped fees
              -> broadcast                   earlier bytes rebroadcast (valid while nonce unused)
              -> included                    back in a canonical block (also in the new branch)
              -> cancelled | expired | failed  (expired: validUntilBlock passed, a noop replaces)
    cancelled -> included  |  expired -> included  |  failed -> included
                                             the chain is the truth: bytes we replaced or gave up on
                                             were mined anyway (the replacement lost the race)
    finalized -> (nothing)

``included -> cancelled`` is refused on purpose: an included transaction has executed; if its
block is later dropped the record passes through ``reorged``, where cancelling is allowed again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from nonce.errors import InvalidIntent

Address = str
"""A 20-byte account as lowercase ``0x``-prefixed hex (checksums are the API layer's business)."""

NOOP_GAS = 21_000
"""Gas of a 0-value self-transfer with empty data (the intrinsic gas of a plain transfer)."""

_ADDRESS = re.compile(r"0x[0-9a-f]{40}\Z")


class TxState(StrEnum):
    PENDING = "pending"
    SIGNED = "signed"
    BROADCAST = "broadcast"
    INCLUDED = "included"
    FINALIZED = "finalized"
    REORGED = "reorged"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


_S = TxState
_GIVE_UP = (_S.CANCELLED, _S.EXPIRED, _S.FAILED)
TRANSITIONS: dict[TxState, frozenset[TxState]] = {
    _S.PENDING: frozenset((_S.SIGNED, _S.INCLUDED, *_GIVE_UP)),
    _S.SIGNED: frozenset((_S.BROADCAST, _S.INCLUDED, *_GIVE_UP)),
    _S.BROADCAST: frozenset((_S.INCLUDED, _S.SIGNED, *_GIVE_UP)),
    _S.INCLUDED: frozenset((_S.FINALIZED, _S.REORGED)),
    _S.REORGED: frozenset((_S.SIGNED, _S.BROADCAST, _S.INCLUDED, *_GIVE_UP)),
    _S.CANCELLED: frozenset((_S.INCLUDED,)),
    _S.EXPIRED: frozenset((_S.INCLUDED,)),
    _S.FAILED: frozenset((_S.INCLUDED,)),
    _S.FINALIZED: frozenset(),
}
"""Allowed ``old -> {new}`` state changes; see the module docstring for why each exists."""

ACTIVE_STATES = frozenset((_S.PENDING, _S.SIGNED, _S.BROADCAST, _S.REORGED))
"""The intent still waits for its nonce to be mined: counted by ``pending_transactions``."""

GIVEN_UP_STATES = frozenset(_GIVE_UP)
"""The intent will not execute (unless its bytes win a race); its nonce may need a noop."""


class AttemptReason(StrEnum):
    """Why an attempt was signed (also the ``reason`` label of ``resends_total``)."""

    INITIAL = "initial"
    REORG = "reorg"  # its block was dropped: same nonce, bumped fees
    UNDERPRICED = "underpriced"  # an RPC answered (replacement) transaction underpriced
    EXPIRED_REPLACEMENT = "expired_replacement"  # noop: validUntilBlock passed
    CANCEL = "cancel"  # noop: broadcaster_cancelIntent after signing
    GAP_FILL = "gap_fill"  # noop: a nonce nothing else will use
    EXTERNAL = "external"  # bytes signed elsewhere (eth_sendRawTransaction)


NOOP_REASONS = frozenset(
    (AttemptReason.EXPIRED_REPLACEMENT, AttemptReason.CANCEL, AttemptReason.GAP_FILL)
)
"""Attempts with these reasons are 0-value self-transfers, not the intent's payload."""


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A canonical block, as ``heads.Head`` names it (lowercase ``0x`` hex hash)."""

    number: int
    hash: str


@dataclass(frozen=True, slots=True)
class AuthItem:
    """One EIP-7702 authorization of a type-4 intent: delegate ``address`` (lowercase ``0x``).

    Either *pre-signed* (``signature`` is ``(y_parity, r, s)``, by some authority other than the
    sender; ``nonce`` as signed) or *to sign*: ``signature`` is ``None`` and the enclave signs it
    with the sender's key at signing time (``sign_authorization``), at nonce ``tx nonce + 1``.
    EIP-7702 increments the sender's nonce for the transaction before it processes the
    authorization list, so a self-sponsored authorization is valid only at the next nonce: the
    intent then consumes two nonces (:attr:`Intent.nonce_span`), ``nonce`` stays ``None``.
    """

    chain_id: int
    address: Address
    nonce: int | None = None
    signature: tuple[int, int, int] | None = None

    @property
    def self_sponsored(self) -> bool:
        return self.signature is None


@dataclass(frozen=True, slots=True)
class Intent:
    """What a bot asked for (``broadcaster_sendIntent``), validated once on acceptance.

    ``tx_type`` is the EIP-2718 type: 2 (EIP-1559, default), 1 (EIP-2930), 0 (legacy), 3 (EIP-4844
    blob: ``blobs`` and ``max_fee_per_blob_gas``) or 4 (EIP-7702 set-code: ``authorizations``). For
    types 0 and 1 the gas price is ``max_fee_per_gas`` and ``max_priority_fee_per_gas`` must equal
    it. ``blobs`` are the raw 131,072-byte blobs; the executor derives the sidecar and versioned
    hashes from them (``broadcaster.tx.blobs``), so a restart re-signs from the journaled blobs.
    ``external`` marks bytes signed elsewhere (``eth_sendRawTransaction``): they can be rebroadcast
    but never re-signed. ``noop`` marks a filler intent the book made to plug a nonce gap.
    ``access_list`` is EIP-2930's ``((address, (storage_key, ...)), ...)``. ``private`` (DESIGN.md
    section 5a): every attempt, replacement and noop goes only to private RPCs and builders.
    """

    id: str
    sender: Address
    to: Address | None
    value: int
    data: bytes
    gas: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    chain_id: int
    valid_until_block: int | None = None
    key: str | None = None
    tx_type: int = 2
    access_list: tuple[tuple[str, tuple[str, ...]], ...] = ()
    external: bool = False
    noop: bool = False
    private: bool = False  # DESIGN.md 5a: only private RPCs and builders, every attempt
    max_fee_per_blob_gas: int = 0  # type 3 (EIP-4844)
    blobs: tuple[bytes, ...] = ()  # type 3: the blobs themselves (sidecar rebuilt from them)
    authorizations: tuple[AuthItem, ...] = ()  # type 4 (EIP-7702)

    def __post_init__(self) -> None:
        if not self.id:
            raise InvalidIntent("id", "must not be empty")
        if not _ADDRESS.match(self.sender):
            raise InvalidIntent("from", "must be a lowercase 0x-prefixed 20-byte hex address")
        if self.to is not None and not _ADDRESS.match(self.to):
            raise InvalidIntent("to", "must be a lowercase 0x-prefixed 20-byte hex address")
        for name in ("value", "max_fee_per_gas", "max_priority_fee_per_gas", "chain_id"):
            if getattr(self, name) < 0:
                raise InvalidIntent(name, "must not be negative")
        if self.gas <= 0:
            raise InvalidIntent("gas", "must be positive")
        if self.tx_type not in (0, 1, 2, 3, 4):
            raise InvalidIntent(
                "type", "must be 0 (legacy), 1 (EIP-2930), 2 (EIP-1559), 3 (blob) or 4 (set-code)"
            )
        if (self.tx_type == 3) != bool(self.blobs) and not self.external:
            raise InvalidIntent("blobs", "a type-3 intent carries blobs, and only a type-3 one")
        if (self.tx_type == 4) != bool(self.authorizations) and not self.external:
            raise InvalidIntent(
                "authorizationList", "a type-4 intent carries authorizations, and only a type-4 one"
            )
        if self.tx_type in (3, 4) and self.to is None:
            raise InvalidIntent("to", "blob and set-code transactions cannot create contracts")
        if sum(a.self_sponsored for a in self.authorizations) > 1:
            raise InvalidIntent(
                "authorizationList", "at most one authorization for the enclave to sign"
            )
        if self.max_fee_per_blob_gas < 0:
            raise InvalidIntent("maxFeePerBlobGas", "must not be negative")
        if self.max_priority_fee_per_gas > self.max_fee_per_gas:
            # EIP-1559: "max priority fee per gas higher than max fee per gas" is invalid.
            raise InvalidIntent("maxPriorityFeePerGas", "must not exceed maxFeePerGas")
        if self.tx_type < 2 and self.max_priority_fee_per_gas != self.max_fee_per_gas:
            raise InvalidIntent("gasPrice", "legacy/2930 intents carry one price in both fields")
        if self.valid_until_block is not None and self.valid_until_block < 0:
            raise InvalidIntent("validUntilBlock", "must not be negative")

    @property
    def nonce_span(self) -> int:
        """Nonces the payload consumes: 2 with a self-sponsored EIP-7702 authorization (the tx's
        ``n``, the authorization's ``n + 1``), else 1."""
        return 2 if any(a.self_sponsored for a in self.authorizations) else 1

    def expired_at(self, block_number: int) -> bool:
        """True when ``block_number`` is past ``validUntilBlock`` (the last block it may use)."""
        return self.valid_until_block is not None and block_number > self.valid_until_block


def noop_intent(
    intent_id: str, sender: Address, *, chain_id: int, max_fee_per_gas: int, tip: int
) -> Intent:
    """A filler: 0-value self-transfer with empty data, used to consume a nonce (gap repair)."""
    return Intent(
        id=intent_id,
        sender=sender,
        to=sender,
        value=0,
        data=b"",
        gas=NOOP_GAS,
        max_fee_per_gas=max_fee_per_gas,
        max_priority_fee_per_gas=tip,
        chain_id=chain_id,
        noop=True,
    )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One signed transaction for a ``(sender, nonce)``: the exact bytes that went out.

    ``replaces`` is the hash of the attempt this one is meant to replace in mempools (it must beat
    that attempt's fees by geth's replace rule), ``None`` for the first.
    """

    raw: bytes
    hash: bytes
    nonce: int
    max_fee_per_gas: int
    max_priority_fee_per_gas: int
    signed_at: float
    reason: AttemptReason
    replaces: bytes | None = None

    @property
    def is_noop(self) -> bool:
        return self.reason in NOOP_REASONS


@dataclass(slots=True, eq=False)
class TxRecord:
    """The book's entry for one ``(sender, nonce)``: mutable, changed only through ``NonceBook``.

    Read freely; never assign fields yourself (the journal would not know).
    """

    intent: Intent
    nonce: int
    state: TxState
    updated_at: float
    attempts: list[Attempt] = field(default_factory=list)
    block: BlockRef | None = None
    included_hash: bytes | None = None
    state_reason: str = ""
    settled: bool = False
    released: bool = False

    @property
    def sender(self) -> Address:
        return self.intent.sender

    @property
    def latest(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def has_noop(self) -> bool:
        """A noop attempt was signed: it, not the intent's payload, is what should be mined."""
        return any(a.is_noop for a in self.attempts)

    @property
    def span(self) -> int:
        """Nonces this record holds from ``nonce`` up: the payload's :attr:`Intent.nonce_span`,
        1 once a noop took the nonce (a noop consumes only its own). A noop signed after the
        payload went out races it (a cancel, an expiry): the payload, if mined, consumes
        ``n + 1`` with its authorization, so both stay held until the chain says which won."""
        if self.intent.tx_type != 4 or self.intent.nonce_span == 1 or not self.has_noop:
            return self.intent.nonce_span if self.intent.tx_type == 4 else 1
        if self.included_hash is not None:
            mined = next((a for a in self.attempts if a.hash == self.included_hash), None)
            return 1 if mined is None or mined.is_noop else 2
        return 2 if any(not a.is_noop for a in self.attempts) else 1

    @property
    def covers_nonce(self) -> bool:
        """Something of ours has consumed or will consume this nonce (no gap here).

        False only for a given-up intent that has no noop and no inclusion: a hole that either
        needs a noop (``NonceBook.gaps``) or, at the top of the sender's range, can be reused.
        """
        if self.block is not None or self.state not in GIVEN_UP_STATES:
            return True
        return self.has_noop

    @property
    def unsettled(self) -> bool:
        """The nonce still needs watching: not final on chain, not released, something to send."""
        return not self.settled and not self.released and self.covers_nonce


__all__ = [
    "ACTIVE_STATES",
    "GIVEN_UP_STATES",
    "NOOP_GAS",
    "NOOP_REASONS",
    "TRANSITIONS",
    "Address",
    "Attempt",
    "AttemptReason",
    "AuthItem",
    "BlockRef",
    "Intent",
    "TxRecord",
    "TxState",
    "noop_intent",
]
