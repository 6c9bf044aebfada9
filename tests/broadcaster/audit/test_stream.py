"""The streamer keeps a verified copy in the journal file and refuses a log that does not extend it.

The source is the real enclave core (its ``audit_entries`` method, replies round-tripped through
JSON as over the wire); the copy is a real SQLite journal file.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson

from broadcaster.audit.stream import AuditStreamer
from broadcaster.audit.verify import AuditRefused
from enclave.audit import AuditLog
from enclave.core import EnclaveCore
from nonce.audit_copy import AuditCopy
from signer_client.signing import LocalKey
from signer_client.txcodec import keccak
from tests.broadcaster.audit.test_verify import enclave, key_of, sign


class CoreSource:
    """``audit_entries`` of an in-process enclave core; ``tamper`` edits replies in flight."""

    def __init__(self, core: EnclaveCore) -> None:
        self.core = core
        self.tamper: Any = None
        self.calls = 0

    async def audit_entries(self, from_seq: int, limit: int = 1000) -> dict[str, Any]:
        self.calls += 1
        params = {"from_seq": from_seq, "limit": limit}
        reply = self.core.handle({"id": 1, "method": "audit_entries", "params": params}, 0.0)
        result: dict[str, Any] = orjson.loads(orjson.dumps(reply["result"]))
        if self.tamper is not None:
            self.tamper(result)
        return result


def streamer(path: Path, source: CoreSource, refusals: list[AuditRefused]) -> AuditStreamer:
    return AuditStreamer(AuditCopy(path), source, on_refused=refusals.append)


def test_entries_are_stored_verified_with_the_head_and_the_key(tmp_path: Path) -> None:
    async def main() -> None:
        core, refusals = enclave(), []
        for n in range(3):
            sign(core, n)
        s = streamer(tmp_path / "j.db", CoreSource(core), refusals)
        s.trust(key_of(core), attested=False)
        assert await s.sync()
        copy = s.copy
        assert copy.count() == 4 and s.anchor.seq == 4
        assert copy.keys() == {key_of(core).lower()}
        assert s.log_id is not None and copy.log_of("") == s.log_id == key_of(core).lower()
        head = copy.last_head(s.log_id)
        assert head is not None and head[:2] == (4, core.audit.head)  # type: ignore[union-attr]
        sign(core, 3)
        assert await s.sync()
        assert copy.count() == 5 and refusals == []
        copy.close()

    asyncio.run(main())


def test_pages_of_a_long_log_are_all_fetched(tmp_path: Path) -> None:
    async def main() -> None:
        core, refusals = enclave(), []
        assert core.audit is not None
        for i in range(2500):
            core.audit.append(0.0, "note", {"i": i})
        core.audit.commit()
        source = CoreSource(core)
        s = streamer(tmp_path / "j.db", source, refusals)
        s.trust(key_of(core), attested=False)
        assert await s.sync()
        assert s.copy.count() == 2501 and source.calls == 3
        s.copy.close()

    asyncio.run(main())


def test_a_tampered_entry_is_refused_counted_once_and_nothing_of_its_batch_is_stored(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        core, refusals = enclave(), []
        sign(core, 0)
        source = CoreSource(core)
        s = streamer(tmp_path / "j.db", source, refusals)
        s.trust(key_of(core), attested=False)
        assert await s.sync()
        sign(core, 1)
        sign(core, 2)

        def edit(result: dict[str, Any]) -> None:
            if result["entries"]:
                result["entries"][-1]["data"]["value"] = "0xffff"

        source.tamper = edit
        assert not await s.sync()
        assert [r.reason for r in refusals] == ["tampered"]
        assert s.copy.count() == 2  # the genuine prefix from before; nothing of the bad batch
        assert not await s.sync()  # refused stays refused, told once
        assert len(refusals) == 1
        s.copy.close()

    asyncio.run(main())


def test_a_restart_with_a_fresh_log_is_refused_also_after_the_broadcaster_restarts(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        core, refusals = enclave(), []
        for n in range(3):
            sign(core, n)
        s = streamer(tmp_path / "j.db", CoreSource(core), refusals)
        s.trust(key_of(core), attested=False)
        assert await s.sync()
        s.copy.close()
        # The broadcaster restarts and meets an enclave that restarted with an empty log.
        restarted = enclave()
        s2 = streamer(tmp_path / "j.db", CoreSource(restarted), refusals)
        await s2.load()
        assert s2.anchor.seq == 4
        s2.trust(key_of(restarted), attested=False)
        assert not await s2.sync()
        assert [r.reason for r in refusals] == ["not_extending"]
        assert s2.copy.count() == 4
        s2.copy.close()

    asyncio.run(main())


def test_an_enclave_restart_that_continues_its_log_file_is_taken(tmp_path: Path) -> None:
    async def main() -> None:
        path = str(tmp_path / "enclave.jsonl")
        refusals: list[AuditRefused] = []
        first = enclave_with_file(path)
        sign(first, 0)
        source = CoreSource(first)
        s = streamer(tmp_path / "j.db", source, refusals)
        s.trust(key_of(first), attested=False)
        assert await s.sync()
        assert first.audit is not None
        first.audit.close()
        second = enclave_with_file(path)  # a new segment: new key, chained to the old head
        sign(second, 1)
        source.core = second
        s.trust(key_of(second), attested=True)
        assert await s.sync(), refusals
        assert s.copy.count() == 4 and refusals == []
        assert second.audit is not None
        second.audit.close()
        s.copy.close()

    asyncio.run(main())


def enclave_with_file(path: str) -> EnclaveCore:
    from enclave.policy import Policy, PolicyConfig
    from tests.enclave.running import ALLOWED_TO, ANVIL_KEY

    log = AuditLog(path, LocalKey(os.urandom(32)), seal_key=b"s" * 32)  # sealed, as the app does
    core = EnclaveCore(
        [LocalKey(ANVIL_KEY)],
        Policy(PolicyConfig(chain_ids=(1,), allowed_to=(ALLOWED_TO,))),
        audit=log,
    )
    core.restore_from_log(path)
    core.start(0.0, b"\0" * 48)
    return core


def test_the_copy_answers_signed_and_external_hashes(tmp_path: Path) -> None:
    async def main() -> None:
        core, refusals = enclave(), []
        raw = bytes.fromhex(sign(core, 0)["result"]["raw"][2:])
        tx_hash = keccak(raw)
        s = streamer(tmp_path / "j.db", CoreSource(core), refusals)
        s.trust(key_of(core), attested=False)
        assert await s.sync()
        assert s.copy.signed([tx_hash, b"\0" * 32]) == {tx_hash}
        assert s.copy.external([tx_hash]) == set()  # no journaled raw tx has it
        s.copy.close()

    asyncio.run(main())


def test_broadcaster_audit_checks_the_stored_copy_again_and_catches_an_edit_on_disk(
    tmp_path: Path,
) -> None:
    from broadcaster.cli.audit import verify_copy

    async def main() -> None:
        core, refusals = enclave(), []
        assert core.audit is not None
        for n in range(3):
            sign(core, n)
        for i in range(1500):  # two pages: two stored heads
            core.audit.append(0.0, "note", {"i": i})
        core.audit.commit()
        s = streamer(tmp_path / "j.db", CoreSource(core), refusals)
        s.trust(key_of(core), attested=False)
        assert await s.sync()
        assert verify_copy(s.copy) == 1504 == s.anchor.seq
        # The parent owns the disk: it edits the stored sign entry of nonce 1.
        (line,) = s.copy._run("SELECT entry FROM audit_entries WHERE nonce = 1")
        entry = orjson.loads(line[0])
        entry["data"]["tx_hash"] = "0x" + "77" * 32
        s.copy._run("UPDATE audit_entries SET entry = ? WHERE nonce = 1", (orjson.dumps(entry),))
        try:
            verify_copy(s.copy)
        except AuditRefused as exc:
            assert exc.reason == "tampered" and exc.seq == 3
        else:
            raise AssertionError("an edited copy verified")
        s.copy._run("UPDATE audit_entries SET entry = ? WHERE nonce = 1", (line[0],))
        assert verify_copy(s.copy) == 1504
        # ... or it leaves the line alone and edits the column the reconciler looks up.
        s.copy._run("UPDATE audit_entries SET tx_hash = ? WHERE nonce = 1", (b"\x77" * 32,))
        try:
            verify_copy(s.copy)
        except AuditRefused as exc:
            assert exc.reason == "tampered" and "indexed" in str(exc)
        else:
            raise AssertionError("an edited column verified")
        s.copy.close()

    asyncio.run(main())


def test_broadcaster_audit_refuses_a_row_slipped_in_past_the_last_signed_head(
    tmp_path: Path,
) -> None:
    """Attack: the parent owns the disk and hides a foreign tx from ``broadcaster audit`` by
    appending a ``sign`` row for it after the last stored head (no head vouches for it; the
    streamer always stores a page's rows with its head in one transaction)."""
    from broadcaster.cli.audit import verify_copy
    from nonce.audit_copy import StoredEntry

    async def main() -> None:
        core, refusals = enclave(), []
        sign(core, 0)
        s = streamer(tmp_path / "j.db", CoreSource(core), refusals)
        s.trust(key_of(core), attested=False)
        assert await s.sync()
        assert verify_copy(s.copy) == 2
        foreign = b"\x66" * 32
        assert s.log_id is not None
        (last,) = s.copy.lines(s.log_id, 2)
        forged = orjson.loads(last.entry)
        forged.update(seq=3, prev=last.hash)
        forged["data"]["tx_hash"] = "0x" + foreign.hex()
        row = StoredEntry(3, "0x" + "55" * 32, "sign", last.log_key, foreign, last.sender, 1,
                          orjson.dumps(forged))  # fmt: skip
        s.copy.append(s.log_id, [row], None, 0.0)
        assert s.copy.signed([foreign]) == {foreign}  # what the reconciler would believe
        try:
            verify_copy(s.copy)
        except AuditRefused as exc:
            assert exc.reason == "tampered" and exc.seq == 3
        else:
            raise AssertionError("a row no signed head covers verified")
        s.copy.close()

    asyncio.run(main())


def test_streaming_abuse_reordered_pages_evicted_and_a_head_behind_are_refused_once_each(
    tmp_path: Path,
) -> None:
    """A hostile signer: a page with two entries swapped (a gap), an ``evicted`` answer it
    repeats forever (refused once, never asked again), a head behind the copy (a rollback)."""
    from signer_client.errors import RemoteError

    async def main() -> None:
        for n, attack in enumerate(("swap", "evicted", "behind")):
            core, refusals = enclave(), []
            sign(core, 0)
            source = CoreSource(core)
            s = streamer(tmp_path / f"j{n}.db", source, refusals)
            s.trust(key_of(core), attested=False)
            assert await s.sync()
            for nonce in (1, 2):
                sign(core, nonce)

            def hostile(result: dict[str, Any], attack: str = attack) -> None:
                if attack == "swap":
                    entries = result["entries"]
                    entries[0], entries[1] = entries[1], entries[0]
                elif attack == "evicted":
                    raise RemoteError("evicted", "entries below seq 3 are gone")
                else:
                    result["entries"] = []
                    result["head"]["seq"] = 1

            source.tamper = hostile
            calls = source.calls
            assert not await s.sync()
            assert not await s.sync()
            expected = {"swap": "gap", "evicted": "evicted", "behind": "not_extending"}[attack]
            assert [r.reason for r in refusals] == [expected]
            assert source.calls == calls + 1  # refused: not asked again
            assert s.copy.count() == 2  # nothing of the hostile pages
            s.copy.close()

    asyncio.run(main())
