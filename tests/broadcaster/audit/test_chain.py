"""Full blocks for the reconciler: no read endpoint is taken on its word. Senders are recovered
from signatures, a block is checked against the header hash asked for and its transactions root,
and a lying, lagging or garbling endpoint cannot add a transaction "from" us nor hide one while
another answers honestly."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account

from broadcaster.audit.body import ordered_trie_root
from broadcaster.audit.chain import full_blocks, full_blocks_by_number
from broadcaster.audit.reconcile import plan_block
from broadcaster.rpc.chain_reader import ChainReader, ChainReadError
from heads.header import compute_header_hash, header_plan
from signer_client.txcodec import decode_raw

OUR_KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "22" * 32
OURS = Account.from_key(OUR_KEY).address.lower()
OTHER = Account.from_key(OTHER_KEY).address.lower()


def tx(key: str, nonce: int, value: int = 1) -> dict[str, Any]:
    """A signed type-2 transaction as ``eth_getBlockByHash(h, true)`` lists it."""
    signed = Account.sign_transaction(
        {"type": 2, "chainId": 1, "nonce": nonce, "to": "0x" + "33" * 20, "value": value,
         "gas": 21_000, "maxFeePerGas": 10, "maxPriorityFeePerGas": 1},
        key,
    )  # fmt: skip
    raw = bytes(signed.raw_transaction)
    return {
        "type": "0x2", "chainId": "0x1", "nonce": hex(nonce), "to": "0x" + "33" * 20,
        "value": hex(value), "gas": hex(21_000), "maxFeePerGas": "0xa",
        "maxPriorityFeePerGas": "0x1", "gasPrice": "0x5", "input": "0x", "accessList": [],
        "r": hex(signed.r), "s": hex(signed.s), "yParity": hex(signed.v), "v": hex(signed.v),
        "hash": "0x" + signed.hash.hex(), "from": Account.from_key(key).address,
        "_raw": raw,
    }  # fmt: skip


def _public(t: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in t.items() if k != "_raw"}


def header(txs: list[dict[str, Any]], number: int = 7) -> dict[str, Any]:
    """A Cancun header whose ``transactionsRoot`` is that of ``txs``; its hash recomputed."""
    root = "0x" + ordered_trie_root([t["_raw"] for t in txs]).hex()
    h32 = "0x" + "00" * 32
    fields = {
        "parentHash": "0x" + "ab" * 32, "sha3Uncles": h32, "miner": "0x" + "00" * 20,
        "stateRoot": h32, "transactionsRoot": root, "receiptsRoot": h32,
        "logsBloom": "0x" + "00" * 256, "difficulty": "0x0", "number": hex(number),
        "gasLimit": hex(30_000_000), "gasUsed": hex(21_000 * len(txs)),
        "timestamp": hex(1000 + number),
        "extraData": "0x", "mixHash": h32, "nonce": "0x" + "00" * 8, "baseFeePerGas": "0x1",
        "withdrawalsRoot": h32, "blobGasUsed": "0x0", "excessBlobGas": "0x0",
        "parentBeaconBlockRoot": h32,
    }  # fmt: skip
    plan = header_plan(fields)
    assert plan is not None
    return {**fields, "hash": compute_header_hash(fields, plan)}


def block(head: dict[str, Any], *txs: dict[str, Any]) -> dict[str, Any]:
    """A block answer: ``head``'s fields with ``txs`` (which need not be the header's)."""
    return {**head, "transactions": [_public(t) for t in txs]}


def bare(block_hash: str, *txs: dict[str, Any]) -> dict[str, Any]:
    """A block answer without header fields: nothing about it can be proven (unverifiable)."""
    return {"number": "0x7", "hash": block_hash, "transactions": [_public(t) for t in txs]}


def answer(node: dict[str, Any] | None, call: dict[str, Any]) -> Any:
    """What a node holding block ``node`` (or none) answers to one call."""
    method, params = call["method"], call["params"]
    if node is None or params[0] not in (node["hash"], node["number"]):
        return None
    assert method in ("eth_getBlockByHash", "eth_getBlockByNumber")
    if params[1]:
        return node
    return {**node, "transactions": [t["hash"] for t in node["transactions"]]}


def reader(nodes: dict[str, Any]) -> ChainReader:
    """Endpoints by URL: a node's block, ``None`` (no block yet) or an exception raised."""
    calls: dict[str, list[Any]] = {url: [] for url in nodes}

    async def post(url: str, body: Any) -> Any:
        node = nodes[url]
        if isinstance(node, Exception):
            raise node
        calls[url].extend(body)
        return [{"jsonrpc": "2.0", "id": c["id"], "result": answer(node, c)} for c in body]

    chain = ChainReader(list(nodes), post=post)
    chain.calls = calls  # type: ignore[attr-defined]
    return chain


def refusals() -> tuple[list[tuple[str, str]], Any]:
    seen: list[tuple[str, str]] = []
    return seen, lambda url, reason: seen.append((url, reason))


async def test_a_fake_tx_with_our_from_injected_by_the_first_endpoint_is_not_foreign() -> None:
    """Attack: the endpoint read first adds to a real block a transaction labelled ``from`` our
    account (signed by another key, its hash consistent). The body no longer matches the
    header's transactions root: refused, counted, and the block taken from the honest
    endpoint. Nothing foreign; with ``stop_signing_on_foreign`` nothing stopped."""
    real = [tx(OTHER_KEY, 0)]
    head = header(real)
    fake = {**tx(OTHER_KEY, 5), "from": OURS}
    chain = reader({"http://liar": block(head, *real, fake), "http://honest": block(head, *real)})
    seen, on_refused = refusals()
    blocks = await full_blocks(chain, [head["hash"]], on_refused)
    audit = plan_block(blocks[head["hash"]], {OURS}, signed=set(), external=set())
    assert audit.foreign == () and audit.ours == 0
    assert [t.sender for t in blocks[head["hash"]].txs] == [OTHER]
    assert ("http://liar", "transactions_root") in seen


async def test_the_same_fake_tx_in_a_block_nobody_can_prove_is_still_not_ours() -> None:
    """Without header fields (a fork this code cannot hash) nothing is refused, but the sender
    is recovered from the signature: the liar's ``from`` is ignored."""
    fake = {**tx(OTHER_KEY, 5), "from": OURS}
    only = "0x" + "b1" * 32
    chain = reader({"http://liar": bare(only, fake)})
    blocks = await full_blocks(chain, [only])
    assert plan_block(blocks[only], {OURS}, set(), set()).foreign == ()


async def test_a_real_foreign_tx_relabelled_or_omitted_by_the_first_endpoint_is_flagged() -> None:
    """Attack the other way: the endpoint read first hides a transaction signed with our key
    outside the enclave, by rewriting its ``from`` (the recovered sender is still ours) or by
    leaving it out (the root no longer matches: the honest endpoint's block is taken)."""
    stolen = tx(OUR_KEY, 4)
    real = [tx(OTHER_KEY, 0), stolen]
    head = header(real)
    for liar in (block(head, real[0], {**stolen, "from": OTHER}), block(head, real[0])):
        chain = reader({"http://liar": liar, "http://honest": block(head, *real)})
        blocks = await full_blocks(chain, [head["hash"]])
        audit = plan_block(blocks[head["hash"]], {OURS}, signed=set(), external=set())
        assert [(f.sender, f.nonce) for f in audit.foreign] == [(OURS, 4)]


async def test_unprovable_answers_are_merged_so_one_omission_cannot_hide_a_tx() -> None:
    only = "0x" + "b1" * 32
    stolen = tx(OUR_KEY, 4)
    chain = reader({"http://liar": bare(only, tx(OTHER_KEY, 0)),
                    "http://honest": bare(only, tx(OTHER_KEY, 0), stolen)})  # fmt: skip
    blocks = await full_blocks(chain, [only])
    audit = plan_block(blocks[only], {OURS}, signed=set(), external=set())
    assert [(f.sender, f.nonce) for f in audit.foreign] == [(OURS, 4)]


async def test_a_block_with_a_bad_header_or_garbled_txs_is_refused_and_read_elsewhere() -> None:
    real = [tx(OUR_KEY, 0)]
    head = header(real)
    other_head = header(real, number=8)
    broken = {**tx(OUR_KEY, 0), "r": "0x0"}
    for lie, reason in (
        ({**block(other_head, *real), "hash": head["hash"]}, "header_hash"),
        (block({**head, "gasUsed": "0x1"}, *real), "header_hash"),
        (block(head, {**real[0], "value": "0x2"}), "tx_hash"),
        (block(head, broken), "signature"),
        (block(head, {**real[0], "nonce": "seven"}), "malformed"),
    ):
        chain = reader({"http://liar": lie, "http://honest": block(head, *real)})
        seen, on_refused = refusals()
        blocks = await full_blocks(chain, [head["hash"]], on_refused)
        assert [t.nonce for t in blocks[head["hash"]].txs] == [0], reason
        assert seen == [("http://liar", reason)], reason


async def test_an_endpoint_without_the_block_yet_does_not_keep_it_from_being_checked() -> None:
    """A lagging endpoint answers ``null`` for a new block; the other one has it."""
    real = [tx(OUR_KEY, 0)]
    head = header(real)
    chain = reader({"http://lagging": None, "http://down": OSError("refused"),
                    "http://honest": block(head, *real)})  # fmt: skip
    blocks = await full_blocks(chain, [head["hash"]])
    assert [t.nonce for t in blocks[head["hash"]].txs] == [0]


async def test_no_endpoint_answering_is_a_read_error_not_an_empty_answer() -> None:
    chain = reader({"http://a": OSError("refused"), "http://b": OSError("refused")})
    with pytest.raises(ChainReadError):
        await full_blocks(chain, ["0x" + "b1" * 32])


async def test_broadcaster_audit_history_is_not_changed_by_the_endpoint_it_reads_first() -> None:
    """Offline: ``broadcaster audit`` reads the canonical chain by number from the first
    endpoint and checks each block by hash; one that leaves a transaction out is refused and
    the honest one's block taken; a ``--to-block`` beyond every endpoint's tip is an error
    (exit 2), never a silently shorter audit."""
    real = [tx(OUR_KEY, 3), tx(OUR_KEY, 4)]
    head = header(real)
    chain = reader({"http://liar": block(head, real[0]), "http://honest": block(head, *real)})
    (found,) = await full_blocks_by_number(chain, [7])
    assert [t.nonce for t in found.txs] == [3, 4]
    with pytest.raises(ValueError, match="block 8: the RPC does not have it"):
        await full_blocks_by_number(chain, [7, 8])


async def test_a_verified_block_from_the_first_endpoint_is_not_asked_of_the_others() -> None:
    """Cost: a block proven by its header is read once, from one endpoint."""
    real = [tx(OUR_KEY, 3), tx(OTHER_KEY, 0)]
    head = header(real)
    body = block(head, *real)
    chain = reader({"http://a": body, "http://b": body, "http://c": body})
    blocks = await full_blocks(chain, [head["hash"]])
    assert len(blocks[head["hash"]].txs) == 2
    asked = [url for url, calls in chain.calls.items() if calls]  # type: ignore[attr-defined]
    assert asked == ["http://a"]


def test_the_helpers_signed_transactions_decode() -> None:
    """The fixture's transactions are the bytes eth-account signs (so the tests above test the
    checker, not a typo in the fixture)."""
    t = tx(OUR_KEY, 1)
    assert decode_raw(t["_raw"]).fields.nonce == 1


async def test_a_self_consistent_fake_block_at_a_height_cannot_hide_history() -> None:
    """Attack on ``broadcaster audit``: the endpoint read first names, for height 7, a block
    of its own making (its header hashes to the hash it names, its body to its root) without
    the transaction signed with our key outside the enclave. No tracker vouches for a hash
    offline: every block any endpoint names at a height is checked, so the real one is too."""
    stolen = tx(OUR_KEY, 4)
    real = [tx(OTHER_KEY, 0), stolen]
    head, fake_head = header(real), header(real[:1])
    assert fake_head["hash"] != head["hash"]
    chain = reader({"http://liar": block(fake_head, real[0]), "http://honest": block(head, *real)})
    found = await full_blocks_by_number(chain, [7])
    foreign = [f for b in found for f in plan_block(b, {OURS}, set(), set()).foreign]
    assert [(f.sender, f.nonce, f.block_hash) for f in foreign] == [(OURS, 4, head["hash"])]


@pytest.mark.parametrize("trick", ["unknown_header_key", "unknown_tx_type"])
async def test_an_unverifiable_answer_from_the_only_endpoint_is_counted_not_silent(
    trick: str,
) -> None:
    """Attack on the 'unverified' fallback: the only endpoint makes a real block unprovable
    (a header key this code does not know, or an item of a type it cannot encode) and leaves
    out the transaction signed with our key outside the enclave. No answer can prove it wrong,
    but the block is not passed as checked in silence: ``unverified`` is counted (the
    BroadcasterAuditBadBlocks alert), naming the endpoint."""
    stolen = tx(OUR_KEY, 4)
    real = [tx(OTHER_KEY, 0), stolen]
    head = header(real)
    lie = block(head, real[0])
    if trick == "unknown_header_key":
        lie["futureRoot"] = "0x" + "00" * 32
    else:
        lie["transactions"].append(
            {"type": "0x7f", "hash": "0x" + "77" * 32, "r": "0x1", "s": "0x1"}
        )
    seen, on_refused = refusals()
    blocks = await full_blocks(reader({"http://liar": lie}), [head["hash"]], on_refused)
    assert seen == [("http://liar", "unverified")]
    assert blocks[head["hash"]].txs[0].sender == OTHER  # what could be read is still used


async def test_a_padded_or_swapped_body_is_refused_before_any_signature_is_recovered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Cost attack: a liar pads a real header with validly signed transactions (thousands of
    them would be seconds of recovery, on every retry) or swaps the body. The header's
    ``gasUsed`` (21,000 a transaction) and the transactions root refuse it before a single
    sender is recovered; the honest block costs one recovery a transaction."""
    import broadcaster.audit.body as body

    recovered: list[bytes] = []
    real_recover = body.recover_pubkey

    def counting(msg_hash: bytes, y: int, r: int, s: int) -> bytes:
        recovered.append(msg_hash)
        return real_recover(msg_hash, y, r, s)

    monkeypatch.setattr(body, "recover_pubkey", counting)
    real = [tx(OTHER_KEY, 0), tx(OTHER_KEY, 1)]
    head = header(real)
    padding = [tx(OTHER_KEY, n) for n in range(2, 8)]
    for lie, why in (
        (block(head, *real, *padding), "more than the block can hold"),
        (block(head, real[0], padding[0]), "make root"),
    ):
        with pytest.raises(body.BodyRefused, match=why) as refused:
            body.check_block(lie, head["hash"])
        assert refused.value.reason == "transactions_root"
        assert recovered == []
    assert body.check_block(block(head, *real), head["hash"]).verified
    assert len(recovered) == 2


async def test_a_garbled_height_answer_from_one_endpoint_does_not_stop_the_history_audit() -> None:
    real = [tx(OTHER_KEY, 0)]
    head = header(real)
    garbled = {**block(head, *real), "number": "0xzz"}
    chain = reader({"http://garbled": garbled, "http://honest": block(head, *real)})
    chain.replies_each = _by_number(chain.replies_each, garbled)  # type: ignore[method-assign]
    seen, on_refused = refusals()
    (found,) = await full_blocks_by_number(chain, [7], on_refused)
    assert found.hash == head["hash"]
    assert ("http://garbled", "malformed") in seen


def _by_number(each: Any, garbled: dict[str, Any]) -> Any:
    """``replies_each`` where the garbled endpoint's by-number answer is ``garbled``."""

    async def replies_each(calls: Any, skip: Any = ()) -> Any:
        answers = await each(calls, skip)
        if "http://garbled" in answers and calls[0][0] == "eth_getBlockByNumber":
            answers["http://garbled"] = [{"result": garbled} for _ in calls]
        return answers

    return replies_each
