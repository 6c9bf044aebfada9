"""Verify audit entries streamed out of the enclave before the broadcaster keeps them (DESIGN §6a).

Pure and synchronous: :func:`verify_batch` takes what the broadcaster holds (an
:class:`Anchor`: the last verified entry's ``seq``, ``hash`` and its segment's log key), the
log keys attestation vouched for, and one ``audit_entries`` reply; it returns the entries to store
and the new anchor, or raises :class:`AuditRefused` naming what is wrong. Nothing is partly
accepted: one bad entry refuses the whole batch.

The entry format is ``enclave/audit.py``'s: ``hash = keccak256(orjson(sorted {seq, ts, prev, kind,
data}))``; a ``start`` entry opens a segment, announces its log key (which must be an attested
one) and is signed by it (``sig``, recoverable secp256k1 over ``hash``). Later entries may carry
no ``sig``: they are chained by ``prev`` into the signed head their page ends at (``audit_entries``
returns the head signed at its last entry: ``{seq, hash, signature}``, ``signature`` over
``signer_client.protocol.head_digest``); one that carries a ``sig`` must be signed by the
segment's key. What this rules out, against a parent instance that relays the enclave's socket:

- an edited entry (``tampered``), a signature by any other key (``bad_signature``), a segment
  opened by a key no attestation vouched for (``untrusted_key``);
- a dropped or reordered entry, or entries withheld below the head (``gap``), and a broken
  ``prev`` link inside a batch (``chain_break``);
- a log that does not extend the one we hold (``not_extending``): a restarted enclave with a new
  log, a truncated tail, a wholly re-signed log; a head behind ours is the same finding;
- a head that does not match the entries or is not signed by the segment key (``bad_head``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import coincurve
import orjson

from broadcaster.errors import BroadcasterError
from signer_client.protocol import head_digest
from signer_client.txcodec import keccak

__all__ = [
    "GENESIS",
    "REFUSAL_REASONS",
    "Anchor",
    "AuditRefused",
    "Head",
    "VerifiedBatch",
    "VerifiedEntry",
    "entry_hash",
    "head_digest",
    "verify_batch",
]

GENESIS = "0x" + "00" * 32

REFUSAL_REASONS = (
    "malformed",
    "tampered",
    "bad_signature",
    "untrusted_key",
    "gap",
    "chain_break",
    "not_extending",
    "bad_head",
    "evicted",
    "unavailable",
)
"""Every ``reason`` an :class:`AuditRefused` carries (``audit_refusals_total{reason}``)."""


class AuditRefused(BroadcasterError):
    """The enclave's audit log cannot be taken as it is; ``reason`` is one of
    :data:`REFUSAL_REASONS`, ``seq`` the entry at fault when there is one."""

    def __init__(self, reason: str, detail: str, seq: int | None = None) -> None:
        super().__init__(f"audit log refused ({reason}): {detail}")
        self.reason = reason
        self.detail = detail
        self.seq = seq


@dataclass(frozen=True, slots=True)
class Anchor:
    """The last verified entry: ``seq`` 0 and :data:`GENESIS` before the first; ``key`` is the
    0x-hex uncompressed log key of its segment (``None`` before the first ``start``)."""

    seq: int = 0
    hash: str = GENESIS
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Head:
    seq: int
    hash: str
    signature: str


@dataclass(frozen=True, slots=True)
class VerifiedEntry:
    """One checked entry, with the fields the reconciler indexes (``sign`` entries only)."""

    seq: int
    hash: str
    kind: str
    key: str
    line: bytes
    tx_hash: bytes | None
    sender: str | None
    nonce: int | None


@dataclass(frozen=True, slots=True)
class VerifiedBatch:
    entries: tuple[VerifiedEntry, ...]
    anchor: Anchor
    head: Head


def entry_hash(seq: int, ts: float, prev: str, kind: str, data: Mapping[str, Any]) -> bytes:
    """The hash ``enclave.audit`` gives an entry (tests pin the two together)."""
    body = {"seq": seq, "ts": ts, "prev": prev, "kind": kind, "data": data}
    return keccak(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


def _signer(digest: bytes, sig_hex: object) -> str:
    if type(sig_hex) is not str or not sig_hex.startswith("0x") or len(sig_hex) != 132:
        raise ValueError("signature is not 65 bytes of 0x-hex")
    key = coincurve.PublicKey.from_signature_and_message(
        bytes.fromhex(sig_hex[2:]), digest, hasher=None
    )
    return "0x" + key.format(compressed=False).hex()


def _hash_hex(value: object, what: str) -> str:
    if type(value) is not str or len(value) != 66 or not value.startswith("0x"):
        raise ValueError(f"{what} is not a 32-byte 0x-hex hash")
    bytes.fromhex(value[2:])
    return value.lower()


def parse_head(raw: object) -> Head:
    if not isinstance(raw, Mapping):
        raise AuditRefused("malformed", "the reply has no head object")
    try:
        seq = raw["seq"]
        if type(seq) is not int or seq < 0:
            raise ValueError("head seq is not a non-negative integer")
        signature = raw["signature"]
        if type(signature) is not str:
            raise ValueError("head has no signature")
        return Head(seq, _hash_hex(raw["hash"], "head hash"), signature)
    except (KeyError, ValueError) as exc:
        raise AuditRefused("malformed", f"head: {exc}") from exc


def _check_entry(
    raw: object, anchor: Anchor, trusted: Collection[str], first: bool
) -> VerifiedEntry:
    if not isinstance(raw, Mapping):
        raise AuditRefused("malformed", "an entry is not an object")
    seq = raw.get("seq")
    if type(seq) is not int:
        raise AuditRefused("malformed", "an entry has no integer seq")
    try:
        ts, prev, kind, data = raw["ts"], raw["prev"], raw["kind"], raw["data"]
        if type(kind) is not str or not isinstance(data, Mapping):
            raise ValueError("kind or data malformed")
        claimed = _hash_hex(raw["hash"], "hash")
        prev = _hash_hex(prev, "prev")
    except (KeyError, ValueError) as exc:
        raise AuditRefused("malformed", f"seq {seq}: {exc}", seq) from exc
    if seq != anchor.seq + 1:
        raise AuditRefused("gap", f"expected seq {anchor.seq + 1}, got {seq}", seq)
    if prev != anchor.hash:
        reason = "not_extending" if first else "chain_break"
        raise AuditRefused(
            reason, f"seq {seq} links to {prev[:18]}..., we hold {anchor.hash[:18]}...", seq
        )
    try:
        digest = entry_hash(seq, ts, prev, kind, data)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise AuditRefused("malformed", f"seq {seq}: {exc}", seq) from exc
    if "0x" + digest.hex() != claimed:
        raise AuditRefused("tampered", f"seq {seq}: content does not match its hash", seq)
    sig = raw.get("sig")
    signer = None
    if sig is not None or kind == "start":
        try:
            signer = _signer(digest, sig)
        except ValueError as exc:
            raise AuditRefused("bad_signature", f"seq {seq}: {exc}", seq) from exc
    key = anchor.key
    if kind == "start":
        announced = str(data.get("log_public_key", "")).lower()
        if announced != signer:
            raise AuditRefused("bad_signature", f"seq {seq}: start not signed by its key", seq)
        if announced not in trusted:
            raise AuditRefused(
                "untrusted_key", f"seq {seq}: log key {announced[:18]}... is not attested", seq
            )
        key = announced
    elif key is None:
        raise AuditRefused("bad_signature", f"seq {seq}: no segment start before it", seq)
    elif signer is not None and signer != key:
        # An unsigned entry is authenticated by the signed head its page ends at (its hash is
        # chained into it); a signed one must be signed by the segment's key.
        raise AuditRefused("bad_signature", f"seq {seq}: not signed by the segment's log key", seq)
    tx_hash = sender = nonce = None
    if kind == "sign":
        try:
            tx_hash = bytes.fromhex(_hash_hex(data["tx_hash"], "tx_hash")[2:])
            sender = str(data["sender"]).lower()
            nonce = int(data["nonce"])
        except (KeyError, ValueError, TypeError) as exc:
            raise AuditRefused("malformed", f"seq {seq}: sign entry: {exc}", seq) from exc
    line = orjson.dumps(raw)
    return VerifiedEntry(seq, claimed, kind, key, line, tx_hash, sender, nonce)


def verify_batch(
    anchor: Anchor, reply: Mapping[str, Any], trusted_keys: Collection[str]
) -> VerifiedBatch:
    """Check one ``audit_entries`` reply against what we hold (see the module docstring)."""
    raw_entries = reply.get("entries")
    if not isinstance(raw_entries, Sequence) or isinstance(raw_entries, str | bytes):
        raise AuditRefused("malformed", "the reply has no entries list")
    head = parse_head(reply.get("head"))
    trusted = {k.lower() for k in trusted_keys}
    if head.seq < anchor.seq:
        raise AuditRefused(
            "not_extending",
            f"the enclave's head is seq {head.seq}, behind the seq {anchor.seq} we hold"
            " (a restarted or rolled-back log)",
        )
    out: list[VerifiedEntry] = []
    current = anchor
    for raw in raw_entries:
        entry = _check_entry(raw, current, trusted, first=not out)
        out.append(entry)
        current = Anchor(entry.seq, entry.hash, entry.key)
    if out:
        if (head.seq, head.hash) != (current.seq, current.hash):
            raise AuditRefused(
                "bad_head",
                f"the page ends at seq {current.seq}, its signed head is at seq {head.seq}",
            )
    elif head.seq > anchor.seq:
        raise AuditRefused(
            "gap", f"the head is at seq {head.seq} but no entry from seq {anchor.seq + 1} came"
        )
    elif head.hash != anchor.hash:
        raise AuditRefused(
            "not_extending", f"the enclave's head at seq {head.seq} is not the entry we hold there"
        )
    if current.key is not None:
        try:
            signer = _signer(head_digest(head.seq, head.hash), head.signature)
        except ValueError as exc:
            raise AuditRefused("bad_head", f"head signature: {exc}") from exc
        if signer != current.key:
            raise AuditRefused("bad_head", "head not signed by the segment's log key")
    return VerifiedBatch(tuple(out), current, head)
