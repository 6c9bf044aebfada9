"""The router and ``broadcaster_sendBundle`` bundles (DESIGN.md 5a): a member's attempt sends
the whole bundle under the bundle's ``replacementUuid`` (never a one-transaction bundle), once
every member is signed; a re-sign replaces only that member; a member cancelled or expired
cancels the bundle and its noop goes alone."""

from __future__ import annotations

from broadcaster.tx.bundle_plans import BundleSpec
from broadcaster.tx.bundles import replacement_uuid
from nonce import AttemptReason, BlockRef, TxState
from tests.broadcaster.tx.test_routing import World

RAW = b"\x02theirs"


def bundle_calls(world: World, uuid: str) -> list[dict[str, object]]:
    return [
        params
        for _, method, params in world.port.calls
        if method == "eth_sendBundle" and params["replacementUuid"] == uuid
    ]


def test_a_bundle_goes_out_once_its_last_member_is_signed_and_is_retargeted_per_head() -> None:
    world = World(private_rpcs=0)
    a, b = world.record(private=True), world.record(private=True)
    spec = BundleSpec("bundle-x", (a.intent.id, RAW, b.intent.id), reverting=(b"\x22" * 32,))
    world.router.add_bundle(spec)
    ctx = world.attempt(a, b"\x0a", AttemptReason.INITIAL)
    world.router.submit(b"\x0a", ctx.attempt.hash, ctx)
    assert world.port.calls == []  # b is not signed yet: nothing half-built goes out
    ctx = world.attempt(b, b"\x0b", AttemptReason.INITIAL)
    world.router.submit(b"\x0b", ctx.attempt.hash, ctx)
    (sent,) = bundle_calls(world, spec.uuid)
    assert sent == {
        "txs": ["0x0a", "0x" + RAW.hex(), "0x0b"],
        "blockNumber": hex(101),
        "replacementUuid": spec.uuid,
        "revertingTxHashes": ["0x" + "22" * 32],
    }
    # No one-transaction bundle of a member, ever.
    assert not bundle_calls(world, replacement_uuid(a.intent.id))
    assert not bundle_calls(world, replacement_uuid(b.intent.id))
    world.router.on_head(101)
    assert [c["blockNumber"] for c in bundle_calls(world, spec.uuid)] == [hex(101), hex(102)]


def test_a_re_sign_replaces_that_member_and_keeps_the_rest() -> None:
    world = World(private_rpcs=0)
    a = world.record(private=True)
    spec = BundleSpec("bundle-y", (a.intent.id, RAW))
    world.router.add_bundle(spec)
    ctx = world.attempt(a, b"\x0a", AttemptReason.INITIAL)
    world.router.submit(b"\x0a", ctx.attempt.hash, ctx)
    ctx = world.attempt(a, b"\x1a", AttemptReason.REORG)
    world.router.submit(b"\x1a", ctx.attempt.hash, ctx)
    assert [c["txs"] for c in bundle_calls(world, spec.uuid)] == [
        ["0x0a", "0x" + RAW.hex()],
        ["0x1a", "0x" + RAW.hex()],
    ]


def test_a_mined_bundle_is_left_alone_and_forgotten_once_settled() -> None:
    world = World(private_rpcs=0)
    a = world.record(private=True)
    spec = BundleSpec("bundle-z", (a.intent.id, RAW))
    world.router.add_bundle(spec)
    ctx = world.attempt(a, b"\x0a", AttemptReason.INITIAL)
    world.router.submit(b"\x0a", ctx.attempt.hash, ctx)
    world.book.transition(a, TxState.SIGNED, reason="t", now=0.0)
    world.book.transition(a, TxState.BROADCAST, reason="t", now=0.0)
    world.book.mark_included(ctx.attempt.hash, BlockRef(101, "0x" + "bb" * 32), now=0.0)
    assert world.router.on_head(101) == 0
    assert world.router.member_of[a.intent.id] == spec.id
    world.book.transition(a, TxState.FINALIZED, reason="t", now=0.0)
    world.router.on_head(102)
    assert spec.id not in world.router.bundles and a.intent.id not in world.router.member_of


def test_a_member_cancelled_cancels_the_bundle_and_its_noop_goes_alone() -> None:
    world = World(private_rpcs=0)
    a = world.record(private=True)
    spec = BundleSpec("bundle-c", (a.intent.id, RAW))
    world.router.add_bundle(spec)
    ctx = world.attempt(a, b"\x0a", AttemptReason.INITIAL)
    world.router.submit(b"\x0a", ctx.attempt.hash, ctx)
    noop = world.attempt(a, b"\x0c", AttemptReason.CANCEL)
    world.router.submit(b"\x0c", noop.attempt.hash, noop)
    world.book.transition(a, TxState.CANCELLED, reason="t", now=0.0)
    world.router.on_status(a, "cancelled")
    cancels = [p for _, m, p in world.port.calls if m == "eth_cancelBundle"]
    assert cancels == [{"replacementUuid": spec.uuid}]
    noops = bundle_calls(world, replacement_uuid(a.intent.id, noop=True))
    assert [c["txs"] for c in noops] == [["0x0c"]]  # the noop alone, never with the raw tx
    world.router.on_head(101)  # the bundle is not re-targeted after its cancel
    assert len(bundle_calls(world, spec.uuid)) == 1
