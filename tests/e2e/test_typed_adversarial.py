"""Adversarial set-code (EIP-7702) intents through the real service, the real enclave app with its
real policy (``allowed_delegates``, a fee cap, nonce protection of authorizations) and anvil
Prague.

What it pins: an authorization the enclave signed at ``n + 1`` for an intent that then failed
(its transaction refused by the fee cap, so nonce ``n`` is reused) never leaves a later intent
delegating elsewhere at ``n`` pending forever: the enclave refuses that second delegate at
``n + 1`` (``nonce_conflict``, never another delegate at a signed nonce), the intent fails with
that reason at once, nonce ``n`` is burned by a noop, and the next delegation goes through; a
raw transaction at a pooled delegation's authorization nonce ``n + 1`` (what a bot reading the
node's pending count picks) is refused at once, naming the free nonce.
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
