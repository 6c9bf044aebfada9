"""Which endpoints an attempt goes to (DESIGN.md section 5a): the tx manager's ``Submitter``.

:class:`Router` stands where the fan-out stood. An attempt of a ``private`` intent (payload,
replacement or noop alike: the flag is the intent's) goes only to the private RPCs and the
builders, through :class:`~broadcaster.rpc.orderflow.OrderflowSender`, as
:func:`broadcaster.tx.bundles.plan_submit` says; every other attempt goes to the public fan-out.
With no public endpoint at all (a builders-only deployment) everything is routed privately.
:meth:`Router.on_head` re-targets the live bundles (:func:`~broadcaster.tx.bundles.plan_head`);
:meth:`Router.on_status` cancels the bundle of an intent that was cancelled or expired.
Bundles of ``broadcaster_sendBundle`` (:mod:`broadcaster.tx.bundle_plans`) are registered with
:meth:`Router.add_bundle` before their members are admitted; a member's attempt then sends the
whole bundle under the bundle's ``replacementUuid`` instead of a one-transaction bundle. A
bundle that can no longer land (:meth:`Router.kill_bundle`: a member cancelled, expired or
failed) is *dead*: its other live members are cancelled (``cancel_member``) and their payloads
are never sent alone, only their noops.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from broadcaster.rpc.fanout import BroadcastResult, Submitted, Written
from broadcaster.tx.bundle_plans import BundleSpec, Member, plan_bundle_head, plan_bundle_submit
from broadcaster.tx.bundles import (
    CancelBundle,
    CancelPrivate,
    OrderflowAction,
    SendBundle,
    SendPrivate,
    Target,
    plan_cancel,
    plan_head,
    plan_submit,
    replacement_uuid,
)
from broadcaster.tx.seams import Submitter
from nonce import TxRecord, TxState
from signer_client.priority import reacting

__all__ = ["OrderflowPort", "Router", "member_canceller"]

log = logging.getLogger(__name__)

_GIVEN_UP = frozenset({TxState.CANCELLED, TxState.EXPIRED, TxState.FAILED})


class OrderflowPort(Protocol):
    """``OrderflowSender``'s sending half (a fake in tests)."""

    def to_builders(self, method: str, params: dict[str, Any]) -> int: ...

    def to_private(self, method: str, params: dict[str, Any]) -> int: ...


class Router:
    """A ``Submitter`` over a public fan-out (optional) and the private orderflow (optional)."""

    def __init__(
        self,
        public: Submitter | None,
        orderflow: OrderflowPort | None,
        *,
        builders: int,
        private: int,
        tip_number: Callable[[], int | None],
        clock_ns: Callable[[], int],
        on_action: Callable[[OrderflowAction, int], None] = lambda action, written: None,
        jobs_per_send: int = 1,
    ) -> None:
        if public is None and orderflow is None:
            raise ValueError("need a public fan-out or private endpoints")
        self.public = public
        self.orderflow = orderflow
        self.builders = builders > 0 and orderflow is not None
        self.private = private > 0 and orderflow is not None
        self.tip_number = tip_number
        self.clock_ns = clock_ns
        self.on_action = on_action
        # The executor's reaction expects this many jobs per send (TxManager ``endpoints``: the
        # public endpoint count, at least 1); a private send settles all of them (below).
        self.jobs_per_send = jobs_per_send
        self.records: dict[str, TxRecord] = {}  # private intents with a live target, by id
        self.last_ns = 0  # the clock after the latest private write (bench, reaction end)
        # (uuid -> (block, txs)) of the last bundle every builder took: a re-target that would
        # send the same txs for the same block again (a reorg's head after the reaction already
        # sent the replacement, a stale-attempt resend) is skipped.
        self.sent: dict[str, tuple[int, tuple[bytes, ...]]] = {}
        # Private intents submitted before any tip (start-up recovery, a takeover, a first intent
        # before the first head): their bundles go out with the first head's re-target, their
        # private transactions (which need no per-head re-send) right then, too.
        self.deferred: set[str] = set()
        self.nowhere: set[str] = set()  # private intents logged as having no private route
        # broadcaster_sendBundle: live bundles by id, and the bundle of each member intent (kept
        # until the bundle retires: broadcaster_getIntent names it).
        self.bundles: dict[str, BundleSpec] = {}
        self.member_of: dict[str, str] = {}
        self.retired: set[str] = set()  # members settled (forgotten) while their bundle lives
        # Bundles cancelled while members live (one gave up, or the bot cancelled): a member's
        # payload never goes out without the rest (atomicity), only its noop; each live member
        # is handed to ``cancel_member`` (the service: ``TxManager.cancel`` in a task).
        self.dead: set[str] = set()
        self.cancel_member: Callable[[TxRecord], None] | None = None
        self.cancelling: set[str] = set()  # members whose cancel is claimed (claim_cancel)

    # -- Submitter -------------------------------------------------------------------------------

    def is_private(self, context: object) -> bool:
        record = getattr(context, "record", None)
        if self.public is None:
            return True
        return isinstance(record, TxRecord) and record.intent.private

    def submit(self, raw: bytes, tx_hash: bytes, context: object = None) -> Submitted:
        if not self.is_private(context):
            assert self.public is not None
            return self.public.submit(raw, tx_hash, context)
        record = getattr(context, "record", None)
        attempt = getattr(context, "attempt", None)
        done = Submitted()
        if not isinstance(record, TxRecord):
            return done
        self.records[record.intent.id] = record
        noop = bool(getattr(attempt, "is_noop", False))
        target = Target(record.intent.id, raw, tx_hash, record.intent.valid_until_block, noop=noop)
        tip = self.tip_number()
        if tip is None:
            self.deferred.add(record.intent.id)
            return done
        self.deferred.discard(record.intent.id)
        if not (self.builders or self.private) and record.intent.id not in self.nowhere:
            # A private intent journaled before the config lost its private/builder rpcs (or a
            # builder screened out at start): never sent publicly, so sent nowhere -- and its
            # nonce holds the sender's later intents. Said once per intent, loudly.
            self.nowhere.add(record.intent.id)
            log.error(
                "intent %s (%s nonce %d) is private but no private or builder rpc is up: it is "
                "sent nowhere and holds the nonces after it; add one, or cancel it",
                record.intent.id,
                record.intent.sender,
                record.nonce,
            )
        spec = None if noop else self.bundle_of(record.intent.id)
        if spec is None and not noop and self.orphaned(record.intent.id):
            # A payload attempt of a member whose bundle is dead (recovery, a late member, a
            # reorg's re-sign): sent nowhere, the member is cancelled (its noop takes the nonce).
            self.give_up(record)
            done.refused = self.jobs_per_send
            done.last_ns = self.clock_ns()
            return done
        if spec is not None:
            members = self.members(spec)
            members[record.intent.id] = Member(raw)
            plan = plan_bundle_submit(spec, members, tip) if self.builders else []
        else:
            plan = plan_submit(target, tip, builders=self.builders, private=self.private)
        if getattr(context, "urgent", False) is True:
            # A reorg reaction's send: an auth = "flashbots" body it queues is signed on the
            # signer's urgent lane at the reaction's level, ahead of the queued ones and of the
            # presignatures (OrderflowEndpoint.offer, signer_client.priority).
            with reacting():
                written = self.execute(plan)
        else:
            written = self.execute(plan)
        # Every job the reaction expects for this send is settled here: what was not written
        # inside this call (an auth = "flashbots" body goes to the signer first, a busy
        # endpoint queues it) is not waited for, so the reaction is observed -- ending at the
        # hand-off -- whatever the number of public endpoints or builders. Exactly
        # ``jobs_per_send``, never more: ``refused`` goes negative when more builders and private
        # RPCs took it than the reaction expects of one send (``Reaction.took`` settles
        # ``written + refused``), else the reaction would end before its other sends were written.
        done.refused = self.jobs_per_send - written
        done.last_ns = self.last_ns if written else self.clock_ns()
        if written:
            done.written = written
            done.written_items = 1
        return done

    def submit_many(self, items: Sequence[tuple[bytes, bytes, object]]) -> Submitted:
        """The public items in one fan-out batch, first (builders' work never delays them and
        they keep the one JSON-RPC batch per RPC), then the private ones in order.
        ``written_items`` stays the count of leading items written now."""
        flags = [self.is_private(item[2]) for item in items]
        if not any(flags):
            assert self.public is not None
            return self.public.submit_many(items)
        public = [item for item, private in zip(items, flags, strict=True) if not private]
        done = Submitted()
        written_public = 0
        if public:
            assert self.public is not None
            first = self.public.submit_many(public)
            done.written, done.queued, done.refused = first.written, first.queued, first.refused
            done.last_ns = first.last_ns
            written_public = first.written_items
        leading = True
        seen_public = 0
        for (raw, tx_hash, context), private in zip(items, flags, strict=True):
            if private:
                one = self.submit(raw, tx_hash, context)
                done.written += one.written
                done.queued += one.queued
                done.refused += one.refused
                done.last_ns = max(done.last_ns, one.last_ns)
                wrote = one.written > 0
            else:
                wrote = seen_public < written_public
                seen_public += 1
            leading = leading and wrote
            if leading:
                done.written_items += 1
        return done

    def listen(
        self,
        on_result: Callable[[BroadcastResult], None],
        on_written: Callable[[Written], None] | None = None,
    ) -> None:
        if self.public is not None:
            self.public.listen(on_result, on_written)

    def stats(self) -> dict[str, Any]:
        """The public fan-out's per-lane stats (``FanOut.stats``); none without one."""
        stats = getattr(self.public, "stats", None)
        return dict(stats()) if stats is not None else {}

    # -- heads and statuses ----------------------------------------------------------------------

    def target_of(self, record: TxRecord) -> Target | None:
        latest = record.latest
        if latest is None:
            return None
        return Target(
            record.intent.id,
            latest.raw,
            latest.hash,
            record.intent.valid_until_block,
            mined=record.block is not None,
            given_up=record.state in _GIVEN_UP,
            noop=latest.is_noop,
        )

    def on_head(self, tip: int) -> int:
        """Re-target every live bundle at ``tip + 1``; forget settled intents. Returns writes."""
        targets = []
        late: list[OrderflowAction] = []
        for intent_id in sorted(self.deferred):
            record = self.records.get(intent_id)
            if intent_id in self.member_of:
                # A bundle member never goes alone: its live bundle is re-targeted below; a dead
                # bundle's member is cancelled (its noop, when signed, is re-targeted alone).
                if record is not None and self.orphaned(intent_id):
                    self.give_up(record)
                continue
            target = self.target_of(record) if record is not None else None
            if target is not None and self.private and not (target.mined or target.given_up):
                late.extend(plan_submit(target, tip, builders=False, private=True))
        self.deferred.clear()
        for intent_id, record in list(self.records.items()):
            if record.state is TxState.FINALIZED or record.settled:
                del self.records[intent_id]
                self.cancelling.discard(intent_id)
                for noop in (False, True):
                    self.sent.pop(replacement_uuid(intent_id, noop=noop), None)
                if intent_id in self.member_of:
                    if self.member_of[intent_id] in self.bundles:
                        self.retired.add(intent_id)
                    else:  # its bundle was cancelled: nothing left to name
                        del self.member_of[intent_id]
                continue
            if self.bundle_of(intent_id) is not None:
                continue  # re-targeted with its bundle, below
            target = self.target_of(record)
            if target is not None and not target.noop and self.orphaned(intent_id):
                continue  # a dead bundle's member: only its noop goes, never its payload alone
            if target is not None:
                targets.append(target)
        if self.dead:  # forget dead bundles once no member is left to name them
            self.dead &= set(self.member_of.values())
        bundled: list[OrderflowAction] = []
        for spec in list(self.bundles.values()):
            if all(m in self.retired for m in spec.members):
                self.drop_bundle(spec.id)
                continue
            if self.builders:
                bundled.extend(plan_bundle_head(spec, self.members(spec), tip))
        return self.execute([*late, *plan_head(targets, tip, builders=self.builders), *bundled])

    # -- bundles (broadcaster_sendBundle) --------------------------------------------------------

    def add_bundle(self, spec: BundleSpec) -> None:
        """Register a bundle before its members are admitted (their attempts then build it)."""
        self.bundles[spec.id] = spec
        for member in spec.members:
            self.member_of[member] = spec.id

    def orphaned(self, intent_id: str) -> bool:
        """``intent_id`` is a member of a bundle that was cancelled (:attr:`dead`)."""
        bundle_id = self.member_of.get(intent_id)
        return bundle_id is not None and bundle_id in self.dead

    def kill_bundle(self, bundle_id: str) -> None:
        """The bundle cannot land any more (a member gave up, or it was cancelled): forget its
        definition, keep its membership (:meth:`orphaned`) and cancel every live member."""
        spec = self.bundles.pop(bundle_id, None)
        self.dead.add(bundle_id)
        if spec is None:
            return
        tip = self.tip_number()
        for member in spec.members:
            record = self.records.get(member)
            if record is None:
                continue
            until = record.intent.valid_until_block
            if tip is not None and until is not None and tip >= until:
                continue  # its validUntilBlock passed with the bundle's: the manager expires it
            self.give_up(record)

    def give_up(self, record: TxRecord) -> None:
        latest = record.latest
        if record.settled or record.state in _GIVEN_UP or (latest is not None and latest.is_noop):
            return
        if self.cancel_member is None:
            log.error("intent %s: its bundle is dead but nothing cancels it", record.intent.id)
            return
        if self.claim_cancel(record.intent.id):
            self.cancel_member(record)

    def claim_cancel(self, intent_id: str) -> bool:
        """One canceller per member (the bot's cancelIntent or :meth:`give_up`), so two never
        sign two noops for one nonce; ``False``: someone already is. Released by
        :meth:`release_cancel` when that cancel failed, and once the member settles."""
        if intent_id in self.cancelling:
            return False
        self.cancelling.add(intent_id)
        return True

    def release_cancel(self, intent_id: str) -> None:
        self.cancelling.discard(intent_id)

    def drop_bundle(self, bundle_id: str) -> None:
        """Forget a bundle and its membership (it landed and settled, or was never sent)."""
        spec = self.bundles.pop(bundle_id, None)
        if spec is None:
            return
        self.sent.pop(spec.uuid, None)
        for member in spec.members:
            self.member_of.pop(member, None)
            self.retired.discard(member)

    def bundle_of(self, intent_id: str) -> BundleSpec | None:
        """The live bundle ``intent_id`` belongs to (``None``: none, or it was cancelled)."""
        bundle_id = self.member_of.get(intent_id)
        return None if bundle_id is None else self.bundles.get(bundle_id)

    def members(self, spec: BundleSpec) -> dict[str, Member]:
        """The plans' view of the bundle's members that have a live record here."""
        out: dict[str, Member] = {}
        for intent_id in spec.members:
            record = self.records.get(intent_id)
            target = self.target_of(record) if record is not None else None
            if record is None or target is None:
                continue
            payload = next((a.raw for a in reversed(record.attempts) if not a.is_noop), None)
            out[intent_id] = Member(payload, mined=target.mined, given_up=target.given_up)
        return out

    def on_status(self, record: TxRecord, event: str) -> None:
        """A private intent was cancelled or expired: cancel its payload bundle and private txs."""
        if event not in ("cancelled", "expired", "failed"):
            return
        spec = self.bundle_of(record.intent.id)
        if spec is not None:  # atomic: one member given up cancels the whole bundle
            self.execute([CancelBundle(spec.id, spec.uuid)])
            return
        if event == "failed" or not self.is_private(_Context(record)):
            return
        target = self.target_of(record)
        if target is None:
            return
        hashes = tuple(a.hash for a in record.attempts if not a.is_noop)
        self.execute(
            plan_cancel(target, builders=self.builders, private=self.private, hashes=hashes)
        )

    # -- execution -------------------------------------------------------------------------------

    def execute(self, actions: Sequence[OrderflowAction]) -> int:
        port = self.orderflow
        if port is None:
            return 0
        written = 0
        for action in actions:
            if type(action) is SendBundle:
                if action.retarget and self.sent.get(action.uuid) == (
                    action.block_number,
                    action.txs,
                ):
                    continue
                params: dict[str, Any] = {
                    "txs": ["0x" + raw.hex() for raw in action.txs],
                    "blockNumber": hex(action.block_number),
                    "replacementUuid": action.uuid,
                }
                if action.reverting:
                    params["revertingTxHashes"] = ["0x" + h.hex() for h in action.reverting]
                count = port.to_builders("eth_sendBundle", params)
                if count:
                    self.sent[action.uuid] = (action.block_number, action.txs)
            elif type(action) is SendPrivate:
                params = {
                    "tx": "0x" + action.raw.hex(),
                    "maxBlockNumber": hex(action.max_block_number),
                }
                count = port.to_private("eth_sendPrivateTransaction", params)
            elif type(action) is CancelBundle:
                count = port.to_builders("eth_cancelBundle", {"replacementUuid": action.uuid})
                self.records.pop(action.intent_id, None)
                self.sent.pop(action.uuid, None)
                # A cancelled bundle: its members' noops take the nonces (each under its own
                # replacementUuid); their payloads never go alone (atomicity).
                if action.intent_id in self.bundles:
                    self.kill_bundle(action.intent_id)
            else:
                assert isinstance(action, CancelPrivate)
                params = {"txHash": "0x" + action.tx_hash.hex()}
                count = port.to_private("eth_cancelPrivateTransaction", params)
                self.records.pop(action.intent_id, None)
            if count:
                written += count
                self.last_ns = self.clock_ns()
            self.on_action(action, count)
        return written


def member_canceller(
    cancel: Callable[[TxRecord], Awaitable[object]], router: Router
) -> Callable[[TxRecord], None]:
    """``Router.cancel_member`` over ``TxManager.cancel``: each cancel in its own task (the
    router is synchronous and may be inside the manager's signing path); a member that was
    given up or got its noop meanwhile is left alone; a failed cancel releases its claim."""
    tasks: set[asyncio.Task[None]] = set()

    async def run(record: TxRecord) -> None:
        latest = record.latest
        if record.settled or record.state in _GIVEN_UP or (latest is not None and latest.is_noop):
            return
        try:
            await cancel(record)
        except Exception as exc:  # logged; the member stays unsent
            router.release_cancel(record.intent.id)
            log.error("intent %s: its bundle is dead, cancel failed: %s", record.intent.id, exc)

    def start(record: TxRecord) -> None:
        task = asyncio.get_running_loop().create_task(run(record))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return start


class _Context:
    __slots__ = ("record",)

    def __init__(self, record: TxRecord) -> None:
        self.record = record
