"""The router (DESIGN.md 5a): public intents to the fan-out, private ones only to builders and
private RPCs, in every attempt (payload, replacement, noop), and bundles re-targeted per head."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from broadcaster.rpc.fanout import BroadcastResult, Submitted, Written
from broadcaster.rpc.orderflow import classify
from broadcaster.rpc.transport.base import Reply
from broadcaster.tx.bundles import replacement_uuid
from broadcaster.tx.routing import Router
from nonce import Attempt, AttemptReason, BlockRef, Intent, TxRecord, TxState
from nonce.book import NonceBook

SENDER = "0x" + "aa" * 20


@dataclass
class FakeFanOut:
    sent: list[bytes] = field(default_factory=list)

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> Submitted:
        self.sent.append(raw)
        return Submitted(written=1, last_ns=1, written_items=1)

    def submit_many(self, items: Sequence[tuple[bytes, bytes, object]]) -> Submitted:
        self.sent.extend(raw for raw, _, _ in items)
        return Submitted(written=len(items), last_ns=1, written_items=len(items))

    def listen(
        self,
        on_result: Callable[[BroadcastResult], None],
        on_written: Callable[[Written], None] | None = None,
    ) -> None:
        pass


@dataclass
class FakePort:
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def to_builders(self, method: str, params: dict[str, Any]) -> int:
        self.calls.append(("builder", method, params))
        return 1

    def to_private(self, method: str, params: dict[str, Any]) -> int:
        self.calls.append(("private", method, params))
        return 1


@dataclass
class Ctx:
    record: TxRecord
    attempt: Attempt


class World:
    def __init__(self, *, public: bool = True, private_rpcs: int = 1) -> None:
        self.book = NonceBook()
        self.book.resync(SENDER, chain_latest=0, chain_pending=0, now=0.0)
        self.fanout = FakeFanOut() if public else None
        self.port = FakePort()
        self.tip = 100
        self.router = Router(
            self.fanout,
            self.port,
            builders=1,
            private=private_rpcs,
            tip_number=lambda: self.tip,
            clock_ns=lambda: 5,
        )
        self.ids = 0

    def record(self, *, private: bool, valid_until: int | None = None) -> TxRecord:
        self.ids += 1
        intent = Intent(
            id=f"i-{self.ids}",
            sender=SENDER,
            to=SENDER,
            value=1,
            data=b"",
            gas=21_000,
            max_fee_per_gas=10,
            max_priority_fee_per_gas=1,
            chain_id=1,
            valid_until_block=valid_until,
            private=private,
        )
        return self.book.accept(intent, now=0.0)

    def attempt(self, record: TxRecord, raw: bytes, reason: AttemptReason) -> Ctx:
        attempt = Attempt(raw, raw.ljust(32, b"\0"), record.nonce, 10, 1, 0.0, reason)
        self.book.add_attempt(record, attempt)
        return Ctx(record, attempt)

    def methods(self) -> list[tuple[str, str]]:
        return [(where, method) for where, method, _ in self.port.calls]


def test_a_public_intent_goes_to_the_fan_out_only() -> None:
    world = World()
    record = world.record(private=False)
    ctx = world.attempt(record, b"\x01", AttemptReason.INITIAL)
    done = world.router.submit(b"\x01", ctx.attempt.hash, ctx)
    assert done.written == 1 and world.fanout is not None and world.fanout.sent == [b"\x01"]
    assert world.port.calls == []


def test_a_private_intent_goes_as_a_bundle_for_the_next_block_and_a_private_tx() -> None:
    world = World()
    record = world.record(private=True, valid_until=120)
    ctx = world.attempt(record, b"\x02", AttemptReason.INITIAL)
    done = world.router.submit(b"\x02", ctx.attempt.hash, ctx)
    assert world.fanout is not None and world.fanout.sent == []
    assert done.written == 2 and done.last_ns == 5 and done.written_items == 1
    (bundle, private) = world.port.calls
    assert bundle == (
        "builder",
        "eth_sendBundle",
        {"txs": ["0x02"], "blockNumber": hex(101), "replacementUuid": replacement_uuid("i-1")},
    )
    assert private == (
        "private",
        "eth_sendPrivateTransaction",
        {"tx": "0x02", "maxBlockNumber": hex(120)},
    )


def test_replacements_and_noops_of_a_private_intent_stay_private() -> None:
    world = World()
    record = world.record(private=True)
    for raw, reason in ((b"\x03", AttemptReason.INITIAL), (b"\x04", AttemptReason.REORG)):
        ctx = world.attempt(record, raw, reason)
        world.router.submit(raw, ctx.attempt.hash, ctx)
    noop = world.attempt(record, b"\x05", AttemptReason.CANCEL)
    world.router.submit_many([(b"\x05", noop.attempt.hash, noop)])
    assert world.fanout is not None and world.fanout.sent == []
    uuids = [p["replacementUuid"] for _, m, p in world.port.calls if m == "eth_sendBundle"]
    assert uuids == [replacement_uuid("i-1")] * 2 + [replacement_uuid("i-1", noop=True)]


def test_a_mixed_batch_keeps_its_order_and_splits_by_privacy() -> None:
    world = World()
    public = world.record(private=False)
    private = world.record(private=True)
    a = world.attempt(public, b"\x0a", AttemptReason.INITIAL)
    b = world.attempt(private, b"\x0b", AttemptReason.INITIAL)
    done = world.router.submit_many([(b"\x0a", a.attempt.hash, a), (b"\x0b", b.attempt.hash, b)])
    assert world.fanout is not None and world.fanout.sent == [b"\x0a"]
    assert done.written == 3 and done.written_items == 2


def test_without_public_endpoints_everything_goes_privately() -> None:
    world = World(public=False, private_rpcs=0)
    record = world.record(private=False)
    ctx = world.attempt(record, b"\x06", AttemptReason.INITIAL)
    world.router.submit(b"\x06", ctx.attempt.hash, ctx)
    assert world.methods() == [("builder", "eth_sendBundle")]


def test_each_head_re_targets_live_bundles_and_skips_mined_ones() -> None:
    world = World(private_rpcs=0)
    record = world.record(private=True)
    ctx = world.attempt(record, b"\x07", AttemptReason.INITIAL)
    world.router.submit(b"\x07", ctx.attempt.hash, ctx)
    assert world.router.on_head(101) == 1
    assert world.port.calls[-1][2]["blockNumber"] == hex(102)
    world.book.transition(record, TxState.SIGNED, reason="t", now=0.0)
    world.book.transition(record, TxState.BROADCAST, reason="t", now=0.0)
    world.book.mark_included(ctx.attempt.hash, BlockRef(101, "0x" + "bb" * 32), now=0.0)
    assert world.router.on_head(102) == 0


def test_cancel_and_expiry_cancel_the_payload_bundle_and_private_txs() -> None:
    world = World()
    record = world.record(private=True)
    ctx = world.attempt(record, b"\x08", AttemptReason.INITIAL)
    world.router.submit(b"\x08", ctx.attempt.hash, ctx)
    world.attempt(record, b"\x09", AttemptReason.CANCEL)
    world.router.on_status(record, "cancelled")
    assert world.methods()[-2:] == [
        ("builder", "eth_cancelBundle"),
        ("private", "eth_cancelPrivateTransaction"),
    ]
    assert world.port.calls[-2][2] == {"replacementUuid": replacement_uuid("i-1")}
    assert world.port.calls[-1][2] == {"txHash": "0x" + ctx.attempt.hash.hex()}


def test_a_public_intents_status_changes_cancel_nothing() -> None:
    world = World()
    record = world.record(private=False)
    world.attempt(record, b"\x0c", AttemptReason.INITIAL)
    world.router.on_status(record, "cancelled")
    assert world.port.calls == []


@pytest.mark.parametrize(
    ("reply", "result"),
    [
        (
            Reply(status=200, body=b'{"jsonrpc":"2.0","id":1,"result":{"bundleHash":"0x1"}}'),
            "accepted",
        ),
        (Reply(status=200, body=b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000}}'), "rejected"),
        (Reply(status=503, body=b""), "failed"),
        (Reply(status=200, body=b"not json"), "failed"),
        (Reply(failure=ConnectionResetError()), "failed"),
        (Reply(payload={"jsonrpc": "2.0", "id": 1, "result": None}), "accepted"),
    ],
)
def test_builder_answers_are_classified_into_the_bundles_total_results(
    reply: Reply, result: str
) -> None:
    assert classify(reply) == result


def test_the_shared_request_body_is_the_plain_json_rpc_request_for_every_id() -> None:
    from broadcaster.rpc.orderflow import request, request_maker

    params = {"txs": ["0x02"], "blockNumber": "0x65", "replacementUuid": "u"}
    body_of = request_maker("eth_sendBundle", params)
    for rid in (1, 77, 10**9):
        assert body_of(rid) == request(rid, "eth_sendBundle", params)


def test_a_re_target_that_would_repeat_the_last_bundle_is_skipped() -> None:
    """A reorg head after the reaction already sent the replacement for this block."""
    world = World(private_rpcs=0)
    record = world.record(private=True)
    ctx = world.attempt(record, b"\x0d", AttemptReason.INITIAL)
    world.router.submit(b"\x0d", ctx.attempt.hash, ctx)  # for block 101
    assert world.router.on_head(100) == 0  # same tip again: nothing new to say
    assert world.router.on_head(101) == 1
    assert len(world.port.calls) == 2
