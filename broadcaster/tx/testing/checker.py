"""Invariants of the broadcaster, checked while a simulation runs (DESIGN.md §5, §6a).

Checked *when it happens* (from the manager's ``TxObserver.status`` hook, the enclave and the
fan-out), against what was true at that instant:

- ``included`` is told only when the attempt sits in a block that is canonical (in the view the
  head clients gave the tracker; after a restart, before any head, in the chain's);
- ``expired`` only when no attempt of the intent is mined in or before ``validUntilBlock`` and the
  chain is past it; ``cancelled`` only once a noop at that nonce is signed (or nothing was ever
  signed); ``failed`` only while the payload is not mined; ``finalized`` only ``finality_depth``
  deep;
- no payload goes out after the bot was told ``cancelled``/``expired``, nor once the known tip has
  reached its ``validUntilBlock`` (the next block could not hold it);
- every signature request fits the fee rules: a replacement clears geth's +10 % (the enclave's
  ``nonce_conflict`` would refuse it), an EIP-1559 re-sign has ``maxFeePerGas >= 2 * baseFee +
  tip`` for the canonical tip's base fee, a legacy/2930 re-sign is the +10 % bump with no 1559
  headroom on top, nothing above ``[fees] max_fee_cap_wei``.

After every step: no intent's payload is on the chain twice, or after its ``validUntilBlock``;
every status told matches the intent's state at that moment (no ``included`` for a cancelled
intent whose noop was mined). At the end (:meth:`final`, after
healing and mining to finality): no sender's chain nonce is stuck under nonces we hold; every
intent ended ``included``/``finalized`` with its payload
on chain exactly once, or ``failed``/``expired``/``cancelled`` with it nowhere on chain.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broadcaster.tx.testing.chain import Block, SimTx, decode_tx
from broadcaster.tx.testing.signer import SignRequest
from nonce import TxRecord, TxState
from nonce.fees import bump

if TYPE_CHECKING:
    from broadcaster.tx.testing.sim import Sim

__all__ = ["Checker", "Told", "Violation"]

_S = TxState
_GIVEN_UP = frozenset((_S.CANCELLED, _S.EXPIRED, _S.FAILED))
_WAITING = frozenset((_S.PENDING, _S.SIGNED, _S.BROADCAST, _S.REORGED))
_STATUS_EVENTS = frozenset(("included", "finalized", "cancelled", "expired", "failed"))


@dataclass(frozen=True, slots=True)
class Violation:
    kind: str
    intent: str | None
    detail: str
    at: float

    def __str__(self) -> str:
        return f"[t={self.at:.3f}] {self.kind} ({self.intent}): {self.detail}"


@dataclass(frozen=True, slots=True)
class Told:
    """One status notification the bot got."""

    at: float
    intent: str
    event: str
    state: str
    block: int | None


class Checker:
    """The invariants (see the module docstring); also the manager's observer hooks."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.violations: list[Violation] = []
        self.told: list[Told] = []
        self.given_up: dict[str, str] = {}  # intent id -> "cancelled" | "expired" (first told)
        self.payload_sends: Counter[str] = Counter()
        self.waived: set[str] = set()
        self._late: set[str] = set()
        self._index: dict[tuple[str, str | None, int, bytes], str] = {}
        self._twice: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------------

    def _flag(self, kind: str, intent: str | None, detail: str) -> None:
        self.violations.append(Violation(kind, intent, detail, self.sim.now))

    def of(self, kind: str) -> list[Violation]:
        return [v for v in self.violations if v.kind == kind]

    def events(self, intent_id: str) -> list[str]:
        return [t.event for t in self.told if t.intent == intent_id]

    def intent_of(self, tx: SimTx) -> str | None:
        """The intent whose payload ``tx`` carries (``None`` for noops and strangers)."""
        if tx.is_noop:
            return None
        intents = self.sim.intents
        if len(self._index) != len(intents):
            self._index = {(i.sender, i.to, i.value, i.data): i.id for i in intents.values()}
        return self._index.get(tx.payload)

    def mined(self, intent_id: str) -> list[Block]:
        """Canonical blocks (producer's chain) holding the intent's payload."""
        return [b for b, tx in self.sim.chain.truth.txs() if self.intent_of(tx) == intent_id]

    def _tracker(self) -> object | None:
        host = self.sim.host
        if host is None or not host.alive or host.feed.tracker.tip is None:
            return None
        return host.feed.tracker

    def known_tip(self) -> Block:
        """The canonical tip as the process knows it (the chain's, before any head arrived)."""
        host = self.sim.host
        if host is not None and host.alive and host.feed.tracker.tip is not None:
            # A lying client's block is not in the producer's store: judge by the real tip then.
            return self.sim.chain.blocks.get(host.feed.tracker.tip.hash, self.sim.chain.tip)
        return self.sim.chain.tip

    def canonical(self, block_hash: str) -> bool:
        host = self.sim.host
        if host is not None and host.alive and host.feed.tracker.tip is not None:
            tracked = host.feed.tracker.canonical_chain()
            if block_hash in {b.hash for b in tracked}:
                return True
            block = self.sim.chain.blocks.get(block_hash)
            if block is not None and tracked and block.number < tracked[0].number:
                return self.sim.chain.truth.contains(block_hash)  # below the tracker's window
            return False
        return self.sim.chain.truth.contains(block_hash)

    # -- the manager's observer ------------------------------------------------------------------

    def alert(self, kind: str, detail: str) -> None:
        self.sim.alerts.append((self.sim.now, kind, detail))

    def status(self, record: TxRecord, event: str) -> None:
        intent = record.intent
        if intent.noop or intent.id not in self.sim.intents:
            return
        block = record.block.number if record.block is not None else None
        self.told.append(Told(self.sim.now, intent.id, event, record.state.value, block))
        if event in _STATUS_EVENTS and record.state.value != event:
            self._flag(
                f"told_{event}_but_{record.state.value}",
                intent.id,
                f"told {event!r} while the intent is {record.state.value}",
            )
        if event == "included":
            self._check_included(record)
        elif event == "expired":
            self.given_up.setdefault(intent.id, "expired")
            vub = intent.valid_until_block
            assert vub is not None
            early = [b.number for b in self.mined(intent.id) if b.number <= vub]
            if early:
                self._flag(
                    "expired_but_mined",
                    intent.id,
                    f"told expired, but its payload is in block {early[0]} <= "
                    f"validUntilBlock {vub}",
                )
            tip = self.known_tip().number
            if tip < vub:
                self._flag("expired_early", intent.id, f"told expired at tip {tip} < {vub}")
        elif event == "cancelled":
            self.given_up.setdefault(intent.id, "cancelled")
            signed = self.sim.enclave.signed()
            key = (record.sender, record.nonce)
            payload = [r for r in signed if self._is_payload(r, intent.id)]
            noop = [r for r in signed if (r.sender, r.fields.nonce) == key and _noop(r)]
            if payload and not noop:
                self._flag(
                    "cancelled_without_noop",
                    intent.id,
                    "told cancelled but no noop at its nonce was signed",
                )
        elif event == "failed":
            if self.mined(intent.id):
                self._flag("failed_but_mined", intent.id, "told failed, payload is on chain")
        elif event == "finalized":
            ref = record.block
            tip = self.sim.chain.tip.number
            if ref is None or not self.sim.chain.truth.contains(ref.hash):
                self._flag("finalized_not_canonical", intent.id, f"block {ref}")
            elif tip - ref.number < self.sim.config.finality_depth:
                self._flag("finalized_early", intent.id, f"block {ref.number} at tip {tip}")

    def _check_included(self, record: TxRecord) -> None:
        ref, tx_hash = record.block, record.included_hash
        if ref is None or tx_hash is None:
            self._flag("included_without_block", record.intent.id, "no block or hash")
            return
        block = self.sim.chain.blocks.get(ref.hash)
        if block is None or tx_hash not in {tx.hash for tx in block.txs}:
            self._flag("included_not_in_block", record.intent.id, f"{ref} lacks 0x{tx_hash.hex()}")
        elif not record.intent.noop and any(
            a.hash == tx_hash and decode_tx(a.raw).is_noop for a in record.attempts
        ):
            self._flag(
                "included_by_noop",
                record.intent.id,
                f"told included, but what block {ref.number} holds is its noop",
            )
        elif not self.canonical(ref.hash):
            self._flag(
                "included_not_canonical",
                record.intent.id,
                f"told included in block {ref.number} {ref.hash[:12]}, which is not "
                f"canonical (tip {self.known_tip().number})",
            )

    def _is_payload(self, request: SignRequest, intent_id: str) -> bool:
        intent = self.sim.intents[intent_id]
        f = request.fields
        to = "0x" + f.to.hex() if f.to else None
        return (request.sender, to, f.value, f.data) == (
            intent.sender,
            intent.to,
            intent.value,
            intent.data,
        )

    # -- the enclave and the fan-out -------------------------------------------------------------

    def on_sign(self, request: SignRequest) -> None:
        f = request.fields
        where = f"{request.sender[:10]}/{f.nonce}"
        if request.denied == "nonce_conflict":
            self._flag("nonce_conflict", None, f"{where}: {request.reason}")
        if request.denied is not None:
            return
        cap = self.sim.config.fees.fee_cap
        if cap is not None and f.fee_cap > cap:
            self._flag("fee_above_cap", None, f"{where}: {f.fee_cap} > {cap}")
        old = request.previous
        if old is None:
            return
        base_fee = self.known_tip().base_fee
        if f.type == 2:
            assert f.max_fee_per_gas is not None and f.max_priority_fee_per_gas is not None
            floor = 2 * base_fee + f.max_priority_fee_per_gas
            if f.max_fee_per_gas < floor:
                self._flag(
                    "resign_below_base_fee",
                    None,
                    f"{where}: re-signed maxFeePerGas {f.max_fee_per_gas} < 2 * base fee "
                    f"{base_fee} + tip {f.max_priority_fee_per_gas}",
                )
        else:
            limit = max(bump(old.fee_cap, self.sim.config.fees.bump_percent), 2 * base_fee)
            if f.fee_cap > limit:
                self._flag(
                    "legacy_priced_as_1559",
                    None,
                    f"{where}: type-{f.type} re-signed gasPrice {f.fee_cap} over "
                    f"{old.fee_cap} at base fee {base_fee} (+10% is {bump(old.fee_cap, 10)})",
                )

    def on_send(self, tx: SimTx) -> None:
        intent_id = self.intent_of(tx)
        if intent_id is None:
            return
        self.payload_sends[intent_id] += 1
        told = self.given_up.get(intent_id)
        if told is not None:
            self._flag(
                f"payload_after_{told}",
                intent_id,
                f"payload sent (nonce {tx.nonce}) after the bot was told {told}",
            )
        vub = self.sim.intents[intent_id].valid_until_block
        tip = self.known_tip().number
        if vub is not None and tip >= vub:  # the next block is past validUntilBlock
            self._flag(
                "expired_payload_broadcast",
                intent_id,
                f"payload sent at tip {tip}: the next block is past validUntilBlock {vub}",
            )

    # -- steps and the end -----------------------------------------------------------------------

    def after_step(self) -> None:
        counts: Counter[str] = Counter()
        for block, tx in self.sim.chain.truth.txs():
            intent_id = self.intent_of(tx)
            if intent_id is None:
                continue
            counts[intent_id] += 1
            vub = self.sim.intents[intent_id].valid_until_block
            if vub is not None and block.number > vub and intent_id not in self._late:
                self._late.add(intent_id)
                self._flag(
                    "mined_after_expiry",
                    intent_id,
                    f"payload mined in block {block.number} > validUntilBlock {vub}",
                )
        for intent_id, count in counts.items():
            if count > 1 and intent_id not in self._twice:
                self._twice.add(intent_id)
                self._flag("mined_twice", intent_id, f"payload on chain {count} times")

    def final(self) -> None:
        self.after_step()
        for sender in self.sim.accounts:
            chain_nonce = self.sim.chain.tip.nonce(sender)
            stuck = sorted(
                r.nonce
                for r in self.sim.adapter.records()
                if r.sender == sender
                and not r.released
                and r.nonce > chain_nonce
                and r.state in _WAITING
            )
            if stuck:
                self._flag(
                    "nonce_hole",
                    None,
                    f"{sender[:10]}: chain nonce stuck at {chain_nonce} under our "
                    f"nonces {stuck[:5]}",
                )
        for intent_id in self.sim.intents:
            record = self.sim.adapter.find(intent_id)
            if record is None:
                continue  # evicted after finality (checked by the memory scenario)
            mined = self.mined(intent_id)
            if record.state in (_S.INCLUDED, _S.FINALIZED):
                ref, truth = record.block, self.sim.chain.truth
                if not mined:
                    self._flag("included_not_on_chain", intent_id, f"ended {record.state.value}")
                elif ref is None or not truth.contains(ref.hash):
                    self._flag(
                        "included_in_abandoned_block",
                        intent_id,
                        f"ended {record.state.value} in {ref}, mined in block {mined[0].number}",
                    )
                elif record.state is _S.INCLUDED and (
                    self.sim.chain.tip.number - ref.number > self.sim.config.finality_depth + 1
                ):
                    self._flag(
                        "never_finalized",
                        intent_id,
                        f"included in block {ref.number}, tip {self.sim.chain.tip.number}",
                    )
            elif record.state in _GIVEN_UP:
                if mined:
                    self._flag(
                        "given_up_but_mined",
                        intent_id,
                        f"ended {record.state.value}, payload in block {mined[0].number}",
                    )
            else:
                self._flag(
                    "not_terminal",
                    intent_id,
                    f"still {record.state.value} at tip {self.sim.chain.tip.number} "
                    f"(chain nonce {self.sim.chain.tip.nonce(record.sender)}, "
                    f"its nonce {record.nonce})",
                )

    def raise_if_violated(self, *, ignore: frozenset[str] = frozenset()) -> None:
        found = [v for v in self.violations if v.kind not in ignore | self.waived]
        if found:
            lines = "\n".join(str(v) for v in found[:20])
            raise AssertionError(f"{len(found)} invariant violation(s):\n{lines}")


def _noop(request: SignRequest) -> bool:
    f = request.fields
    return f.to == bytes.fromhex(request.sender[2:]) and f.value == 0 and not f.data
