"""Validating intent parameters from the API into ``nonce.Intent`` (pure, no I/O).

JSON-RPC conventions (Ethereum JSON-RPC spec): quantities are ``0x``-prefixed hex strings without
leading zeros; plain non-negative integers are accepted too. Addresses are 20-byte hex, either all
lowercase or a valid EIP-55 checksum (a mixed-case address with a wrong checksum is a typo and is
refused). Every problem is reported as a :class:`ParamError` naming the field, which the API turns
into a ``-32602`` answer.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from broadcaster.errors import BroadcasterError
from broadcaster.settings import checksum_address
from nonce import Intent, TxRecord
from nonce.errors import InvalidIntent

__all__ = [
    "IntentDefaults",
    "ParamError",
    "checksum_address",
    "idempotency_conflict",
    "intent_json",
    "new_intent_id",
    "parse_address",
    "parse_intent",
    "parse_private",
    "parse_quantity",
]

_ADDRESS: Final = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX_DATA: Final = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_HEX_QUANTITY: Final = re.compile(r"0x[0-9a-fA-F]+")
_MAX_UINT256: Final = (1 << 256) - 1
_MAX_KEY_LENGTH: Final = 128
_INTRINSIC_GAS: Final = 21_000  # the least gas any transaction uses (Yellow Paper G_transaction)
_INTENT_FIELDS: Final = frozenset(
    {
        "from",
        "to",
        "value",
        "data",
        "input",
        "gas",
        "maxFeePerGas",
        "maxPriorityFeePerGas",
        "gasPrice",
        "validUntilBlock",
        "key",
        "type",
        "chainId",
        "nonce",
        "accessList",
        "private",
        "authorizationList",  # EIP-7702 (type 4), broadcaster.api.typed_params
        "blobs",  # EIP-4844 (type 3)
        "maxFeePerBlobGas",
    }
)


class ParamError(BroadcasterError, ValueError):
    """A parameter is missing or malformed; ``field`` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class IntentDefaults:
    """What the service fills in when a bot leaves a field out."""

    chain_id: int
    accounts: Sequence[str]  # lowercase addresses the signer holds keys for
    priority_fee: int = 1_000_000_000  # 1 gwei
    base_fee: int | None = None  # the current tip's base fee, for a default maxFeePerGas
    private: bool = False  # [routing] private: the default of an intent's "private"
    private_routes: bool = False  # some [[rpcs]] is kind "private" or "builder"
    public_routes: bool = True  # some [[rpcs]] is kind "public"
    managed: Sequence[str] = ()  # every account the signer holds keys for (all tenants')


def parse_private(params: Mapping[str, Any], defaults: IntentDefaults) -> bool:
    """The intent's ``private`` flag (DESIGN.md 5a), refused when nothing could carry it."""
    value = params.get("private", defaults.private)
    if value is None:
        value = defaults.private
    if type(value) is not bool:
        raise ParamError("private", f"expected true or false, got {value!r:.40}")
    if value and not defaults.private_routes:
        raise ParamError(
            "private",
            'no [[rpcs]] of kind "private" or "builder" is configured: a private intent '
            "would have nowhere to go (it is never sent to a public endpoint)",
        )
    if not value and not defaults.public_routes:
        raise ParamError(
            "private",
            'no [[rpcs]] of kind "public" is configured: send with "private": true',
        )
    return value


def parse_quantity(value: Any, field: str, *, maximum: int = _MAX_UINT256) -> int:
    if type(value) is int:
        number = value
    elif type(value) is str:
        if not value.startswith("0x") or len(value) < 3:
            raise ParamError(field, f"expected a 0x-prefixed hex quantity, got {value!r:.80}")
        if _HEX_QUANTITY.fullmatch(value) is None:  # int() alone would take "0x-1", "0x_1"
            raise ParamError(field, f"not hex: {value!r:.80}")
        number = int(value[2:], 16)
    elif type(value) is float and value.is_integer() and abs(value) >= 2**63:
        # JSON parsers turn integers past 64 bits into floats: the exact value is already lost.
        raise ParamError(field, f"{value!r} is too large for a JSON integer: send it as 0x-hex")
    else:
        raise ParamError(field, f"expected a quantity (hex string or integer), got {value!r:.80}")
    if number < 0:
        raise ParamError(field, "must not be negative")
    if number > maximum:
        # (not the number itself: printing a huge int is slow and capped by Python)
        raise ParamError(field, f"too large: the maximum is 2**{maximum.bit_length()} - 1")
    return number


def parse_address(value: Any, field: str) -> str:
    """Lowercase ``0x`` address; mixed case must be a valid EIP-55 checksum."""
    if type(value) is not str or _ADDRESS.fullmatch(value) is None:
        raise ParamError(field, f"expected a 20-byte 0x-hex address, got {value!r:.80}")
    body = value[2:]
    lower = body.lower()
    if body != lower and body != body.upper() and checksum_address(value) != value:
        raise ParamError(field, f"bad EIP-55 checksum in {value} (a typo? mixed case is checked)")
    return "0x" + lower


def parse_data(value: Any, field: str) -> bytes:
    if value is None:
        return b""
    if type(value) is not str or _HEX_DATA.fullmatch(value) is None:
        raise ParamError(field, f"expected 0x-prefixed hex bytes, got {value!r:.80}")
    return bytes.fromhex(value[2:])


_STORAGE_KEY: Final = re.compile(r"0x[0-9a-fA-F]{64}")
_MAX_ACCESS_ENTRIES: Final = 1024


def parse_access_list(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """EIP-2930 ``accessList``: ``[{address, storageKeys: [32-byte hex, ...]}, ...]``."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_ACCESS_ENTRIES:
        raise ParamError(
            "accessList",
            f"expected a list of at most {_MAX_ACCESS_ENTRIES} {{address, storageKeys}}",
        )
    entries = []
    for index, entry in enumerate(value):
        where = f"accessList[{index}]"
        if not isinstance(entry, dict) or set(entry) - {"address", "storageKeys"}:
            raise ParamError(where, "expected {address, storageKeys}")
        address = parse_address(entry.get("address"), f"{where}.address")
        keys = entry.get("storageKeys", [])
        if not isinstance(keys, list) or len(keys) > _MAX_ACCESS_ENTRIES:
            raise ParamError(f"{where}.storageKeys", "expected a list of 32-byte 0x-hex keys")
        for key_index, key in enumerate(keys):
            if type(key) is not str or _STORAGE_KEY.fullmatch(key) is None:
                raise ParamError(
                    f"{where}.storageKeys[{key_index}]",
                    f"expected 32 bytes of 0x-hex, got {key!r:.80}",
                )
        entries.append((address, tuple(k.lower() for k in keys)))
    return tuple(entries)


def new_intent_id() -> str:
    """32 hex digits: the time in µs (14 digits), then 72 random bits.

    Time-ordered like UUIDv7, so journal rows keyed by id land next to each other in SQLite's
    B-tree (random ids cost the journal writer 15-25% more CPU, bench/journal.py); 72 random
    bits per µs keep ids unique and unguessable across restarts and processes.
    """
    return f"{time.time_ns() // 1000:014x}{os.urandom(9).hex()}"


def parse_intent(
    params: Any,
    defaults: IntentDefaults,
    *,
    require_gas: bool = True,
    intent_id: str | None = None,
) -> Intent:
    """Validate ``broadcaster_sendIntent`` / ``eth_sendTransaction`` params into an ``Intent``."""
    if isinstance(params, list):
        if len(params) != 1:
            raise ParamError("params", "expected one intent object")
        params = params[0]
    if not isinstance(params, Mapping):
        raise ParamError("params", "expected an intent object")
    unknown = sorted(set(params) - _INTENT_FIELDS)
    if unknown:
        raise ParamError(unknown[0], f"unknown field (known: {', '.join(sorted(_INTENT_FIELDS))})")

    if params.get("from") is None:
        if len(defaults.accounts) != 1:
            raise ParamError("from", "required when this token may send from several accounts")
        sender = defaults.accounts[0]
    else:
        sender = parse_address(params["from"], "from")
        if sender not in defaults.accounts:
            raise ParamError("from", f"{sender} is not an account this token may send from")
    to = None if params.get("to") in (None, "0x") else parse_address(params["to"], "to")
    value = parse_quantity(params.get("value", 0), "value")
    if "data" in params and "input" in params and params["data"] != params["input"]:
        raise ParamError("data", "data and input differ")
    data = parse_data(params.get("data", params.get("input")), "data")
    if "chainId" in params and parse_quantity(params["chainId"], "chainId") != defaults.chain_id:
        raise ParamError("chainId", f"this broadcaster signs for chain {defaults.chain_id}")
    if "gasPrice" in params and ("maxFeePerGas" in params or "maxPriorityFeePerGas" in params):
        raise ParamError(
            "gasPrice",
            "give either gasPrice (legacy) or maxFeePerGas and maxPriorityFeePerGas "
            "(EIP-1559), not both",
        )
    typed = _typed_type(params)
    tx_type = parse_quantity(
        params.get("type", typed or (2 if "gasPrice" not in params else 0)), "type"
    )
    if tx_type not in (0, 1, 2, 3, 4):
        raise ParamError(
            "type", "must be 0 (legacy), 1 (EIP-2930), 2 (EIP-1559), 3 (blob) or 4 (set-code)"
        )
    if tx_type != typed and (typed or tx_type > 2):
        raise ParamError("type", _TYPED_NEEDS[tx_type if tx_type > 2 else typed])
    if "gas" in params:
        gas = parse_quantity(params["gas"], "gas", maximum=(1 << 64) - 1)
        if gas < _INTRINSIC_GAS:
            raise ParamError(
                "gas",
                f"{gas} is below the {_INTRINSIC_GAS} every transaction needs (intrinsic gas)",
            )
    elif require_gas:
        raise ParamError("gas", "required")
    else:
        gas = 0  # the caller estimates it
    if tx_type >= 2:
        if "gasPrice" in params:
            raise ParamError("gasPrice", "an EIP-1559 intent takes maxFeePerGas instead")
        tip = parse_quantity(
            params.get("maxPriorityFeePerGas", defaults.priority_fee), "maxPriorityFeePerGas"
        )
        if "maxFeePerGas" in params:
            max_fee = parse_quantity(params["maxFeePerGas"], "maxFeePerGas")
        elif defaults.base_fee is not None:
            max_fee = 2 * defaults.base_fee + tip
        else:
            raise ParamError("maxFeePerGas", "required (the base fee is not known yet)")
    else:
        if "gasPrice" not in params:
            raise ParamError("gasPrice", "required for legacy and EIP-2930 intents")
        max_fee = tip = parse_quantity(params["gasPrice"], "gasPrice")
    valid_until = params.get("validUntilBlock")
    key = params.get("key")
    if key is not None and (type(key) is not str or not 0 < len(key) <= _MAX_KEY_LENGTH):
        raise ParamError("key", f"expected a string of 1 to {_MAX_KEY_LENGTH} characters")
    access_list = parse_access_list(params.get("accessList"))
    private = parse_private(params, defaults)
    if access_list and tx_type == 0:
        raise ParamError("accessList", "a legacy (type 0) transaction has no access list")
    extra: dict[str, Any] = {}
    if typed:
        if to is None:
            raise ParamError("to", "required: blob and set-code transactions create no contracts")
        extra = _typed_extra(params, tx_type, sender, defaults)
    elif "maxFeePerBlobGas" in params:
        raise ParamError("maxFeePerBlobGas", "only a blob (type 3) intent takes it")
    try:
        return Intent(
            id=intent_id or new_intent_id(),
            sender=sender,
            to=to,
            value=value,
            data=data,
            gas=gas if gas else 1,
            max_fee_per_gas=max_fee,
            max_priority_fee_per_gas=tip,
            chain_id=defaults.chain_id,
            valid_until_block=(
                None if valid_until is None else parse_quantity(valid_until, "validUntilBlock")
            ),
            key=key,
            tx_type=tx_type,
            access_list=access_list,
            private=private,
            **extra,
        )
    except InvalidIntent as exc:
        raise ParamError(exc.field, exc.reason) from exc


_TYPED_NEEDS: Final = {
    3: "a blob (type 3) intent takes blobs and maxFeePerBlobGas, and only it takes blobs",
    4: "a set-code (type 4) intent takes authorizationList, and only it does",
}


def _typed_type(params: Mapping[str, Any]) -> int:
    """3 or 4 when the params carry blobs or an authorization list, else 0."""
    if params.get("blobs") is not None:
        if params.get("authorizationList") is not None:
            raise ParamError(
                "authorizationList", "a transaction carries blobs or authorizations, not both"
            )
        return 3
    return 4 if params.get("authorizationList") is not None else 0


def _typed_extra(
    params: Mapping[str, Any], tx_type: int, sender: str, defaults: IntentDefaults
) -> dict[str, Any]:
    """``Intent`` keyword arguments of a type-3/4 intent (``broadcaster.api.typed_params``)."""
    from broadcaster.api import typed_params  # only these intents pay for KZG and recovery

    if tx_type == 4:
        return {
            "authorizations": typed_params.parse_authorizations(
                params["authorizationList"],
                sender=sender,
                chain_id=defaults.chain_id,
                managed=defaults.managed,
            )
        }
    if "maxFeePerBlobGas" not in params:
        raise ParamError("maxFeePerBlobGas", "required for a blob (type 3) intent")
    return {
        "max_fee_per_blob_gas": parse_quantity(params["maxFeePerBlobGas"], "maxFeePerBlobGas"),
        "blobs": typed_params.parse_blobs(params["blobs"]),
    }


def intent_json(record: TxRecord) -> dict[str, Any]:
    """``broadcaster_getIntent``'s answer for ``record``."""
    latest = record.latest
    return {
        "id": record.intent.id,
        "status": record.state.value,
        "from": checksum_address(record.sender),
        "nonce": hex(record.nonce),
        "hash": "0x" + latest.hash.hex() if latest is not None else None,
        "hashes": ["0x" + a.hash.hex() for a in record.attempts],
        "block": (
            {"number": hex(record.block.number), "hash": record.block.hash}
            if record.block is not None
            else None
        ),
        "reason": record.state_reason,
    }


_COMPARED: Final = (
    ("from", "sender"),
    ("to", "to"),
    ("value", "value"),
    ("data", "data"),
    ("gas", "gas"),
    ("maxPriorityFeePerGas", "max_priority_fee_per_gas"),
    ("validUntilBlock", "valid_until_block"),
    ("type", "tx_type"),
    ("accessList", "access_list"),
    ("private", "private"),  # a retry may not move an intent between public and private
    ("maxFeePerBlobGas", "max_fee_per_blob_gas"),
    ("blobs", "blobs"),
    ("authorizationList", "authorizations"),
)


def idempotency_conflict(params: Any, new: Intent, earlier: Intent) -> str | None:
    """The first field in which ``new`` (parsed from ``params``) differs from ``earlier``, the
    intent booked under the same key; ``None`` when it is the same request again.

    ``maxFeePerGas`` is compared only when the request gives it: left out, it defaults to twice
    the base fee of the moment, and a retry a block later must still count as the same request.
    So is ``gas`` when ``params`` is the request's object: ``eth_sendTransaction`` without gas
    has the node estimate it, and a retry's estimate may differ from the first one's.
    """
    if isinstance(params, list) and len(params) == 1:
        params = params[0]
    given = params if isinstance(params, Mapping) else {}
    for name, attribute in _COMPARED:
        if name == "gas" and isinstance(params, Mapping) and "gas" not in given:
            continue  # estimated by the node (eth_sendTransaction): a retry's estimate may move
        if getattr(new, attribute) != getattr(earlier, attribute):
            return name
    if ("maxFeePerGas" in given or "gasPrice" in given) and (
        new.max_fee_per_gas != earlier.max_fee_per_gas
    ):
        return "gasPrice" if "gasPrice" in given else "maxFeePerGas"
    return None
