"""The audit copy keyed by log, on both backends (``store``: a SQLite file, or a fresh database on
the session's real PostgreSQL, marked e2e): two instances' enclave logs (the same signing key,
their own log keys and seqs) in one copy, each verified on its own rows; a tampered row refused
for its log only; reconciliation reads across logs; a stale leader's copy write fails (fenced);
a copy written by the schema before the audit_by_log step migrates and still verifies.

The logs come from real enclave cores (``enclave.core``), streamed by the real streamer.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
import pytest

from broadcaster.audit.stream import AuditStreamer
from broadcaster.audit.verify import AuditRefused
from broadcaster.cli.audit import verify_copy, verify_log, verify_logs
from enclave.core import EnclaveCore
from nonce.audit_copy import AuditCopyBase, StoredEntry, open_audit_copy
from nonce.backends import Target, is_postgres
from nonce.errors import StaleEpoch
from nonce.schema import AUDIT_BY_LOG, SCHEMA_VERSION, SQLITE, Dialect, Table
from signer_client.txcodec import keccak
from tests.broadcaster.audit.test_stream import CoreSource
from tests.broadcaster.audit.test_verify import enclave, key_of, sign
from tests.nonce.conftest import query


def tx_hash(reply: dict[str, Any]) -> bytes:
    return keccak(bytes.fromhex(str(reply["result"]["raw"])[2:]))


async def stream(copy: AuditCopyBase, core: EnclaveCore, instance: str) -> AuditStreamer:
    s = AuditStreamer(copy, CoreSource(core), instance=instance, on_refused=_never)
    await s.load()
    s.trust(key_of(core), attested=False)
    assert await s.sync()
    return s


def _never(exc: AuditRefused) -> None:
    raise AssertionError(f"refused: {exc}")


def two_logs(store: Target) -> tuple[AuditCopyBase, dict[str, EnclaveCore], dict[str, bytes]]:
    """Instances a and b, each its own enclave (own log key, own seq 1..), one copy."""
    copy = open_audit_copy(store)
    cores = {"a": enclave(), "b": enclave()}
    hashes: dict[str, bytes] = {}

    async def main() -> None:
        for n, name in enumerate(("a", "b")):
            hashes[name] = tx_hash(sign(cores[name], n))  # other nonces: other tx hashes
            await stream(copy, cores[name], name)

    asyncio.run(main())
    return copy, cores, hashes


def test_two_instances_logs_are_kept_apart_and_each_verifies_on_its_own(store: Target) -> None:
    copy, cores, hashes = two_logs(store)
    a, b = key_of(cores["a"]).lower(), key_of(cores["b"]).lower()
    assert copy.log_of("a") == a and copy.log_of("b") == b and copy.logs() == sorted([a, b])
    # Both logs start at seq 1: keyed by seq alone the second would have collided.
    assert [e.seq for e in copy.lines(a)] == [1, 2] == [e.seq for e in copy.lines(b)]
    assert {e.log_key for e in copy.lines(a)} == {a}
    assert verify_log(copy, a) == 2 == verify_log(copy, b)
    assert verify_copy(copy) == 4
    # The reconciler's question reads across logs: either instance's signature is ours.
    assert copy.signed([hashes["a"], hashes["b"], b"\x01" * 32]) == {hashes["a"], hashes["b"]}
    copy.close()


def test_a_restarted_instance_takes_up_its_own_log_not_the_other_s(store: Target) -> None:
    copy, cores, _ = two_logs(store)
    sign(cores["b"], 7)  # b's log moves on; a's does not

    async def main() -> None:
        s = AuditStreamer(copy, CoreSource(cores["b"]), instance="b", on_refused=_never)
        await s.load()
        assert s.log_id == key_of(cores["b"]).lower() and s.anchor.seq == 2
        assert await s.sync()
        assert s.anchor.seq == 3
        # a restarted enclave of a with a new log does not extend a's copy: refused, b unharmed
        refusals: list[AuditRefused] = []
        fresh = enclave()
        s2 = AuditStreamer(copy, CoreSource(fresh), instance="a", on_refused=refusals.append)
        await s2.load()
        s2.trust(key_of(fresh), attested=False)
        assert not await s2.sync()
        assert [r.reason for r in refusals] == ["not_extending"]

    asyncio.run(main())
    assert copy.count(key_of(cores["a"]).lower()) == 2
    assert copy.count(key_of(cores["b"]).lower()) == 3
    copy.close()


def test_a_tampered_row_in_one_instance_s_copy_is_refused_for_that_log_only(
    store: Target,
) -> None:
    """Attack: the parent owns the database and edits a sign entry of a's log."""
    copy, cores, _ = two_logs(store)
    a, b = key_of(cores["a"]).lower(), key_of(cores["b"]).lower()
    (line,) = [e for e in copy.lines(a) if e.kind == "sign"]
    entry = orjson.loads(line.entry)
    entry["data"]["to"] = "0x" + "66" * 20
    copy._run(
        "UPDATE audit_entries SET entry = ? WHERE log_id = ? AND seq = ?",
        (orjson.dumps(entry), a, line.seq),
    )
    checks = {c.log_id: c for c in verify_logs(copy)}
    assert checks[b].refused is None and checks[b].seq == 2
    refused = checks[a].refused
    assert refused is not None and refused.reason == "tampered" and refused.seq == line.seq
    with pytest.raises(AuditRefused) as caught:
        verify_copy(copy)
    assert caught.value.reason == "tampered" and a[:18] in str(caught.value)
    copy.close()


def test_a_forged_log_with_no_signed_head_is_refused_not_taken_as_ours(store: Target) -> None:
    """Attack: the parent adds a log of its own (rows under a new log_id, no head: it has no
    attested key to sign one) holding a foreign tx's hash, so the reconciler would count it."""
    copy, cores, _ = two_logs(store)
    a = key_of(cores["a"]).lower()
    (line,) = [e for e in copy.lines(a) if e.kind == "sign"]
    foreign = b"\x66" * 32
    forged = StoredEntry(1, line.hash, "sign", line.log_key, foreign, line.sender, 9, line.entry)
    copy.append("0x04" + "77" * 64, [forged], None, 0.0)
    assert copy.signed([foreign]) == {foreign}  # what the reconciler would believe
    checks = {c.log_id: c for c in verify_logs(copy)}
    refused = checks["0x04" + "77" * 64].refused
    assert refused is not None and refused.reason == "tampered"
    assert checks[a].refused is None
    with pytest.raises(AuditRefused):
        verify_copy(copy)
    copy.close()


@pytest.mark.e2e
def test_a_stale_leader_s_copy_write_fails_and_changes_nothing(postgres: Any) -> None:
    url = postgres.new_database()
    copy = open_audit_copy(url, epoch=3)  # creates the schema, lease table included
    query_pg(url, "INSERT INTO ha_lease (name, holder, epoch, expires_at, renewed_at)"
                  " VALUES ('leader', 'a', 3, 0, 0)")  # fmt: skip
    core = enclave()
    sign(core, 0)
    stale: list[StaleEpoch] = []
    assert hasattr(copy, "on_stale")
    copy.on_stale = stale.append

    async def main() -> AuditStreamer:
        return await stream(copy, core, "a")

    s = asyncio.run(main())
    assert s.log_id is not None and copy.count(s.log_id) == 2
    query_pg(url, "UPDATE ha_lease SET epoch = 4, holder = 'b'")  # b took over
    sign(core, 1)
    with pytest.raises(StaleEpoch):
        copy.add_key("0x04" + "11" * 64, attested=False, pcr0=None, at=0.0)
    refusals: list[AuditRefused] = []
    s.on_refused = refusals.append
    assert not asyncio.run(s.sync())  # the write failed: not stored, not refused
    assert copy.count(s.log_id) == 2 and refusals == [] and len(stale) == 2
    assert len(query(url, "SELECT seq FROM audit_heads")) == 1
    copy.close()


def query_pg(url: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)


# -- migration ---------------------------------------------------------------------------------

V4_ENTRIES = Table(
    "audit_entries",
    ("seq INTEGER PRIMARY KEY", "hash TEXT NOT NULL", "kind TEXT NOT NULL",
     "log_key TEXT NOT NULL", "tx_hash BLOB", "sender TEXT", "nonce INTEGER",
     "entry BLOB NOT NULL"),
    indexes=(("audit_entries_tx", "tx_hash"),),
)  # fmt: skip
V4_HEADS = Table(
    "audit_heads",
    ("seq INTEGER PRIMARY KEY", "hash TEXT NOT NULL", "signature TEXT NOT NULL",
     "log_key TEXT NOT NULL", "at REAL NOT NULL"),
)  # fmt: skip
"""The two tables as schema 4 declared them (keyed by seq alone)."""


_DROPPED = {  # what a journal at each older version did not have yet (besides the v4 audit tables)
    "6": (),
    "4": ("ALTER TABLE records DROP COLUMN max_fee_per_blob_gas",
          "ALTER TABLE records DROP COLUMN blobs", "ALTER TABLE records DROP COLUMN authorizations",
          "DROP TABLE bundles"),
    "3": ("ALTER TABLE records DROP COLUMN max_fee_per_blob_gas",
          "ALTER TABLE records DROP COLUMN blobs", "ALTER TABLE records DROP COLUMN authorizations",
          "DROP TABLE bundles", "ALTER TABLE records DROP COLUMN is_private"),
}  # fmt: skip


def v4_copy(
    target: Target,
    rows: list[tuple[Any, ...]],
    heads: list[tuple[Any, ...]],
    version: str = "4",
) -> None:
    """Turn the journal at ``target`` into one an older schema (``version``: 3, 4 or 6, all before
    the audit_by_log step) wrote: its audit tables keyed by seq, holding ``rows`` and ``heads``,
    no audit_logs table, none of the later steps' columns and tables, meta at ``version``."""
    if is_postgres(target):
        import psycopg

        from nonce.schema import POSTGRES

        dialect: Dialect = POSTGRES
        conn: Any = psycopg.connect(str(target), autocommit=True)
    else:
        import sqlite3

        dialect = SQLITE
        conn = sqlite3.connect(target, isolation_level=None)
    try:
        for statement in ("DROP TABLE audit_entries", "DROP TABLE audit_heads",
                          "DROP TABLE audit_logs", *_DROPPED[version]):  # fmt: skip
            conn.execute(statement)
        for statement in dialect.ddl((V4_ENTRIES, V4_HEADS)).split(";"):
            if statement.strip():
                conn.execute(statement)
        for row in rows:
            conn.execute(
                dialect.sql("INSERT INTO audit_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)"), row
            )
        for head in heads:
            conn.execute(dialect.sql("INSERT INTO audit_heads VALUES (?, ?, ?, ?, ?)"), head)
        conn.execute(f"UPDATE meta SET value = '{version}' WHERE key = 'schema'")
    finally:
        conn.close()


@pytest.mark.parametrize("version", ["3", "4", "6"])
def test_a_copy_written_before_the_audit_by_log_step_migrates_and_verifies(
    store: Target, tmp_path: Path, version: str
) -> None:
    """Its rows are one log (the one key in audit_keys), bound to instance '' (SQLite: no [ha]);
    the streamer takes up where it ended and the copy verifies as before. From schema 3, 4 (before
    main's types and bundles steps) and 6 (after them) alike, the journal's records too: every
    step in order, on both backends."""
    from nonce.backends import load, open_book
    from nonce.state import Intent

    assert SCHEMA_VERSION == AUDIT_BY_LOG == "7"
    alice, bob = "0x" + "aa" * 20, "0x" + "bb" * 20
    old = Intent(
        id="old", sender=alice, to=bob, value=2**70, data=b"\x01", gas=21_000,
        max_fee_per_gas=2, max_priority_fee_per_gas=1, chain_id=1, key="old",
    )  # fmt: skip
    book, journal = open_book(store)
    book.resync(alice, chain_latest=0, chain_pending=0, now=0.0)
    book.accept(old, now=1.0)
    journal.close()
    core = enclave()
    for n in range(3):
        sign(core, n)
    copy = open_audit_copy(store)
    s = asyncio.run(stream(copy, core, ""))
    log_id = key_of(core).lower()
    rows = [(e.seq, e.hash, e.kind, e.log_key, e.tx_hash, e.sender, e.nonce, e.entry)
            for e in copy.lines(log_id)]  # fmt: skip
    heads = [(seq, digest, sig, log_id, 1.0) for seq, digest, sig in copy.heads(log_id)]
    signed = {e.tx_hash for e in copy.lines(log_id) if e.tx_hash is not None}
    copy.close()
    v4_copy(store, rows, heads, version)
    assert query(store, "SELECT value FROM meta WHERE key = 'schema'") == [(version,)]

    migrated = open_audit_copy(store)  # opening migrates
    assert query(store, "SELECT value FROM meta WHERE key = 'schema'") == [(SCHEMA_VERSION,)]
    assert migrated.log_of("") == log_id and migrated.logs() == [log_id]
    assert migrated.keys() == {log_id}
    assert verify_copy(migrated) == s.anchor.seq == 4
    assert migrated.signed(signed) == signed and len(signed) == 3

    sign(core, 3)

    async def resume() -> AuditStreamer:
        again = AuditStreamer(migrated, CoreSource(core), on_refused=_never)
        await again.load()
        assert again.log_id == log_id and again.anchor.seq == 4
        assert await again.sync()
        return again

    assert asyncio.run(resume()).anchor.seq == 5
    assert verify_copy(migrated) == 5
    migrated.close()
    assert [r.intent for r in load(store)] == [old]
    book2, journal2 = open_book(store)  # the journal opens at the new version and books on
    assert book2.accept(replace(old, id="next", key="next"), now=2.0).nonce == 1
    journal2.close()


# -- the live reconciler's rule: which logs count -----------------------------------------------


def test_the_leader_counts_another_log_only_once_it_verifies_with_attested_keys(
    store: Target,
) -> None:
    """Attack through the standby path (it writes the copy unfenced, on a database its host can
    write): rows under a forged log_id with no head, a row past the leader's own verified anchor,
    and a whole third log signed by a key the host controls (its own fake enclave, no
    attestation) each hold a foreign tx's hash; none is counted as signed by the leader's
    reconciler. The genuine standby's log (attested key) is."""
    from broadcaster.audit.logs import VerifiedLogs

    copy, cores, hashes = two_logs(store)
    a, b = key_of(cores["a"]).lower(), key_of(cores["b"]).lower()
    for key in (a, b):  # both genuine enclaves were attested when their instances streamed
        copy.add_key(key, attested=True, pcr0=None, at=1.0)
    forged_row, past_anchor, fake_enclave = b"\xf1" * 32, b"\xf2" * 32, None
    (line,) = [e for e in copy.lines(a) if e.kind == "sign"]
    forged = StoredEntry(1, "0x" + "00" * 32, "sign", "0x" + "ee" * 33, forged_row, line.sender,
                         9, line.entry)  # fmt: skip
    copy.append(forged.log_key, [forged], None, 1.0)  # a new log_id, rows with no head
    copy.append(a, [replace(forged, seq=99, log_key=a, tx_hash=past_anchor)], None, 1.0)
    fake = enclave()  # the host's own enclave, streamed by a standby whose signer is not attested
    fake_enclave = tx_hash(sign(fake, 5))
    asyncio.run(stream(copy, fake, "c"))
    wanted = [hashes["a"], hashes["b"], forged_row, past_anchor, fake_enclave]
    assert copy.signed(wanted) == set(wanted)  # the rows are there: counting them all was the bug

    logs = VerifiedLogs(copy, lambda: (a, 2), attested_only=True)
    assert logs.signed(wanted) == {hashes["a"], hashes["b"]}
    assert set(logs.refused) == {forged.log_key, key_of(fake).lower()}
    # without attestation pinned (dev) any stored key is trusted: the fake enclave's log counts,
    # the headless forgery and the row past the anchor still do not
    dev = VerifiedLogs(copy, lambda: (a, 2), attested_only=False)
    assert dev.signed(wanted) == {hashes["a"], hashes["b"], fake_enclave}
    copy.close()


def test_a_standby_whose_signer_serves_the_leader_s_log_is_refused_not_let_extend_it(
    store: Target,
) -> None:
    """Attack: the standby host relays the leader's (genuine) enclave as its own signer. Its
    streamer would take that log as its own (bound to it) and write its rows: the leader, whose
    rows collide with them, could then never store its own entries (no catch-up, no block
    checked, no foreign finding). It is refused instead, and the leader's log moves on."""
    copy, cores, _ = two_logs(store)
    a = key_of(cores["a"]).lower()
    sign(cores["a"], 4)

    async def main() -> None:
        refusals: list[AuditRefused] = []
        relay = AuditStreamer(copy, CoreSource(cores["a"]), instance="c",
                              on_refused=refusals.append)  # fmt: skip
        await relay.load()
        relay.trust(key_of(cores["a"]), attested=True)
        assert not await relay.sync()
        assert [r.reason for r in refusals] == ["not_extending"] and "'a'" in str(refusals[0])
        assert copy.log_of("c") is None
        leader = AuditStreamer(copy, CoreSource(cores["a"]), instance="a", on_refused=_never)
        await leader.load()
        assert await leader.sync() and leader.anchor.seq == 3

    asyncio.run(main())
    assert copy.count(a) == 3 and verify_log(copy, a) == 3
    copy.close()


def test_a_standby_that_bound_the_leader_s_log_first_makes_the_leader_refuse_loudly(
    store: Target,
) -> None:
    """The same relay, started before the leader's first page: the log is the standby's, so the
    leader's streamer is refused (the audit_refused alert, signing stopped), never silently stuck
    on colliding rows."""
    copy = open_audit_copy(store)
    core = enclave()
    tx_hash(sign(core, 0))

    async def main() -> None:
        await stream(copy, core, "c")  # the relay binds the log first
        refusals: list[AuditRefused] = []
        leader = AuditStreamer(copy, CoreSource(core), instance="a", on_refused=refusals.append)
        await leader.load()
        leader.trust(key_of(core), attested=False)
        assert not await leader.sync()
        assert [r.reason for r in refusals] == ["not_extending"]

    asyncio.run(main())
    copy.close()


def test_a_copy_write_whose_commit_went_through_but_was_not_acknowledged_is_not_stuck(
    store: Target,
) -> None:
    """A database restart mid-stream: the COMMIT reached the database, the answer did not (and
    the reconnect failed: the database still restarting), so the streamer saw a JournalError.
    The next sync must not insert the same rows again forever (a primary-key conflict every
    time: the copy stuck, the reconciler with it); it takes up from what the copy holds."""
    from nonce.errors import JournalError

    copy = open_audit_copy(store)
    core = enclave()
    sign(core, 0)
    real_append = copy.append
    lost = [True]

    def append(*args: Any, **kwargs: Any) -> None:
        real_append(*args, **kwargs)
        if lost:
            lost.clear()
            raise JournalError("audit copy: server closed the connection unexpectedly")

    copy.append = append  # type: ignore[method-assign]

    async def main() -> None:
        s = AuditStreamer(copy, CoreSource(core), instance="a", on_refused=_never)
        await s.load()
        s.trust(key_of(core), attested=False)
        assert not await s.sync()  # the write "failed"
        assert await s.sync()  # the rows are there: taken up, not inserted again
        sign(core, 1)
        assert await s.sync() and s.anchor.seq == 3

    asyncio.run(main())
    assert verify_log(copy, key_of(core).lower()) == 3
    copy.close()


def test_signed_nonces_reads_one_log_and_one_chain_on_both_backends(store: Target) -> None:
    """Recovery's question (``broadcaster.tx.unjournaled``): each instance's own log only, the
    chain read from the stored entry (BYTEA on PostgreSQL), from the floor up."""
    copy, cores, _ = two_logs(store)  # a signed nonce 0, b nonce 1 (chain 1, one sender)
    a, b = key_of(cores["a"]).lower(), key_of(cores["b"]).lower()
    sender = next(e.sender for e in copy.lines(a) if e.sender is not None)
    assert sender is not None
    assert copy.signed_nonces(a, sender, 0, 1) == {0}
    assert copy.signed_nonces(b, sender, 0, 1) == {1}
    assert copy.signed_nonces(b, sender, 2, 1) == set()
    assert copy.signed_nonces(a, sender, 0, 10) == set()  # another chain's signatures: none
    copy.close()
