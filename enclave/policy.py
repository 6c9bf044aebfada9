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
``blob_fee_cap``, ``delegate_not_allowed``: types 3 and 4 (``enclave.typed_rules``)
``nonce_conflict``    nonce protection binds the *intent* (DESIGN.md section 6a): at an already
                      signed ``(chain, sender, nonce)`` only the same intent (same ``type``, ``to``,
                      ``value``, ``data``, ``gas``, access list, blob hashes, authorizations) is
                      signed again, and only as a
                      valid fee bump, geth's txpool replace rule (``core/txpool/legacypool``): both
                      the fee cap and the tip cap strictly above, and at least ``bump_percent``
                      (>= 10) % above, the highest signed so far; or the noop (a 0-value,
                      empty-data transfer to the sender itself) at any fees. Never another
                      payload, whatever its fees. Re-signing an identical payload is allowed:
                      RFC 6979 makes it the same transaction.
``nonce_window``      the memory of signed nonces is bounded per ``(chain, sender)`` by a window,
                      never by forgetting the oldest: nonces below the window's floor are refused
                      (``nonce_too_low``: what the enclave no longer remembers it does not sign),
                      nonces at or above ``floor + nonce_window`` are refused (a flood of
                      far-future nonces cannot push real ones out). The floor starts at the
                      first nonce signed for that account minus half the window and only rises:
                      with :meth:`Policy.advance_floor` (the chain's confirmed nonce, given by the
                      client) or when the highest signed nonce leaves no room above.
``rate_limit``        per-sender token bucket: ``rate_per_second`` refill, ``burst`` capacity

``auth_address`` names the auth key (DESIGN.md 5a): the enclave holds that key apart from the
transaction keys, signs with it only ``sign_auth``'s EIP-191 wrapping of a request-body hash
(:meth:`Policy.check_auth`, ``signer_client.flashbots``), and never a transaction with it.

Optional (DESIGN.md section 6a), checked after ``to_not_allowed`` and at the first signature of a
nonce respectively: ``selector_not_allowed`` (``allowed_selectors``: per ``to``, the 4-byte
selectors its calldata may start with) and ``value_window_cap`` (``max_value_per_window`` wei per
sender over ``value_window_seconds``; like the rate limit it lives in memory and restarts empty).

``allow_self`` lets the sender itself through the ``to`` allowlist only for the noop shape (0 value,
empty data): a self-call with calldata or value is a payload like any other.

A blob (type 3) replacement needs +100% on the fee cap, the tip cap and the blob fee cap
(geth's blobpool); :meth:`Policy.check_authorization` is the rule of ``sign_authorization``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from enclave.typed_rules import (
    AuthorizationNonces,
    bump_percent_for,
    check_authorization,
    check_typed,
)
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
    nonce_window: int = 4096  # nonces remembered per (chain, sender); refuse outside the window
    # Calldata rule: for a `to` listed here, data must start with one of its 4-byte selectors
    # ("0x" in the list allows empty data). Lowercase 0x-hex; None = no calldata rule.
    allowed_selectors: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    # Cumulative value cap: total wei a sender may move in new transactions per sliding window
    # (fee bumps of a signed intent and noops do not count again). None = no cap.
    max_value_per_window: int | None = None
    value_window_seconds: float = 3600.0
    # EIP-7702: the contracts an account may be delegated to (lowercase 0x-hex); empty = none.
    allowed_delegates: tuple[str, ...] = ()
    max_fee_per_blob_gas: int = 10**12  # EIP-4844 blob fee cap, 1000 gwei
    # The auth key (DESIGN.md 5a, X-Flashbots-Signature): the one loaded key that signs only
    # request-auth digests (``sign_auth``) and never a transaction or authorization; None = none.
    auth_address: str | None = None

    def __post_init__(self) -> None:
        if self.bump_percent < 10:
            raise ValueError("bump_percent must be at least 10 (geth's replace rule)")
        if self.nonce_window < 16:
            raise ValueError("nonce_window must be at least 16")
        if self.allowed_to is not None:
            object.__setattr__(self, "allowed_to", tuple(a.lower() for a in self.allowed_to))
        for a in self.allowed_delegates:
            if not (a.startswith("0x") and len(a) == 42):
                raise ValueError(f"allowed_delegates: {a!r} is not a 0x address")
        object.__setattr__(
            self, "allowed_delegates", tuple(sorted(a.lower() for a in self.allowed_delegates))
        )
        if self.allowed_selectors is not None:
            rules = tuple(
                sorted(
                    (to.lower(), tuple(x.lower() for x in sel))
                    for to, sel in self.allowed_selectors
                )
            )
            for to, selectors in rules:
                if not (to.startswith("0x") and len(to) == 42):
                    raise ValueError(f"allowed_selectors: {to!r} is not a 0x address")
                for x in selectors:
                    if x != "0x" and not (x.startswith("0x") and len(x) == 10):
                        raise ValueError(f"allowed_selectors: {x!r} is not a 4-byte selector")
            object.__setattr__(self, "allowed_selectors", rules)
        if self.value_window_seconds <= 0:
            raise ValueError("value_window_seconds must be positive")
        if self.auth_address is not None:
            if not (self.auth_address.startswith("0x") and len(self.auth_address) == 42):
                raise ValueError(f"auth_address: {self.auth_address!r} is not a 0x address")
            object.__setattr__(self, "auth_address", self.auth_address.lower())

    def policy_hash(self) -> str:
        """keccak256 of the canonical JSON of this policy: ``hello`` reports it, logs record it."""
        canonical = orjson.dumps(
            {
                k: (str(v) if isinstance(v, int) and v >= 1 << 63 else v)
                for k, v in asdict(self).items()
                # A policy without an auth key hashes as it did before the key existed (pinned
                # policy_hash values in deployed configs keep matching).
                if not (k == "auth_address" and v is None)
            },
            option=orjson.OPT_SORT_KEYS,
        )
        return "0x" + keccak(canonical).hex()


def intent_of(f: TxFields) -> tuple[Any, ...]:
    """What a fee bump must keep: every field but the nonce and the fees."""
    return (
        f.type, f.chain_id, f.gas, f.to, f.value, f.data, f.access_list, f.blob_hashes,
        f.authorizations,
    )  # fmt: skip


_U64 = (1 << 64) - 1  # orjson's largest integer


def intent_hash(f: TxFields, data_keccak: bytes | None = None) -> bytes:
    """keccak256 of :func:`intent_of` in a canonical byte form (audit entries carry it, restored
    records compare with it). ``data_keccak`` is ``keccak256(f.data)`` when the caller has it."""
    if data_keccak is None:
        data_keccak = keccak(f.data)
    chain_id, gas = f.chain_id, f.gas
    if (
        f.type <= 2
        and not f.access_list
        and type(chain_id) is int
        and 0 <= chain_id <= _U64
        and type(gas) is int
        and 0 <= gas <= _U64
    ):
        # The sign path's common case (every audit entry hashes it), written out: the bytes
        # orjson gives for the list below (ints in decimal, hex strings need no escaping), without
        # building it. Outside orjson's integer range the general form raises, as it always did.
        return keccak(
            f'[{f.type},{chain_id},{gas},"{f.to.hex()}","{hex(f.value)}","{data_keccak.hex()}",[]]'
            .encode()
        )  # fmt: skip
    parts: list[Any] = [
        f.type,
        f.chain_id,
        f.gas,
        f.to.hex(),
        hex(f.value),
        data_keccak.hex(),
        [[a.hex(), [k.hex() for k in keys]] for a, keys in f.access_list],
    ]
    if f.type == 3:  # types 0-2 keep the form their logged hashes were made with
        parts.append([h.hex() for h in f.blob_hashes])
    elif f.type == 4:
        parts.append([[hex(a.chain_id), a.address.hex(), hex(a.nonce), a.y_parity, hex(a.r),
                       hex(a.s)] for a in f.authorizations])  # fmt: skip
    return keccak(orjson.dumps(parts))


def is_noop(f: TxFields, sender: bytes) -> bool:
    """The 0-value, empty-data transfer to the sender itself that fills a given-up nonce."""
    # Types 3 and 4 never: their blobs and authorizations are payloads of their own.
    return f.to == sender and f.value == 0 and not f.data and not f.access_list and f.type <= 2


@dataclass(slots=True)
class NonceRecord:
    """Everything signed at one (chain, sender, nonce): payload hashes, the intent, the highest
    fees the intent was signed with. ``intent`` is the hash (:func:`intent_hash`); ``fields`` the
    first signed fields when known in this process (compared without hashing)."""

    hashes: set[bytes] = field(default_factory=set)
    fee_cap: int = 0
    tip_cap: int = 0
    blob_fee_cap: int = 0
    intent: bytes | None = None
    fields: tuple[Any, ...] | None = None
    noop_only: bool = False  # only noops signed here so far: the first real intent may still come

    def same_intent(self, f: TxFields) -> bool:
        if self.fields is not None:
            return self.fields == intent_of(f)
        return self.intent == intent_hash(f)


@dataclass(slots=True)
class _Window:
    floor: int
    records: dict[int, NonceRecord] = field(default_factory=dict)


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
        self._windows: dict[tuple[int, bytes], _Window] = {}
        self._buckets: dict[bytes, _Bucket] = {}
        self._selectors = (
            None
            if config.allowed_selectors is None
            else {
                bytes.fromhex(to[2:]): frozenset(bytes.fromhex(x[2:]) for x in sel)
                for to, sel in config.allowed_selectors
            }
        )
        self._moved: dict[bytes, deque[tuple[float, int]]] = {}
        self._delegates = frozenset(bytes.fromhex(a[2:]) for a in config.allowed_delegates)
        self._auth_nonces = AuthorizationNonces(config.nonce_window)
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
            and not (c.allow_self and to == sender and f.value == 0 and not f.data)
        ):
            raise PolicyDenied("to_not_allowed", f"0x{to.hex()} is not in the allowlist")
        selectors = self._selectors
        if selectors is not None and to in selectors:
            allowed = selectors[to]
            if f.data[:4] not in allowed or (len(f.data) < 4 and f.data):
                raise PolicyDenied(
                    "selector_not_allowed",
                    f"calldata selector 0x{f.data[:4].hex()} is not allowed for 0x{to.hex()}",
                )
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
        if f.type >= 3:
            check_typed(f, self._chain_ids, self._delegates, c.max_fee_per_blob_gas)
        nonce = f.nonce
        wkey = (chain_id, sender)
        window = self._windows.get(wkey)
        if window is None:
            window = _Window(max(0, nonce - c.nonce_window // 2))
        elif nonce < window.floor:
            raise PolicyDenied(
                "nonce_too_low", f"nonce {nonce} is below the remembered window ({window.floor})"
            )
        record = window.records.get(nonce)
        if record is None:
            if nonce >= window.floor + c.nonce_window:
                raise PolicyDenied(
                    "nonce_window",
                    f"nonce {nonce} is beyond the window [{window.floor}, "
                    f"{window.floor + c.nonce_window}): refused rather than forgetting",
                )
        elif msg_hash not in record.hashes:
            self._check_replacement(record, f, sender, fee_cap, tip_cap)  # type: ignore[arg-type]
        counts = record is None and f.value > 0 and c.max_value_per_window is not None
        if counts:
            self._check_moved(sender, f.value, now)
        self._take_token(sender, now)
        if counts:
            self._moved.setdefault(sender, deque()).append((now, f.value))
        if record is None:
            self._windows[wkey] = window
            if nonce >= window.floor + c.nonce_window - c.nonce_window // 4:
                self._slide(window, nonce - c.nonce_window // 2, wkey)
            noop = is_noop(f, sender)
            window.records[nonce] = NonceRecord(
                {msg_hash},
                0 if noop else fee_cap,  # type: ignore[arg-type]
                0 if noop else tip_cap,  # type: ignore[arg-type]
                0 if noop else f.max_fee_per_blob_gas or 0,
                None,
                None if noop else intent_of(f),
                noop,
            )
        elif msg_hash not in record.hashes:
            record.hashes.add(msg_hash)
            if not is_noop(f, sender):
                if record.noop_only:
                    record.noop_only = False
                    record.fields = intent_of(f)
                record.fee_cap, record.tip_cap = fee_cap, tip_cap  # type: ignore[assignment]
                record.blob_fee_cap = f.max_fee_per_blob_gas or 0

    def _check_replacement(
        self, old: NonceRecord, f: TxFields, sender: bytes, fee_cap: int, tip_cap: int
    ) -> None:
        if is_noop(f, sender):
            return  # the noop may always take the nonce: it moves nothing
        nonce = f.nonce
        if not old.noop_only and not old.same_intent(f):
            raise PolicyDenied(
                "nonce_conflict",
                f"nonce {nonce} already signed for another intent (to, value, data, gas, type or "
                "access list differ): only the same intent with higher fees, or the noop",
            )
        percent = bump_percent_for(f.type, self.config.bump_percent)
        bump = 100 + percent
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
                f"tip >= {min_tip} (+{percent}%), got {fee_cap} / {tip_cap}",
            )
        if f.type == 3:  # the blob fee too (geth's blobpool bumps all three)
            blob_fee = f.max_fee_per_blob_gas or 0
            min_blob = old.blob_fee_cap * bump // 100
            if blob_fee <= old.blob_fee_cap or blob_fee < min_blob:
                raise PolicyDenied(
                    "nonce_conflict",
                    f"nonce {nonce} already signed; a blob replacement needs blob fee cap >= "
                    f"{min_blob} (+{percent}%), got {blob_fee}",
                )

    def check_authorization(
        self, chain_id: int, address: bytes, sender: bytes, now: float, *, nonce: int
    ) -> None:
        """The policy of ``sign_authorization`` (``delegate_not_allowed``, ``chain_id``, nonce
        protection of ``(chain, sender, nonce)``), and the sender's rate limit; when allowed, the
        delegate is recorded at ``nonce``."""
        check_authorization(chain_id, address, self._chain_ids, self._delegates)
        window = self._windows.get((chain_id, sender))
        self._auth_nonces.check(chain_id, sender, nonce, address, window.floor if window else 0)
        self._take_token(sender, now)
        self._auth_nonces.record(chain_id, sender, nonce, address)

    def check_auth(self, address: bytes) -> None:
        """The policy of ``sign_auth``: only the key ``auth_address`` names signs auth digests."""
        wanted = self.config.auth_address
        if wanted is None:
            raise PolicyDenied("auth_key", "this enclave's policy names no auth key")
        if "0x" + address.hex() != wanted:
            raise PolicyDenied("auth_key", f"0x{address.hex()} is not the policy's auth key")

    def restore_authorization(
        self, chain_id: int, sender: bytes, nonce: int, address: bytes
    ) -> None:
        """Re-learn a signed authorization from the verified audit log after a restart."""
        self._auth_nonces.record(chain_id, sender, nonce, address)

    def _check_moved(self, sender: bytes, value: int, now: float) -> None:
        cap = self.config.max_value_per_window
        assert cap is not None
        moved = self._moved.get(sender)
        total = 0
        if moved:
            horizon = now - self.config.value_window_seconds
            while moved and moved[0][0] <= horizon:
                moved.popleft()
            total = sum(v for _, v in moved)
        if total + value > cap:
            raise PolicyDenied(
                "value_window_cap",
                f"{total} wei already moved in the last {self.config.value_window_seconds:g} s; "
                f"{value} more exceeds {cap}",
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

    def _slide(self, window: _Window, floor: int, key: tuple[int, bytes] | None = None) -> None:
        # Forgetting is safe only together with refusing: nonces below the floor are denied.
        window.floor = floor
        for n in [n for n in window.records if n < floor]:
            del window.records[n]
        if key is not None:
            self._auth_nonces.forget_below(key[0], key[1], floor)

    def advance_floor(self, chain_id: int, sender: bytes, nonce: int) -> None:
        """Raise the window floor to ``nonce`` (the chain's confirmed nonce): records below it are
        dropped and their nonces refused from then on. Never lowers it."""
        window = self._windows.get((chain_id, sender))
        if window is None:
            self._windows[(chain_id, sender)] = _Window(nonce)
            return
        if nonce > window.floor:
            self._slide(window, nonce, (chain_id, sender))

    def restore(
        self,
        chain_id: int,
        sender: bytes,
        nonce: int,
        msg_hash: bytes,
        fee_cap: int,
        tip_cap: int,
        intent: bytes | None = None,
        noop: bool = False,
        blob_fee_cap: int = 0,
    ) -> None:
        """Re-learn a signature from the verified audit log after a restart.

        Entries are replayed in log order with the window rule :meth:`check` applied when they
        were signed (the floor starts half a window below the first nonce and slides up when a
        new nonce nears the top), so the restored window is the one the enclave had: a log with
        more than half a window of nonces must not leave the floor at the first one (every new
        nonce would be refused as beyond the window, for good). An entry below the floor is
        refused as ``nonce_too_low`` from then on anyway, so it is not kept."""
        w = self.config.nonce_window
        window = self._windows.get((chain_id, sender))
        if window is None:
            window = self._windows[(chain_id, sender)] = _Window(max(0, nonce - w // 2))
        if nonce < window.floor:
            return
        record = window.records.get(nonce)
        if record is None:
            if nonce >= window.floor + w - w // 4:
                self._slide(window, nonce - w // 2)
            record = window.records[nonce] = NonceRecord(noop_only=True)
        record.hashes.add(msg_hash)
        if not noop:
            if record.noop_only:
                record.noop_only = False
                record.intent = intent
            record.fee_cap = max(record.fee_cap, fee_cap)
            record.tip_cap = max(record.tip_cap, tip_cap)
            record.blob_fee_cap = max(record.blob_fee_cap, blob_fee_cap)

    def remembered(self) -> int:
        """How many (chain, sender, nonce) records are held (bounded by the window)."""
        return sum(len(w.records) for w in self._windows.values())

    def describe(self) -> dict[str, Any]:
        return {
            k: (hex(v) if isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in asdict(self.config).items()
        }
