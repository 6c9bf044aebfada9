"""Adversarial set-code (EIP-7702) intents through the real service, the real enclave app with its
real policy (``allowed_delegates``, a fee cap, nonce protection of authorizations) and anvil
Prague.

What it pins: an authorization the enclave signed at ``n + 1`` for an intent that then failed
(its transaction refused by the fee cap, so nonce ``n`` is reused) never leaves a later intent
delegating elsewhere at ``n`` pending forever: the enclave refuses that second delegate at
``n + 1`` (``nonce_conflict``, never another delegate at a signed nonce), the intent fails with
that reason at once, nonce ``n`` is burned by a noop, and the next delegation goes through; a
raw transaction at a pooled delegation's authorization nonce ``n + 1`` (what a bot reading the
node's pending count picks) is refused at once, naming the free nonce; a cancelled delegation
whose noop won ``n`` has ``n + 1`` burned at once, so a third party's type-4 tx carrying the
public authorization for ``n + 1`` delegates nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, start_anvil, start_enclave
from broadcaster.dev.stack import DevStack, dev_stack
from tests.e2e.test_typed_intents import RECIPIENT, included, nonce_of, until

pytestmark = pytest.mark.e2e

FIRST = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
SECOND = "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"
FEE_CAP = 50 * GWEI
POLICY = f'allowed_delegates = ["{FIRST}", "{SECOND}"]\nmax_fee_per_gas = {FEE_CAP}\n'


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[DevStack]:
    async with (
        start_anvil("anvil", "--hardfork", "prague") as node,
        start_enclave(tmp_path / "enclave", policy=POLICY) as signer_url,
        dev_stack(tmp_path, node=node, signer_url=signer_url) as running,
    ):
        yield running


@pytest.fixture
async def bot(stack: DevStack) -> AsyncIterator[BroadcasterClient]:
    async with await BroadcasterClient.connect(stack.api_url, token=stack.token) as client:
        yield client


def _delegation(delegate: str, max_fee: int) -> dict[str, object]:
    return {
        "to": RECIPIENT,
        "gas": hex(100_000),
        "maxFeePerGas": hex(max_fee),
        "maxPriorityFeePerGas": hex(GWEI),
        "authorizationList": [{"address": delegate}],
    }


async def test_a_failed_intents_authorization_fails_the_next_delegate_at_once_and_burns_the_nonce(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    start = await nonce_of(stack)
    # The enclave signs FIRST at start + 1, then refuses the transaction itself (fee cap).
    with pytest.raises(ApiError) as refused:
        await bot.request("broadcaster_sendIntent", _delegation(FIRST, 2 * FEE_CAP))
    assert "fee" in refused.value.message, refused.value.message
    manager = stack.service.manager
    assert manager is not None

    async def reused() -> bool:  # the failed intent's nonces are handed out again
        return manager.book.peek_next(DEV_ADDRESS.lower()) == start

    await until(reused, "the failed intent's nonce free again")
    # Nonce `start` is free again; SECOND at start + 1 is a nonce_conflict in the enclave.
    with pytest.raises(ApiError) as conflict:
        await bot.request("broadcaster_sendIntent", _delegation(SECOND, 10 * GWEI))
    assert conflict.value.code == -32000
    assert "nonce_conflict" in conflict.value.message or "already signed" in (
        conflict.value.message
    ), conflict.value.message
    # The nonce is burned by a noop: the next delegation to SECOND lands above it and is mined
    # (at start + 2 while the failed intent's start + 1 is still reserved: a gap fill takes it).
    answer = await bot.request("broadcaster_sendIntent", _delegation(SECOND, 10 * GWEI))
    at = int(answer["nonce"], 16)
    assert at in (start + 1, start + 2)
    await until(lambda: included(bot, answer["id"]), "the delegation to SECOND")
    assert await stack.node.rpc("eth_getCode", DEV_ADDRESS, "latest") == (
        "0xef0100" + SECOND[2:].lower()
    )
    assert await nonce_of(stack) == at + 2  # the tx and its authorization, nothing left below


async def test_a_raw_transaction_at_a_pending_delegations_authorization_nonce_is_refused(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    """While the delegation at n is pooled, the node's pending count is n + 1, so a bot signing
    its own transaction picks n + 1: once the delegation is mined its authorization has taken
    n + 1 and those bytes can never be mined. Refused at once, naming the free nonce."""
    from eth_account import Account

    from broadcaster.dev.anvil import DEV_KEY

    node = stack.node
    await node.rpc("evm_setAutomine", False)  # keep the delegation pooled
    start = await nonce_of(stack)
    answer = await bot.request("broadcaster_sendIntent", _delegation(FIRST, 10 * GWEI))
    assert answer["nonce"] == hex(start)
    pending = start + 1  # geth's pending count while the delegation is pooled
    raw = Account.sign_transaction(
        {"to": RECIPIENT, "value": 1, "gas": 21_000, "maxFeePerGas": 10 * GWEI,
         "maxPriorityFeePerGas": GWEI, "nonce": pending, "chainId": 31337, "type": 2},
        DEV_KEY,
    ).raw_transaction.to_0x_hex()  # fmt: skip
    with pytest.raises(ApiError) as refused:
        await bot.request("eth_sendRawTransaction", raw)
    assert "authorization nonce" in refused.value.message, refused.value.message
    assert f"next free nonce is {start + 2}" in refused.value.message
    await node.rpc("evm_setAutomine", True)
    await node.rpc("evm_mine")
    await until(lambda: included(bot, answer["id"]), "the delegation")
    assert await nonce_of(stack) == start + 2


THIRD_PARTY_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


async def test_a_cancelled_delegations_public_authorization_cannot_be_applied_by_anyone(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    """The delegation at n went out (pooled), then was cancelled: its noop wins n. The signed
    authorization for n + 1 was public with the payload; a third party puts it in a type-4 tx
    of its own. The service burned n + 1 with a second noop as soon as the noop at n was mined,
    so that authorization is void: the account is never delegated, the intent stays cancelled.
    """

    from signer_client.signing import LocalKey
    from signer_client.txcodec import decode_raw

    node = stack.node
    manager = stack.service.manager
    assert manager is not None
    await node.rpc("evm_setAutomine", False)  # keep the delegation pooled
    start = await nonce_of(stack)
    answer = await bot.request("broadcaster_sendIntent", _delegation(FIRST, 10 * GWEI))
    assert answer["nonce"] == hex(start)
    record = manager.book.by_intent(answer["id"])
    payload = decode_raw(record.attempts[0].raw).fields
    (auth,) = payload.authorizations
    assert auth.nonce == start + 1
    await bot.cancel_intent(answer["id"])

    async def noop_pooled() -> bool:
        content = await node.rpc("txpool_content")
        pooled = content["pending"].get(DEV_ADDRESS, {}) or next(
            (v for k, v in content["pending"].items() if k.lower() == DEV_ADDRESS.lower()), {}
        )
        tx = pooled.get(str(start))
        return (
            tx is not None
            and int(tx["value"], 16) == 0
            and tx["to"].lower() == (DEV_ADDRESS.lower())
        )

    await until(noop_pooled, "the cancel's noop replacing the delegation in the pool")
    await node.rpc("evm_mine")  # the noop takes n; n + 1 is where the authorization applies

    async def burned() -> bool:
        await node.rpc("evm_mine")
        return await nonce_of(stack) >= start + 2

    await until(burned, "a noop of ours at n + 1")
    attacker = LocalKey(THIRD_PARTY_KEY)
    attacker_address = "0x" + attacker.address_bytes.hex()
    their_nonce = int(await node.rpc("eth_getTransactionCount", attacker_address, "latest"), 16)
    theirs = attacker.sign(payload._replace(nonce=their_nonce, to=bytes.fromhex(RECIPIENT[2:])))
    await node.rpc("eth_sendRawTransaction", "0x" + theirs.raw.hex())
    await node.rpc("evm_mine")
    receipt = await node.rpc("eth_getTransactionReceipt", "0x" + theirs.hash.hex())
    assert receipt is not None, "the third party's type-4 tx was not mined"
    assert await node.rpc("eth_getCode", DEV_ADDRESS, "latest") == "0x", "account delegated"
    got = await bot.get_intent(answer["id"])
    assert got["status"] == "cancelled", got
    await node.rpc("evm_setAutomine", True)


async def test_a_reorg_that_swaps_the_cancels_noop_for_the_delegation_after_the_burn_went_out(
    stack: DevStack, bot: BroadcasterClient
) -> None:
    """The noop won n and n + 1's burn is pooled; then a reorg puts the delegation itself at n
    (its authorization consumes n + 1). The intent is told the truth (included: the cancel
    lost the race), the burn at n + 1 is given up as taken by that authorization (no
    transaction has that nonce, so it was never found and, in flight, held every later intent
    of the delegated sender back), and the next intent is mined at n + 2."""
    node = stack.node
    manager = stack.service.manager
    assert manager is not None
    await node.rpc("evm_setAutomine", False)
    start = await nonce_of(stack)
    answer = await bot.request("broadcaster_sendIntent", _delegation(FIRST, 10 * GWEI))
    payload = "0x" + manager.book.by_intent(answer["id"]).attempts[0].raw.hex()
    await bot.cancel_intent(answer["id"])

    async def noop_pooled(nonce: int) -> bool:
        content = await node.rpc("txpool_content")
        mine = next(
            (v for k, v in content["pending"].items() if k.lower() == DEV_ADDRESS.lower()), {}
        )
        tx = mine.get(str(nonce))
        return tx is not None and int(tx["value"], 16) == 0 and int(tx["type"], 16) == 2

    await until(lambda: noop_pooled(start), "the cancel's noop pooled at n")
    await node.rpc("evm_mine")
    await until(lambda: noop_pooled(start + 1), "the burn of n + 1 pooled")
    await node.rpc("anvil_reorg", 1, [[payload, 0]])  # the payload at n instead of the noop
    assert await nonce_of(stack) == start + 2
    await node.rpc("evm_setAutomine", True)
    await until(lambda: included(bot, answer["id"]), "the delegation reported included")
    burn = manager.book.get(DEV_ADDRESS.lower(), start + 1)
    assert burn is not None and burn.intent.noop

    async def burn_given_up() -> bool:
        await node.rpc("evm_mine")
        return burn.state.value == "failed"

    await until(burn_given_up, "the burn given up as taken by the authorization")
    assert answer["id"] in burn.state_reason, burn.state_reason
    after = await bot.send_intent(to=RECIPIENT, value=1, gas=21_000, max_fee_per_gas=10 * GWEI,
                                  max_priority_fee_per_gas=GWEI)  # fmt: skip
    assert after["nonce"] == hex(start + 2)
    await until(lambda: included(bot, after["id"]), "the next intent")
    assert await nonce_of(stack) == start + 3
