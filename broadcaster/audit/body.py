"""A block's body checked against its header, and each sender recovered from its signature (pure).

An RPC's ``eth_getBlockByHash(h, true)`` answer is a claim: the ``from`` of each transaction is
what the node says, and a lying node can add a transaction "from" one of our accounts that no key
ever signed (a false ``foreign_transaction``; with ``stop_signing_on_foreign``, one RPC stopping
our signing), or relabel a real foreign one to hide it. So nothing of the answer is taken on its
word (DESIGN.md §6a, issue 18):

- **the sender** is recovered from each transaction's signature over its signing payload
  (EIP-155 for legacy, the EIP-2718 envelopes of EIP-2930 / EIP-1559 / EIP-4844 / EIP-7702);
  the RPC's ``from`` is ignored;
- **the transaction hash** is recomputed (``keccak256`` of the canonical signed encoding); an
  answer whose fields do not encode to the hash it names is refused (``tx_hash``);
- **the header hash** is recomputed from the header fields (:mod:`heads.header`, frontier to
  Prague) and must be the hash asked for: the hash the trusted tracker holds (``header_hash``);
- **the transactions root**: the ordered Merkle-Patricia trie of the encodings (yellow paper
  appendix D; keys ``rlp(index)``, values the EIP-2718 encodings) must equal the header's
  ``transactionsRoot`` (``transactions_root``). With the header hash verified, the body is then
  exactly the block's: nothing added, dropped or changed.

A header this code cannot hash (a fork after Prague, a node that leaves fields out) or a
transaction type it cannot encode leaves the block *unverified*: each transaction it can decode
still has its sender recovered, and the caller merges what every endpoint answers
(:mod:`broadcaster.audit.chain`). Anything proven wrong raises :class:`BodyRefused` with one of
:data:`BODY_REFUSALS` as its reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from broadcaster.audit.reconcile import BlockTx, FullBlock
from broadcaster.errors import BroadcasterError
from heads.errors import HeaderError
from heads.header import verify_header_hash
from signer_client.errors import TransactionError
from signer_client.rlp import encode_bytes, encode_int, encode_list_payload
from signer_client.signing import recover_pubkey
from signer_client.txcodec import (
    SECP256K1_N,
    TxFields,
    encode_signed,
    keccak,
    signing_hash,
    tx_from_dict,
)

__all__ = [
    "BODY_REFUSALS",
    "BodyRefused",
    "CheckedBlock",
    "check_block",
    "ordered_trie_root",
    "recovered_tx",
]

BODY_REFUSALS: Final = (
    "header_hash",
    "transactions_root",
    "tx_hash",
    "signature",
    "malformed",
    "unverified",
)
"""Why a block answer was refused: the label values of ``broadcaster_audit_bad_blocks_total``
(``unverified``: no endpoint's answer could be proven, the block was used as merged; counted by
:mod:`broadcaster.audit.chain`, never raised here)."""

EMPTY_TRIE_ROOT: Final = keccak(b"\x80")
"""``keccak256(rlp(b""))``: the root of an empty trie (a block without transactions)."""

# The keys of an RPC transaction object that enter each type's signed encoding (the rest, such
# as ``hash``, ``from``, ``blockHash`` or the effective ``gasPrice`` of a 1559 tx, do not).
_LEGACY: Final = ("nonce", "gas", "to", "value", "input", "gasPrice")
_TYPE_KEYS: Final[dict[int, tuple[str, ...]]] = {
    1: (*_LEGACY, "chainId", "accessList"),
    2: ("nonce", "gas", "to", "value", "input", "chainId", "accessList", "maxFeePerGas",
        "maxPriorityFeePerGas"),
}  # fmt: skip
_TYPE_KEYS[3] = (*_TYPE_KEYS[2], "maxFeePerBlobGas", "blobVersionedHashes")
_TYPE_KEYS[4] = (*_TYPE_KEYS[2], "authorizationList")


class BodyRefused(BroadcasterError, ValueError):
    """A block answer proven wrong: ``reason`` is one of :data:`BODY_REFUSALS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"block refused ({reason}): {detail}")
        self.reason = reason
        self.detail = detail


class _Unencodable(Exception):
    """A transaction of a type this code does not encode (not provably wrong)."""


@dataclass(frozen=True, slots=True)
class CheckedBlock:
    """``block`` with every sender recovered; ``verified`` when its header hashed to the hash
    asked for and its transactions to the header's ``transactionsRoot`` (the body is exact)."""

    block: FullBlock
    verified: bool


def _qty(value: object, key: str) -> int:
    if type(value) is int and value >= 0:
        return value
    if type(value) is str and value[:2] == "0x":
        try:
            return int(value, 16)
        except ValueError:
            pass
    raise BodyRefused("malformed", f"{key}: not a quantity: {value!r:.80}")


def _fields(item: Mapping[str, Any]) -> tuple[TxFields, int, int, int]:
    """The unsigned fields and ``(y_parity, r, s)`` of an RPC transaction object."""
    tx_type = _qty(item.get("type", "0x0"), "type")
    r, s = _qty(item.get("r"), "r"), _qty(item.get("s"), "s")
    if tx_type == 0:
        v = _qty(item.get("v"), "v")
        if v in (27, 28):
            chain_id, y = None, v - 27
        elif v >= 37:
            chain_id, y = (v - 35) >> 1, (v - 35) & 1
        else:
            raise BodyRefused("signature", f"legacy transaction with v = {v}")
        wanted: dict[str, Any] = {k: item.get(k) for k in _LEGACY}
        wanted["type"], wanted["chainId"] = 0, chain_id
    elif tx_type in _TYPE_KEYS:
        wanted = {k: item.get(k) for k in _TYPE_KEYS[tx_type]}
        wanted["type"] = tx_type
        y = _qty(item.get("yParity", item.get("v")), "yParity")
        if y > 1:
            raise BodyRefused("signature", f"yParity {y}")
    else:
        raise _Unencodable(f"transaction type {tx_type}")
    wanted["accessList"] = wanted.get("accessList") or []
    if not wanted.get("input"):
        wanted.pop("input", None)
    if tx_type != 0 and tx_type != 1:
        wanted.pop("gasPrice", None)
    try:
        fields = tx_from_dict({k: v for k, v in wanted.items() if v is not None or k == "to"})
    except TransactionError as exc:
        raise BodyRefused("malformed", f"transaction fields: {exc}") from exc
    return fields, y, r, s


MIN_TX_GAS: Final = 21_000
"""The intrinsic gas every transaction pays (yellow paper ``G_transaction``): a header's
``gasUsed`` bounds how many transactions its block can hold."""

MAX_UNPROVEN_TXS: Final = 20_000
"""Most transactions read from a block whose header cannot be hashed (its ``gasUsed`` is then
no bound): a mainnet block holds at most ``gasLimit / 21,000``, about 2,100 at 45M gas."""


def _prepared(item: object) -> tuple[TxFields, int, int, int, bytes]:
    """The fields, signature and canonical encoding of an RPC transaction object, its ``hash``
    checked (cheap: no signature recovery). Raises :class:`BodyRefused` / ``_Unencodable``."""
    if not isinstance(item, Mapping):
        raise BodyRefused(
            "malformed", "the block's transactions are not objects (asked with true?)"
        )
    fields, y, r, s = _fields(item)
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise BodyRefused("signature", "r or s out of range")
    raw = encode_signed(fields, y, r.to_bytes(32, "big"), s.to_bytes(32, "big"))
    tx_hash = keccak(raw)
    claimed = str(item.get("hash", ""))
    if claimed.lower() != "0x" + tx_hash.hex():
        raise BodyRefused("tx_hash", f"the fields of {claimed:.80} encode to 0x{tx_hash.hex()}")
    return fields, y, r, s, raw


def _recovered(fields: TxFields, y: int, r: int, s: int, raw: bytes) -> BlockTx:
    tx_hash = keccak(raw)
    try:
        pubkey = recover_pubkey(signing_hash(fields), y, r, s)
    except (ValueError, TypeError) as exc:
        raise BodyRefused("signature", f"0x{tx_hash.hex()}: does not recover: {exc}") from exc
    sender = "0x" + keccak(pubkey[1:])[12:].hex()
    return BlockTx(tx_hash, sender, fields.nonce)


def recovered_tx(item: object) -> tuple[BlockTx, bytes]:
    """The transaction an RPC object describes, its sender recovered from its signature, and its
    canonical encoding (the transactions trie's value). Raises :class:`BodyRefused` when the
    object is malformed, its fields do not encode to its ``hash`` or its signature does not
    recover; ``_Unencodable`` for a type this code does not know."""
    prepared = _prepared(item)
    return _recovered(*prepared), prepared[4]


def check_block(raw: Mapping[str, Any], wanted: str) -> CheckedBlock:
    """Check an ``eth_getBlockByHash(wanted, true)`` answer (see the module docstring).

    The cheap checks come first and the signature recoveries (most of the cost: tens of
    microseconds a transaction) last, once the body is proven: a liar padding a real header
    with thousands of validly signed transactions is refused by the header's ``gasUsed``
    (every transaction pays 21,000) or by the transactions root before any is recovered."""
    wanted = wanted.lower()
    block_hash = str(raw.get("hash", "")).lower()
    if block_hash != wanted:
        raise BodyRefused("header_hash", f"answered block {block_hash:.80} for {wanted}")
    try:
        header_ok = verify_header_hash(raw, wanted)
        number = _qty(raw.get("number"), "number")
    except HeaderError as exc:
        raise BodyRefused("malformed", f"header: {exc}") from exc
    if header_ok is False:
        raise BodyRefused("header_hash", f"the header fields do not hash to {wanted}")
    items = raw.get("transactions") or []
    if not isinstance(items, list):
        raise BodyRefused("malformed", "transactions: not a list")
    most = MAX_UNPROVEN_TXS
    if header_ok:
        most = _qty(raw.get("gasUsed"), "gasUsed") // MIN_TX_GAS
    if len(items) > most:
        raise BodyRefused(
            "transactions_root" if header_ok else "malformed",
            f"{len(items)} transactions, more than the block can hold ({most})",
        )
    prepared: list[tuple[TxFields, int, int, int, bytes]] = []
    complete = True
    for item in items:
        try:
            prepared.append(_prepared(item))
        except _Unencodable:
            complete = False  # not ours (the enclave signs types 0-4), nor provably a lie
    verified = False
    if header_ok and complete:
        root = "0x" + ordered_trie_root([p[4] for p in prepared]).hex()
        claimed_root = str(raw.get("transactionsRoot", "")).lower()
        if root != claimed_root and _sidecar_root(items, prepared) == claimed_root:
            root = claimed_root  # anvil's trie over blob txs' network forms (see below)
        if root != claimed_root:
            raise BodyRefused(
                "transactions_root",
                f"{len(prepared)} transactions make root {root}, the header says {claimed_root}",
            )
        verified = True
    txs = tuple(_recovered(*p) for p in prepared)
    parent = str(raw.get("parentHash", "")).lower()
    return CheckedBlock(FullBlock(number, block_hash, txs, parent), verified)


def _sidecar_root(items: Sequence[Any], prepared: Sequence[tuple[Any, ...]]) -> str | None:
    """The trie root over the blob transactions' *network* forms (with the sidecar each object
    lists in ``blobs`` / ``commitments`` / ``proofs``), the others' canonical encodings; None
    when no blob transaction lists a sidecar.

    anvil (foundry 1.x) builds ``transactionsRoot`` over a blob transaction's pooled encoding,
    sidecar included, not the canonical one mainnet clients use (seen: tests/e2e blob reorgs;
    its block objects then list the sidecar). Accepted only when it is exactly the header's
    root: every transaction still hashes to its fields and recovers its sender, and the root
    commits to those bytes, so the body is still exactly the block's."""
    values: list[bytes] = []
    found = False
    for item, p in zip(items, prepared, strict=True):
        encoding = p[4]
        if encoding[:1] == b"\x03" and isinstance(item, Mapping) and item.get("blobs"):
            try:
                parts = [
                    tuple(bytes.fromhex(str(x)[2:]) for x in item[key])
                    for key in ("blobs", "commitments", "proofs")
                ]
            except (KeyError, TypeError, ValueError):
                return None
            body = encoding[1:]
            values.append(
                b"\x03"
                + encode_list_payload(
                    body + b"".join(encode_list_payload(b"".join(map(encode_bytes, part)))
                                    for part in parts)
                )
            )  # fmt: skip
            found = True
        else:
            values.append(encoding)
    return "0x" + ordered_trie_root(values).hex() if found else None


# ------------------------------------------------------------------ the ordered trie (YP app. D)


def _nibbles(key: bytes) -> bytes:
    return bytes(n for b in key for n in (b >> 4, b & 15))


def _hex_prefix(nibbles: bytes, leaf: bool) -> bytes:
    flag = 2 if leaf else 0
    nibbles = bytes((flag + 1,)) + nibbles if len(nibbles) & 1 else bytes((flag, 0)) + nibbles
    return bytes((nibbles[i] << 4) | nibbles[i + 1] for i in range(0, len(nibbles), 2))


def _ref(node: bytes) -> bytes:
    """How a parent holds a child node: inline below 32 bytes, else by hash."""
    return node if len(node) < 32 else encode_bytes(keccak(node))


def _node(pairs: Sequence[tuple[bytes, bytes]], depth: int) -> bytes:
    """The RLP of the trie node over ``pairs`` (nibble keys, sorted, distinct) below ``depth``."""
    if len(pairs) == 1:
        key, value = pairs[0]
        return encode_list_payload(
            encode_bytes(_hex_prefix(key[depth:], True)) + encode_bytes(value)
        )
    first, last = pairs[0][0], pairs[-1][0]  # sorted: their common prefix is everyone's
    shared = 0
    while (
        depth + shared < min(len(first), len(last))
        and first[depth + shared] == last[depth + shared]
    ):
        shared += 1
    if shared:
        child = _node(pairs, depth + shared)
        return encode_list_payload(
            encode_bytes(_hex_prefix(first[depth : depth + shared], False)) + _ref(child)
        )
    slots = [b"\x80"] * 16
    value = b"\x80"
    groups: dict[int, list[tuple[bytes, bytes]]] = {}
    for key, item in pairs:
        if len(key) == depth:
            value = encode_bytes(item)
        else:
            groups.setdefault(key[depth], []).append((key, item))
    for nibble, group in groups.items():
        slots[nibble] = _ref(_node(group, depth + 1))
    return encode_list_payload(b"".join(slots) + value)


def ordered_trie_root(values: Sequence[bytes]) -> bytes:
    """The root of the trie mapping ``rlp(i)`` to ``values[i]``: a block's ``transactionsRoot``
    (and ``receiptsRoot``, ``withdrawalsRoot`` with their own encodings)."""
    if not values:
        return EMPTY_TRIE_ROOT
    pairs = sorted((_nibbles(encode_int(i)), v) for i, v in enumerate(values))
    return keccak(_node(pairs, 0))
