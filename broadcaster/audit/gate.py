"""What the audit findings do to signing: the foreign-transaction report and the signing gate.

:class:`ForeignReport` is the one place a foreign transaction is reported (DESIGN.md §5 and §6a),
whoever found it: the live reconciler (a block holds a tx from our account that neither the
verified audit log nor the journal accounts for) or the inclusion tracker (a nonce of ours taken
by a hash we do not hold). Each ``(sender, nonce)`` is reported once: one ``foreign_transaction``
alert, one ``broadcaster_foreign_transactions_total{sender}`` increment, even when both find it
or a reorg brings the same block back. With ``[audit] stop_signing_on_foreign`` it also stops
signing for that sender.

:class:`SigningGate` wraps the signer the tx manager uses: once the audit log is refused
(``broadcaster.audit.stream``), nothing is signed; once a sender is stopped, nothing is signed
for it. Its check is one attribute test on the sign path while nothing is stopped. After the
signer (re)connects the gate *holds* (:meth:`SigningGate.hold`): signatures wait until the
streamer has checked the new connection's log against the copy (:meth:`SigningGate.release`), so
a restarted or rolled-back enclave is refused before it signs anything (at most ``hold_timeout``
seconds, then ``SignerUnavailable``: the executor retries as for a signer that is down).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from broadcaster.audit.reconcile import Foreign
from broadcaster.audit.verify import AuditRefused
from broadcaster.tx.seams import Signer
from signer_client.errors import PolicyDenied, SignerUnavailable
from signer_client.signing import SignedTx

__all__ = ["ForeignReport", "SigningGate"]

log = logging.getLogger(__name__)


class SigningGate:
    """A :class:`broadcaster.tx.seams.Signer` that refuses what the audit findings forbid."""

    def __init__(
        self,
        signer: Signer,
        *,
        hold_timeout: float = 2.0,
        on_timeout: Callable[[], None] | None = None,
    ) -> None:
        self.signer = signer
        self.hold_timeout = hold_timeout
        # A signature given up while held (the service counts signer_errors_total{kind=
        # "timeout"}: the signer client never saw the request, so nothing else counts it).
        self.on_timeout = on_timeout
        self.stopped: dict[str, str] = {}
        self.refused: str | None = None
        self.held: asyncio.Event | None = None  # set by release(): the log check is done
        self._closed = False  # True once anything is stopped or held: the sign path's one check

    def hold(self) -> None:
        """Signatures wait for :meth:`release` (a (re)connected signer's log is not checked)."""
        if self.held is None:
            self.held = asyncio.Event()
        self._closed = True

    def release(self) -> None:
        """The log was checked (or refused): waiting signatures go on (or are refused)."""
        held, self.held = self.held, None
        self._closed = self.refused is not None or bool(self.stopped)
        if held is not None:
            held.set()

    def why(self, sender: str) -> str | None:
        """Why ``sender`` may not sign (``None``: it may)."""
        if not self._closed:
            return None
        if self.refused is not None:
            return self.refused
        return self.stopped.get(sender.lower())

    def stop(self, sender: str, reason: str) -> None:
        self.stopped.setdefault(sender.lower(), reason)
        self._closed = True

    def refuse(self, reason: str) -> None:
        if self.refused is None:
            self.refused = reason
        self._closed = True
        self.release()  # waiting signatures now meet the refusal

    def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> Coroutine[Any, Any, SignedTx]:
        """The signer's coroutine itself (no extra coroutine frame on the sign path), or
        :class:`PolicyDenied` (rule ``audit_stopped``) raised at the call, which the executor's
        ``await signer.sign_transaction(...)`` meets inside its ``try`` all the same."""
        if self._closed:
            why = self.why(sender)
            if why is not None:
                raise PolicyDenied("audit_stopped", why)
            if self.held is not None:
                return self._after_check(tx, sender, self.held)
        return self.signer.sign_transaction(tx, sender)

    async def _after_check(
        self, tx: Mapping[str, Any], sender: str, held: asyncio.Event
    ) -> SignedTx:
        try:
            await asyncio.wait_for(held.wait(), self.hold_timeout)
        except TimeoutError:
            if self.on_timeout is not None:
                self.on_timeout()
            raise SignerUnavailable(
                "the reconnected signer's audit log is not checked yet: not signing until it is"
            ) from None
        return await self.sign_transaction(tx, sender)  # refused, held again, or signed

    async def advance_nonce_floor(self, chain_id: int, sender: str, nonce: int) -> None:
        """Passed through (the executor finds it with ``getattr``: a gate without it would never
        move the enclave's nonce window), refused as a signature would be: moving the window of
        a stopped sender, or of a signer whose log was refused, is not ours to do."""
        why = self.why(sender)
        if why is not None:
            raise PolicyDenied("audit_stopped", why)
        advance = getattr(self.signer, "advance_nonce_floor", None)
        if advance is not None:
            await advance(chain_id, sender, nonce)

    async def sign_authorization(self, authorization: Mapping[str, Any], sender: str) -> Any:
        """An EIP-7702 authorization (``broadcaster.tx.typed``), refused as a signature would be:
        delegating a stopped sender's account is signing for it. Waits for a held log check."""
        why = self.why(sender)
        if why is not None:
            raise PolicyDenied("audit_stopped", why)
        if self.held is not None:
            try:
                await asyncio.wait_for(self.held.wait(), self.hold_timeout)
            except TimeoutError:
                raise SignerUnavailable(
                    "the reconnected signer's audit log is not checked yet: not signing until it is"
                ) from None
            return await self.sign_authorization(authorization, sender)
        sign = getattr(self.signer, "sign_authorization", None)
        if sign is None:
            raise PolicyDenied(
                "no_authorizations", "this signer cannot sign EIP-7702 authorizations"
            )
        return await sign(authorization, sender)


class ForeignReport:
    """Reports each foreign ``(sender, nonce)`` once (see the module docstring)."""

    def __init__(
        self,
        *,
        count: Callable[[str], None],
        alert: Callable[[str, str], None],
        gate: SigningGate | None = None,
        stop_signing: bool = False,
    ) -> None:
        self._count = count
        self._alert = alert
        self.gate = gate
        self.stop_signing = stop_signing
        self.seen: dict[tuple[str, int], Foreign | None] = {}

    def foreign(self, sender: str, nonce: int | None, found: Foreign | None = None) -> bool:
        """Report one; ``False`` when this ``(sender, nonce)`` was reported before. ``nonce``
        ``None`` (a caller that cannot tell) is always reported."""
        sender = sender.lower()
        if nonce is not None:
            key = (sender, nonce)
            if key in self.seen:
                return False
            self.seen[key] = found
        where = f"{sender}/{nonce}"
        if found is not None:
            where += f" tx 0x{found.hash.hex()} in block {found.block} ({found.block_hash[:18]}...)"
        self._alert("foreign_transaction", where)
        self._count(sender)
        if self.stop_signing and self.gate is not None:
            self.gate.stop(
                sender,
                f"signing for {sender} is stopped: a foreign transaction used its key ({where});"
                " [audit] stop_signing_on_foreign = true. Check the key, then restart the service",
            )
        return True

    def refused(self, exc: AuditRefused) -> None:
        """The enclave's audit log was refused: nothing is signed any more."""
        self._alert("audit_refused", str(exc))
        if self.gate is not None:
            self.gate.refuse(
                f"signing is stopped: the enclave's {exc}. The log it serves does not extend the"
                " verified copy in the journal; an operator must look"
            )
