"""The sign path's audit entry, built in sorted key order and dumped without ``OPT_SORT_KEYS``,
is byte for byte what the old builder (dict in field order, sorted by orjson) wrote: the log
format, ``verify_log`` and ``restore_from_log`` see no difference.

The old builder and the old line serialisation are copied here verbatim as the reference."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from enclave.audit import AuditLog, verify_log
from enclave.core import EnclaveCore, _sign_entry
from enclave.policy import Policy, PolicyConfig, intent_hash, is_noop
from signer_client.authorization import Authorization, authorization_hash
from signer_client.secp import recover_uncompressed
from signer_client.signing import LocalKey
from signer_client.txcodec import TxFields, keccak, signing_payload

KEY = LocalKey("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
SENDER = KEY.address_bytes
SENDER_HEX = "0x" + SENDER.hex()
DELEGATE = bytes.fromhex("5fbdb2315678afecb367f032d93f642f64180aa3")


# ------------------------------------------------------------ the reference (old code, verbatim)


def _old_intent_hash(f: TxFields, data_keccak: bytes | None = None) -> bytes:
    parts: list[Any] = [
        f.type,
        f.chain_id,
        f.gas,
        f.to.hex(),
        hex(f.value),
        (keccak(f.data) if data_keccak is None else data_keccak).hex(),
        [[a.hex(), [k.hex() for k in keys]] for a, keys in f.access_list],
    ]
    if f.type == 3:
        parts.append([h.hex() for h in f.blob_hashes])
    elif f.type == 4:
        parts.append([[hex(a.chain_id), a.address.hex(), hex(a.nonce), a.y_parity, hex(a.r),
                       hex(a.s)] for a in f.authorizations])  # fmt: skip
    return keccak(orjson.dumps(parts))


def _old_auth_entry(a: Any) -> dict[str, Any]:
    sig = a.r.to_bytes(32, "big") + a.s.to_bytes(32, "big") + bytes((a.y_parity,))
    try:
        pub = recover_uncompressed(sig, authorization_hash(a.chain_id, a.address, a.nonce))
    except (ValueError, OverflowError):
        pub = None
    return {
        "chain": a.chain_id,
        "address": "0x" + a.address.hex(),
        "nonce": a.nonce,
        "authority": None if pub is None else "0x" + keccak(pub[1:])[12:].hex(),
    }


def _old_typed_entry(f: TxFields) -> dict[str, Any]:
    if f.type == 3:
        return {
            "blob_fee_cap": hex(f.max_fee_per_blob_gas),  # type: ignore[arg-type]
            "blob_hashes": ["0x" + h.hex() for h in f.blob_hashes],
        }
    if f.type == 4:
        return {"authorizations": [_old_auth_entry(a) for a in f.authorizations]}
    return {}


def _old_sign_entry(sender_hex: str, f: TxFields, msg_hash: bytes, raw: bytes) -> dict[str, Any]:
    data_keccak = keccak(f.data)
    to = f.to
    return {
        "sender": sender_hex,
        "chain": f.chain_id,
        "nonce": f.nonce,
        "type": f.type,
        "to": "0x" + to.hex(),
        "value": hex(f.value),
        "data_keccak": "0x" + data_keccak.hex(),
        "data_len": len(f.data),
        "gas": f.gas,
        "fee_cap": hex(f.fee_cap),
        "tip_cap": hex(f.tip_cap),
        "access_list_len": len(f.access_list),
        "intent": "0x" + _old_intent_hash(f, data_keccak).hex(),
        "noop": is_noop(f, bytes.fromhex(sender_hex[2:])),
        "signing_hash": "0x" + msg_hash.hex(),
        "tx_hash": "0x" + keccak(raw).hex(),
        **_old_typed_entry(f),
    }


def _old_line(seq: int, ts: float, prev: str, kind: str, data: Any, sig: str | None) -> bytes:
    body = orjson.dumps(
        {"seq": seq, "ts": ts, "prev": prev, "kind": kind, "data": data},
        option=orjson.OPT_SORT_KEYS,
    )
    hash_hex = "0x" + keccak(body).hex()
    tail = b"null" if sig is None else b'"' + sig.encode() + b'"'
    return body[:-1] + b',"hash":"' + hash_hex.encode() + b'","sig":' + tail + b"}"


# ------------------------------------------------------------ random transactions


def _int(rng: random.Random) -> int:
    bits = rng.choice([16, 64, 256])
    return rng.choice([0, 1, rng.randrange(1 << bits)])


def _authorization(rng: random.Random) -> Authorization:
    chain, nonce = rng.choice([0, 1, 31337]), rng.randrange(1 << 20)
    address = rng.choice([DELEGATE, rng.randbytes(20)])
    if rng.random() < 0.6:  # a real signature: the entry names its authority
        sig = LocalKey(rng.randbytes(31).rjust(32, b"\1")).sign_hash(
            authorization_hash(chain, address, nonce)
        )
        r, s, y = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
    else:  # garbage: no authority (None)
        r, s, y = rng.randrange(1 << 256), rng.randrange(1 << 256), rng.randrange(2)
    return Authorization(chain, address, nonce, y, r, s)


def random_fields(rng: random.Random) -> TxFields:
    tx_type = rng.randrange(5)
    to = rng.choice([SENDER, rng.randbytes(20), DELEGATE] + ([b""] if tx_type < 3 else []))
    data = rng.choice([b"", b"", rng.randbytes(rng.randrange(1, 300))])
    access = tuple(
        (rng.randbytes(20), tuple(rng.randbytes(32) for _ in range(rng.randrange(3))))
        for _ in range(rng.choice([0, 0, 1, 3]))
    )
    common: dict[str, Any] = {
        "type": tx_type,
        "chain_id": rng.choice([1, 31337, rng.randrange(1 << 40)]),
        "nonce": rng.randrange(1 << 40),
        "gas": rng.randrange(21_000, 30_000_000),
        "to": to,
        "value": rng.choice([0, 0, _int(rng)]),
        "data": data,
    }
    if tx_type == 0:
        return TxFields(**common, gas_price=_int(rng))
    if tx_type == 1:
        return TxFields(**common, gas_price=_int(rng), access_list=access)
    fees = {"max_fee_per_gas": _int(rng), "max_priority_fee_per_gas": _int(rng)}
    if tx_type == 2:
        return TxFields(**common, **fees, access_list=access)
    if tx_type == 3:
        hashes = tuple(b"\1" + rng.randbytes(31) for _ in range(rng.randrange(1, 4)))
        return TxFields(**common, **fees, access_list=access, max_fee_per_blob_gas=_int(rng),
                        blob_hashes=hashes)  # fmt: skip
    auths = tuple(_authorization(rng) for _ in range(rng.randrange(1, 3)))
    return TxFields(**common, **fees, access_list=access, authorizations=auths)


# ------------------------------------------------------------ the tests


@pytest.mark.parametrize("seed", range(4))
def test_the_sorted_order_builder_dumps_to_the_old_builders_sorted_bytes(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(150):
        f = random_fields(rng)
        msg_hash, raw = rng.randbytes(32), rng.randbytes(rng.randrange(80, 400))
        old = _old_sign_entry(SENDER_HEX, f, msg_hash, raw)
        new = _sign_entry(SENDER_HEX, SENDER, f, msg_hash, raw)
        assert new == old
        assert orjson.dumps(new) == orjson.dumps(old, option=orjson.OPT_SORT_KEYS)
        # ... and so does the whole hashed body, in the order commit builds it.
        body = {"data": new, "kind": "sign", "prev": "0x" + "ab" * 32, "seq": 7, "ts": 1.5}
        assert orjson.dumps(body) == orjson.dumps(
            {"seq": 7, "ts": 1.5, "prev": "0x" + "ab" * 32, "kind": "sign", "data": old},
            option=orjson.OPT_SORT_KEYS,
        )
        assert intent_hash(f) == _old_intent_hash(f)


def test_a_canonical_entry_is_dumped_as_built_not_sorted(tmp_path: Path) -> None:
    """The flag is what skips the sort: a (deliberately unsorted) canonical dict keeps its order,
    a plain one is sorted as before."""
    log = AuditLog(str(tmp_path / "a.jsonl"), LocalKey(os.urandom(32)))
    log.append(1.0, "x", {"b": 1, "a": 2}, canonical=True)
    log.append(2.0, "x", {"b": 1, "a": 2})
    log.close()
    first, second = (tmp_path / "a.jsonl").read_bytes().splitlines()
    assert first.startswith(b'{"data":{"b":1,"a":2},"kind":"x"')
    assert second.startswith(b'{"data":{"a":2,"b":1},"kind":"x"')


def _requests(rng: random.Random, n: int) -> list[TxFields]:
    out = []
    for nonce in range(n):
        f = random_fields(rng)
        if f.type == 4:  # the policy's delegate rule: to the allowed delegate only
            f = f._replace(authorizations=tuple(a._replace(address=DELEGATE)
                                                for a in f.authorizations))  # fmt: skip
        out.append(f._replace(chain_id=1, nonce=nonce, value=f.value % 10**18,
                              to=f.to or SENDER, gas=min(f.gas, 30_000_000)))  # fmt: skip
    return out


def _bounded(f: TxFields) -> TxFields:
    cap = lambda v: None if v is None else v % 10**11  # noqa: E731 - the policy's fee caps
    return f._replace(gas_price=cap(f.gas_price), max_fee_per_gas=cap(f.max_fee_per_gas),
                      max_priority_fee_per_gas=cap(f.max_priority_fee_per_gas),
                      max_fee_per_blob_gas=cap(f.max_fee_per_blob_gas))  # fmt: skip


def test_the_real_sign_path_writes_the_lines_the_old_serialisation_wrote(tmp_path: Path) -> None:
    """The real core and policy, sign requests of every type plus denials, hello and start: every
    line on disk equals the old serialisation of its own fields, the log verifies and restores."""
    path = tmp_path / "audit.jsonl"
    config = PolicyConfig(chain_ids=(1,), allowed_delegates=("0x" + DELEGATE.hex(),),
                          rate_per_second=1e9, burst=10**9)  # fmt: skip
    core = EnclaveCore([KEY], Policy(config), audit=AuditLog(str(path), LocalKey(os.urandom(32)),
                       seal_key=os.urandom(32)))  # fmt: skip
    core.start(1000.0, b"\0" * 48)
    core.handle({"id": 0, "method": "hello", "params": {}}, 1000.0)
    signed = denied = 0
    for i, f in enumerate(_requests(random.Random(9), 120)):
        f = _bounded(f) if i % 5 else f  # one in five over a cap: a deny entry
        params = {"sender": SENDER_HEX, "payload": "0x" + signing_payload(f).hex()}
        reply = core.handle({"id": i, "method": "sign_transaction", "params": params}, 1001.0 + i)
        signed += "result" in reply
        denied += "error" in reply
        if i % 7 == 0:
            assert core.audit is not None
            core.audit.commit()  # batches of several entries, and of one
    assert core.audit is not None
    core.audit.close()
    assert signed > 60 and denied > 10
    lines = path.read_bytes().splitlines()
    kinds, types = set(), set()
    for line in lines:
        e = orjson.loads(line)
        kinds.add(e["kind"])
        if e["kind"] == "sign":
            types.add(e["data"]["type"])
        assert line == _old_line(e["seq"], e["ts"], e["prev"], e["kind"], e["data"], e["sig"])
    assert {"start", "hello", "sign", "deny"} <= kinds
    assert types == {0, 1, 2, 3, 4}
    assert verify_log(str(path))[0] == []
    restored = EnclaveCore([KEY], Policy(config))
    assert restored.restore_from_log(str(path)) == signed


@pytest.mark.parametrize(
    "change",
    [
        {"chain_id": None},  # legacy, pre-EIP-155: null in the JSON
        {"chain_id": (1 << 64) - 1},
        {"gas": (1 << 64) - 1},
        {"chain_id": 1 << 64},  # beyond orjson's integers: raises, as it always did
        {"gas": 1 << 64},
        {"value": 1 << 255, "to": b""},
        {"data": b"\x01" * 33},
    ],
)
@pytest.mark.parametrize("tx_type", [0, 1, 2])
def test_the_intent_hash_shortcut_agrees_with_the_general_form_at_the_edges(
    change: dict[str, Any], tx_type: int
) -> None:
    fees: dict[str, Any] = (
        {"gas_price": 7} if tx_type < 2 else {"max_fee_per_gas": 7, "max_priority_fee_per_gas": 1}
    )
    f = TxFields(tx_type, 1, 3, 21_000, SENDER, 0, b"", **fees)._replace(**change)
    try:
        want: bytes | None = _old_intent_hash(f)
    except TypeError:  # orjson.JSONEncodeError
        want = None
    if want is None:
        with pytest.raises(TypeError):
            intent_hash(f)
    else:
        assert intent_hash(f) == want
        assert intent_hash(f, keccak(f.data)) == want
