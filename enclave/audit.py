"""The hash-chained audit log, its signed heads, its sealed anchor, and its verifier.

One JSON object per line::

    {"seq": 7, "ts": 1700000000.123, "prev": "0x<hash of seq 6>", "kind": "sign",
     "data": {...}, "hash": "0x<keccak256 of the canonical entry>", "sig": null}

``hash = keccak256(orjson(sorted {seq, ts, prev, kind, data}))``. Each segment opens with a
``start`` entry that announces the segment's log key (``data.log_public_key``, the key the
attestation document binds) and carries ``sig``, that key's secp256k1 recoverable signature over
``hash``. Later entries are not signed one by one (a second libsecp256k1 signature per request
would double the sign path, and with logging before the reply it would sit in front of every
signature): they are chained to the start entry by ``prev``, and the chain is anchored by signed
*heads*: ``audit_head`` returns ``{seq, hash, signature}``, ``signature`` by the log key over
:func:`head_digest`. A verifier holding the attested log keys and a signed head detects an edit
(``hash``), a drop or a reorder (``seq`` / ``prev``), a tail truncation (the log ends before the
head) and a wholly re-signed log (its start entries announce keys nobody attested).

Inside the enclave the log also anchors its own restart: every commit rewrites ``PATH.head`` with
``(seq, hash)`` and an HMAC under the sealing key (derived from the keys only the enclave holds),
and on start the enclave refuses a log that does not reach that anchor, and cuts off what follows
it (:func:`cut_to_anchor`: unsigned lines the host may have appended). What a host that
owns the disk can still do, and what catches it, is in the README ("Threat model").

A failed write raises :class:`AuditWriteError` and leaves the log as it was (the entries stay
queued for the next commit): the server then fails closed and sends no signature whose entry is
not on disk.

The newest committed lines are also kept in memory (:data:`RING`) and served by
``audit_entries`` (:meth:`AuditLog.entries`), so the broadcaster keeps a verified copy; older ones
come from the file. Without a path (dev mode without ``--audit-log``; nitro mode refuses to start
without one) the log lives in memory only: nothing to anchor, nothing that survives a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import coincurve
import orjson

from signer_client.protocol import head_digest
from signer_client.signing import LocalKey
from signer_client.txcodec import keccak

__all__ = [
    "AuditLog",
    "AuditStateError",
    "AuditWriteError",
    "EntriesEvicted",
    "Problem",
    "cut_to_anchor",
    "head_digest",
    "load_verified",
    "read_tail",
    "recover_head_key",
    "verify_log",
]

GENESIS = "0x" + "00" * 32
_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS
_ANCHOR_LEN = 20 + 1 + 66 + 1 + 64 + 1


class AuditWriteError(OSError):
    """The audit log could not be written: nothing that depended on it may leave."""


class AuditStateError(ValueError):
    """The log on disk is not one this enclave may restore from (truncated, edited, unsealed)."""


def recover_head_key(seq: int, head: str, signature_hex: str) -> bytes:
    """The uncompressed public key that signed an ``audit_head`` (compare with the attested key)."""
    return _recover(head_digest(seq, head), signature_hex)


def _anchor_mac(seal_key: bytes, seq: int, head: str, digest: bytes | None = None) -> str:
    """``digest``: ``head``'s bytes when the caller has them (commit just hashed them)."""
    raw = bytes.fromhex(head[2:]) if digest is None else digest
    msg = b"enclave-audit-anchor\x00" + seq.to_bytes(8, "big") + raw
    # Keyed BLAKE2b (RFC 7693 section 2.9's MAC mode): a third of HMAC-SHA256's cost, and the
    # anchor is rewritten on every commit, in front of every reply.
    return hashlib.blake2b(msg, key=seal_key, digest_size=32).hexdigest()


def _anchor_path(path: str) -> str:
    return path + ".head"


def read_anchor(path: str, seal_key: bytes) -> tuple[int, str] | None:
    """The sealed ``(seq, hash)`` next to the log, ``None`` if there is none; raise on a forgery."""
    try:
        with open(_anchor_path(path), "rb") as f:
            text = f.read().decode("ascii", "replace").split()
    except FileNotFoundError:
        return None
    if not text:  # created, never written (a fresh log); with entries present, still refused
        return None
    try:
        seq, head, mac = int(text[0]), text[1], text[2]
    except (IndexError, ValueError) as exc:
        raise AuditStateError(f"{_anchor_path(path)}: not an anchor") from exc
    if not hmac.compare_digest(mac, _anchor_mac(seal_key, seq, head)):
        raise AuditStateError(f"{_anchor_path(path)}: anchor not sealed by this enclave's keys")
    return seq, head


RING = 65_536
"""Committed entries kept in memory for ``audit_entries`` (a real enclave has no disk)."""

MAX_ENTRIES_PER_CALL = 1_000
"""``audit_entries`` answers at most this many entries per call (a reply stays far below the
1 MiB frame cap: a ``sign`` entry is ~700 bytes)."""


class EntriesEvicted(LookupError):
    """``from_seq`` is older than what the enclave still holds (ring evicted, no log file)."""


def _entry_hash(seq: int, ts: float, prev: str, kind: str, data: dict[str, Any]) -> bytes:
    body = {"seq": seq, "ts": ts, "prev": prev, "kind": kind, "data": data}
    return keccak(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))


class AuditLog:
    """Appends chained entries. :meth:`commit` writes what :meth:`append` queued (``fsync=True``
    also forces it to disk) and, with a ``seal_key``, rewrites the sealed anchor."""

    def __init__(
        self,
        path: str | None,
        key: LocalKey,
        *,
        fsync: bool = False,
        seal_key: bytes | None = None,
        ring: int = RING,
    ) -> None:
        self.path = path
        self.key = key
        self.fsync = fsync
        self.seal_key = seal_key
        # No path: the log lives only in memory (dev mode without --audit-log; nitro mode refuses
        # to start without one). Nothing can fail to be written, and nothing survives a restart.
        self.seq, self.head = read_tail(path) if path is not None else (0, GENESIS)
        self._fd = (
            os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if path is not None
            else None
        )
        self._size = os.fstat(self._fd).st_size if self._fd is not None else 0
        self._anchor_fd = (
            os.open(_anchor_path(path), os.O_WRONLY | os.O_CREAT, 0o600)
            if seal_key is not None and path is not None
            else None
        )
        # (ts, kind, data or its builder, canonical: data's keys are already sorted throughout)
        self._pending: list[tuple[float, str, Any, bool]] = []
        # The newest committed lines, in seq order, for ``audit_entries``: only lines that are
        # committed (written, when there is a file) ever enter it.
        self._ring: deque[bytes] = deque(maxlen=ring)
        self.failed_writes = 0

    def append(
        self,
        now: float,
        kind: str,
        data: dict[str, Any] | Callable[[], dict[str, Any]],
        *,
        canonical: bool = False,
    ) -> None:
        """Queue an entry; it is hashed and written by :meth:`commit`.

        ``data`` may be a zero-argument callable: the sign path passes one so that building the
        entry's dict (hex strings of hashes) happens in :meth:`commit`, not in the policy path.
        ``canonical=True`` promises that ``data``'s keys are in sorted order at every level (the
        sign path builds it so): it is then serialised without ``OPT_SORT_KEYS``, to the same
        bytes the sorting dump would give.
        """
        self._pending.append((now, kind, data, canonical))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def commit(self) -> None:
        """Write the queued entries; raise :class:`AuditWriteError` (and keep the log, its
        in-memory head and the queue as they were) when the write fails."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        seq, head = self.seq, self.head
        digest = b""
        lines = []
        built: list[tuple[float, str, Any, bool]] = []
        for ts, kind, item, canonical in pending:
            data = item() if callable(item) else item
            built.append((ts, kind, data, canonical))
            seq += 1
            # One serialisation serves both the hash and the line: the hashed bytes are the
            # sorted {data, kind, prev, seq, ts}; the line is them plus hash and sig. The body is
            # built in that order, so a canonical ``data`` needs no sorting pass.
            body = _dumps(
                {"data": data, "kind": kind, "prev": head, "seq": seq, "ts": ts},
                option=0 if canonical else _SORTED,
            )
            digest = keccak(body)
            hash_hex = "0x" + digest.hex()
            sig = (
                b'"0x' + self.key.sign_hash(digest).hex().encode() + b'"'
                if kind == "start"
                else b"null"
            )
            lines.append(body[:-1] + b',"hash":"' + hash_hex.encode() + b'","sig":' + sig + b"}")
            head = hash_hex
        if self._fd is None:
            self._ring.extend(lines)
            self.seq, self.head = seq, head
            return
        data = b"\n".join(lines) + b"\n"
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(28, f"short write ({written} of {len(data)} bytes)")
            if self.fsync:
                os.fsync(self._fd)
            if self._anchor_fd is not None and self.seal_key is not None:
                mac = _anchor_mac(self.seal_key, seq, head, digest)
                anchor = f"{seq:020d} {head} {mac}\n"
                os.pwrite(self._anchor_fd, anchor.encode(), 0)
        except OSError as exc:
            self.failed_writes += 1
            # A partial line would break the chain for every later entry: cut it off (best
            # effort; if even this fails, the start-up check refuses the log, never trusts it).
            try:
                os.ftruncate(self._fd, self._size)
            except OSError:
                pass
            # The entries stay queued (in front of any queued since): a later commit writes them
            # or fails again, and no reply that depended on them leaves in between.
            self._pending[:0] = built
            raise AuditWriteError(exc.errno or 0, f"audit log write failed: {exc}") from exc
        self._size += len(data)
        self._ring.extend(lines)
        self.seq, self.head = seq, head

    def resync(self) -> None:
        """Re-read the tail after the file was cut (:func:`cut_to_anchor`) before any append."""
        if self.path is None or self._fd is None:
            return  # a memory-only log: nothing on disk to re-read
        self.seq, self.head = read_tail(self.path)
        self._size = os.fstat(self._fd).st_size

    def sign_head(self) -> dict[str, Any]:
        """``{seq, hash, signature}``: the current head, signed by the log key."""
        return self.signed_head()

    def signed_head(self, at: tuple[int, str] | None = None) -> dict[str, Any]:
        """``{seq, hash, signature}``: the head (or the committed entry ``at = (seq, hash)``),
        signed by the log key over :func:`signer_client.protocol.head_digest`."""
        seq, head = at if at is not None else (self.seq, self.head)
        sig = self.key.sign_hash(head_digest(seq, head))
        return {"seq": seq, "hash": head, "signature": "0x" + sig.hex()}

    def close(self) -> None:
        try:
            self.commit()
        finally:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            if self._anchor_fd is not None:
                os.close(self._anchor_fd)
                self._anchor_fd = None

    def entries(self, from_seq: int, limit: int) -> list[dict[str, Any]]:
        """Committed entries ``from_seq`` on, at most ``limit`` (capped), in seq order.

        Served from memory while the ring holds ``from_seq``; older ones from the log file when
        there is one; otherwise :class:`EntriesEvicted`.
        """
        limit = max(0, min(limit, MAX_ENTRIES_PER_CALL))
        from_seq = max(1, from_seq)
        if from_seq > self.seq or limit == 0:
            return []
        first = self.seq - len(self._ring) + 1  # seq of the ring's oldest line
        if from_seq >= first:
            start = from_seq - first
            count = min(limit, len(self._ring) - start)
            return [orjson.loads(self._ring[start + i]) for i in range(count)]
        if self.path is None:
            raise EntriesEvicted(f"entries before seq {first} are no longer held")
        out: list[dict[str, Any]] = []
        # Older entries come from the file (parent-writable: the broadcaster verifies every page
        # against its signed head, so an edited line is refused there, never trusted).
        with open(self.path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                entry = orjson.loads(line)
                if int(entry["seq"]) > self.seq:
                    break
                if int(entry["seq"]) >= from_seq:
                    out.append(entry)
                    if len(out) >= limit:
                        break
        return out


def read_tail(path: str) -> tuple[int, str]:
    """``(seq, hash)`` of the last entry of an existing log, or ``(0, GENESIS)``."""
    last = b""
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.strip():
                    last = line
    except FileNotFoundError:
        return 0, GENESIS
    if not last:
        return 0, GENESIS
    entry = orjson.loads(last)
    return int(entry["seq"]), str(entry["hash"])


def iter_entries(path: str) -> list[dict[str, Any]]:
    with open(path, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


@dataclass(frozen=True)
class Problem:
    """One finding: ``line`` (1-based) and ``seq`` locate it; ``kind`` says what happened."""

    line: int
    seq: int | None
    # malformed | edited | bad_signature | untrusted_key | unanchored | dropped | reordered
    # | chain_break | truncated | conflicting_intent
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"line {self.line}: seq {self.seq}: {self.kind}: {self.detail}"


def _recover(digest: bytes, sig_hex: str) -> bytes:
    sig = bytes.fromhex(sig_hex[2:])
    return coincurve.PublicKey.from_signature_and_message(sig, digest, hasher=None).format(
        compressed=False
    )


def verify_log(
    path: str,
    trusted_keys: set[str] | None = None,
    expect_head: tuple[int, str] | None = None,
) -> tuple[list[Problem], list[str]]:
    """Check a whole log. Return ``(problems, segment keys)``; no problems means intact.

    ``trusted_keys``: 0x-hex uncompressed log public keys (from attestation documents); when
    given, a segment opened by any other key is ``untrusted_key``. ``expect_head``: the
    ``(seq, hash)`` an ``audit_head`` call returned; a shorter log is ``truncated``.
    """
    problems: list[Problem] = []
    parsed: list[tuple[int, dict[str, Any]]] = []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = orjson.loads(line)
                int(entry["seq"])
                parsed.append((n, entry))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                problems.append(Problem(n, None, "malformed", "not a log entry"))
    present = {int(e["seq"]) for _, e in parsed}
    hashes: dict[int, str] = {}
    keys: list[str] = []
    key: bytes | None = None
    expected = 1
    for n, e in parsed:
        seq = int(e["seq"])
        try:
            digest = _entry_hash(seq, e["ts"], e["prev"], e["kind"], e["data"])
            if "0x" + digest.hex() != e["hash"]:
                problems.append(Problem(n, seq, "edited", "content does not match its hash"))
            else:
                signer = _recover(digest, e["sig"]) if e.get("sig") else None
                if e["kind"] == "start" and signer is None:
                    raise ValueError("start entry without a signature")
                if e["kind"] == "start":
                    announced = str(e["data"]["log_public_key"])
                    if signer is None or bytes.fromhex(announced[2:]) != signer:
                        problems.append(
                            Problem(n, seq, "bad_signature", "start not signed by its key")
                        )
                    elif trusted_keys is not None and announced not in trusted_keys:
                        problems.append(
                            Problem(n, seq, "untrusted_key", f"key {announced[:18]}...")
                        )
                    key = signer
                    keys.append(announced)
                elif key is None:
                    problems.append(Problem(n, seq, "unanchored", "entry before any start entry"))
                elif signer is not None and signer != key:
                    problems.append(Problem(n, seq, "bad_signature", "not signed by the log key"))
        except (KeyError, TypeError, ValueError, Exception) as exc:
            problems.append(Problem(n, seq, "malformed", f"{type(exc).__name__}: {exc}"))
        if seq < expected:
            problems.append(
                Problem(n, seq, "reordered", f"seq {seq} appears after seq {expected - 1}")
            )
        elif seq > expected:
            problems.extend(
                Problem(n, m, "dropped", f"seq {m} missing before line {n}")
                for m in range(expected, seq)
                if m not in present
            )
            # missing seqs that do appear later are reported as reordered where they appear
        if seq - 1 in hashes and e.get("prev") != hashes[seq - 1]:
            problems.append(Problem(n, seq, "chain_break", "prev does not link to seq - 1"))
        elif seq == 1 and e.get("prev") != GENESIS:
            problems.append(Problem(n, seq, "chain_break", "first entry must link to genesis"))
        hashes.setdefault(seq, str(e.get("hash")))
        expected = max(expected, seq + 1)
    problems.extend(_conflicts(parsed))
    if expect_head is not None:
        head_seq, head_hash = expect_head
        if expected - 1 < head_seq:
            problems.append(
                Problem(len(parsed), expected - 1, "truncated", f"log ends before seq {head_seq}")
            )
        elif hashes.get(head_seq) != head_hash:
            problems.append(Problem(len(parsed), head_seq, "edited", "head hash does not match"))
    problems.sort(key=lambda p: (p.line, p.seq or 0))
    return problems, keys


def _conflicts(parsed: list[tuple[int, dict[str, Any]]]) -> list[Problem]:
    """Two ``sign`` entries with different intents at one ``(chain, sender, nonce)``: what an
    enclave whose nonce memory was rolled back (log and anchor replaced by an older pair) would
    leave behind. Noops are not conflicts. Likewise two ``authorize`` entries delegating one
    ``(chain, authority, nonce)`` to different addresses."""
    intents: dict[tuple[Any, ...], Any] = {}
    found = []
    for n, e in parsed:
        d = e.get("data")
        kind = e.get("kind")
        if kind not in ("sign", "authorize") or not isinstance(d, dict) or d.get("noop"):
            continue
        key: tuple[Any, ...] = (d.get("chain"), d.get("sender"), d.get("nonce"))
        if kind == "authorize":
            key, intent = (*key, "authorize"), d.get("address")
        else:
            intent = d.get("intent")
        seen = intents.setdefault(key, intent)
        if intent is not None and seen is not None and seen != intent:
            found.append(
                Problem(n, e.get("seq"), "conflicting_intent",
                        f"another intent signed at chain {key[0]} sender {key[1]} nonce {key[2]}")
            )  # fmt: skip
    return found


def load_verified(path: str, seal_key: bytes | None) -> list[dict[str, Any]]:
    """The entries of the enclave's own log, for a restart: the whole chain must verify and, with
    a ``seal_key``, end exactly at the sealed anchor. Raise :class:`AuditStateError` otherwise
    (a truncated tail would make the enclave forget nonces it signed)."""
    anchor = read_anchor(path, seal_key) if seal_key is not None else None
    if not os.path.exists(path):
        if anchor is not None:
            raise AuditStateError(
                f"{path} is missing but its sealed anchor says seq {anchor[0]}: deleted log"
            )
        return []
    if anchor is not None:
        dropped = cut_to_anchor(path, anchor)
        if dropped:
            print(
                f"enclave: {path}: cut {dropped} entr{'y' if dropped == 1 else 'ies'} after the "
                f"sealed anchor (seq {anchor[0]}): never answered, or not written by this enclave",
                file=sys.stderr,
                flush=True,
            )
    problems, _ = verify_log(path, None, anchor)
    if problems:
        raise AuditStateError(f"{path}: {problems[0]} ({len(problems)} problem(s))")
    entries = iter_entries(path)
    if seal_key is not None and anchor is None and entries:
        raise AuditStateError(f"{path} has entries but no sealed anchor ({path}.head)")
    return entries


def cut_to_anchor(path: str, anchor: tuple[int, str]) -> int:
    """Truncate the log right after its anchored entry; return how many lines were cut.

    Entries after the anchor are either a crash between the log write and the anchor write (the
    reply waits for both, so none of their signatures left) or lines the host appended. Only
    ``start`` entries are signed one by one, so an appended, well-chained ``sign`` entry cannot
    be told from a genuine one: adopted, the enclave would chain onto it and every later signed
    head would vouch for it (an alibi for a transaction signed elsewhere). So they are cut, never
    restored. A log without the anchored entry is left as it is (``load_verified`` refuses it).
    """
    seq, head = anchor
    needle = head.encode()
    offset = 0
    cut: int | None = None
    dropped = 0
    with open(path, "rb") as f:
        for line in f:
            offset += len(line)
            if cut is not None:
                dropped += bool(line.strip())
            elif needle in line:
                try:
                    entry = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(entry, dict) and (entry.get("seq"), entry.get("hash")) == (seq, head):
                    cut = offset
    if cut is not None and dropped:
        os.truncate(path, cut)
    return dropped if cut is not None else 0
