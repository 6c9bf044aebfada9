"""The per-head fast path: the common announcement, applied without building events.

At 200,000 heads/s (DESIGN.md §8, replay) a head has 5 µs, and most of it goes to
``orjson.loads``. Nearly every line of a recording is one of two cases:

* a **new block on top of the tip** from the only connected client: its parent is the tip's hash,
  its number the tip's + 1, its timestamp not below the tip's;
* a **copy of a stored block** from another client that moves up onto it without changing the
  tip (several clients agreeing on the head).

:meth:`FastPath.on_head_quiet` applies exactly those, with exactly the checks and state changes of
:meth:`heads.tracker.ChainTracker.on_head`, and builds no event: the only event ``on_head`` would
return for them is an ``Extension`` (or nothing), which replay does not print. Anything else
(rejections, reorgs, gaps, several connected clients on a new block, trust bookkeeping under way,
a clock for ``stall_seconds``) returns ``False`` having changed nothing, and the caller goes the
general way. ``tests/heads/test_fast_path.py`` pins the two to identical output and state.

Validation is the slow path's: the hash must match ``0x[0-9a-f]{64}``
(``heads.parse.hash_match``); the parent is compared with the tip's hash, which passed that check
when it was stored, so equality proves it (one regex per head, not two); ``number`` and
``timestamp`` are read with the same ``int(text, 16)`` ``parse_head`` uses; with ``verify``, the
hash is recomputed by the same :func:`heads.header.verify_header_hash`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from heads.backfill import Backfill
from heads.errors import HeaderError
from heads.events import Head
from heads.header import FEWEST_FIELDS, verify_header_hash
from heads.parse import UINT64_MAX, hash_match
from heads.tracker_state import _PER_HEIGHT, _PRUNE_BATCH

__all__ = ["FastPath"]

# ``Head(...)`` runs NamedTuple's generated ``__new__``, a Python frame that only calls
# ``tuple.__new__(Head, fields)``; calling that directly builds the same Head (callgrind: about
# 2,400 of 32,000 instructions per head went to the Python-level ``__new__``).
_new_tuple = tuple.__new__


class FastPath(Backfill):
    """:meth:`on_head_quiet`, the common case of :meth:`ChainTracker.on_head`."""

    def on_head_quiet(self, client: str, header: Mapping[str, Any]) -> bool:
        """Apply ``header`` as ``on_head(client, header)`` would, when that is the common case
        and its events hold nothing but an ``Extension``; ``False`` (nothing changed) otherwise.
        """
        tip = self._tip
        if tip is None or client not in self._connected or type(header) is not dict:
            return False
        block_hash = header.get("hash")
        if type(block_hash) is not str:
            return False
        stored = self._blocks.get(block_hash)
        if stored is not None:
            return self._copy_quiet(client, header, stored, tip)
        # A new block: on_head's extension branch, single connected client, nobody quarantined
        # (checked first: with several clients the general path parses it).
        if (
            len(self._connected) != 1
            or self._held_by_parent
            or self.trust.quarantined
            or self.stall_seconds is not None
        ):
            return False
        # parse_head's checks, in the shape only the common case takes.
        parent_hash = header.get("parentHash")
        if parent_hash != tip.hash or block_hash == parent_hash or hash_match(block_hash) is None:
            return False  # the tip's hash is a checked one: equality proves the parent's form
        number_text = header.get("number")
        if type(number_text) is str and number_text.startswith("0x"):
            try:
                number = int(number_text, 16)
            except ValueError:
                return False
        else:
            return False
        if number != tip.number + 1 or number > UINT64_MAX:
            return False
        timestamp_text = header.get("timestamp")
        timestamp = None
        if timestamp_text is not None:
            if type(timestamp_text) is not str or timestamp_text[:2] != "0x":
                return False
            try:
                timestamp = int(timestamp_text, 16)
            except ValueError:
                return False
            if (tip.timestamp is not None and timestamp < tip.timestamp) or timestamp > UINT64_MAX:
                return False
        base_fee = None
        if self.verify and len(header) >= FEWEST_FIELDS:  # (fewer: verify_header_hash says None)
            try:
                ok = verify_header_hash(header, block_hash)
            except HeaderError:
                return False
            if ok is False:
                return False
            if ok:
                fee = header.get("baseFeePerGas")
                if type(fee) is str:
                    try:
                        base_fee = int(fee, 16)
                    except ValueError:
                        return False  # "0x" (hashes as zero): parse_head refuses it
        heads = self._heads
        current = heads.get(client)
        if current is not None and (current[0].hash == block_hash or number <= current[0].number):
            return False
        self._seq = seq = self._seq + 1
        head = _new_tuple(Head, (number, block_hash, parent_hash, base_fee, timestamp))
        self._blocks[block_hash] = head
        self._seen[block_hash] = seq
        bucket = self._by_number.get(number)
        if bucket is None:
            self._by_number[number] = [block_hash]
        else:
            bucket.append(block_hash)
            if len(bucket) > _PER_HEIGHT:
                self._evict(number, bucket)
        heads[client] = (head, seq)
        self._tip = head
        if number - self.finality_depth >= self._pruned_below + _PRUNE_BATCH:
            self._prune()
        return True

    def _copy_quiet(self, client: str, header: Mapping[str, Any], stored: Head, tip: Head) -> bool:
        """``client`` announces the stored block ``stored`` (``on_head``'s known-block branch)."""
        if header.get("parentHash") != stored.parent_hash or header.get("number") != hex(
            stored.number
        ):
            return False  # not ``_known``: parsed in full (maybe a conflict)
        if self.stall_seconds is not None:
            return False
        heads = self._heads
        since = self._since
        current = heads.get(client)
        if current is not None and current[0].hash == stored.hash:
            if not since or current[1] >= since.get(client, 0):
                self._seq += 1
                return True  # a duplicate changes nothing (but takes a sequence number)
            return False
        if current is not None and stored.number <= current[0].number:
            return False  # a step down or sideways: the general path decides
        trust = self.trust
        if trust.origin or trust.quarantined or self._free or self._pending:
            return False
        # _choose_tip(client, ()) returns nothing and changes nothing when no live candidate
        # other than the tip ranks at or above it (the client's candidate is now ``stored``).
        seen = self._seen
        sign = self._sign
        tip_hash = tip.hash
        tip_number = tip.number
        floor = sign * seen.get(tip_hash, 0)
        for other in self._connected:
            if other == client:
                candidate = stored
            else:
                entry = heads.get(other)
                if entry is None or entry[1] < since.get(other, 0):
                    continue
                candidate = entry[0]
            if candidate.hash == tip_hash or candidate.number < tip_number:
                continue
            if candidate.number > tip_number or sign * seen.get(candidate.hash, 0) >= floor:
                return False
        self._seq = seq = self._seq + 1
        heads[client] = (stored, seq)
        if self._foreign_heads:
            self._foreign_heads.pop(client, None)
        return True
