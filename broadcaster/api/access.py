"""Who is calling: tokens to principals, and what a principal may touch (pure, no I/O).

DESIGN.md §7 "Tenants": ``[api] tokens`` give full access; each ``[[api.tenants]]`` entry gives
a scoped one. A tenant sends only from its ``accounts`` (every method, raw transactions
included) and sees, follows and cancels only the intents *of those accounts*: an intent's owner
is the tenant its sender belongs to (the config refuses an account listed under two tenants), so
ownership needs no extra column in the journal and survives restarts as it is.

Anything a tenant may not see is answered exactly as something unknown ("no intent ... is known
here", a plain pass-through for a transaction hash): a refusal that differed would tell a tenant
which hashes and ids another tenant has.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nonce import TxRecord

__all__ = ["FULL_ACCESS", "Access", "Principals"]


@dataclass(frozen=True, slots=True)
class Access:
    """A caller's rights. ``accounts`` is ``None`` for full access (every account)."""

    name: str
    accounts: frozenset[str] | None = None  # lowercase 0x addresses

    @property
    def full(self) -> bool:
        return self.accounts is None

    def may_send_from(self, sender: str) -> bool:
        return self.accounts is None or sender.lower() in self.accounts

    def owns(self, record: TxRecord) -> bool:
        return self.accounts is None or record.sender in self.accounts

    def senders(self, configured: Sequence[str]) -> list[str]:
        """The accounts this caller may have the broadcaster sign for (``eth_accounts``)."""
        if self.accounts is None:
            return list(configured)
        return [a for a in configured if a in self.accounts]

    def scoped_key(self, key: str | None) -> str | None:
        """Idempotency keys live in one namespace per tenant: two bots both using ``"order-1"``
        must not collide (nor learn of each other through the collision)."""
        if key is None or self.accounts is None:
            return key
        return f"tenant:{self.name}:{key}"


FULL_ACCESS = Access("full")


class Principals:
    """Bearer tokens to :class:`Access`, compared in constant time."""

    def __init__(
        self, tokens: Iterable[str], tenants: Iterable[tuple[str, str, Iterable[str]]] = ()
    ) -> None:
        self._entries: list[tuple[bytes, Access]] = [(t.encode(), FULL_ACCESS) for t in tokens]
        for name, token, accounts in tenants:
            scoped = Access(name, frozenset(a.lower() for a in accounts))
            self._entries.append((token.encode(), scoped))
        if not self._entries:
            raise ValueError("the API needs at least one token or tenant")

    def lookup(self, token: str) -> Access | None:
        """The access ``token`` grants; every entry is compared (no early exit on a match)."""
        # A header's bytes that are not UTF-8 arrive as surrogates: encodable, never a match.
        candidate = token.encode("utf-8", "surrogatepass")
        found: Access | None = None
        for known, access in self._entries:
            if hmac.compare_digest(candidate, known):
                found = access
        return found
