"""The reasons an attempt goes out again, as the metrics label them."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ResendReason"]


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
