"""``broadcaster_sendBundle`` decisions (DESIGN.md section 5a): pure ``plan_*`` functions.

A bundle is an ordered list of *slots*: our intents (by id; each a private intent the tx
manager signs, journals and re-signs like any other) and raw transactions signed by someone
else (a backrun target), which ride byte for byte. It goes to every builder as one
``eth_sendBundle {txs, blockNumber, replacementUuid, revertingTxHashes?}`` under one
``replacementUuid`` (a UUIDv5 of the bundle id), for ``max(tip + 1, blockNumber)``, and again
on every new head until it lands or ``maxBlockNumber`` passes (the members' ``validUntilBlock``
is the bundle's ``maxBlockNumber``, so the manager expires them with it).

After a reorg drops it the reaction re-signs our members (fees +10 %, same nonces) and submits
each: :func:`plan_bundle_submit` then sends the bundle again with the new attempts and the raw
transactions unchanged, for the new ``tip + 1``, inside the reaction. A bundle is sent only
once every one of our members has an attempt (the first send waits for the last member's
signature). One member cancelled, failed or expired cancels the whole bundle
(``eth_cancelBundle``): it is atomic, the rest cannot land without it.

No I/O, no clock: :class:`broadcaster.tx.routing.Router` executes what these return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from broadcaster.tx.bundles import CancelBundle, OrderflowAction, SendBundle, replacement_uuid

__all__ = [
    "BUNDLE_ID_PREFIX",
    "MAX_BUNDLE_TXS",
    "BundleSpec",
    "Member",
    "bundle_status",
    "bundle_txs",
    "decode_spec",
    "encode_spec",
    "plan_bundle_head",
    "plan_bundle_submit",
    "plan_restore",
    "target_block",
]

MAX_BUNDLE_TXS = 16
"""At most this many transactions (ours and raw) in one ``broadcaster_sendBundle``: an
arbitrage or backrun bundle is 1-4 transactions; 16 leaves room and bounds the work (and the
builders' gas simulation) one request can cause."""

BUNDLE_ID_PREFIX = "bundle-"


@dataclass(frozen=True, slots=True)
class BundleSpec:
    """What a bot asked for. ``slots``: an intent id (``str``) or a raw transaction (``bytes``)
    each, in bundle order. ``first_block``: ``blockNumber`` (not before); ``max_block``:
    ``maxBlockNumber``; ``reverting``: hashes of raw transactions allowed to revert."""

    id: str
    slots: tuple[str | bytes, ...]
    first_block: int | None = None
    max_block: int | None = None
    reverting: tuple[bytes, ...] = ()
    # Derived once (every head re-targets every live bundle: a UUIDv5 and a scan per head each
    # were a third of the router's per-bundle cost).
    uuid: str = field(init=False, repr=False, compare=False)
    """The bundle's ``replacementUuid`` (a UUIDv5 of its id)."""
    members: tuple[str, ...] = field(init=False, repr=False, compare=False)
    """Our intents' ids, in bundle order."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "uuid", replacement_uuid(self.id))
        members = tuple(slot for slot in self.slots if isinstance(slot, str))
        object.__setattr__(self, "members", members)


@dataclass(frozen=True, slots=True)
class Member:
    """One of our intents as the plans see it: ``raw`` its latest payload attempt (``None``:
    not signed yet), ``mined`` something of ours is canonical at its nonce, ``given_up``
    cancelled, expired or failed."""

    raw: bytes | None
    mined: bool = False
    given_up: bool = False


def bundle_txs(spec: BundleSpec, members: Mapping[str, Member]) -> tuple[bytes, ...] | None:
    """The bundle's transactions in order, or ``None`` while a member has no attempt yet."""
    txs: list[bytes] = []
    for slot in spec.slots:
        if isinstance(slot, bytes):
            txs.append(slot)
            continue
        member = members.get(slot)
        if member is None or member.raw is None:
            return None
        txs.append(member.raw)
    return tuple(txs)


def target_block(spec: BundleSpec, tip: int) -> int | None:
    """The block to target at chain tip ``tip``: ``max(tip + 1, blockNumber)``, or ``None`` once
    that is past ``maxBlockNumber``."""
    block = max(tip + 1, spec.first_block or 0)
    if spec.max_block is not None and block > spec.max_block:
        return None
    return block


def plan_bundle_submit(
    spec: BundleSpec, members: Mapping[str, Member], tip: int
) -> list[OrderflowAction]:
    """A member got a new attempt (first signature, or a reorg's re-sign): send the bundle as
    it now stands, for the block :func:`target_block` names. Nothing while a member is unsigned
    or the bundle is past ``maxBlockNumber`` (the manager expires its members then)."""
    txs = bundle_txs(spec, members)
    block = target_block(spec, tip)
    if txs is None or block is None:
        return []
    return [SendBundle(spec.id, spec.uuid, txs, block, False, spec.reverting)]


def plan_bundle_head(
    spec: BundleSpec, members: Mapping[str, Member], tip: int
) -> list[OrderflowAction]:
    """A new canonical head ``tip``: re-target at the new next block; cancel the bundle when a
    member gave up or ``maxBlockNumber`` passed; nothing once it landed (a member is mined: the
    bundle is atomic; a reorg that drops it re-submits through the reaction)."""
    known = [members[m] for m in spec.members if m in members]
    if any(m.mined for m in known):
        return []
    if any(m.given_up for m in known) or target_block(spec, tip) is None:
        return [CancelBundle(spec.id, spec.uuid)]
    actions = plan_bundle_submit(spec, members, tip)
    return [
        SendBundle(a.intent_id, a.uuid, a.txs, a.block_number, True, a.reverting)
        for a in actions
        if isinstance(a, SendBundle)
    ]


def encode_spec(spec: BundleSpec) -> bytes:
    """The journal's form of ``spec`` (``nonce`` stores it opaque, table ``bundles``): JSON,
    raw transactions and hashes as 0x-hex."""
    return orjson.dumps(
        {
            "slots": [
                {"raw": "0x" + s.hex()} if isinstance(s, bytes) else {"intent": s}
                for s in spec.slots
            ],
            "blockNumber": spec.first_block,
            "maxBlockNumber": spec.max_block,
            "revertingTxHashes": ["0x" + h.hex() for h in spec.reverting],
        }
    )


def decode_spec(bundle_id: str, blob: bytes) -> BundleSpec:
    """:func:`encode_spec` reversed (raises ``ValueError`` on a row it did not write)."""
    try:
        data: Any = orjson.loads(blob)
        slots: list[str | bytes] = [
            bytes.fromhex(s["raw"][2:]) if "raw" in s else str(s["intent"]) for s in data["slots"]
        ]
        return BundleSpec(
            bundle_id,
            tuple(slots),
            data["blockNumber"],
            data["maxBlockNumber"],
            tuple(bytes.fromhex(h[2:]) for h in data["revertingTxHashes"]),
        )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bundle {bundle_id}: unreadable journal row: {exc}") from exc


def plan_restore(
    rows: Iterable[tuple[str, bytes]],
    settled: Callable[[str], bool | None],
    given_up: Callable[[str], bool] = lambda _: False,
) -> tuple[list[BundleSpec], list[BundleSpec], list[str], list[str]]:
    """Journaled bundles at start-up: ``(answerable, live, dead, problems)``.
    ``settled(intent_id)`` says whether a member's record is settled (``None``: not in the book
    -- evicted long ago, or never booked: the process died, or the bundle was refused, between
    two members' admissions); ``given_up(intent_id)``: cancelled, expired or failed. A bundle
    with a member not settled is *live*: registered with the router before recovery re-submits
    its members, so their attempts build it again and the first head re-targets it. A live
    bundle that cannot land any more (a member given up or never booked) is also *dead* (its
    id listed): the router must cancel its live members, never send their payloads alone."""
    answerable: list[BundleSpec] = []
    live: list[BundleSpec] = []
    dead: list[str] = []
    problems: list[str] = []
    for bundle_id, blob in rows:
        try:
            spec = decode_spec(bundle_id, blob)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        states = [settled(member) for member in spec.members]
        missing = any(state is None for state in states)
        if not missing:
            answerable.append(spec)
        if any(state is False for state in states):
            live.append(spec)
            if missing or any(given_up(m) for m in spec.members):
                dead.append(spec.id)
    return answerable, live, dead, problems


_GIVEN_UP = ("failed", "cancelled", "expired")


def bundle_status(statuses: list[str]) -> str:
    """The bundle's status from its members' (``TxState`` values, bundle order): a member's
    ``failed``/``cancelled``/``expired`` (the first one) ends the bundle so; ``finalized`` or
    ``included`` once every member is; otherwise the first member not yet included."""
    for status in statuses:
        if status in _GIVEN_UP:
            return status
    if statuses and all(s == "finalized" for s in statuses):
        return "finalized"
    if statuses and all(s in ("included", "finalized") for s in statuses):
        return "included"
    for status in statuses:
        if status not in ("included", "finalized"):
            return status
    return "pending"
