"""The anchored audit log on the broadcaster's side, and reconciliation with the chain (§6a).

- ``verify``: checks each streamed entry (hash chain, signature by an attested log key, the head)
  before it is kept; ``AuditRefused`` names what is wrong.
- ``stream``: ``AuditStreamer``, the background task that copies the enclave's log into the
  journal (``nonce.audit_copy``, keyed by log: each ``[ha]`` instance streams its own enclave's
  log, the leader and a standby alike) and refuses a log that does not extend the copy.
- ``reconcile``: the pure core, ``plan_block``: a block's transactions from our accounts are in
  the verified log, journaled external raw txs, or foreign.
- ``logs``: ``VerifiedLogs``, which stored logs' entries the live reconciler counts (another
  instance's log only once verified here, with attested keys when attestation is pinned).
- ``live``: ``LiveReconciler``, every canonical block checked as it joins (reorg-aware).
- ``gate``: ``ForeignReport`` (one report per foreign ``(sender, nonce)``) and ``SigningGate``
  (stop signing for a sender, or entirely once the log is refused).
- ``chain``: blocks with their transactions.

``broadcaster audit`` (``broadcaster.cli.audit``) runs the same check over history.
"""

from broadcaster.audit.gate import ForeignReport, SigningGate
from broadcaster.audit.live import LiveReconciler
from broadcaster.audit.reconcile import BlockAudit, BlockTx, Foreign, FullBlock, plan_block
from broadcaster.audit.stream import AuditStreamer
from broadcaster.audit.verify import REFUSAL_REASONS, Anchor, AuditRefused, verify_batch

__all__ = [
    "REFUSAL_REASONS",
    "Anchor",
    "AuditRefused",
    "AuditStreamer",
    "BlockAudit",
    "BlockTx",
    "Foreign",
    "ForeignReport",
    "FullBlock",
    "LiveReconciler",
    "SigningGate",
    "plan_block",
    "verify_batch",
]
