"""Adversarial review of the router and the orderflow sender (DESIGN.md 5a): the paths a private
intent takes when the world is not the happy one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from broadcaster.rpc.orderflow import OrderflowSender
from broadcaster.tx.bundles import replacement_uuid
from nonce import AttemptReason, TxState
from tests.broadcaster.tx.test_routing import World


def test_a_private_tx_submitted_before_any_tip_reaches_the_private_rpc_at_the_first_head() -> None:
    """Recovery after a restart or an HA takeover re-sends before the first head arrives: the
    router then had no ``tip + 1``, dropped the private transaction, and (private RPCs getting
    nothing per head) never sent it at all."""
    world = World()
    world.tip = None  # type: ignore[assignment]
    record = world.record(private=True)
    ctx = world.attempt(record, b"\x07", AttemptReason.INITIAL)
    assert world.router.submit(b"\x07", ctx.attempt.hash, ctx).written == 0
    assert world.port.calls == [] and world.fanout is not None and world.fanout.sent == []
    world.router.on_head(100)
    assert sorted(world.methods()) == [
        ("builder", "eth_sendBundle"),
        ("private", "eth_sendPrivateTransaction"),
    ]
    world.router.on_head(101)  # the private tx once; the bundle re-targeted per head
    assert world.methods().count(("private", "eth_sendPrivateTransaction")) == 1
    assert world.fanout.sent == []


def test_a_sibling_flood_at_one_height_sends_one_bundle_per_block() -> None:
    world = World()
    record = world.record(private=True)
    ctx = world.attempt(record, b"\x08", AttemptReason.INITIAL)
    world.router.submit(b"\x08", ctx.attempt.hash, ctx)  # for 101
    for _ in range(50):
        world.router.on_head(100)  # the same height again and again: nothing new
    bundles = [c for c in world.port.calls if c[1] == "eth_sendBundle"]
    assert len(bundles) == 1


def test_a_cancel_racing_a_re_target_never_revives_the_payload_bundle() -> None:
    """The noop is recorded, the state goes cancelled (the payload's bundle cancelled), then the
    noop is sent; heads after that re-target only the noop's bundle."""
    world = World(private_rpcs=0)
    record = world.record(private=True)
    ctx = world.attempt(record, b"\x09", AttemptReason.INITIAL)
    world.router.submit(b"\x09", ctx.attempt.hash, ctx)
    noop = world.attempt(record, b"\x0a", AttemptReason.CANCEL)
    world.book.transition(record, TxState.CANCELLED, reason="cancel", now=1.0)
    world.router.on_head(100)  # a head racing in before the status event
    world.router.on_status(record, "cancelled")
    world.router.submit(b"\x0a", noop.attempt.hash, noop)
    before = len(world.port.calls)
    world.router.on_head(101)
    world.router.on_head(102)
    payload = replacement_uuid(record.intent.id)
    late = world.port.calls[before:]
    assert late and all(
        p["replacementUuid"] != payload for _, m, p in late if m == "eth_sendBundle"
    ), late
    assert ("builder", "eth_cancelBundle", {"replacementUuid": payload}) in world.port.calls


class _Lapsed:
    """A transport behind a fence whose lease has lapsed (``FencedTransport`` raises this)."""

    name = "b"

    def ready(self) -> bool:
        return True

    def send(self, rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        raise RuntimeError("lease lost")

    def forget(self, rid: int) -> None:
        pass

    async def wait_ready(self) -> None:
        pass

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def test_a_write_the_ha_fence_refuses_is_a_failed_send_not_a_crash() -> None:
    """Old leader after a takeover: the fenced builder transport raises RuntimeError; it went
    out of ``offer`` into the reaction (and killed the endpoint's worker)."""
    results: list[tuple[str, str, str]] = []
    reported = asyncio.Event()

    def on_result(rpc: str, method: str, result: str) -> None:
        results.append((rpc, method, result))
        reported.set()

    sender = OrderflowSender(
        [("b", "http://127.0.0.1:9/", "builder")],
        on_result=on_result,
        wrap=lambda inner: _Lapsed(),  # type: ignore[arg-type, return-value]
    )
    assert sender.to_builders("eth_sendBundle", {"txs": []}) == 0
    worker = asyncio.get_running_loop().create_task(sender.endpoints[0].run())
    await reported.wait()
    assert results == [("b", "eth_sendBundle", "failed")]
    assert not worker.done()
    worker.cancel()


def test_a_mixed_reaction_batch_writes_the_public_ones_first_in_one_batch() -> None:
    """A private item ahead of public ones in a reaction's batch: the public replacements went
    one request each, after the builders' work; now one fan-out batch, before it."""
    world = World()
    log: list[str] = []
    fanout = world.fanout
    assert fanout is not None
    batches: list[int] = []
    real_many, real_builders = fanout.submit_many, world.port.to_builders

    def many(items):  # type: ignore[no-untyped-def]
        log.append("public")
        batches.append(len(items))
        return real_many(items)

    def builders(method, params):  # type: ignore[no-untyped-def]
        log.append("builder")
        return real_builders(method, params)

    fanout.submit_many = many  # type: ignore[method-assign]
    world.port.to_builders = builders  # type: ignore[method-assign]
    private = world.record(private=True)
    p1, p2 = world.record(private=False), world.record(private=False)
    a = world.attempt(private, b"\x1a", AttemptReason.REORG)
    b = world.attempt(p1, b"\x1b", AttemptReason.REORG)
    c = world.attempt(p2, b"\x1c", AttemptReason.REORG)
    done = world.router.submit_many([(x.attempt.raw, x.attempt.hash, x) for x in (a, b, c)])
    assert log[0] == "public" and batches == [2] and fanout.sent == [b"\x1b", b"\x1c"]
    assert done.written_items == 3 and done.written == 4
