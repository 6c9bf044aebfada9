"""The reasons an attempt goes out again, as the metrics label them."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["INCLUSION_REFUSALS", "NOT_IN_BODY", "ResendReason"]


class ResendReason(StrEnum):
    """Why an attempt went out again: the ``reason`` label of ``resends_total`` (every value is
    one the manager emits; the metrics pre-bind exactly these)."""

    REORG = "reorg"  # its block was dropped: re-signed (or signed ahead) at the same nonce
    REORG_REBROADCAST = "reorg_rebroadcast"  # dropped, identical bytes again (signed elsewhere)
    UNDERPRICED = "underpriced"  # an RPC answered (replacement) transaction underpriced
    EXPIRED_REPLACEMENT = "expired_replacement"  # a noop: validUntilBlock passed
    CANCEL = "cancel"  # a noop: broadcaster_cancelIntent after signing
    GAP_FILL = "gap_fill"  # a noop at a nonce nothing else will use
    REBROADCAST = "rebroadcast"  # not mined REBROADCAST_BLOCKS after it went out: same bytes
    RECOVERY = "recovery"  # after a restart: the journaled bytes again


NOT_IN_BODY = "not_in_body"
"""A hash list or a receipt named a transaction of ours in a block whose proven body does not
hold it (a lying or confused read endpoint): the ``reason`` of ``inclusion_bad_blocks_total``."""

INCLUSION_REFUSALS = (
    "header_hash",
    "transactions_root",
    "tx_hash",
    "signature",
    "malformed",
    "unverified",
    NOT_IN_BODY,
)
"""Every ``reason`` label of ``inclusion_bad_blocks_total``: the body checker's
(``broadcaster.audit.body.BODY_REFUSALS``, spelled out here: the tx side does not import the
audit package, which imports it; a test keeps the two equal) and ``not_in_body``."""
