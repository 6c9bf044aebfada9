"""Which stored logs count for the live reconciler (DESIGN.md §6a, active/standby).

With ``[ha]`` the copy holds one log per instance's enclave, and the leader accounts a
transaction of ours if ANY verified log holds it (after a failover the chain holds what the old
leader's enclave signed). The rows of the other instances' logs were written by other hosts (a
standby streams its own enclave's log, unfenced) into a database those hosts can write, so a row
there counts only once the leader has verified that log itself (:func:`broadcaster.cli.audit.
verify_log`: the chain from seq 1, each segment opened by a trusted key, up to a signed head)
and only up to the seq verified; with attestation pinned (``[signer] attestation_root``/``pcr0``)
only keys an attestation vouched for are trusted, so a third log signed by a key the host
controls never makes a foreign transaction look signed. This instance's own log counts up to
its streamer's verified anchor (rows past it are nobody's verified entries).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from broadcaster.audit.verify import AuditRefused
from nonce.audit_copy import AuditCopyBase

__all__ = ["VerifiedLogs"]

log = logging.getLogger(__name__)


class VerifiedLogs:
    """``signed(hashes)`` for the live reconciler (blocking: run it in a thread)."""

    def __init__(
        self,
        copy: AuditCopyBase,
        own: Callable[[], tuple[str | None, int]],
        *,
        attested_only: bool,
    ) -> None:
        self.copy = copy
        self.own = own  # (this instance's log id, the seq its streamer verified)
        self.attested_only = attested_only
        self.verified: dict[str, int] = {}  # another instance's log -> seq verified here
        self.refused: dict[str, AuditRefused] = {}

    def signed(self, tx_hashes: Iterable[bytes]) -> set[bytes]:
        own_log, own_seq = self.own()
        found: set[bytes] = set()
        for tx_hash, log_id, seq in self.copy.holders(tx_hashes):
            limit = own_seq if log_id == own_log else self._verified(log_id, seq)
            if seq <= limit:
                found.add(tx_hash)
        return found

    def _verified(self, log_id: str, seq: int) -> int:
        done = self.verified.get(log_id, 0)
        if seq <= done:
            return done
        from broadcaster.cli.audit import verify_log  # the offline check, run here too

        keys = self.copy.keys(attested_only=self.attested_only)
        try:
            done = verify_log(self.copy, log_id, keys)
        except AuditRefused as exc:
            if log_id not in self.refused:
                log.error(
                    "reconciler: log %s... does not verify, not counted: %s", log_id[:18], exc
                )
            self.refused[log_id] = exc
            return self.verified.get(log_id, 0)
        self.verified[log_id] = done
        return done
