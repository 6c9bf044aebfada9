"""A reorg reaction that re-sends private and public intents together ends at its last write
(DESIGN.md 5a, 7: ``reaction_seconds`` covers bundle re-targets): a private send settles exactly
the jobs the reaction expects of one send (``jobs_per_send``), never more, whatever the number of
builders and private RPCs it was written to -- else the reaction is reported done (and measured)
before the public replacements it also carries were written."""

from __future__ import annotations

import logging

import pytest

from broadcaster.tx.executor import Reaction
from broadcaster.tx.routing import Router
from nonce import AttemptReason
from tests.broadcaster.tx.test_routing import World


def test_a_private_send_to_more_endpoints_than_public_ones_does_not_end_the_reaction() -> None:
    world = World()  # 1 builder + 1 private RPC: two writes per private send
    world.router.jobs_per_send = 1  # one public endpoint (the manager's ``endpoints``)
    ended: list[int] = []
    reaction = Reaction(1, 2, 2 * world.router.jobs_per_send, lambda r, end: ended.append(end))
    private = world.record(private=True)
    public = world.record(private=False)
    first = world.attempt(private, b"\x02", AttemptReason.REORG)
    second = world.attempt(public, b"\x03", AttemptReason.REORG)
    reaction.took(world.router.submit(b"\x02", first.attempt.hash, first))
    assert ended == [], "the reaction ended before its public replacement was written"
    reaction.took(world.router.submit(b"\x03", second.attempt.hash, second))
    assert len(ended) == 1


def test_mixed_private_and_public_in_one_batch_settle_each_send_once() -> None:
    world = World()
    world.router.jobs_per_send = 1
    ended: list[int] = []
    reaction = Reaction(1, 3, 3, lambda r, end: ended.append(end))
    items = []
    for raw, private in ((b"\x04", True), (b"\x05", True), (b"\x06", False)):
        ctx = world.attempt(world.record(private=private), raw, AttemptReason.REORG)
        items.append((raw, ctx.attempt.hash, ctx))
    done = world.router.submit_many(items[:2])
    reaction.took(done)
    assert ended == [], "two private sends settled the third (public) send's job too"
    reaction.took(world.router.submit_many(items[2:]))
    assert len(ended) == 1


def test_a_private_intent_with_no_private_route_is_sent_nowhere_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A journal holding a private intent, restarted with a config whose private rpcs are gone:
    it never falls back to the public fan-out, and the operator is told (its nonce holds the
    sender's later intents)."""
    world = World()
    world.router = Router(
        world.fanout, None, builders=0, private=0, tip_number=lambda: 100, clock_ns=lambda: 5
    )
    record = world.record(private=True)
    ctx = world.attempt(record, b"\x09", AttemptReason.INITIAL)
    with caplog.at_level(logging.ERROR, logger="broadcaster.tx.routing"):
        for _ in range(2):
            done = world.router.submit(b"\x09", ctx.attempt.hash, ctx)
            assert done.written == 0
    assert world.fanout is not None and world.fanout.sent == []
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1 and record.intent.id in errors[0], errors
