"""Blob and set-code signatures on the transaction side (pure parts and the executor's helpers):
the tx dicts, the +100% blob replacement (read back from the attempts' network-form bytes), the
authorization signed at tx nonce + 1, the network form sent with the canonical hash, and the
two nonces a self-sponsored delegation holds in the book (no gap at n + 1)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pytest
from eth_account import Account

from broadcaster.tx.blobs import (
    BlobError,
    blob_fee_of,
    canonical_form,
    intent_sidecar,
    prepare_sidecar,
    sidecar,
)
from broadcaster.tx.pricing import FeePolicy, blob_fee, replacement, tx_dict
from broadcaster.tx.typed import BlobFloors, Delegated, blob_fee_signed, typed_fields, wire_form
from nonce import Attempt, AttemptReason, AuthItem, Fees, Intent, TxRecord, TxState
from nonce.resync import find_gaps, held_top
from signer_client.signing import LocalKey
from signer_client.txcodec import decode_raw, keccak, tx_from_dict
from tests.nonce.factories import synced_book

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SENDER = Account.from_key(KEY).address.lower()
TO = "0x" + "22" * 20
DELEGATE = "0x5fbdb2315678afecb367f032d93f642f64180aa3"
BLOB = b"".join(b"\0" + i.to_bytes(31, "big") for i in range(4096))
GWEI = 10**9


def _blob_intent(**kw: Any) -> Intent:
    fields: dict[str, Any] = {
        "id": "b", "sender": SENDER, "to": TO, "value": 0, "data": b"", "gas": 21_000,
        "max_fee_per_gas": 10 * GWEI, "max_priority_fee_per_gas": GWEI, "chain_id": 31337,
        "tx_type": 3, "max_fee_per_blob_gas": GWEI, "blobs": (BLOB,),
    }  # fmt: skip
    return Intent(**{**fields, **kw})


def _setcode_intent(*auths: AuthItem) -> Intent:
    return Intent(
        id="s", sender=SENDER, to=TO, value=0, data=b"", gas=100_000,
        max_fee_per_gas=10 * GWEI, max_priority_fee_per_gas=GWEI, chain_id=31337, tx_type=4,
        authorizations=auths or (AuthItem(31337, DELEGATE),),
    )  # fmt: skip


class LocalSigner:
    """Signs with a local key, as the enclave would (the byte-level checks are the codec's)."""

    def __init__(self) -> None:
        self.key = LocalKey(KEY)
        self.authorizations: list[Mapping[str, Any]] = []

    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> Any:
        return self.key.sign(tx_from_dict(tx))

    async def sign_authorization(self, authorization: Mapping[str, Any], sender: str) -> Any:
        self.authorizations.append(authorization)
        signed = Account.sign_authorization(dict(authorization), KEY)

        class Signed:
            def as_dict(self) -> dict[str, Any]:
                return {"chainId": signed.chain_id, "address": "0x" + bytes(signed.address).hex(),
                        "nonce": signed.nonce, "yParity": signed.y_parity, "r": signed.r,
                        "s": signed.s}  # fmt: skip

        return Signed()


async def _sign(record: TxRecord, signer: LocalSigner, fees: Fees) -> Any:
    extra = await typed_fields(record, signer, FeePolicy())
    signed = await signer.sign_transaction(
        tx_dict(record.intent, record.nonce, fees, **extra), SENDER
    )
    return wire_form(record, signed)


def _attempt(record: TxRecord, signed: Any, fees: Fees) -> Attempt:
    return Attempt(signed.raw, signed.hash, record.nonce, fees.max_fee_per_gas,
                   fees.max_priority_fee_per_gas, 0.0, AttemptReason.INITIAL)  # fmt: skip


async def test_a_blob_payload_goes_out_in_network_form_and_its_re_sign_doubles_all_three_fees() -> (
    None
):
    record = TxRecord(_blob_intent(), 4, TxState.PENDING, 0.0)
    signer = LocalSigner()
    first_fees = Fees(10 * GWEI, GWEI)
    first = await _sign(record, signer, first_fees)
    canonical = canonical_form(first.raw)
    assert first.raw != canonical  # the sidecar rides along
    assert keccak(canonical) == first.hash  # the hash is the canonical form's (EIP-4844)
    decoded = decode_raw(canonical).fields
    assert decoded.blob_hashes == intent_sidecar((BLOB,)).versioned_hashes
    assert blob_fee_of(first.raw) == blob_fee_of(canonical) == GWEI
    record.attempts.append(_attempt(record, first, first_fees))

    bumped = replacement(record.intent, first_fees, 0, FeePolicy(), noop=False)
    assert bumped == Fees(20 * GWEI, 2 * GWEI)  # +100%, not +10%
    assert blob_fee_signed(record) == GWEI
    again = await _sign(record, signer, bumped)
    assert blob_fee_of(again.raw) == 2 * GWEI


def test_the_blob_fee_is_the_intents_until_something_was_signed_then_at_least_doubled() -> None:
    intent = _blob_intent(max_fee_per_blob_gas=5)
    assert blob_fee(intent, None, FeePolicy()) == 5
    assert blob_fee(intent, 5, FeePolicy()) == 10
    assert blob_fee(intent, 5, FeePolicy(bump_percent=150)) == 13  # ceil(12.5)
    assert blob_fee(_blob_intent(max_fee_per_blob_gas=100), 5, FeePolicy()) == 100


def test_a_noop_at_a_blob_nonce_is_a_plain_type_2_self_transfer() -> None:
    tx = tx_dict(_blob_intent(), 4, Fees(3, 1), noop=True)
    assert tx["type"] == 2 and tx["to"] == SENDER and "blobVersionedHashes" not in tx
    fees = replacement(_blob_intent(), Fees(10 * GWEI, GWEI), 0, FeePolicy(), noop=True)
    assert fees == Fees(11 * GWEI, 11 * GWEI // 10)  # no blob replacement: geth's 10%


async def test_the_enclave_signs_a_self_sponsored_authorization_at_the_tx_nonce_plus_one() -> None:
    signer = LocalSigner()
    other = AuthItem(31337, DELEGATE, 9, (1, 2, 3))
    record = TxRecord(_setcode_intent(AuthItem(31337, DELEGATE), other), 7, TxState.PENDING, 0.0)
    extra = await typed_fields(record, signer, FeePolicy())
    assert signer.authorizations == [{"chainId": 31337, "address": DELEGATE, "nonce": 8}]
    mine, theirs = extra["authorizations"]
    assert mine["nonce"] == 8 and mine["address"].lower() == DELEGATE
    assert theirs == {"chainId": 31337, "address": DELEGATE, "nonce": 9, "yParity": 1, "r": 2,
                      "s": 3}  # fmt: skip
    tx = tx_dict(record.intent, 7, Fees(10, 1), **extra)
    assert tx["type"] == 4 and tx["authorizationList"] == [mine, theirs]
    signed = await signer.sign_transaction(tx, SENDER)
    assert wire_form(record, signed) is signed  # only blobs change the wire form


def test_a_self_sponsored_delegation_holds_two_nonces_in_the_book_and_n_plus_1_is_no_gap() -> None:
    book = synced_book(senders=(SENDER,), start=3)
    record = book.accept(_setcode_intent(), now=0.0)
    assert record.nonce == 3 and record.span == 2
    after = book.accept(dataclasses.replace(_setcode_intent(), id="t", authorizations=(
        AuthItem(31337, DELEGATE, 1, (0, 1, 1)),)), now=0.0)  # fmt: skip
    assert after.nonce == 5 and after.span == 1  # a pre-signed item takes no nonce of ours
    slots = {r.nonce: r for r in book.records(SENDER)}
    assert held_top(slots) == 6
    assert find_gaps(slots, 3) == []
    assert book.gaps(SENDER, 3) == []


def test_once_a_noop_took_its_nonce_the_authorization_nonce_is_a_gap_to_fill() -> None:
    book = synced_book(senders=(SENDER,), start=0)
    record = book.accept(_setcode_intent(), now=0.0)
    book.accept(dataclasses.replace(_setcode_intent(), id="t"), now=0.0)  # nonces 2 and 3
    noop = Attempt(b"\x02noop", b"h" * 32, 0, 1, 1, 0.0, AttemptReason.CANCEL)
    book.add_attempt(record, noop)
    book.transition(record, TxState.CANCELLED, reason="cancel", now=0.0)
    assert record.span == 1  # the noop consumes nonce 0 only
    assert book.gaps(SENDER, 0) == [1]


async def test_a_blob_fee_signed_outside_the_attempts_still_floors_the_next_re_sign() -> None:
    """A replacement signed ahead and then discarded is no attempt, but the enclave remembers
    its blob fee: the next blob fee doubles that one, not the last attempt's."""
    record = TxRecord(_blob_intent(), 4, TxState.PENDING, 0.0)
    floors = BlobFloors()
    assert floors.floor(record) is None
    signer = LocalSigner()
    first = await _sign(record, signer, Fees(10 * GWEI, GWEI))
    record.attempts.append(_attempt(record, first, Fees(10 * GWEI, GWEI)))
    assert floors.floor(record) == GWEI  # from the attempt's bytes
    floors.raise_to(record, {"maxFeePerBlobGas": 2 * GWEI})  # the presign, discarded
    assert floors.floor(record) == 2 * GWEI
    extra = await typed_fields(record, signer, FeePolicy(), floors.floor(record))
    assert extra["blob_fee"] == 4 * GWEI
    floors.forget(record)
    assert floors.floor(record) == GWEI


async def test_the_api_sidecar_is_computed_in_a_worker_process_and_cached_for_the_signer() -> None:
    blob = BLOB[:-1] + b"\x07"  # not computed by any test before
    car = await prepare_sidecar((blob,))
    assert car == sidecar([blob])
    assert intent_sidecar((blob,)) is car  # the executor's lookups hit the cache
    bad = b"\xff" * 32 + BLOB[32:]
    with pytest.raises(BlobError, match="field element 0"):
        await prepare_sidecar((bad,))


def test_a_delegated_senders_next_intent_waits_while_another_of_its_txs_is_in_flight() -> None:
    """geth's one-in-flight rule for delegated accounts: busy only for a sender we delegated,
    only while another of its transactions is signed or sent and not in a canonical block."""
    from nonce import BlockRef
    from tests.nonce.factories import ALICE, attempt, intent

    book = synced_book(senders=(SENDER, ALICE), start=0)
    delegation = book.accept(_setcode_intent(), now=0.0)
    delegated = Delegated()
    plain = book.accept(dataclasses.replace(intent(), id="p", sender=SENDER), now=0.0)
    assert not delegated.busy(plain, book)  # nothing delegated yet
    book.add_attempt(delegation, attempt(delegation))
    book.transition(delegation, TxState.SIGNED, reason="initial", now=0.0)
    delegated.note(delegation)
    assert delegated.senders == {SENDER}
    assert delegated.busy(plain, book)
    other = book.accept(intent(ALICE), now=0.0)
    book.add_attempt(other, attempt(other))
    assert not delegated.busy(book.accept(intent(ALICE), now=0.0), book)  # not delegated
    book.transition(delegation, TxState.BROADCAST, reason="written", now=0.0)
    assert delegated.busy(plain, book)
    book.mark_included(delegation.latest.hash, BlockRef(1, "0x" + "11" * 32), now=0.0)
    assert not delegated.busy(plain, book)  # mined: the next one may go


async def test_a_re_sign_reuses_the_authorization_the_enclave_signed_for_that_nonce() -> None:
    signer = LocalSigner()
    cache: dict[Any, dict[str, Any]] = {}
    record = TxRecord(_setcode_intent(), 7, TxState.PENDING, 0.0)
    first = await typed_fields(record, signer, FeePolicy(), None, cache)
    again = await typed_fields(record, signer, FeePolicy(), None, cache)
    assert first == again and len(signer.authorizations) == 1  # one enclave round trip
    moved = TxRecord(_setcode_intent(), 9, TxState.PENDING, 0.0)
    await typed_fields(moved, signer, FeePolicy(), None, cache)
    assert [a["nonce"] for a in signer.authorizations] == [8, 10]  # another nonce: signed anew


def test_a_cancelled_delegation_whose_payload_may_still_be_mined_keeps_n_plus_1_reserved() -> None:
    """The cancel's noop races the payload already sent: if the payload wins, its authorization
    consumes n + 1 too. Until the chain says which won, n + 1 is not handed out (a resync does
    not pull the next nonce back over it); once the payload is mined, it still holds both."""
    from nonce import BlockRef
    from tests.nonce.factories import attempt

    book = synced_book(senders=(SENDER,), start=0)
    record = book.accept(_setcode_intent(), now=0.0)
    payload = attempt(record)
    book.add_attempt(record, payload)
    book.transition(record, TxState.SIGNED, reason="initial", now=0.0)
    book.add_attempt(record, attempt(record, reason=AttemptReason.CANCEL))
    book.transition(record, TxState.CANCELLED, reason="cancel", now=0.0)
    assert record.span == 2  # either may be mined
    assert book.resync(SENDER, chain_latest=0, chain_pending=1, now=0.0).next == 2
    assert book.accept(dataclasses.replace(_setcode_intent(), id="t"), now=0.0).nonce == 2
    book.mark_included(payload.hash, BlockRef(1, "0x" + "11" * 32), now=0.0)  # the payload won
    assert record.span == 2 and book.gaps(SENDER, 2) == []


def test_a_cancelled_delegation_whose_noop_was_mined_frees_n_plus_1() -> None:
    from nonce import BlockRef
    from tests.nonce.factories import attempt

    book = synced_book(senders=(SENDER,), start=0)
    record = book.accept(_setcode_intent(), now=0.0)
    book.add_attempt(record, attempt(record))
    book.transition(record, TxState.SIGNED, reason="initial", now=0.0)
    noop = attempt(record, reason=AttemptReason.CANCEL)
    book.add_attempt(record, noop)
    book.transition(record, TxState.CANCELLED, reason="cancel", now=0.0)
    book.accept(dataclasses.replace(_setcode_intent(), id="t"), now=0.0)  # nonces 2 and 3
    book.mark_included(noop.hash, BlockRef(1, "0x" + "11" * 32), now=0.0)  # the noop won
    assert record.span == 1
    assert book.gaps(SENDER, 1) == [1]  # nothing consumed n + 1: a noop must


def test_sidecars_of_many_unsettled_blob_intents_stay_cached_until_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reorg re-signing the 33rd of 40 unsettled blob intents must not redo KZG on the event
    loop (50-100 ms a blob, inside the reorg reaction): the sidecar stays until the record
    settles (``Executor.forget``)."""
    from broadcaster.tx import blobs as blobs_module

    cars = [
        blobs_module.remember(
            blobs_module.Sidecar((bytes([i]) * 131_072,), (b"c",), (b"p",), (b"\x01" * 32,))
        )
        for i in range(40)
    ]

    def no_kzg(_: Any) -> Any:
        raise AssertionError("KZG recomputed on the event loop")

    monkeypatch.setattr(blobs_module, "sidecar", no_kzg)
    assert intent_sidecar(cars[0].blobs) is cars[0]
    blobs_module.forget(cars[0].blobs)
    with pytest.raises(AssertionError, match="recomputed"):
        intent_sidecar(cars[0].blobs)  # forgotten: computed again (here: refused)
    for car in cars:
        blobs_module.forget(car.blobs)


def test_blob_intents_beyond_the_kzg_queue_bound_are_refused_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bot pipelining blob intents cannot queue unbounded work (and 1 MiB requests) behind the
    one KZG worker: past ``MAX_WAITING`` waiting, ``SidecarBusy`` at once; a place frees when
    its intent is done."""
    import contextlib

    from broadcaster.tx import blobs as blobs_module

    monkeypatch.setattr(blobs_module, "MAX_WAITING", 2)
    with contextlib.ExitStack() as held:
        held.enter_context(blobs_module.kzg_slot())
        held.enter_context(blobs_module.kzg_slot())
        with pytest.raises(blobs_module.SidecarBusy, match="2 blob intents are waiting"):
            held.enter_context(blobs_module.kzg_slot())
    with blobs_module.kzg_slot():  # all freed
        pass


def test_a_sent_blob_intent_is_not_cancelled_with_a_noop_no_node_would_pool() -> None:
    """geth answers a type-2 noop at a pooled blob tx's nonce 'address already reserved': the
    cancel would report "cancelled" and retry forever. It is refused, saying why; a blob intent
    not signed yet, or reorged out (no longer pooled), or any other type, cancels as before."""
    from broadcaster.tx.typed import blob_cancel_refusal
    from tests.nonce.factories import attempt

    book = synced_book(senders=(SENDER,), start=0)
    record = book.accept(_blob_intent(), now=0.0)
    assert blob_cancel_refusal(record) is None  # unsigned: cancelled before signing
    book.add_attempt(record, attempt(record))
    book.transition(record, TxState.SIGNED, reason="initial", now=0.0)
    book.transition(record, TxState.BROADCAST, reason="written", now=0.0)
    why = blob_cancel_refusal(record)
    assert why is not None and "address already reserved" in why
    delegation = book.accept(_setcode_intent(), now=0.0)
    book.add_attempt(delegation, attempt(delegation))
    book.transition(delegation, TxState.SIGNED, reason="initial", now=0.0)
    assert blob_cancel_refusal(delegation) is None
