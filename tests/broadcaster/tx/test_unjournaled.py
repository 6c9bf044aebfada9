"""``plan_unjournaled``: which nonces recovery takes with a noop (broadcaster.tx.unjournaled)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from broadcaster.audit.stream import AuditStreamer
from broadcaster.tx.unjournaled import NoopAt, copy_source, plan_unjournaled
from nonce.audit_copy import open_audit_copy
from signer_client.errors import SignerUnavailable

A, B = "0xaa", "0xbb"


def test_a_signed_nonce_the_book_does_not_hold_is_taken_by_a_noop() -> None:
    booked = {(A, 5), (A, 6)}
    plan = plan_unjournaled({A: {5, 6, 7}}, {A: 5}, lambda s, n: (s, n) in booked)
    assert plan == [NoopAt(A, 7, True)]


def test_holes_below_the_highest_lost_signature_are_plugged_too() -> None:
    # Two intents lost in one group commit, the signer answered only the second's request.
    plan = plan_unjournaled({A: {9}}, {A: 7}, lambda s, n: False)
    assert plan == [NoopAt(A, 7, False), NoopAt(A, 8, False), NoopAt(A, 9, True)]


def test_nonces_below_the_chain_count_or_booked_need_nothing() -> None:
    booked = {(B, 3)}
    plan = plan_unjournaled({A: {1, 2}, B: {3}}, {A: 4, B: 3}, lambda s, n: (s, n) in booked)
    assert plan == []


def test_each_sender_is_planned_from_its_own_floor() -> None:
    plan = plan_unjournaled({B: {2}, A: {0}}, {A: 0, B: 2}, lambda s, n: False)
    assert plan == [NoopAt(A, 0, True), NoopAt(B, 2, True)]


async def test_the_copy_source_raises_while_the_signer_cannot_bring_the_copy_up_to_date(
    tmp_path: Path,
) -> None:
    """Recovery must not read "no lost signatures" from a copy that may lack the newest entries:
    it is told the signer is unavailable (and retries while new intents wait)."""
    copy = open_audit_copy(tmp_path / "journal.db")

    class Down:
        async def audit_entries(self, from_seq: int, limit: int = 1000) -> dict[str, Any]:
            raise SignerUnavailable("down")

    streamer = AuditStreamer(copy, Down(), on_refused=lambda exc: None)
    try:
        with pytest.raises(SignerUnavailable):
            await copy_source(streamer, copy)({A: 0})
    finally:
        copy.close()
