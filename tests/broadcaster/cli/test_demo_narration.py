"""``broadcaster demo``'s narration of status notifications (no processes: the pure part)."""

from __future__ import annotations

from typing import Any

from broadcaster.cli.demo import _Narrator

INTENT = "intent-1"
DROPPED = "0xaaaaaaaa" + "11" * 28  # what the dropped block held
REPLACEMENT = "0xbbbbbbbb" + "22" * 28  # the re-signed transaction (same nonce)
AGAIN = "0xcccccccc" + "33" * 28  # the replacement of the replacement, after a second reorg
BLOCK = {"number": "0xc", "hash": "0xdddddddd" + "44" * 28}
BLOCK2 = {"number": "0xf", "hash": "0xeeeeeeee" + "55" * 28}


def note(event: str, tx_hash: str, block: dict[str, str] | None = None) -> dict[str, Any]:
    """A ``broadcaster_subscription`` result: ``intent_json`` (hash = latest attempt) + event."""
    hashes = [h for h in (DROPPED, REPLACEMENT, AGAIN) if h <= tx_hash]
    return {"id": INTENT, "event": event, "hash": tx_hash, "hashes": hashes, "block": block}


def narrator() -> _Narrator:
    n = _Narrator()
    n.label(INTENT, "intent nonce 0")
    return n


def test_a_reorg_replaced_by_a_presigned_tx_names_the_dropped_hash_not_the_new_one() -> None:
    # The service's order for a replacement signed ahead: it is written (and becomes the latest
    # attempt) before ``reorged`` is notified, so both notes carry the replacement's hash.
    n = narrator()
    assert n.lines(note("included", DROPPED, BLOCK)) == [
        "   intent nonce 0: included in block #12 0xdddddddd… 0xaaaaaaaa…"
    ]
    assert n.lines(note("reorged", REPLACEMENT)) == [
        "   intent nonce 0: DROPPED by the reorg (was 0xaaaaaaaa… in block #12 0xdddddddd…)"
    ]
    assert n.lines(note("resent", REPLACEMENT)) == [
        "   intent nonce 0: re-signed -> 0xbbbbbbbb… (same nonce, fees +10%)"
    ]


def test_a_reorg_re_signed_afterwards_reads_the_same() -> None:
    # Signed only after the reorg: ``reorged`` still carries the dropped hash, ``resent`` the new.
    n = narrator()
    n.lines(note("included", DROPPED, BLOCK))
    assert n.lines(note("reorged", DROPPED)) == [
        "   intent nonce 0: DROPPED by the reorg (was 0xaaaaaaaa… in block #12 0xdddddddd…)"
    ]
    assert n.lines(note("resent", REPLACEMENT)) == [
        "   intent nonce 0: re-signed -> 0xbbbbbbbb… (same nonce, fees +10%)"
    ]


def test_a_second_reorg_names_the_replacement_that_was_included_in_between() -> None:
    n = narrator()
    n.lines(note("included", DROPPED, BLOCK))
    n.lines(note("reorged", REPLACEMENT))
    n.lines(note("resent", REPLACEMENT))
    n.lines(note("included", REPLACEMENT, BLOCK2))
    assert n.lines(note("reorged", AGAIN)) == [
        "   intent nonce 0: DROPPED by the reorg (was 0xbbbbbbbb… in block #15 0xeeeeeeee…)"
    ]


def test_a_reorg_of_an_inclusion_it_never_saw_does_not_guess_a_hash() -> None:
    n = narrator()
    assert n.lines(note("reorged", REPLACEMENT)) == [
        "   intent nonce 0: DROPPED by the reorg (was -)"
    ]


def test_unnarrated_events_print_nothing_and_unlabelled_intents_show_their_id() -> None:
    n = _Narrator()
    assert n.lines(note("signed", DROPPED)) == []
    assert n.lines(note("broadcast", DROPPED)) == []
    assert n.lines(note("finalized", DROPPED, BLOCK)) == [
        "   intent-1…: finalized in block #12 0xdddddddd… 0xaaaaaaaa…"
    ]
