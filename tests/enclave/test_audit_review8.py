"""Review of session 8's audit cuts (sorted-order entry without OPT_SORT_KEYS, the hand-written
intent hash for types 0-2 without access list, the anchor MAC on the commit's digest), as attacks:

- the fast intent hash against the old general form at every edge of the fields it covers;
- the real app with its real policy: the logged intent of every fast-path shape (type 0 / 1 / 2,
  access list absent / empty / present, contract creation, empty / large calldata, value 0 / max)
  is the old form's, and after a restart a payload swap at each used nonce is still refused while
  the identical re-sign and the fee bump still pass;
- one commit of a batch of entries (one anchor, MAC'd on the batch's last digest): the anchor
  reads back, a cut of the batch's last entry is refused on restart, an edited entry is refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from enclave.audit import AuditLog, AuditStateError, _anchor_mac, load_verified, read_anchor
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig, intent_hash
from signer_client import PolicyDenied, SignerClient
from signer_client.signing import LocalKey
from signer_client.txcodec import TxFields, decode_raw, keccak, signing_payload
from tests.enclave.running import (
    ALLOWED_TO,
    ANVIL_ADDRESS,
    ANVIL_KEY,
    OTHER_ADDRESS,
    POLICY_TOML,
    running_enclave,
    start_enclave,
)
from tests.enclave.test_audit_canonical import _old_intent_hash, _old_line

U64, U256 = (1 << 64) - 1, (1 << 256) - 1
ADDR = bytes.fromhex(ALLOWED_TO[2:].lower())


# ------------------------------------------------------------ the fast intent hash, pure


def _grid() -> list[TxFields]:
    out = []
    for tx_type in (0, 1, 2):
        fees: dict[str, Any] = (
            {"gas_price": 0} if tx_type < 2 else {"max_fee_per_gas": U256,
                                                  "max_priority_fee_per_gas": 0}
        )  # fmt: skip
        for chain in (None, 0, 1, U64, U64 + 1) if tx_type == 0 else (0, 1, U64, U64 + 1):
            out.extend(
                TxFields(tx_type, chain, 0, gas, to, value, data, **fees)
                for gas in (0, 21_000, U64, U64 + 1)
                for to in (b"", ADDR, b"\xff" * 20)
                for value in (0, 1, U256)
                for data in (b"", b"\x00", b"\xab" * 70_000)
            )
        if tx_type:  # an empty access list given as a list, and a non-empty one (general form)
            base = TxFields(tx_type, 1, 0, 21_000, ADDR, 0, b"", **fees)
            out += [base._replace(access_list=[]), base._replace(access_list=((ADDR, ()),)),
                    base._replace(access_list=((ADDR, (b"\1" * 32,)),))]  # fmt: skip
    return out


def test_the_fast_intent_hash_is_the_old_form_at_every_edge() -> None:
    checked = 0
    for f in _grid():
        try:
            want: bytes | None = _old_intent_hash(f)
        except TypeError:  # orjson.JSONEncodeError: beyond 64-bit integers, as it always was
            want = None
        if want is None:
            with pytest.raises(TypeError):
                intent_hash(f)
            continue
        assert intent_hash(f) == want, f
        assert intent_hash(f, keccak(f.data)) == want, f
        checked += 1
    assert checked > 500


# ------------------------------------------------------------ the real app, across a restart


CREATE_TOML = POLICY_TOML.replace("[policy]", "[policy]\nallow_create = true")


def shapes() -> list[dict[str, Any]]:
    """One per nonce: every shape the fast path takes, and two it must not."""
    base: dict[str, Any] = {"chainId": 31337, "to": ALLOWED_TO, "value": 0, "data": b"",
                            "gas": 100_000}  # fmt: skip
    legacy = {**base, "type": 0, "gasPrice": 10**9}
    al = {**base, "type": 1, "gasPrice": 10**9}
    eip = {**base, "type": 2, "maxFeePerGas": 10**9, "maxPriorityFeePerGas": 10**8}
    entry = [{"address": OTHER_ADDRESS, "storageKeys": ["0x" + "11" * 32]}]
    out = [
        legacy,
        {**legacy, "value": 10**21, "data": "0x" + "AB" * 3000},  # uppercase hex, max value
        {**legacy, "to": None, "data": b"\x60\x00"},  # contract creation, no `to`
        {k: v for k, v in legacy.items() if k != "to"} | {"data": b"\x60\x01"},  # `to` absent
        al,  # access list absent
        {**al, "accessList": []},  # empty
        {**al, "accessList": entry},  # present: the general form
        eip,
        {**eip, "accessList": []},
        {**eip, "to": "0x", "data": b"\x60\x02"},  # creation, type 2
        {**eip, "accessList": entry},
        {**eip, "value": "0x1", "data": "0x"},
    ]
    return [{**s, "nonce": n} for n, s in enumerate(out)]


def swaps(s: dict[str, Any]) -> list[dict[str, Any]]:
    bump = {"gasPrice": 10**10} if "gasPrice" in s else {"maxFeePerGas": 10**10,
                                                         "maxPriorityFeePerGas": 10**9}  # fmt: skip
    other_to = ALLOWED_TO if not s.get("to") or s["to"] == "0x" else None
    out = [
        {**s, **bump, "value": 7},
        {**s, **bump, "data": b"\xa9\x05\x9c\xbb"},
        {**s, **bump, "gas": 100_001},
        {**s, **bump, "to": other_to},  # creation <-> call
        {**s, **bump, "chainId": 1},  # another chain: not a swap, a new (chain, nonce)
    ]
    if s["type"] == 0:
        out.append({**s, "type": 1, **bump})
    else:
        out.append({**s, **bump, "accessList": [] if s.get("accessList") else
                    [{"address": ALLOWED_TO, "storageKeys": []}]})  # fmt: skip
    return out


async def test_every_fast_path_shape_logs_the_old_intent_and_a_swap_stays_refused_after_restart(
    tmp_path: Path,
) -> None:
    url = f"unix://{tmp_path}/e.sock"
    first = start_enclave(tmp_path, url, config=CREATE_TOML)
    raws: list[bytes] = []
    try:
        async with SignerClient(first.url, timeout=10) as client:
            raws.extend([(await client.sign_transaction(s, ANVIL_ADDRESS)).raw for s in shapes()])
    finally:
        first.stop()
    lines = first.audit_log.read_bytes().splitlines()
    signs = [orjson.loads(line) for line in lines if b'"kind":"sign"' in line]
    assert len(signs) == len(raws)
    for e, raw in zip(signs, raws, strict=True):
        f = decode_raw(raw).fields
        assert e["data"]["intent"] == "0x" + _old_intent_hash(f).hex()
        assert e["data"]["tx_hash"] == "0x" + keccak(raw).hex()
    for line in lines:  # every line: the old serialisation's bytes
        e = orjson.loads(line)
        assert line == _old_line(e["seq"], e["ts"], e["prev"], e["kind"], e["data"], e["sig"])
    with running_enclave(tmp_path, url, config=CREATE_TOML) as again:
        async with SignerClient(again.url, timeout=10) as client:
            for s, raw in zip(shapes(), raws, strict=True):
                for swap in swaps(s):
                    if swap["chainId"] == 1:
                        continue  # checked below
                    with pytest.raises(PolicyDenied) as info:
                        await client.sign_transaction(swap, ANVIL_ADDRESS)
                    assert info.value.rule == "nonce_conflict", (s, swap)
                # the identical request re-signs to the same bytes (RFC 6979), the bump passes
                assert (await client.sign_transaction(s, ANVIL_ADDRESS)).raw == raw
                bumped = swaps(s)[0] | {"value": s["value"]}
                assert (await client.sign_transaction(bumped, ANVIL_ADDRESS)).nonce == s["nonce"]
                elsewhere = swaps(s)[4]
                assert (await client.sign_transaction(elsewhere, ANVIL_ADDRESS)).chain_id == 1
    # ... and the log written across both runs still restores.
    restored = EnclaveCore([LocalKey(ANVIL_KEY)], Policy(PolicyConfig(chain_ids=(31337, 1))))
    # per shape: the first sign, then the identical re-sign, the bump and the chain-1 one
    assert restored.restore_from_log(str(first.audit_log)) == 4 * len(raws)


# ------------------------------------------------------------ one commit, a batch, one anchor


def _core(path: Path, seal: bytes, log_key: LocalKey) -> EnclaveCore:
    config = PolicyConfig(chain_ids=(1,), rate_per_second=1e9, burst=10**9)
    audit = AuditLog(str(path), log_key, seal_key=seal)
    return EnclaveCore([LocalKey(ANVIL_KEY)], Policy(config), audit=audit)


def _sign(core: EnclaveCore, nonce: int, **over: Any) -> dict[str, Any]:
    f = TxFields(2, 1, nonce, 21_000, ADDR, 0, b"", None, 10**9, 10**8)._replace(**over)
    params = {"sender": "0x" + LocalKey(ANVIL_KEY).address_bytes.hex(),
              "payload": "0x" + signing_payload(f).hex()}  # fmt: skip
    return core.handle({"id": nonce, "method": "sign_transaction", "params": params}, 5.0 + nonce)


def _batch(tmp_path: Path) -> tuple[Path, bytes, LocalKey]:
    path, seal, log_key = tmp_path / "audit.jsonl", os.urandom(32), LocalKey(os.urandom(32))
    core = _core(path, seal, log_key)
    core.start(1.0, b"\0" * 48)
    for nonce in range(3):  # three replies, one commit: one anchor for the batch
        assert "result" in _sign(core, nonce)
    assert core.audit is not None
    core.audit.commit()
    core.audit.close()
    return path, seal, log_key


def test_a_batch_commit_anchors_its_last_entry_with_the_mac_read_anchor_checks(
    tmp_path: Path,
) -> None:
    path, seal, log_key = _batch(tmp_path)
    last = orjson.loads(path.read_bytes().splitlines()[-1])
    assert read_anchor(str(path), seal) == (last["seq"], last["hash"]) == (4, last["hash"])
    seq, head, mac = Path(str(path) + ".head").read_text().split()
    assert mac == _anchor_mac(seal, int(seq), head)  # the digest shortcut changed nothing
    restarted = _core(path, seal, log_key)
    assert restarted.restore_from_log(str(path)) == 3
    assert "error" in _sign(restarted, 1, value=5)  # the swap at a used nonce, after restart
    assert "result" in _sign(restarted, 1)  # the identical re-sign


def test_cutting_the_last_entry_of_a_batch_is_refused_on_restart(tmp_path: Path) -> None:
    path, seal, log_key = _batch(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:-1]))
    with pytest.raises(AuditStateError):
        _core(path, seal, log_key).restore_from_log(str(path))


@pytest.mark.parametrize("where", [-1, -2])
def test_an_edited_entry_of_a_batch_rehashed_in_sorted_order_is_refused(
    tmp_path: Path, where: int
) -> None:
    """The host rewrites a sign entry's intent (and re-hashes the line, canonical bytes, so
    the line's own hash checks out): the chain or the anchor gives it away."""
    path, seal, _ = _batch(tmp_path)
    lines = path.read_bytes().splitlines()
    e = orjson.loads(lines[where])
    e["data"]["intent"] = "0x" + "00" * 32
    body = {k: e[k] for k in ("data", "kind", "prev", "seq", "ts")}
    dumped = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    e["hash"] = "0x" + keccak(dumped).hex()
    lines[where] = dumped[:-1] + b',"hash":"' + e["hash"].encode() + b'","sig":null}'
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(AuditStateError):
        load_verified(str(path), seal)


def test_a_failed_batch_commit_retried_writes_the_old_bytes_and_a_sealed_anchor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write fails (disk full) after the entries were built: they are re-queued as built
    dicts, and the retry writes the old serialisation's bytes with an anchor that reads back."""
    import enclave.audit as audit_module

    path, seal, log_key = tmp_path / "audit.jsonl", os.urandom(32), LocalKey(os.urandom(32))
    core = _core(path, seal, log_key)
    core.start(1.0, b"\0" * 48)
    assert core.audit is not None
    for nonce in range(3):
        assert "result" in _sign(core, nonce, data=b"\x01" * nonce)
    real_write = os.write
    monkeypatch.setattr(audit_module.os, "write", lambda fd, data: real_write(fd, data[:10]))
    with pytest.raises(audit_module.AuditWriteError):
        core.audit.commit()
    monkeypatch.setattr(audit_module.os, "write", real_write)
    core.audit.commit()
    core.audit.close()
    lines = path.read_bytes().splitlines()
    assert len(lines) == 4
    for line in lines:
        e = orjson.loads(line)
        assert line == _old_line(e["seq"], e["ts"], e["prev"], e["kind"], e["data"], e["sig"])
    assert read_anchor(str(path), seal) == (4, orjson.loads(lines[-1])["hash"])
    assert _core(path, seal, log_key).restore_from_log(str(path)) == 3
