"""Signatures the enclave gave that the journal never heard of (issue 14, DESIGN.md §5, §6a).

``TxManager.complete`` asks the signer while the intent's journal flush (its fsync) is still
under way, and sends only once both are done. A ``kill -9`` in between leaves the enclave holding
a signature at ``(sender, n)`` for an intent the restarted journal does not know: never on the
wire (nothing is sent before the flush), never acknowledged, but the enclave's intent-bound
nonce protection (§6a) now signs at ``n`` only that lost intent or the noop. Handing ``n`` to the
next intent would leave it refused for ever.

So recovery asks the enclave's verified audit log which nonces it signed, and every one at or
above the chain's count that the book holds no record at is taken by a noop (a 0-value
self-transfer, which the enclave's real policy signs at a signed nonce) before any later nonce is
reused; the unbooked nonces below the highest such one are plugged the same way, so no gap
opens. :func:`plan_unjournaled` decides (pure); a :data:`SignedNonces` source reads the log:

- :func:`copy_source`: the service's, the journal's verified copy (``nonce.audit_copy``) after
  the audit streamer caught up with the enclave's head (until the signer answers, recovery
  retries in the background and new intents wait: a nonce is not reused on a guess);
- :func:`log_source`: the enclave's own ``audit_entries`` from seq 1, checked with
  ``broadcaster.audit.verify.verify_batch`` (the simulator's).

Without either (``[audit]`` disabled) the manager does not overlap: it flushes, then signs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from dataclasses import dataclass

from broadcaster.audit.stream import PAGE, AuditSource, AuditStreamer
from broadcaster.audit.verify import Anchor, verify_batch
from nonce.audit_copy import AuditCopyBase, entry_chain
from signer_client.errors import SignerUnavailable

__all__ = ["NoopAt", "SignedNonces", "copy_source", "log_source", "plan_unjournaled"]

# senders' floors (the chain's mined count) -> the nonces at or above each floor the enclave's
# verified log holds a ``sign`` entry for.
SignedNonces = Callable[[Mapping[str, int]], Awaitable[Mapping[str, Collection[int]]]]


@dataclass(frozen=True, slots=True)
class NoopAt:
    """Take ``(sender, nonce)`` with a noop: signed but never journaled, or a hole below one."""

    sender: str
    nonce: int
    signed: bool  # the enclave's log holds a signature here (False: a hole below one)


def plan_unjournaled(
    signed: Mapping[str, Collection[int]],
    floors: Mapping[str, int],
    booked: Callable[[str, int], bool],
) -> list[NoopAt]:
    """The noops recovery signs first (see the module docstring), in (sender, nonce) order.

    ``booked(sender, nonce)``: the book holds a record there (its own recovery re-signs the same
    intent, which nonce protection allows).
    """
    out: list[NoopAt] = []
    for sender in sorted(signed):
        floor = floors.get(sender, 0)
        lost = {n for n in signed[sender] if n >= floor and not booked(sender, n)}
        if not lost:
            continue
        for nonce in range(floor, max(lost) + 1):
            if nonce in lost:
                out.append(NoopAt(sender, nonce, True))
            elif not booked(sender, nonce):
                out.append(NoopAt(sender, nonce, False))
    return out


def log_source(source: AuditSource, trusted: Iterable[str], *, chain_id: int) -> SignedNonces:
    """Read the enclave's whole log, verified page by page from seq 1 (keys: ``trusted``);
    only ``chain_id``'s signatures (an enclave may sign for several chains)."""
    keys = {k.lower() for k in trusted}

    async def signed(floors: Mapping[str, int]) -> Mapping[str, Collection[int]]:
        out: dict[str, set[int]] = {}
        anchor = Anchor()
        while True:
            batch = verify_batch(anchor, await source.audit_entries(anchor.seq + 1, PAGE), keys)
            for entry in batch.entries:
                sender, nonce = entry.sender, entry.nonce
                if (
                    sender is not None
                    and nonce is not None
                    and nonce >= floors.get(sender, 0)
                    and entry_chain(entry.line) == chain_id
                ):
                    out.setdefault(sender, set()).add(nonce)
            anchor = batch.anchor
            if len(batch.entries) < PAGE:
                return out

    return signed


def copy_source(streamer: AuditStreamer, copy: AuditCopyBase, *, chain_id: int) -> SignedNonces:
    """The journal's verified copy, once the streamer holds the enclave's head; only
    ``chain_id``'s signatures (the enclave's nonce protection is per chain and sender).

    Raises :class:`SignerUnavailable` when the streamer could not catch up (the signer did not
    answer): recovery then tries again in the background while new intents wait. A refused log
    stops every signature anyway (``broadcaster.audit.gate``): nothing to plug.
    """

    async def signed(floors: Mapping[str, int]) -> Mapping[str, Collection[int]]:
        if not await streamer.sync():
            if streamer.refused is not None:
                return {}
            raise SignerUnavailable("the enclave's audit log could not be brought up to date")
        log_id = streamer.log_id
        if log_id is None:
            return {}
        return {
            sender: await asyncio.to_thread(copy.signed_nonces, log_id, sender, floor, chain_id)
            for sender, floor in floors.items()
        }

    return signed
