"""The signing policy, checked before every signature. Pure: time comes in as ``now``.

Rules, in the order they are checked (the first that fails names the denial, ``PolicyDenied.rule``):

``chain_id``          the chain id is in ``chain_ids`` (legacy pre-EIP-155 txs have none: denied)
``contract_creation`` creating a contract (empty ``to``) needs ``allow_create``
``to_not_allowed``    ``to`` is in ``allowed_to`` (unset = any), or the sender itself with
                      ``allow_self`` (the 0-value self-transfer that fills an expired nonce)
``value_cap``         ``value <= max_value``
``gas_cap``           ``gas <= max_gas``
``fee_cap``           ``maxFeePerGas`` (or ``gasPrice``) ``<= max_fee_per_gas``
``tip_cap``           ``maxPriorityFeePerGas`` (or ``gasPrice``) ``<= max_priority_fee_per_gas``
``nonce_conflict``    nonce protection: a *different* payload at an already signed
                      ``(chain, sender, nonce)`` is signed only as a valid fee bump, geth's txpool
                      replace rule (``core/txpool/legacypool``): both the fee cap and the tip cap
                      strictly above, and at least ``bump_percent`` (>= 10) % above, the last
                      signed attempt. Re-signing an identical payload is allowed: RFC 6979 makes
                      it the same transaction.
``rate_limit``        per-sender token bucket: ``rate_per_second`` refill, ``burst`` capacity

Blob (type 3) transactions are not signed at all, so their +100% rule is not needed here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from signer_client.errors import PolicyDenied
from signer_client.txcodec import TxFields, keccak

__all__ = ["NonceRecord", "Policy", "PolicyConfig"]


@dataclass(frozen=True)
class PolicyConfig:
    chain_ids: tuple[int, ...] = (31337,)
    allowed_to: tuple[str, ...] | None = None  # lowercase 0x-hex; None = any destination
    allow_self: bool = True
    allow_create: bool = False
    max_value: int = 10**21
    max_gas: int = 30_000_000
    max_fee_per_gas: int = 10**12  # 1000 gwei
    max_priority_fee_per_gas: int = 10**11
    bump_percent: int = 10
    rate_per_second: float = 1000.0
    burst: int = 1000
    nonce_memory: int = 100_000  # (chain, sender, nonce) records kept; oldest forgotten first

    def __post_init__(self) -> None:
        if self.bump_percent < 10:
            raise ValueError("bump_percent must be at least 10 (geth's replace rule)")
        if self.allowed_to is not None:
            object.__setattr__(self, "allowed_to", tuple(a.lower() for a in self.allowed_to))

    def policy_hash(self) -> str:
        """keccak256 of the canonical JSON of this policy: ``hello`` reports it, logs record it."""
        canonical = orjson.dumps(
            {
                k: (str(v) if isinstance(v, int) and v >= 1 << 63 else v)
                for k, v in asdict(self).items()
            },
            option=orjson.OPT_SORT_KEYS,
        )
        return "0x" + keccak(canonical).hex()


@dataclass(slots=True)
class NonceRecord:
    """Everything signed at one (chain, sender, nonce): payload hashes and the latest fees."""

    hashes: set[bytes] = field(default_factory=set)
    fee_cap: int = 0
    tip_cap: int = 0


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float


class Policy:
    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self._chain_ids = frozenset(config.chain_ids)
        self._allowed = (
            None
            if config.allowed_to is None
            else frozenset(bytes.fromhex(a[2:]) for a in config.allowed_to)
        )
        self._nonces: dict[tuple[int, bytes, int], NonceRecord] = {}
        self._buckets: dict[bytes, _Bucket] = {}
        self.hash = config.policy_hash()

    def check(self, f: TxFields, sender: bytes, msg_hash: bytes, now: float) -> None:
        """Raise :class:`PolicyDenied` or, when allowed, record the signature about to be made."""
        c = self.config
        chain_id = f.chain_id
        if chain_id not in self._chain_ids:
            raise PolicyDenied("chain_id", f"chain id {chain_id} is not allowed")
        to = f.to
        if not to:
            if not c.allow_create:
                raise PolicyDenied("contract_creation", "contract creation is not allowed")
        elif (
            self._allowed is not None
            and to not in self._allowed
            and not (c.allow_self and to == sender)
        ):
            raise PolicyDenied("to_not_allowed", f"0x{to.hex()} is not in the allowlist")
        if f.value > c.max_value:
            raise PolicyDenied("value_cap", f"value {f.value} exceeds cap {c.max_value}")
        if f.gas > c.max_gas:
            raise PolicyDenied("gas_cap", f"gas {f.gas} exceeds cap {c.max_gas}")
        fee_cap = f.max_fee_per_gas
        if fee_cap is None:  # types 0 and 1: gasPrice is both caps
            fee_cap = tip_cap = f.gas_price
        else:
            tip_cap = f.max_priority_fee_per_gas
        if fee_cap > c.max_fee_per_gas:  # type: ignore[operator]
            raise PolicyDenied("fee_cap", f"fee cap {fee_cap} exceeds {c.max_fee_per_gas}")
        if tip_cap > c.max_priority_fee_per_gas:  # type: ignore[operator]
            raise PolicyDenied("tip_cap", f"tip {tip_cap} exceeds {c.max_priority_fee_per_gas}")
        key = (chain_id, sender, f.nonce)
        record = self._nonces.get(key)
        if record is not None and msg_hash not in record.hashes:
            self._check_replacement(record, fee_cap, tip_cap, f.nonce)  # type: ignore[arg-type]
        self._take_token(sender, now)
        if record is None:
            nonces = self._nonces
            nonces[key] = NonceRecord({msg_hash}, fee_cap, tip_cap)  # type: ignore[arg-type]
            if len(nonces) > c.nonce_memory:
                del nonces[next(iter(nonces))]
        elif msg_hash not in record.hashes:
            record.hashes.add(msg_hash)
            record.fee_cap, record.tip_cap = fee_cap, tip_cap  # type: ignore[assignment]

    def _check_replacement(self, old: NonceRecord, fee_cap: int, tip_cap: int, nonce: int) -> None:
        bump = 100 + self.config.bump_percent
        min_fee = old.fee_cap * bump // 100
        min_tip = old.tip_cap * bump // 100
        if (
            fee_cap <= old.fee_cap
            or tip_cap <= old.tip_cap
            or fee_cap < min_fee
            or tip_cap < min_tip
        ):
            raise PolicyDenied(
                "nonce_conflict",
                f"nonce {nonce} already signed; a replacement needs fee cap >= {min_fee} and "
                f"tip >= {min_tip} (+{self.config.bump_percent}%), got {fee_cap} / {tip_cap}",
            )

    def _take_token(self, sender: bytes, now: float) -> None:
        c = self.config
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = self._buckets[sender] = _Bucket(float(c.burst), now)
        else:
            bucket.tokens = min(
                float(c.burst), bucket.tokens + (now - bucket.stamp) * c.rate_per_second
            )
            bucket.stamp = now
        if bucket.tokens < 1.0:
            raise PolicyDenied("rate_limit", f"more than {c.rate_per_second}/s (burst {c.burst})")
        bucket.tokens -= 1.0

    def restore(
        self, chain_id: int, sender: bytes, nonce: int, msg_hash: bytes, fee_cap: int, tip_cap: int
    ) -> None:
        """Re-learn a signature from the audit log after a restart (nonce protection survives)."""
        record = self._nonces.setdefault((chain_id, sender, nonce), NonceRecord())
        record.hashes.add(msg_hash)
        record.fee_cap, record.tip_cap = fee_cap, tip_cap

    def describe(self) -> dict[str, Any]:
        return {
            k: (hex(v) if isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in asdict(self.config).items()
        }
