"""The reconcile core: a block's transactions from our accounts are signed, external or foreign."""

from __future__ import annotations

from broadcaster.audit.reconcile import (
    BlockTx,
    Foreign,
    FullBlock,
    Totals,
    plan_block,
)

OURS = "0x" + "aa" * 20
OTHER_OURS = "0x" + "ab" * 20
STRANGER = "0x" + "cc" * 20


def h(n: int) -> bytes:
    return n.to_bytes(32, "big")


def block(*txs: BlockTx, number: int = 7) -> FullBlock:
    return FullBlock(number, "0x" + "07" * 32, txs)


def test_a_block_of_signed_external_and_unknown_txs_names_only_the_unknown_one_foreign() -> None:
    b = block(
        BlockTx(h(1), OURS, 0),  # signed by the enclave (in the audit log)
        BlockTx(h(2), OURS, 1),  # an eth_sendRawTransaction the journal accepted
        BlockTx(h(3), OURS, 2),  # neither: the key was used elsewhere
        BlockTx(h(4), STRANGER, 0),  # not our account: none of our business
    )
    audit = plan_block(b, {OURS}, signed={h(1)}, external={h(2)})
    assert (audit.ours, audit.external) == (1, 1)
    assert audit.foreign == (Foreign(h(3), OURS, 2, 7, b.hash),)


def test_a_stranger_s_tx_is_never_foreign_even_when_no_hash_is_known() -> None:
    audit = plan_block(block(BlockTx(h(9), STRANGER, 3)), {OURS}, signed=set(), external=set())
    assert (audit.ours, audit.external, audit.foreign) == (0, 0, ())


def test_every_one_of_our_accounts_is_checked() -> None:
    b = block(BlockTx(h(1), OURS, 0), BlockTx(h(2), OTHER_OURS, 0))
    audit = plan_block(b, {OURS, OTHER_OURS}, signed={h(1)}, external=set())
    assert [f.sender for f in audit.foreign] == [OTHER_OURS]


def test_a_hash_both_signed_and_external_counts_once_as_ours() -> None:
    audit = plan_block(block(BlockTx(h(1), OURS, 0)), {OURS}, signed={h(1)}, external={h(1)})
    assert (audit.ours, audit.external, audit.foreign) == (1, 0, ())


def test_totals_sum_blocks_into_the_summary_line_of_design_6a() -> None:
    totals = Totals()
    totals.add(plan_block(block(BlockTx(h(1), OURS, 0)), {OURS}, {h(1)}, set()))
    totals.add(plan_block(block(BlockTx(h(2), OURS, 1), number=8), {OURS}, set(), set()))
    assert totals.summary() == {
        "event": "summary", "blocks": 2, "ours": 1, "external": 0, "foreign": 1,
    }  # fmt: skip
    assert totals.foreign[0].event() == {
        "event": "foreign", "hash": "0x" + h(2).hex(), "sender": OURS, "nonce": 1, "block": 8,
    }  # fmt: skip
