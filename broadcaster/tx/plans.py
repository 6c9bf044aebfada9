"""The tx manager's decisions, as pure functions: state + facts in, actions out (DESIGN.md §5).

Beside ``nonce.recovery.plan_recovery`` (crash recovery): ``plan_reorg`` (what to send for the
transactions a reorg dropped), ``plan_expiry`` (intents past ``validUntilBlock``),
``plan_nonce_error`` (what an RPC's txpool answer calls for), ``plan_gap_fill`` (how many noops a
sender's holes may get) and ``plan_nonce_counts`` (whether one RPC's nonce count can be trusted).
None of them awaits, reads a clock or touches the book; the manager carries out what they return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from broadcaster.rpc.error_table import ErrorKind
from broadcaster.tx.ledger import Presigned
from nonce import Attempt, AttemptReason, TxRecord, TxState
from nonce.state import GIVEN_UP_STATES

__all__ = [
    "Alert",
    "Bump",
    "CheckInclusion",
    "ExpireUnsigned",
    "Fail",
    "GapPlan",
    "Rebroadcast",
    "ReplaceExpired",
    "Resign",
    "Resync",
    "SendPresigned",
    "plan_bump",
    "plan_expiry",
    "plan_gap_fill",
    "plan_nonce_counts",
    "plan_nonce_error",
    "plan_reorg",
]

_S = TxState


# -- actions -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SendPresigned:
    """Write the replacement signed ahead for the dropped attempt, now, with no signer trip."""

    record: TxRecord
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class Resign:
    """Sign afresh at the record's nonce (fees over the floor and the new base fee) and send.

    ``noop``: a 0-value self-transfer instead of the payload (the intent was given up or expired).
    """

    record: TxRecord
    noop: bool
    reason: AttemptReason


@dataclass(frozen=True, slots=True)
class Rebroadcast:
    """Send ``attempt``'s identical bytes again (signed elsewhere, or nothing better exists)."""

    record: TxRecord
    attempt: Attempt
    reason: str


@dataclass(frozen=True, slots=True)
class ReplaceExpired:
    """``validUntilBlock`` passed unmined: sign a noop at the nonce; ``expired`` once signed."""

    record: TxRecord


@dataclass(frozen=True, slots=True)
class ExpireUnsigned:
    """Never signed and past ``validUntilBlock``: ``expired`` now (nothing can be mined), then a
    resync releases the nonce or fills it."""

    record: TxRecord


@dataclass(frozen=True, slots=True)
class Bump:
    record: TxRecord
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class CheckInclusion:
    """Ask for receipts (a "nonce too low" answer is no proof of inclusion)."""

    record: TxRecord
    attempt: Attempt


@dataclass(frozen=True, slots=True)
class Resync:
    sender: str


@dataclass(frozen=True, slots=True)
class Fail:
    record: TxRecord
    kind: ErrorKind
    message: str


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    detail: str


# -- the reorg reaction --------------------------------------------------------------------------


def plan_reorg(
    dropped: Sequence[TxRecord],
    *,
    next_block: int,
    base_fee: int | None,
    presigned_for: Callable[[bytes], Presigned | None],
    take_presigned: Callable[[bytes], Presigned | None],
) -> list[SendPresigned | Resign | Rebroadcast]:
    """What to send for each record a reorg dropped (``dropped`` sorted by (sender, nonce)).

    - bytes signed elsewhere: the identical bytes again;
    - past ``validUntilBlock`` (judged at ``next_block``) or given up: a noop, never the payload
      (a replacement signed ahead for the payload is discarded);
    - else the replacement signed ahead, if the base fee has not outgrown it, and if no earlier
      nonce of the sender has to be signed first (later nonces keep their order);
    - else a re-sign. One that waits only behind an earlier nonce's re-sign keeps its good
      replacement signed ahead in the ledger: the re-sign, run in nonce order, sends it
      (``Executor.sign_and_send``) instead of asking the signer for one more at +10%.

    ``presigned_for`` looks a replacement up; ``take_presigned`` removes it (one that cannot
    be used is spent: its fees stay the floor of the next signature, ``AttemptLedger.floor``).
    """
    out: list[SendPresigned | Resign | Rebroadcast] = []
    waiting: set[str] = set()
    for record in dropped:
        intent = record.intent
        latest = record.latest
        presigned = presigned_for(latest.hash) if latest is not None else None
        if intent.external:
            if latest is not None:
                out.append(Rebroadcast(record, latest, "reorg_rebroadcast"))
            continue
        noop = (
            record.has_noop
            or record.state in GIVEN_UP_STATES
            or (intent.expired_at(next_block) and not intent.noop)
        ) and not intent.noop
        good = presigned is not None and presigned.fits(noop=noop, base_fee=base_fee)
        if good and record.sender not in waiting:
            assert presigned is not None and latest is not None
            take_presigned(latest.hash)
            out.append(SendPresigned(record, presigned.attempt))
            continue
        if presigned is not None and not good:
            assert latest is not None
            take_presigned(latest.hash)  # spent: outgrown, or the wrong kind
        waiting.add(record.sender)
        expired = noop and not record.has_noop and record.state not in GIVEN_UP_STATES
        reason = AttemptReason.EXPIRED_REPLACEMENT if expired else AttemptReason.REORG
        out.append(Resign(record, noop=noop, reason=reason))
    return out


# -- expiry --------------------------------------------------------------------------------------


def plan_expiry(
    records: Iterable[TxRecord], *, next_block: int, scanned: Callable[[int], bool]
) -> list[ReplaceExpired | ExpireUnsigned]:
    """Intents whose ``validUntilBlock`` is below ``next_block`` and that are not mined.

    ``scanned(n)``: the canonical block at height ``n`` has been searched for our transactions.
    Until its ``validUntilBlock`` was, a signed intent is not judged (it may sit in exactly that
    block, and a lagging RPC may not have it yet); an unsigned one cannot have been mined and
    expires at once.
    """
    out: list[ReplaceExpired | ExpireUnsigned] = []
    for record in records:
        intent = record.intent
        if intent.external or intent.noop or not intent.expired_at(next_block):
            continue
        state = record.state
        if state is _S.PENDING and not record.attempts:
            out.append(ExpireUnsigned(record))
        elif (
            scanned(intent.valid_until_block)  # type: ignore[arg-type]  # expired_at: not None
            and state in (_S.PENDING, _S.SIGNED, _S.BROADCAST, _S.REORGED)
            and record.block is None
            and not record.has_noop
        ):
            out.append(ReplaceExpired(record))
    return out


# -- txpool answers --------------------------------------------------------------------------------


def plan_nonce_error(
    record: TxRecord,
    attempt: Attempt,
    kind: ErrorKind,
    *,
    final: bool,
    refusals: int,
    endpoints: int,
    bumps: int,
    max_bumps: int,
    first_bump: bool,
    first_recheck: bool,
    previous_alive: bool,
    message: str,
) -> list[Bump | CheckInclusion | Resync | Fail | Alert]:
    """What one endpoint's answer about ``attempt`` calls for (DESIGN.md §5, "Fan-out").

    ``refusals``: endpoints that refused ``attempt`` for good (this answer included);
    ``previous_alive``: an earlier attempt at the nonce is still valid bytes (a fee bump the
    account cannot fund does not make the earlier, cheaper attempt invalid).
    """
    if kind is ErrorKind.ACCEPTED or record.latest is not attempt or record.settled:
        return []
    if kind in (ErrorKind.UNDERPRICED, ErrorKind.FEE_CAP_TOO_LOW):
        bump = plan_bump(record, attempt, bumps=bumps, max_bumps=max_bumps, first=first_bump)
        return [bump] if bump is not None else []
    if kind is ErrorKind.NONCE_TOO_LOW:
        out: list[Bump | CheckInclusion | Resync | Fail | Alert] = []
        if first_recheck:
            out.append(CheckInclusion(record, attempt))
        out.append(Resync(record.sender))
        return out
    if kind is ErrorKind.NONCE_TOO_HIGH:
        return [Resync(record.sender)]
    if kind in (ErrorKind.INSUFFICIENT_FUNDS, ErrorKind.INVALID) and final:
        if refusals < endpoints:
            return []
        if kind is ErrorKind.INSUFFICIENT_FUNDS and previous_alive:
            return [
                Alert(
                    "insufficient_funds",
                    f"{record.sender}/{record.nonce}: {message} "
                    "(the earlier attempt stays in flight)",
                )
            ]
        out = [Fail(record, kind, message)]
        if kind is ErrorKind.INSUFFICIENT_FUNDS:
            out.insert(0, Alert("insufficient_funds", f"{record.sender}: {message}"))
        return out
    return []


_ACTIVE = frozenset((_S.PENDING, _S.SIGNED, _S.BROADCAST, _S.REORGED))


def plan_bump(
    record: TxRecord, attempt: Attempt, *, bumps: int, max_bumps: int, first: bool
) -> Bump | None:
    """An "underpriced" answer: re-sign with bumped fees (``pricing.replacement`` prices it),
    once per attempt, at most ``max_bumps`` times per nonce, only while the intent is active and
    ``attempt`` is its latest (a noop of a given-up intent is not bumped for its payload)."""
    if not first or bumps >= max_bumps or record.state not in _ACTIVE:
        return None
    if record.latest is not attempt or (record.has_noop and not record.intent.noop):
        return None
    return Bump(record, attempt)


# -- nonce counts and gaps -------------------------------------------------------------------------


def plan_nonce_counts(
    counts: Mapping[str, tuple[int, int]], *, held: int, max_gap_fill: int
) -> tuple[int, int, list[Alert]]:
    """``(latest, pending)`` to resync with, from every endpoint that answered.

    ``latest`` is the highest mined count any endpoint reports that at least one other endpoint
    confirms, or the only one (a single endpoint). A ``pending`` count more than
    ``max_gap_fill`` beyond what we hold (``held``: one past our highest nonce) is trusted only
    when two endpoints report at least that much; otherwise the jump is ignored and an alert
    says so (one RPC must not make us skip, and later plug, hundreds of nonces).
    """
    if not counts:
        raise ValueError("no endpoint answered")
    values = list(counts.values())
    alerts: list[Alert] = []
    latest = _confirmed([latest for latest, _ in values])
    pending = _confirmed([pending for _, pending in values])
    ours = max(held, latest)
    limit = ours + max_gap_fill
    jumpers = sorted(name for name, (_, p) in counts.items() if p > limit)
    if jumpers and (len(values) < 2 or len(jumpers) < 2):
        alerts.append(
            Alert(
                "nonce_jump",
                f"pending nonce count from {', '.join(jumpers)} is more than {max_gap_fill} "
                f"beyond ours ({ours}); not trusted alone",
            )
        )
        pending = max((p for _, p in values if p <= limit), default=ours)
    return latest, pending, alerts


def _confirmed(values: list[int]) -> int:
    """The highest value reported by two sources (or by the only one)."""
    if len(values) == 1:
        return values[0]
    ordered = sorted(values, reverse=True)
    return ordered[1]


@dataclass(frozen=True, slots=True)
class GapPlan:
    fill: tuple[int, ...]
    alert: Alert | None


def plan_gap_fill(sender: str, gaps: Sequence[int], *, max_gap_fill: int) -> GapPlan:
    """At most ``max_gap_fill`` noops per sender (the lowest gaps first); more asks an operator."""
    if len(gaps) <= max_gap_fill:
        return GapPlan(tuple(gaps), None)
    alert = Alert(
        "gap_fill_limit",
        f"{sender}: {len(gaps)} nonce gaps ({gaps[0]}..{gaps[-1]}), more than max_gap_fill = "
        f"{max_gap_fill}; filling the lowest {max_gap_fill}, look at the account",
    )
    return GapPlan(tuple(gaps[:max_gap_fill]), alert)
