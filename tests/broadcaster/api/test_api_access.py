"""Tenants, raw-transaction rules, idempotency conflicts, the intake gate, hash continuity and
the load limits, over the stub manager of ``test_api.py`` (the real stack: ``tests/e2e``)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Any

import pytest
import rlp
from eth_account import Account

import broadcaster.api.subscriptions as subscriptions_module
from broadcaster.api.access import FULL_ACCESS, Access
from broadcaster.api.continuity import canonical_attempt
from broadcaster.api.intents import parse_intent
from broadcaster.api.server import ApiLimits, IntentApi, _Client
from nonce import Attempt, AttemptReason, BlockRef, TxRecord
from signer_client.txcodec import SECP256K1_N
from tests.broadcaster.api.test_api import (
    CHAIN_ID,
    DEV,
    GWEI,
    INTENT,
    OTHER_KEY,
    RECIPIENT,
    StubManager,
    call,
    error_of,
    notes_of,
    request,
)

OTHER = Account.from_key(OTHER_KEY).address  # anvil #2: tenant B's account
KEY_A = DEV.lower()
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil #0
RAW: dict[str, Any] = {
    "type": 2,
    "chainId": CHAIN_ID,
    "nonce": 0,
    "to": RECIPIENT,
    "value": 5,
    "gas": 21_000,
    "maxFeePerGas": 3 * GWEI,
    "maxPriorityFeePerGas": GWEI,
}


def tenant_api(
    *,
    passthrough: Any = None,
    intake: Any = lambda: None,
    limits: ApiLimits | None = None,
    subscriptions: Any = None,
) -> IntentApi:
    manager = StubManager()
    manager.book.resync(OTHER.lower(), chain_latest=0, chain_pending=0, now=0.0)
    return IntentApi(
        manager,  # type: ignore[arg-type]
        chain_id=CHAIN_ID,
        accounts=[DEV, OTHER],
        tokens=["full"],
        tenants=[("bot-a", "tok-a", [DEV]), ("bot-b", "tok-b", [OTHER])],
        tip_number=lambda: 7,
        passthrough=passthrough,
        intake=intake,
        limits=limits,
        subscriptions=subscriptions,
    )


def as_(api: IntentApi, token: str) -> _Client:
    access = api.principals.lookup(token)
    assert access is not None
    return api.connection(None, token, access)


def hex_raw(tx: dict[str, Any], key: str = OTHER_KEY) -> str:
    return Account.sign_transaction(tx, key).raw_transaction.to_0x_hex()


# -- tenants -------------------------------------------------------------------------------------


async def test_tokens_map_to_full_access_or_their_tenant_and_unknown_tokens_to_nothing() -> None:
    api = tenant_api()
    assert api.principals.lookup("full") == FULL_ACCESS
    assert api.principals.lookup("tok-a") == Access("bot-a", frozenset({KEY_A}))
    assert api.principals.lookup("tok-b") == Access("bot-b", frozenset({OTHER.lower()}))
    assert api.principals.lookup("tok-c") is None
    assert api.principals.lookup("tok-a ") is None


async def test_a_tenant_sees_only_its_accounts_and_sends_only_from_them() -> None:
    api = tenant_api()
    a, b = as_(api, "tok-a"), as_(api, "tok-b")
    assert (await call(api, request("eth_accounts"), a))["result"] == [DEV]
    assert (await call(api, request("eth_accounts"), b))["result"] == [OTHER]
    assert (await call(api, request("eth_accounts"), as_(api, "full")))["result"] == [DEV, OTHER]
    for method in ("broadcaster_sendIntent", "eth_sendTransaction"):
        code, message = error_of(await call(api, request(method, INTENT), b))
        assert (code, message) == (
            -32602,
            f"invalid params: from: {DEV.lower()} is not an account this token may send from",
        )
    # Without "from", a tenant with one account sends from it.
    sent = await call(api, request("broadcaster_sendIntent", {**INTENT, "from": None}), b)
    assert sent["result"]["from"] == OTHER
    assert [i.sender for i in api.manager.submitted] == [OTHER.lower()]  # type: ignore[attr-defined]


async def test_another_tenants_intent_is_unknown_by_id_and_by_hash_for_reads_and_cancels() -> None:
    api = tenant_api()
    a, b = as_(api, "tok-a"), as_(api, "tok-b")
    raw_a = hex_raw(
        {**RAW, "nonce": 0},
        key=DEV_KEY,
    )
    tx_hash = (await call(api, request("eth_sendRawTransaction", raw_a), a))["result"]
    intent_id = f"raw-{tx_hash[2:]}"
    assert (await call(api, request("broadcaster_getIntent", tx_hash), a))["result"][
        "id"
    ] == intent_id
    for method in ("broadcaster_getIntent", "broadcaster_cancelIntent"):
        for name in (intent_id, tx_hash):
            assert error_of(await call(api, request(method, name), b)) == (
                -32602,
                f"invalid params: id: no intent {name!r} is known here",
            )
    # Exactly what a made-up name gets: the refusal tells B nothing about A.
    made_up = "0x" + "cd" * 32
    assert error_of(await call(api, request("broadcaster_getIntent", made_up), b)) == (
        -32602,
        f"invalid params: id: no intent {made_up!r} is known here",
    )
    assert api.manager.cancelled == []  # type: ignore[attr-defined]
    full = as_(api, "full")
    assert (await call(api, request("broadcaster_getIntent", tx_hash), full))["result"][
        "id"
    ] == intent_id


async def test_a_tenant_follows_only_its_own_intents() -> None:
    api = tenant_api()
    a, b = as_(api, "tok-a"), as_(api, "tok-b")
    for client in (a, b):
        api.subscriptions.add(client)
    sent_a = (await call(api, request("broadcaster_sendIntent", INTENT), a))["result"]
    sent_b = (await call(api, request("broadcaster_sendIntent", {**INTENT, "from": OTHER}), b))[
        "result"
    ]
    assert error_of(await call(api, request("broadcaster_subscribe", [sent_a["id"]]), b)) == (
        -32602,
        f"invalid params: params[0]: no intent {sent_a['id']!r} is known here",
    )
    every_b = (await call(api, request("broadcaster_subscribe"), b))["result"]
    every_a = (await call(api, request("broadcaster_subscribe"), a))["result"]
    book = api.manager.book
    api.notify(book.by_intent(sent_a["id"]), "signed")
    api.notify(book.by_intent(sent_b["id"]), "signed")
    notes_b, notes_a = notes_of(b), notes_of(a)
    assert [(n["params"]["subscription"], n["params"]["result"]["id"]) for n in notes_b] == [
        (every_b, sent_b["id"])
    ]
    assert [(n["params"]["subscription"], n["params"]["result"]["id"]) for n in notes_a] == [
        (every_a, sent_a["id"])
    ]


async def test_idempotency_keys_are_per_tenant_and_a_reused_key_with_other_fields_is_an_error() -> (
    None
):
    api = tenant_api()
    a, b = as_(api, "tok-a"), as_(api, "tok-b")
    first = (await call(api, request("broadcaster_sendIntent", {**INTENT, "key": "k"}), a))[
        "result"
    ]
    # B's "k" is its own: a new intent, not A's record.
    theirs = (
        await call(api, request("broadcaster_sendIntent", {**INTENT, "from": OTHER, "key": "k"}), b)
    )["result"]
    assert theirs["id"] != first["id"] and theirs["from"] == OTHER
    again = (await call(api, request("broadcaster_sendIntent", {**INTENT, "key": "k"}), a))[
        "result"
    ]
    assert again == first
    # maxFeePerGas left out defaults to the base fee of the moment: still the same request.
    loose = {k: v for k, v in INTENT.items() if k != "maxFeePerGas"}
    assert (await call(api, request("broadcaster_sendIntent", {**loose, "key": "k2"}), a))["result"]
    api.manager.base_fee = 20 * GWEI  # type: ignore[attr-defined]
    assert "result" in await call(api, request("broadcaster_sendIntent", {**loose, "key": "k2"}), a)
    for field, value in (
        ("value", "0x2"),
        ("to", DEV),
        ("gas", "0x5209"),
        ("maxFeePerGas", hex(4 * GWEI)),
    ):
        reply = await call(
            api, request("broadcaster_sendIntent", {**INTENT, "key": "k", field: value}), a
        )
        assert error_of(reply) == (
            -32602,
            f"invalid params: key: already used for intent {first['id']} with a different "
            f"{field}: a key names one request; use a new key for a new one",
        )
        assert reply["error"]["data"]["id"] == first["id"]
    assert len(api.manager.submitted) == 3  # type: ignore[attr-defined]


# -- raw transactions ----------------------------------------------------------------------------


def high_s(raw_hex: str) -> str:
    """The same EIP-1559 transaction with its signature's high-s twin (still recovers)."""
    raw = bytes.fromhex(raw_hex[2:])
    items = rlp.decode(raw[1:])
    s = int.from_bytes(items[11], "big")
    items[11] = (SECP256K1_N - s).to_bytes(32, "big").lstrip(b"\0")
    items[9] = b"" if items[9] == b"\x01" else b"\x01"
    return "0x" + (raw[:1] + rlp.encode(items)).hex()


async def node_counts(method: str, *params: Any) -> Any:
    assert method == "eth_getTransactionCount"
    return "0x5"


LEGACY = {k: v for k, v in RAW.items() if k not in ("type", "chainId", "maxFeePerGas")} | {
    "gasPrice": GWEI
}
LEGACY.pop("maxPriorityFeePerGas")
RULE_CASES = {
    "no-chain-id": (
        lambda: hex_raw(LEGACY),
        "chain-id",
        "a legacy transaction without an EIP-155 chain id is valid on every chain (a replay "
        "risk): sign it with chainId 31337",
    ),
    "other-chain": (
        lambda: hex_raw({**RAW, "chainId": 1}),
        "chain-id",
        "signed for chain 1, this broadcaster serves 31337",
    ),
    "high-s": (
        lambda: high_s(hex_raw(RAW)),
        "low-s",
        "the signature's s is above secp256k1n/2 (EIP-2): use the low-s form, as every standard "
        "signer does",
    ),
    "other-sender": (
        lambda: hex_raw(RAW, key=DEV_KEY),
        "sender",
        f"signed by {DEV}, which is not an account of this token",
    ),
    "nonce-gap": (
        lambda: hex_raw({**RAW, "nonce": 5}),
        "nonce-gap",
        "nonce 5 is more than max_gap_fill = 4 beyond the sender's next nonce 0",
    ),
}


@pytest.mark.parametrize(("raw", "rule", "reason"), RULE_CASES.values(), ids=RULE_CASES.keys())
async def test_a_raw_transaction_breaking_a_rule_is_refused_naming_the_rule(
    raw: Any, rule: str, reason: str
) -> None:
    api = tenant_api()
    reply = await call(api, request("eth_sendRawTransaction", raw()), as_(api, "tok-b"))
    assert error_of(reply) == (
        -32602,
        f"invalid params: params[0]: raw transaction refused ({rule}): {reason}",
    )
    assert api.manager.submitted == []  # type: ignore[attr-defined]


async def test_the_nonce_rule_asks_the_node_for_a_sender_we_never_synced() -> None:
    api = tenant_api(passthrough=node_counts)  # the node says: next nonce 5
    stranger = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil #1
    full = as_(api, "full")
    reply = await call(
        api, request("eth_sendRawTransaction", hex_raw({**RAW, "nonce": 10}, stranger)), full
    )
    assert error_of(reply)[1].endswith(
        "(nonce-gap): nonce 10 is more than max_gap_fill = 4 beyond the sender's next nonce 5"
    )
    assert "result" in await call(
        api, request("eth_sendRawTransaction", hex_raw({**RAW, "nonce": 9}, stranger)), full
    )
    # Within the gap and from the tenant's own account: accepted.
    assert "result" in await call(
        api, request("eth_sendRawTransaction", hex_raw({**RAW, "nonce": 4})), as_(api, "tok-b")
    )


# -- the intake gate (a standby instance) --------------------------------------------------------


async def test_a_closed_intake_refuses_every_send_with_its_reason_and_still_answers_reads() -> None:
    reason = "standby: the leader is instance a (http://10.0.0.1:8650)"
    open_ = [True]
    api = tenant_api(intake=lambda: None if open_[0] else reason)
    b = as_(api, "tok-b")
    sent = (await call(api, request("broadcaster_sendIntent", {**INTENT, "from": OTHER}), b))[
        "result"
    ]
    open_[0] = False
    for method, params in (
        ("broadcaster_sendIntent", {**INTENT, "from": OTHER}),
        ("eth_sendTransaction", {**INTENT, "from": OTHER}),
        ("eth_sendRawTransaction", hex_raw({**RAW, "nonce": 1})),
    ):
        assert error_of(await call(api, request(method, params), b)) == (-32010, reason)
    assert error_of(await call(api, request("broadcaster_cancelIntent", sent["id"]), b)) == (
        -32010,
        reason,
    )
    assert (await call(api, request("broadcaster_getIntent", sent["id"]), b))["result"][
        "id"
    ] == sent["id"]


# -- hash continuity -----------------------------------------------------------------------------


def attempt(n: int, reason: AttemptReason = AttemptReason.INITIAL) -> Attempt:
    return Attempt(
        raw=b"\x02" + bytes([n]),
        hash=bytes([n]) * 32,
        nonce=0,
        max_fee_per_gas=GWEI * n,
        max_priority_fee_per_gas=GWEI,
        signed_at=0.0,
        reason=reason,
    )


async def none() -> None:
    return None


def record_with(api: IntentApi, *attempts: Attempt, included: int | None = None) -> TxRecord:
    book = api.manager.book
    record = book.accept(parse_intent(INTENT, api._defaults(as_(api, "full"))), now=0.0)
    for a in attempts:
        book.add_attempt(record, dataclasses.replace(a, nonce=record.nonce))
    if included is not None:
        record.included_hash = bytes([included]) * 32
        record.block = BlockRef(1, "0x" + "11" * 32)
    return record


def test_the_canonical_attempt_is_the_included_one_else_the_latest_payload_never_a_noop() -> None:
    first, second, noop = (
        attempt(1),
        attempt(2, AttemptReason.REORG),
        attempt(3, AttemptReason.CANCEL),
    )

    def resolved(record: TxRecord, asked: Attempt) -> bytes | None:
        found = canonical_attempt(record, asked.hash)
        return None if found is None else found.hash

    pending = record_with(tenant_api(), first, second)
    assert resolved(pending, first) == second.hash
    assert resolved(pending, second) == second.hash
    mined_first = record_with(tenant_api(), first, second, included=1)
    assert resolved(mined_first, second) == first.hash
    cancelled = record_with(tenant_api(), first, noop, included=3)
    assert resolved(cancelled, first) == first.hash  # never the noop's receipt
    assert resolved(cancelled, noop) == noop.hash
    assert canonical_attempt(record_with(tenant_api()), first.hash) is None  # nothing signed yet


BLOCK = "0x" + "11" * 32  # the canonical block of record_with(included=...)


async def test_receipts_and_transactions_by_an_old_hash_are_asked_about_the_canonical_attempt() -> (
    None
):
    asked: list[tuple[str, str]] = []

    async def node(method: str, *params: Any) -> Any:
        asked.append((method, params[0]))
        return {"transactionHash": params[0], "blockHash": BLOCK}

    api = tenant_api(passthrough=node)
    first, second = attempt(1), attempt(2, AttemptReason.REORG)
    record = record_with(api, first, second)
    a, b = as_(api, "tok-a"), as_(api, "tok-b")
    old, new = "0x" + first.hash.hex(), "0x" + second.hash.hex()
    # Pending: the transaction is the latest attempt; no receipt (none is a fact yet).
    assert (await call(api, request("eth_getTransactionByHash", old), a))["result"] == {
        "transactionHash": new,
        "blockHash": BLOCK,
    }
    assert (await call(api, request("eth_getTransactionReceipt", old), a))["result"] is None
    # A node that never saw the latest attempt: the transaction asked about, as it knows it.
    blind_api = tenant_api(passthrough=lambda method, h: node(method, h) if h == old else none())
    record_with(blind_api, first, second)
    blind = await call(blind_api, request("eth_getTransactionByHash", old), as_(blind_api, "tok-a"))
    assert blind["result"] == {"transactionHash": old, "blockHash": BLOCK}
    record.included_hash, record.block = second.hash, BlockRef(1, BLOCK)
    assert (await call(api, request("eth_getTransactionReceipt", old), a))["result"] == {
        "transactionHash": new,
        "blockHash": BLOCK,
    }
    # Another tenant's hash, and a hash nobody has: the node's own answer for that very hash.
    unknown = "0x" + "ee" * 32
    assert (await call(api, request("eth_getTransactionReceipt", old), b))["result"] == {
        "transactionHash": old,
        "blockHash": BLOCK,
    }
    assert (await call(api, request("eth_getTransactionReceipt", unknown), a))["result"] == {
        "transactionHash": unknown,
        "blockHash": BLOCK,
    }
    assert asked[-2:] == [
        ("eth_getTransactionReceipt", old),
        ("eth_getTransactionReceipt", unknown),
    ]


# -- load limits ---------------------------------------------------------------------------------


async def test_ids_not_in_memory_go_to_disk_a_few_at_a_time_and_malformed_ones_never() -> None:
    api = tenant_api(limits=ApiLimits(disk_lookups=2))
    manager: Any = api.manager
    inside = peak = 0
    release = asyncio.Event()

    async def slow_find(intent_id: str | None = None, *, key: str | None = None) -> None:
        nonlocal inside, peak
        inside += 1
        peak = max(peak, inside)
        await release.wait()
        inside -= 1

    manager.find = slow_find
    full = as_(api, "full")
    ids = (f"{n:032x}" for n in itertools.count())
    calls = [
        asyncio.ensure_future(call(api, request("broadcaster_getIntent", next(ids)), full))
        for _ in range(50)
    ]
    for _ in range(20):
        await asyncio.sleep(0)
    assert (inside, peak) == (2, 2)
    # Names that cannot be intent ids are answered at once, without touching the disk.
    assert error_of(await call(api, request("broadcaster_getIntent", "nope"), full))[0] == -32602
    release.set()
    replies = await asyncio.gather(*calls)
    assert all(error_of(r)[0] == -32602 for r in replies) and peak == 2


async def test_a_status_notification_is_serialized_once_for_every_subscription(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = tenant_api()
    built = 0
    real = subscriptions_module.intent_json

    def counting(record: TxRecord) -> dict[str, Any]:
        nonlocal built
        built += 1
        return real(record)

    monkeypatch.setattr(subscriptions_module, "intent_json", counting)
    followers = [as_(api, "full") for _ in range(5)]
    sub_ids: list[str] = []
    for client in followers:
        api.subscriptions.add(client)
        replies = [await call(api, request("broadcaster_subscribe"), client) for _ in range(4)]
        sub_ids.extend(r["result"] for r in replies)
    sent = (await call(api, request("broadcaster_sendIntent", INTENT), followers[0]))["result"]
    targeted = (await call(api, request("broadcaster_subscribe", [sent["id"]]), followers[1]))[
        "result"
    ]
    api.notify(api.manager.book.by_intent(sent["id"]), "signed")
    assert built == 1
    # One queue entry per connection (the second has its targeted subscription's entry too).
    assert [c.outbox.qsize() for c in followers] == [1, 2, 1, 1, 1]
    got = [note for c in followers for note in notes_of(c)]
    assert sorted(n["params"]["subscription"] for n in got) == sorted([*sub_ids, targeted])
    assert all(n["params"]["result"]["id"] == sent["id"] for n in got)
    assert all(n["params"]["result"]["event"] == "signed" for n in got)
    # Unsubscribing and closing leave no trace in the index.
    for client in followers:
        api.subscriptions.discard(client)
    api.notify(api.manager.book.by_intent(sent["id"]), "broadcast")
    assert built == 1
