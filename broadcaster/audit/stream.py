"""Stream the enclave's audit log into the journal, verified (DESIGN.md §6a), in the background.

:class:`AuditStreamer` asks the signer for ``audit_entries`` from the entry after the last one
it holds, checks each page with :func:`broadcaster.audit.verify.verify_batch` against the log
keys attestation vouched for, and stores what passed (``nonce.audit_copy``) with the signed head.
It runs as its own task, every ``poll`` seconds, at once after the signer (re)connects (a
restarted enclave is checked before long), and whenever the reconciler meets a transaction it
cannot place yet (:meth:`sync`). It never runs on the reaction path: the sign path does not wait
for it.

Each instance streams its own enclave's log (``instance``: ``[ha] instance``, '' without [ha])
into the copy's log for that instance (``nonce.audit_copy``: keyed by log), which it alone extends.

A log that cannot be taken (an edited, re-signed, truncated or restarted log: anything
:class:`AuditRefused` names) *refuses the enclave*: ``on_refused`` is told once (the service
raises the ``audit_refused`` alert, counts ``audit_refusals_total{reason}`` and stops signing:
see :class:`broadcaster.audit.gate.SigningGate`), and the streamer stops taking entries: an
operator must look. A signer that does not answer is no refusal: the streamer asks again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from broadcaster.audit.verify import Anchor, AuditRefused, VerifiedBatch, verify_batch
from nonce.audit_copy import AuditCopyBase, StoredEntry, log_id_of
from nonce.errors import JournalError
from signer_client.errors import RemoteError, SignerError

__all__ = ["AuditSource", "AuditStreamer"]

log = logging.getLogger(__name__)

PAGE = 1000


class AuditSource(Protocol):
    """The signer's audit methods (``signer_client.SignerClient``)."""

    async def audit_entries(self, from_seq: int, limit: int = PAGE) -> dict[str, Any]: ...


class AuditStreamer:
    def __init__(
        self,
        copy: AuditCopyBase,
        source: AuditSource,
        *,
        instance: str = "",
        on_refused: Callable[[AuditRefused], None],
        on_stored: Callable[[int], None] | None = None,
        on_synced: Callable[[], None] | None = None,
        poll: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.copy = copy
        self.source = source
        self.instance = instance
        self.log_id: str | None = None  # the log this instance's enclave serves, once known
        self.on_refused = on_refused
        self.on_stored = on_stored or (lambda seq: None)
        self.on_synced = on_synced or (lambda: None)
        self.connections = 0  # bumped by reconnected(): a sync ends on the newest connection
        self.poll = poll
        self.clock = clock
        self.anchor = Anchor()
        self.trusted: set[str] = set()
        self.refused: AuditRefused | None = None
        self.head_seq = 0
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._new_keys: list[tuple[str, bool, str | None]] = []
        self._unsure = False  # a copy write failed: it may have committed all the same

    async def load(self) -> None:
        """Take up where the journal's copy of this instance's log ends (start-up); the other
        instances' logs are theirs to extend."""
        self.trusted |= await asyncio.to_thread(self.copy.keys)
        await self._take_up()

    async def _take_up(self) -> None:
        """This instance's log as the copy holds it: its id, last entry and head (start-up, and
        after a write that may have committed unacknowledged: a database restart mid-COMMIT).
        The enclave's next entries must link to that last entry, or the log is refused."""
        self.log_id = await asyncio.to_thread(self.copy.log_of, self.instance)
        if self.log_id is None:
            return
        stored = await asyncio.to_thread(self.copy.anchor, self.log_id)
        if stored is not None:
            self.anchor = Anchor(stored.seq, stored.hash, stored.key)
        head = await asyncio.to_thread(self.copy.last_head, self.log_id)
        self.head_seq = head[0] if head is not None else self.anchor.seq

    def trust(self, log_key: str, *, attested: bool, pcr0: str | None = None) -> None:
        """A log key the signer's attestation (or, unattested in dev, its ``hello``) presented;
        synchronous (called from the signer client's connect hook), stored at the next sync."""
        key = log_key.lower()
        if key and key not in self.trusted:
            self.trusted.add(key)
            self._new_keys.append((key, attested, pcr0))
        self.wake()

    def reconnected(self) -> None:
        """The signer (re)connected: the next sync checks the new connection's log."""
        self.connections += 1
        self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()  # before the sync: a wake during it means "again"
            await self.sync()
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll)
            except TimeoutError:
                pass

    async def sync(self) -> bool:
        """Fetch and store every entry up to the enclave's current head; ``False`` when the log
        is refused or the signer did not answer (the copy is then what it was)."""
        async with self._lock:
            if self.refused is not None:
                return False
            try:
                if self._unsure:  # the last write's outcome is unknown: read what it left
                    await self._take_up()
                    self._unsure = False
                connection = self.connections
                while True:
                    await self._store_keys()
                    reply = await self.source.audit_entries(self.anchor.seq + 1, PAGE)
                    batch = verify_batch(self.anchor, reply, self.trusted)
                    await self._store(batch)
                    if len(batch.entries) < PAGE:  # a short page: nothing more for now
                        if connection != self.connections:
                            # It (re)connected meanwhile: the reply may be the old one's. Ask
                            # the new connection too before calling the log checked.
                            connection = self.connections
                            continue
                        self.on_synced()
                        return True
            except AuditRefused as exc:
                self._refuse(exc)
            except RemoteError as exc:
                if exc.code == "evicted":
                    self._refuse(AuditRefused("evicted", exc.reason, self.anchor.seq + 1))
                elif exc.code in ("unknown_method", "unsupported"):
                    self._refuse(AuditRefused("unavailable", f"the signer answered {exc}"))
                else:
                    log.warning("audit_entries failed: %s", exc)
            except SignerError as exc:
                log.warning("audit log not fetched (signer): %s", exc)
            except JournalError as exc:
                self._unsure = True
                log.error("audit copy not stored: %s", exc)
            return False

    def _refuse(self, exc: AuditRefused) -> None:
        self.refused = exc
        log.error("ALERT audit_refused: %s", exc)
        self.on_refused(exc)

    async def _store_keys(self) -> None:
        keys, self._new_keys = self._new_keys, []
        now = self.clock()
        for key, attested, pcr0 in keys:
            await asyncio.to_thread(self.copy.add_key, key, attested=attested, pcr0=pcr0, at=now)

    async def _store(self, batch: VerifiedBatch) -> None:
        rows = [
            StoredEntry(e.seq, e.hash, e.kind, e.key, e.tx_hash, e.sender, e.nonce, e.line)
            for e in batch.entries
        ]
        head = batch.head
        key = batch.anchor.key  # verify_batch checked the head's signature by it
        stored_head = (head.seq, head.hash, head.signature, key) if key is not None else None
        log_id, bind = self.log_id, None
        if log_id is None and rows:
            # A log's first page starts at its seq-1 start entry (verify_batch from Anchor()).
            log_id, bind = log_id_of(rows[0]), self.instance
            owner = await asyncio.to_thread(self.copy.instance_of, log_id)
            if owner is not None and owner != self.instance:
                # This instance's signer serves another instance's log (a shared or relayed
                # enclave): extending it would leave its owner unable to store its own entries.
                raise AuditRefused(
                    "not_extending",
                    f"log {log_id[:18]}... is instance {owner!r}'s, not {self.instance!r}'s",
                    rows[0].seq,
                )
        if log_id is not None and (rows or (stored_head is not None and head.seq > self.head_seq)):
            await asyncio.to_thread(
                self.copy.append, log_id, rows, stored_head, self.clock(), instance=bind
            )
            self.log_id = log_id
        self.anchor = batch.anchor
        if stored_head is not None:
            self.head_seq = head.seq
        if rows:
            self.on_stored(batch.anchor.seq)
