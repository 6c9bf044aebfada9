"""The hash-chained, signed audit log, and its verifier.

One JSON object per line::

    {"seq": 7, "ts": 1700000000.123, "prev": "0x<hash of seq 6>", "kind": "sign",
     "data": {...}, "hash": "0x<keccak256 of the canonical entry>", "sig": "0x<r||s||v>"}

``hash = keccak256(orjson(sorted {seq, ts, prev, kind, data}))`` and ``sig`` is the enclave's log
key's secp256k1 recoverable signature over ``hash``. The log key is generated inside the enclave at
start; its public key opens each segment (a ``start`` entry, itself chained and signed) and is
carried in the attestation document's ``public_key``, so a verifier can tell genuine segments from
forged ones. An edit breaks ``hash`` or ``sig``; a dropped entry leaves a gap in ``seq`` and a
broken ``prev`` link; a reordered one arrives with a ``seq`` out of place. Truncating the tail is
only visible against an anchor: pass the head reported by the ``audit_head`` method.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import coincurve
import orjson

from signer_client.protocol import head_digest
from signer_client.signing import LocalKey
from signer_client.txcodec import keccak

__all__ = ["AuditLog", "EntriesEvicted", "Problem", "head_digest", "read_tail", "verify_log"]

GENESIS = "0x" + "00" * 32

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
    """Appends signed, chained entries. Writes are buffered; :meth:`flush` hands them to the OS
    (``fsync=True`` also forces them to disk)."""

    def __init__(
        self, path: str | None, key: LocalKey, *, fsync: bool = False, ring: int = RING
    ) -> None:
        self.path = path
        self.key = key
        self.fsync = fsync
        self.seq, self.head = read_tail(path) if path is not None else (0, GENESIS)
        # No path: the log lives only in memory (in a real enclave there is no disk to trust).
        self._file: IO[bytes] | None = (
            open(path, "ab") if path is not None else None  # noqa: SIM115 - lives with the log
        )
        self._pending: list[tuple[float, str, Any]] = []
        self._ring: deque[bytes] = deque(maxlen=ring)  # the newest committed lines, in seq order

    def append(
        self, now: float, kind: str, data: dict[str, Any] | Callable[[], dict[str, Any]]
    ) -> None:
        """Queue an entry; it is hashed, signed and written by :meth:`commit`.

        ``data`` may be a zero-argument callable: the sign path passes one so that building the
        entry's dict (hex strings of hashes) happens after the reply is written, not before.
        """
        self._pending.append((now, kind, data))

    def commit(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        lines = []
        for ts, kind, item in pending:
            data = item() if callable(item) else item
            self.seq += 1
            digest = _entry_hash(self.seq, ts, self.head, kind, data)
            sig = self.key.sign_hash(digest)
            hash_hex = "0x" + digest.hex()
            lines.append(
                orjson.dumps(
                    {
                        "seq": self.seq,
                        "ts": ts,
                        "prev": self.head,
                        "kind": kind,
                        "data": data,
                        "hash": hash_hex,
                        "sig": "0x" + sig.hex(),
                    }
                )
            )
            self.head = hash_hex
        self._ring.extend(lines)
        if self._file is None:
            return
        self._file.write(b"\n".join(lines) + b"\n")
        self._file.flush()
        if self.fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self.commit()
        if self._file is not None:
            self._file.close()

    def signed_head(self, at: tuple[int, str] | None = None) -> dict[str, Any]:
        """``{seq, hash, signature}``: the head (or the committed entry ``at = (seq, hash)``),
        signed by the log key over :func:`signer_client.protocol.head_digest`."""
        seq, head = at if at is not None else (self.seq, self.head)
        sig = self.key.sign_hash(head_digest(seq, head))
        return {"seq": seq, "hash": head, "signature": "0x" + sig.hex()}

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
        with open(self.path, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                entry = orjson.loads(line)
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
    # malformed | edited | bad_signature | untrusted_key | dropped | reordered | chain_break
    # | truncated
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
                signer = _recover(digest, e["sig"])
                if e["kind"] == "start":
                    announced = str(e["data"]["log_public_key"])
                    if bytes.fromhex(announced[2:]) != signer:
                        problems.append(
                            Problem(n, seq, "bad_signature", "start not signed by its key")
                        )
                    elif trusted_keys is not None and announced not in trusted_keys:
                        problems.append(
                            Problem(n, seq, "untrusted_key", f"key {announced[:18]}...")
                        )
                    key = signer
                    keys.append(announced)
                elif key is None or signer != key:
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
