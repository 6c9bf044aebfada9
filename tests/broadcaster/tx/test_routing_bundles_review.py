"""Adversarial review of the router and ``broadcaster_sendBundle`` (DESIGN.md 5a): no path
sends one member's payload without the rest of its bundle -- not the start-up path (members
submitted before the first head are deferred, and a deployment with private RPCs sends a
deferred private intent as ``eth_sendPrivateTransaction`` at the first head), not a dead
bundle's re-target."""

from __future__ import annotations

from broadcaster.tx.bundle_plans import BundleSpec
from nonce import AttemptReason, TxRecord
from tests.broadcaster.tx.test_routing import World

RAW = b"\x02theirs"


def alone(world: World, raws: set[str]) -> list[tuple[str, object]]:
    """Sends carrying one of ``raws`` that are not the whole two-member bundle."""
    out = []
    for _, method, params in world.port.calls:
        if method == "eth_sendPrivateTransaction" and params["tx"] in raws:
            out.append((method, params["tx"]))
        elif method == "eth_sendBundle":
            txs = params["txs"]
            assert isinstance(txs, list)
            if raws & set(txs) and len(txs) != 3:
                out.append((method, txs))
    return out


def test_members_submitted_before_the_first_head_never_go_alone_to_private_rpcs() -> None:
    world = World(private_rpcs=1)  # builders and a private RPC (Flashbots Protect style)
    cancelled: list[TxRecord] = []
    world.router.cancel_member = cancelled.append
    a, b = world.record(private=True), world.record(private=True)
    spec = BundleSpec("bundle-boot", (a.intent.id, RAW, b.intent.id))
    world.router.add_bundle(spec)
    world.tip = None  # type: ignore[assignment]  # start-up recovery: no head yet
    for record, raw in ((a, b"\x0a"), (b, b"\x0b")):
        ctx = world.attempt(record, raw, AttemptReason.INITIAL)
        world.router.submit(raw, ctx.attempt.hash, ctx)
    world.tip = 100
    world.router.on_head(100)
    assert alone(world, {"0x0a", "0x0b"}) == []
    sends = [p["txs"] for _, m, p in world.port.calls if m == "eth_sendBundle"]
    assert sends == [["0x0a", "0x" + RAW.hex(), "0x0b"]]  # the bundle, from the first head
    assert cancelled == []


def test_a_dead_bundles_member_deferred_at_start_up_is_cancelled_not_sent() -> None:
    """A restart restored the bundle as dead (a member never booked): recovery re-submits the
    booked member before the first head; at that head it is handed to ``cancel_member`` and
    its payload goes nowhere (its noop, once signed, goes alone)."""
    world = World(private_rpcs=1)
    cancelled: list[TxRecord] = []
    world.router.cancel_member = cancelled.append
    a = world.record(private=True)
    spec = BundleSpec("bundle-dead", (a.intent.id, "never-booked"))
    world.router.add_bundle(spec)
    world.router.kill_bundle(spec.id)
    world.tip = None  # type: ignore[assignment]
    ctx = world.attempt(a, b"\x0a", AttemptReason.INITIAL)
    world.router.submit(b"\x0a", ctx.attempt.hash, ctx)
    world.tip = 100
    world.router.on_head(100)
    world.router.on_head(101)
    assert world.port.calls == []
    assert cancelled == [a]
    noop = world.attempt(a, b"\x0c", AttemptReason.CANCEL)
    world.router.submit(b"\x0c", noop.attempt.hash, noop)
    assert any("0x0c" in str(p) for _, _, p in world.port.calls)
