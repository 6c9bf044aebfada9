"""Validating ``broadcaster_sendBundle`` parameters (DESIGN.md section 5a; pure, no I/O).

``broadcaster_sendBundle({txs: [intent | {raw}], blockNumber?, maxBlockNumber?,
revertingTxHashes?})`` → ``{id, hashes}``. Each ``txs`` entry is either an intent object (the
fields of ``broadcaster_sendIntent``; ``private`` is implied, ``false`` is refused; no ``key``:
the bundle is the unit a bot retries) or ``{"raw": "0x..."}``, a transaction someone else signed
(a backrun target) that rides byte for byte. The rules, each refusal naming its entry and rule:

- no ``builder`` endpoint configured: refused (a bundle has nowhere else to go);
- 1 to :data:`~broadcaster.tx.bundle_plans.MAX_BUNDLE_TXS` entries, at least one intent (a bundle
  of raw transactions only is nothing of ours to track or re-sign);
- an intent's ``from`` must be an account of the caller (a tenant's ``accounts``);
- a raw transaction must decode, carry our chain id (EIP-155 or a typed envelope, EIP-2718) and
  a low-s signature (EIP-2) (:func:`broadcaster.api.rawtx.check_raw_transaction`), and must not
  be signed by one of OUR accounts (rule ``ours``: it would take a nonce the broadcaster
  allocates; send it as an intent instead); the same raw transaction twice is refused;
- ``maxBlockNumber`` (default: none; with a ``{raw}`` entry :data:`DEFAULT_RAW_BUNDLE_BLOCKS`
  from the first target block: someone else's transaction can stop being includable) must not
  be behind the next block, ``blockNumber`` not after it, neither more than
  :data:`MAX_BUNDLE_HORIZON` blocks after the next block; each intent's ``validUntilBlock``
  becomes ``min(validUntilBlock, maxBlockNumber)``, so the manager expires the members with the
  bundle;
- ``revertingTxHashes`` may name only raw transactions of the bundle (our intents' hashes change
  on every re-sign and a bot cannot know them beforehand).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from broadcaster.api.access import FULL_ACCESS
from broadcaster.api.intents import IntentDefaults, ParamError, parse_data, parse_intent
from broadcaster.api.intents import parse_quantity as _quantity
from broadcaster.api.rawtx import RawTxRefused, authority_of, check_raw_transaction
from broadcaster.tx.bundle_plans import MAX_BUNDLE_TXS
from nonce import Intent

__all__ = [
    "BUNDLE_FIELDS",
    "DEFAULT_RAW_BUNDLE_BLOCKS",
    "MAX_BUNDLE_HORIZON",
    "ParsedBundle",
    "RawSlot",
    "parse_bundle",
]

BUNDLE_FIELDS: Final = frozenset({"txs", "blockNumber", "maxBlockNumber", "revertingTxHashes"})
_TX_HASH: Final = re.compile(r"0x[0-9a-fA-F]{64}")
MAX_BUNDLE_HORIZON: Final = 7_200
"""``blockNumber`` / ``maxBlockNumber`` at most this many blocks after the next one (a day at
12 s): members hold their nonces until the bundle lands or passes ``maxBlockNumber``."""
DEFAULT_RAW_BUNDLE_BLOCKS: Final = 25
"""A bundle with a ``{raw}`` entry and no ``maxBlockNumber`` is tried for this many blocks."""


@dataclass(frozen=True, slots=True)
class RawSlot:
    """Someone else's signed transaction: its bytes, hash and sender (lowercase)."""

    raw: bytes
    hash: bytes
    sender: str


@dataclass(frozen=True, slots=True)
class ParsedBundle:
    slots: tuple[Intent | RawSlot, ...]
    first_block: int | None
    max_block: int | None
    reverting: tuple[bytes, ...]

    @property
    def intents(self) -> tuple[Intent, ...]:
        return tuple(s for s in self.slots if isinstance(s, Intent))


def parse_bundle(
    params: Any,
    defaults: IntentDefaults,
    *,
    ours: Sequence[str],
    tip: int | None,
    builders: bool,
) -> ParsedBundle:
    """``ours``: every account the signer holds keys for (lowercase), whoever the caller is."""
    if not builders:
        raise ParamError(
            "txs",
            'no [[rpcs]] of kind "builder" is configured: a bundle is sent only to builders '
            "(eth_sendBundle)",
        )
    if isinstance(params, list):
        if len(params) != 1:
            raise ParamError("params", "expected one bundle object")
        params = params[0]
    if not isinstance(params, Mapping):
        raise ParamError("params", "expected a bundle object {txs, blockNumber?, ...}")
    unknown = sorted(set(params) - BUNDLE_FIELDS)
    if unknown:
        raise ParamError(unknown[0], f"unknown field (known: {', '.join(sorted(BUNDLE_FIELDS))})")
    txs = params.get("txs")
    if not isinstance(txs, list) or not 0 < len(txs) <= MAX_BUNDLE_TXS:
        raise ParamError(
            "txs", f"expected a list of 1 to {MAX_BUNDLE_TXS} intents or {{raw}} transactions"
        )
    max_block = _block(params, "maxBlockNumber")
    first_block = _block(params, "blockNumber")
    if first_block is not None and max_block is not None and first_block > max_block:
        raise ParamError("blockNumber", f"{first_block} is after maxBlockNumber {max_block}")
    if max_block is not None and tip is not None and max_block < tip + 1:
        raise ParamError("maxBlockNumber", f"{max_block} has passed: the next block is {tip + 1}")
    if tip is not None:
        for field, value in (("blockNumber", first_block), ("maxBlockNumber", max_block)):
            if value is not None and value > tip + 1 + MAX_BUNDLE_HORIZON:
                raise ParamError(
                    field,
                    f"{value} is more than {MAX_BUNDLE_HORIZON} blocks after the next block "
                    f"{tip + 1}: the members would hold their nonces (and every later intent "
                    "of their senders) that long",
                )
    mine = frozenset(a.lower() for a in ours)
    slots: list[Intent | RawSlot] = []
    seen: set[bytes] = set()
    for index, entry in enumerate(txs):
        where = f"txs[{index}]"
        if not isinstance(entry, Mapping):
            raise ParamError(where, "expected an intent object or {raw: 0x-hex signed tx}")
        if "raw" in entry:
            if len(entry) != 1:
                raise ParamError(where, "a {raw} entry takes no other field")
            slot = _raw(entry["raw"], f"{where}.raw", defaults.chain_id, mine)
            if slot.hash in seen:
                raise ParamError(f"{where}.raw", "the same transaction is already in the bundle")
            seen.add(slot.hash)
            slots.append(slot)
            continue
        slots.append(_intent(entry, where, defaults, max_block))
    if not any(isinstance(s, Intent) for s in slots):
        raise ParamError(
            "txs", "no intent of ours: a bundle needs at least one (raw ones ride along with it)"
        )
    if max_block is None and tip is not None and any(isinstance(s, RawSlot) for s in slots):
        # Someone else's transaction can stop being includable at any time (its sender's nonce
        # moves: the backrun target landed without us): the bundle then never lands and its
        # members would hold our nonces forever. Bounded by default; the members expire with it.
        max_block = max(tip + 1, first_block or 0) + DEFAULT_RAW_BUNDLE_BLOCKS - 1
        slots = [_bound(s, max_block) if isinstance(s, Intent) else s for s in slots]
    return ParsedBundle(tuple(slots), first_block, max_block, _reverting(params, seen))


def _block(params: Mapping[str, Any], field: str) -> int | None:
    value = params.get(field)
    return None if value is None else _quantity(value, field, maximum=(1 << 63) - 1)


def _raw(value: Any, where: str, chain_id: int, ours: frozenset[str]) -> RawSlot:
    raw = parse_data(value, where)
    try:
        fields, signed = check_raw_transaction(raw, chain_id=chain_id, access=FULL_ACCESS)
    except RawTxRefused as exc:
        raise ParamError(where, str(exc)) from exc
    sender = signed.sender.lower()
    if sender in ours:
        raise ParamError(
            where,
            f"raw transaction refused (ours): signed by {sender}, an account of this "
            "broadcaster: it would take a nonce the broadcaster allocates; send it as an intent",
        )
    for index, auth in enumerate(fields.authorizations):
        authority = authority_of(auth)
        if authority is not None and authority in ours:
            raise ParamError(
                f"{where}.authorizationList[{index}]",
                f"raw transaction refused (ours): an EIP-7702 authorization by {authority}, an "
                "account of this broadcaster: it would move a nonce the broadcaster allocates "
                "and delegate the account's code",
            )
    return RawSlot(raw, signed.hash, sender)


def _intent(
    entry: Mapping[str, Any], where: str, defaults: IntentDefaults, max_block: int | None
) -> Intent:
    if entry.get("private", True) is not True:
        raise ParamError(f"{where}.private", "a bundle member is private (builders only)")
    if "key" in entry:
        raise ParamError(f"{where}.key", "bundle members take no idempotency key")
    try:
        intent = parse_intent({**entry, "private": True}, defaults)
    except ParamError as exc:
        raise ParamError(f"{where}.{exc.field}", exc.reason) from exc
    return intent if max_block is None else _bound(intent, max_block)


def _bound(intent: Intent, max_block: int) -> Intent:
    if intent.valid_until_block is None or intent.valid_until_block > max_block:
        return dataclasses.replace(intent, valid_until_block=max_block)
    return intent


def _reverting(params: Mapping[str, Any], raw_hashes: set[bytes]) -> tuple[bytes, ...]:
    value = params.get("revertingTxHashes")
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_BUNDLE_TXS:
        raise ParamError("revertingTxHashes", "expected a list of transaction hashes")
    out: list[bytes] = []
    for index, item in enumerate(value):
        where = f"revertingTxHashes[{index}]"
        if type(item) is not str or _TX_HASH.fullmatch(item) is None:
            raise ParamError(where, "expected a 32-byte 0x-hex transaction hash")
        digest = bytes.fromhex(item[2:])
        if digest not in raw_hashes:
            raise ParamError(
                where,
                "not the hash of a {raw} transaction of this bundle (only raw ones may be "
                "allowed to revert: our intents' hashes change on every re-sign)",
            )
        out.append(digest)
    return tuple(out)
