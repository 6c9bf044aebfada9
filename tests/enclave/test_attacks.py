"""The enclave app against a compromised parent instance that owns its disk, its flags and its
socket (DESIGN.md section 6a), each test written as the attacker. The real app over a real unix
socket with its real policy, or its real server adapter in-process where the attack needs a
broken disk."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from enclave.__main__ import main
from enclave.audit import AuditLog, _entry_hash, verify_log
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from enclave.server import serve
from signer_client import PolicyDenied, RemoteError, SignerClient
from signer_client.framing import FrameDecoder, encode_frame
from signer_client.signing import LocalKey
from tests.enclave.running import (
    ALLOWED_TO,
    ANVIL_ADDRESS,
    ANVIL_KEY,
    OTHER_ADDRESS,
    REPO,
    running_enclave,
    start_enclave,
)


def tx(nonce: int = 0, **over: Any) -> dict[str, Any]:
    base = {
        "type": 2, "chainId": 31337, "nonce": nonce, "to": ALLOWED_TO, "value": 1, "data": b"",
        "gas": 21_000, "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 10**8,
    }  # fmt: skip
    return {**base, **over}


def raw_exchange(path: str, frames: list[bytes]) -> list[dict[str, Any]]:
    """Send ``frames`` on one connection; read until the enclave closes it or answers them."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        for frame in frames:
            s.sendall(frame)
        decoder, out = FrameDecoder(), []
        while len(out) < len(frames):
            data = s.recv(65536)
            if not data:
                break
            out += [orjson.loads(b) for b in decoder.feed(data)]
        return out


def one_read_exchange(path: str, frames: list[bytes]) -> list[dict[str, Any]]:
    """Send ``frames`` in a single write; read until each is answered or the enclave closes."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(b"".join(frames))
        decoder, out = FrameDecoder(), []
        while len(out) < len(frames):
            data = s.recv(65536)
            if not data:
                break
            out += [orjson.loads(b) for b in decoder.feed(data)]
        return out


# ---------------------------------------------------------------- nonce protection


@pytest.mark.parametrize("factor", [1, 10, 100])
async def test_a_payload_swap_at_a_used_nonce_is_refused_whatever_the_fees(
    tmp_path: Path, factor: int
) -> None:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(), ANVIL_ADDRESS)
            fees = {"maxFeePerGas": 10**9 * factor * 2, "maxPriorityFeePerGas": 10**8 * factor * 2}
            for swap in ({"to": OTHER_ADDRESS}, {"value": 10**20}, {"data": b"\xa9\x05\x9c\xbb"}):
                with pytest.raises(PolicyDenied) as info:
                    await client.sign_transaction(tx(**fees, **swap), ANVIL_ADDRESS)
                assert info.value.rule == "nonce_conflict"
            # the same intent with the fees bumped is the one replacement there is
            assert (await client.sign_transaction(tx(**fees), ANVIL_ADDRESS)).nonce == 0


async def test_a_restart_after_cutting_the_logs_tail_refuses_to_start(tmp_path: Path) -> None:
    """The host cuts the entry of the last signature and restarts the enclave, hoping it forgot
    the nonce: the sealed anchor names the real head, so the enclave refuses to start at all."""
    enclave = start_enclave(tmp_path, f"unix://{tmp_path}/e.sock")
    try:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(), ANVIL_ADDRESS)
    finally:
        enclave.stop()
    rows = enclave.audit_log.read_bytes().splitlines()
    sign_rows = [i for i, r in enumerate(rows) if orjson.loads(r)["kind"] == "sign"]
    enclave.audit_log.write_bytes(b"\n".join(rows[: sign_rows[-1]]) + b"\n")
    with pytest.raises(RuntimeError):
        start_enclave(tmp_path, f"unix://{tmp_path}/e.sock")
    result = await asyncio.to_thread(
        subprocess.run, enclave.args, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "refusing to start" in result.stderr and "cut" in result.stderr


async def test_a_restart_with_an_intact_log_keeps_refusing_the_swap(tmp_path: Path) -> None:
    first = start_enclave(tmp_path, f"unix://{tmp_path}/e.sock")
    try:
        async with SignerClient(first.url) as client:
            await client.sign_transaction(tx(), ANVIL_ADDRESS)
    finally:
        first.stop()
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as again:
        async with SignerClient(again.url) as client:
            with pytest.raises(PolicyDenied) as info:
                await client.sign_transaction(tx(to=OTHER_ADDRESS, maxFeePerGas=10**11),
                                              ANVIL_ADDRESS)  # fmt: skip
            assert info.value.rule == "nonce_conflict"


def test_a_forged_anchor_is_refused(tmp_path: Path) -> None:
    enclave = start_enclave(tmp_path, f"unix://{tmp_path}/e.sock")
    enclave.stop()
    anchor = Path(str(enclave.audit_log) + ".head")
    seq, head, _mac = anchor.read_text().split()
    anchor.write_text(f"{int(seq) - 1:020d} {head} {'00' * 32}\n")
    result = subprocess.run(enclave.args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not sealed by this enclave" in result.stderr


async def test_entries_appended_past_the_sealed_anchor_are_not_adopted_on_restart(
    tmp_path: Path,
) -> None:
    """Non-start entries carry no signature: the host appends a well-chained ``sign`` entry (the
    alibi for a transaction it got signed elsewhere) after the anchored head and restarts the
    enclave. Adopted, the genuine enclave would chain onto it and its signed heads would vouch
    for it. Entries past the anchor never had a reply leave (the entry and its anchor are
    written before the reply), so the enclave cuts them off instead."""
    url = f"unix://{tmp_path}/e.sock"
    with running_enclave(tmp_path, url) as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(nonce=0), ANVIL_ADDRESS)
    log = enclave.audit_log
    genuine = log.read_bytes()
    last = orjson.loads(genuine.splitlines()[-1])
    data = {"sender": ANVIL_ADDRESS.lower(), "chain": 31337, "nonce": 7, "type": 2,
            "to": "0x" + "ee" * 20, "value": hex(10**24), "fee_cap": "0x1", "tip_cap": "0x1",
            "intent": "0x" + "11" * 32, "signing_hash": "0x" + "22" * 32,
            "tx_hash": "0x" + "33" * 32, "noop": False}  # fmt: skip
    seq, prev = last["seq"] + 1, last["hash"]
    digest = _entry_hash(seq, last["ts"], prev, "sign", data)
    alibi = {"seq": seq, "ts": last["ts"], "prev": prev, "kind": "sign", "data": data,
             "hash": "0x" + digest.hex(), "sig": None}  # fmt: skip
    log.write_bytes(genuine + orjson.dumps(alibi) + b"\n")
    with running_enclave(tmp_path, url) as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(nonce=7), ANVIL_ADDRESS)  # nonce 7 was never ours
            head = await client.audit_head()
    assert b"33" * 32 not in log.read_bytes()
    assert log.read_bytes().startswith(genuine)
    problems, keys = verify_log(str(log), None, (head["seq"], head["hash"]))
    assert problems == [] and len(keys) == 2


# ---------------------------------------------------------------- the audit log


def _resign(rows: list[bytes], key: LocalKey) -> list[bytes]:
    """The attacker's own log: every entry rebuilt, the start entries announcing its key."""
    out, prev = [], "0x" + "00" * 32
    for row in rows:
        e = orjson.loads(row)
        if e["kind"] == "start":
            e["data"]["log_public_key"] = "0x" + key.public_key.hex()
        if e["kind"] == "sign":
            e["data"]["to"] = "0x" + "ee" * 20  # what it wants the record to say
        digest = _entry_hash(e["seq"], e["ts"], prev, e["kind"], e["data"])
        e["prev"], e["hash"] = prev, "0x" + digest.hex()
        e["sig"] = "0x" + key.sign_hash(digest).hex() if e["kind"] == "start" else None
        prev = e["hash"]
        out.append(orjson.dumps(e))
    return out


async def test_a_wholly_re_signed_log_is_detected_against_the_attested_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(), ANVIL_ADDRESS)
            assert client.info is not None
            attested_key = client.info.log_public_key
            head = await client.audit_head()
    log = enclave.audit_log
    keys = tmp_path / "keys.txt"
    keys.write_text(attested_key + "\n")
    expect = f"{head['seq']}:{head['hash']}"
    assert main(["verify-log", str(log), "--keys", str(keys), "--expect-head", expect]) == 0
    forged = tmp_path / "forged.jsonl"
    forged.write_bytes(b"\n".join(_resign(log.read_bytes().splitlines(), LocalKey(os.urandom(32)))))
    capsys.readouterr()
    assert verify_log(str(forged))[0] == []  # internally consistent: without anchors it passes
    assert main(["verify-log", str(forged), "--keys", str(keys)]) == 1
    assert "untrusted_key" in capsys.readouterr().out
    assert main(["verify-log", str(forged), "--expect-head", expect]) == 1
    assert "head hash does not match" in capsys.readouterr().out


async def test_a_cut_tail_is_detected_against_a_signed_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(), ANVIL_ADDRESS)
            head = await client.audit_head()
    rows = enclave.audit_log.read_bytes().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(b"\n".join(rows[:-1]) + b"\n")
    assert main(["verify-log", str(cut)]) == 0  # no anchor: nothing to see (and it says so)
    assert "no --expect-head" in capsys.readouterr().out
    assert main(["verify-log", str(cut), "--expect-head", f"{head['seq']}:{head['hash']}"]) == 1
    assert "truncated" in capsys.readouterr().out


async def test_an_entry_rewritten_after_the_signed_head_is_not_passed_off_as_covered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entries after the head a verifier holds are unsigned: the host rewrites one (re-chained,
    so the log is internally consistent). verify-log cannot see it, and must not say the head
    covers it."""
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(nonce=0), ANVIL_ADDRESS)
            head = await client.audit_head()
            await client.sign_transaction(tx(nonce=1), ANVIL_ADDRESS)
    rows = enclave.audit_log.read_bytes().splitlines()
    upto = next(i for i, r in enumerate(rows) if orjson.loads(r)["seq"] == head["seq"]) + 1
    rewritten, prev = rows[:upto], orjson.loads(rows[upto - 1])["hash"]
    for row in rows[upto:]:
        e = orjson.loads(row)
        if e["kind"] == "sign":
            e["data"]["to"] = "0x" + "ee" * 20
        e["prev"] = prev
        e["hash"] = prev = "0x" + _entry_hash(e["seq"], e["ts"], prev, e["kind"], e["data"]).hex()
        rewritten.append(orjson.dumps(e))
    enclave.audit_log.write_bytes(b"\n".join(rewritten) + b"\n")
    capsys.readouterr()
    assert main(["verify-log", str(enclave.audit_log), "--expect-head",
                 f"{head['seq']}:{head['hash']}"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"entries after seq {head['seq']} are not covered by the signed head" in out


async def test_a_rollback_of_log_and_anchor_together_is_visible_in_the_log_it_leaves(
    tmp_path: Path,
) -> None:
    """The host snapshots the log and its anchor, lets the enclave sign, restores the snapshot
    and restarts it: the enclave cannot tell (README, threat model), but the log it then writes
    holds two intents at one nonce, which verify-log names, and a signed head from before the
    restore no longer matches."""
    url = f"unix://{tmp_path}/e.sock"
    with running_enclave(tmp_path, url) as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(nonce=0), ANVIL_ADDRESS)
    anchor = enclave.audit_log.with_name(enclave.audit_log.name + ".head")
    snapshot = (enclave.audit_log.read_bytes(), anchor.read_bytes())
    with running_enclave(tmp_path, url) as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(nonce=1), ANVIL_ADDRESS)
            head = await client.audit_head()
    genuine = enclave.audit_log.read_bytes()
    enclave.audit_log.write_bytes(snapshot[0])
    anchor.write_bytes(snapshot[1])
    with running_enclave(tmp_path, url) as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(nonce=1, to=OTHER_ADDRESS), ANVIL_ADDRESS)
    merged = tmp_path / "both.jsonl"  # the verifier's copy holds what it saw before the restore
    merged.write_bytes(genuine + enclave.audit_log.read_bytes()[len(snapshot[0]) :])
    problems, _ = verify_log(str(enclave.audit_log), None, (head["seq"], head["hash"]))
    assert any(p.kind == "edited" for p in problems)  # the held head is not in the new history
    problems, _ = verify_log(str(merged))
    assert any(p.kind == "conflicting_intent" for p in problems)


async def test_every_request_kind_is_logged_with_the_whole_intent(tmp_path: Path) -> None:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        async with SignerClient(enclave.url) as client:
            signed = await client.sign_transaction(tx(data=b"\x01\x02"), ANVIL_ADDRESS)
            with pytest.raises(PolicyDenied):
                await client.sign_transaction(tx(nonce=1, to="0x" + "ee" * 20), ANVIL_ADDRESS)
        raw_exchange(enclave.url.removeprefix("unix://"), [b"\x00\x00\x00\x02{]"])
        entries = [orjson.loads(r) for r in enclave.audit_log.read_bytes().splitlines()]
    kinds = [e["kind"] for e in entries]
    assert kinds[0] == "start" and "hello" in kinds and "deny" in kinds and "bad_request" in kinds
    sign = next(e["data"] for e in entries if e["kind"] == "sign")
    for field in ("type", "to", "value", "data_keccak", "gas", "fee_cap", "tip_cap", "nonce",
                  "chain", "tx_hash", "sender"):  # fmt: skip
        assert field in sign, field
    assert sign["tx_hash"] == "0x" + signed.hash.hex()
    assert sign["to"] == ALLOWED_TO.lower() and sign["value"] == "0x1"


async def test_a_full_disk_fails_closed_no_signature_leaves(tmp_path: Path) -> None:
    """The host fills the disk: the entry cannot be written, so the signature is withheld."""
    log = tmp_path / "audit.jsonl"
    audit = AuditLog(str(log), LocalKey(os.urandom(32)))
    core = EnclaveCore(
        [LocalKey(ANVIL_KEY)],
        Policy(PolicyConfig(chain_ids=(31337,), allowed_to=(ALLOWED_TO,))),
        audit=audit,
    )
    core.start(0.0, b"\0" * 48)
    audit.commit()
    server = await serve(core, f"unix://{tmp_path}/e.sock")
    try:
        async with SignerClient(f"unix://{tmp_path}/e.sock") as client:
            full = os.open("/dev/full", os.O_WRONLY)
            os.dup2(full, audit._fd)  # every write now fails with ENOSPC
            os.close(full)
            with pytest.raises(RemoteError) as info:
                await client.sign_transaction(tx(), ANVIL_ADDRESS)
            assert info.value.code == "audit_failed"
            assert audit.failed_writes == 1
    finally:
        server.close()
        await server.wait_closed()


async def test_an_audit_head_in_the_same_read_as_a_sign_on_a_full_disk_lets_neither_out(
    tmp_path: Path,
) -> None:
    """The host fills the disk and asks for a head in the very read that carries a signature:
    the head's own commit fails, the sign's entry stays queued, and the read's closing commit
    fails it closed too (a dropped queue would have let the signature out with no entry)."""
    log = tmp_path / "audit.jsonl"
    audit = AuditLog(str(log), LocalKey(os.urandom(32)))
    core = EnclaveCore(
        [LocalKey(ANVIL_KEY)],
        Policy(PolicyConfig(chain_ids=(31337,), allowed_to=(ALLOWED_TO,))),
        audit=audit,
    )
    core.start(0.0, b"\0" * 48)
    path = f"{tmp_path}/e.sock"
    server = await serve(core, f"unix://{path}")
    wire = {k: ("0x" if v == b"" else hex(v) if isinstance(v, int) else v) for k, v in tx().items()}
    frames = [
        encode_frame({"id": 1, "method": "sign_transaction",
                      "params": {"sender": ANVIL_ADDRESS, "tx": wire}}),
        encode_frame({"id": 2, "method": "audit_head", "params": {}}),
        encode_frame({"id": 3, "method": "audit_entries", "params": {"from_seq": 1}}),
    ]  # fmt: skip
    try:
        full = os.open("/dev/full", os.O_WRONLY)
        os.dup2(full, audit._fd)
        os.close(full)
        loop = asyncio.get_running_loop()
        # One write: the three requests arrive in one read (one commit before their replies).
        replies = await loop.run_in_executor(None, one_read_exchange, path, frames)
    finally:
        server.close()
        await server.wait_closed()
    assert [r.get("error", {}).get("code") for r in replies] == ["audit_failed"] * 3
    assert audit.seq == 1 and audit.pending >= 1  # only the start entry is on disk
    assert [e["seq"] for e in audit.entries(1, 10)] == [1]  # nothing uncommitted is served


# ---------------------------------------------------------------- hostile frames


async def test_a_deeply_nested_access_list_is_a_bad_request_and_the_connection_lives(
    tmp_path: Path,
) -> None:
    with running_enclave(tmp_path, f"unix://{tmp_path}/e.sock") as enclave:
        path = enclave.url.removeprefix("unix://")
        nested = b"[" * 1000 + b"]" * 1000  # just inside orjson's depth limit
        deep = b"[" * 5000 + b"]" * 5000  # beyond it
        wire = {**tx(), "data": "0x", "accessList": "@"}
        wire = {k: (hex(v) if isinstance(v, int) else v) for k, v in wire.items()}
        body = orjson.dumps(
            {"id": 1, "method": "sign_transaction", "params": {"sender": ANVIL_ADDRESS, "tx": wire}}
        ).replace(b'"@"', nested)
        frames = [
            len(body).to_bytes(4, "big") + body,
            len(deep).to_bytes(4, "big") + deep,
            encode_frame({"id": 3, "method": "hello", "params": {}}),
        ]
        replies = raw_exchange(path, frames)
    assert [r.get("error", {}).get("code") for r in replies[:2]] == ["bad_request", "bad_request"]
    assert "accessList" in replies[0]["error"]["reason"]
    assert replies[2]["result"]["protocol"] == 2  # same connection, still served


async def test_a_slowloris_frame_is_cut_off_and_the_connection_cap_holds(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/e.sock"
    with running_enclave(
        tmp_path, url, extra=["--read-timeout", "0.2", "--max-connections", "2"]
    ) as enclave:
        path = enclave.url.removeprefix("unix://")
        loop = asyncio.get_running_loop()
        slow = socket.socket(socket.AF_UNIX)
        slow.connect(path)
        slow.sendall(b"\x00\x00\x01\x00{")  # promises 256 bytes, sends one, then nothing
        slow.settimeout(30)
        data = await loop.run_in_executor(None, slow.recv, 65536)
        rest = await loop.run_in_executor(None, slow.recv, 65536)
        slow.close()
        assert b"read_timeout" in data and rest == b""  # told why, then closed
        holders = [socket.socket(socket.AF_UNIX) for _ in range(2)]
        for h in holders:
            h.connect(path)
            h.sendall(encode_frame({"id": 1, "method": "hello", "params": {}}))
            h.recv(65536)  # served
        extra = socket.socket(socket.AF_UNIX)
        extra.connect(path)
        extra.settimeout(30)
        refused = await loop.run_in_executor(None, extra.recv, 65536)
        extra.close()
        for h in holders:
            h.close()
        assert b"too_many_connections" in refused


# ---------------------------------------------------------------- nitro mode refuses parent input


@pytest.mark.parametrize(
    ("extra", "env", "needle"),
    [
        (["--key-file", "k.txt"], {}, "--key-file"),
        ([], {"ENCLAVE_KEYS": ANVIL_KEY}, "ENCLAVE_KEYS"),
        (["--pcr0", "00" * 48], {}, "--pcr0"),
        (["--pki-dir", "pki"], {}, "--pki-dir"),
        (["--key-bundle", "b.json", "--kms", "vsock://3:8000"], {}, "--audit-log"),
        (
            [
                "--key-bundle",
                "b.json",
                "--kms",
                "vsock://3:8000",
                "--audit-log",
                "a.jsonl",
                "--nsm-device",
                "/nonexistent/nsm",
            ],
            {},
            "Nitro enclave",
        ),
    ],
)
def test_nitro_mode_refuses_keys_measurements_and_pki_from_the_parent(
    tmp_path: Path, extra: list[str], env: dict[str, str], needle: str
) -> None:
    args = [sys.executable, "-m", "enclave", "--mode", "nitro", "--listen",
            f"unix://{tmp_path}/e.sock", *extra]  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if k != "ENCLAVE_KEYS"}
    result = subprocess.run(
        args, cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**environ, "PYTHONPATH": str(REPO), **env},
    )  # fmt: skip
    assert result.returncode == 2
    assert needle in result.stderr, result.stderr


async def test_the_client_moves_the_nonce_window_and_it_never_goes_back(tmp_path: Path) -> None:
    """``advance_nonce_floor`` over the real socket: the window follows the account (a nonce
    4096 ahead is signed once the floor moved), nonces below the floor are refused, and a lower
    floor (the host trying to re-open forgotten nonces) changes nothing, also after a restart."""
    url = f"unix://{tmp_path}/e.sock"
    with running_enclave(tmp_path, url) as enclave:
        async with SignerClient(enclave.url) as client:
            await client.sign_transaction(tx(nonce=0), ANVIL_ADDRESS)
            with pytest.raises(PolicyDenied) as info:
                await client.sign_transaction(tx(nonce=5000), ANVIL_ADDRESS)
            assert info.value.rule == "nonce_window"
            await client.advance_nonce_floor(31337, ANVIL_ADDRESS, 4000)
            await client.advance_nonce_floor(31337, ANVIL_ADDRESS, 0)  # never lowers
            assert (await client.sign_transaction(tx(nonce=5000), ANVIL_ADDRESS)).nonce == 5000
    with running_enclave(tmp_path, url) as enclave:
        async with SignerClient(enclave.url) as client:
            with pytest.raises(PolicyDenied) as info:
                await client.sign_transaction(tx(nonce=0, to=OTHER_ADDRESS), ANVIL_ADDRESS)
            assert info.value.rule == "nonce_too_low"


async def test_a_peer_that_pipelines_and_never_reads_cannot_grow_the_enclaves_memory(
    tmp_path: Path,
) -> None:
    """Write backpressure: the host pipelines requests and never reads a reply. The server must
    stop reading (and so stop answering) once its write buffer is full, not queue every reply in
    the enclave's fixed memory; once the peer reads again, every request is answered."""
    from enclave.server import EnclaveServerProtocol

    core = EnclaveCore([LocalKey(ANVIL_KEY)], Policy(PolicyConfig(chain_ids=(31337,))))
    paused = asyncio.Event()
    protocols: list[EnclaveServerProtocol] = []
    original = EnclaveServerProtocol.pause_writing

    def pause_writing(self: EnclaveServerProtocol) -> None:
        original(self)
        protocols.append(self)
        paused.set()

    handled = 0
    handle = core.handle

    def counting(*args: Any) -> dict[str, Any]:
        nonlocal handled
        handled += 1
        return handle(*args)

    core.handle = counting  # type: ignore[method-assign]
    total = 50_000
    frame = encode_frame({"id": 1, "method": "hello", "params": {}})
    mp = pytest.MonkeyPatch()
    mp.setattr(EnclaveServerProtocol, "pause_writing", pause_writing)
    server = await serve(core, f"unix://{tmp_path}/e.sock")
    reader, writer = await asyncio.open_unix_connection(f"{tmp_path}/e.sock")
    try:
        writer.write(frame * total)  # ~1.3 MB of requests for ~20 MB of replies, none read
        await asyncio.wait_for(paused.wait(), 20)
        # Its write buffer is full: it must stop taking requests until the peer reads.
        transport = protocols[0].transport
        assert transport is not None and not transport.is_reading()
        decoder, answered = FrameDecoder(), 0
        while answered < total:
            answered += len(decoder.feed(await asyncio.wait_for(reader.read(1 << 20), 60)))
        assert answered == total == handled
    finally:
        writer.close()
        for protocol in protocols:
            if protocol.transport is not None:
                protocol.transport.abort()
        mp.undo()
        server.close()
        await server.wait_closed()
