"""The classifier maps every client's real wording to the reaction DESIGN.md section 5 asks for.

Strings are copied from the clients' sources (cited in broadcaster/rpc/error_table.py) or, for
anvil, observed from anvil 1.7.1 itself (the end-to-end tests in test_fanout_anvil.py
check them live).
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broadcaster.rpc.error_table import (
    MESSAGE_RULES,
    REACTIONS,
    ErrorKind,
    Reaction,
    classify,
    classify_exception,
    classify_http_status,
    classify_reply,
)

K = ErrorKind

# (client, message, code, expected kind)
REAL_STRINGS: list[tuple[str, str, int | None, ErrorKind]] = [
    # geth core/txpool/errors.go, core/txpool/legacypool/legacypool.go, core/error.go
    ("geth", "already known", -32000, K.ACCEPTED),
    ("geth<1.9.11", "known transaction: 0x7f657507aee0511e36d2d1972a6b22e9", -32000, K.ACCEPTED),
    ("geth", "replacement transaction underpriced", -32000, K.UNDERPRICED),
    ("geth", "transaction underpriced", -32000, K.UNDERPRICED),
    (
        "geth",
        "transaction underpriced: gas tip cap 1, minimum needed 1000000",
        -32000,
        K.UNDERPRICED,
    ),
    ("geth", "transaction gas price below minimum: gas tip cap 1", -32000, K.UNDERPRICED),
    ("geth", "nonce too low", -32000, K.NONCE_TOO_LOW),
    ("geth", "nonce too low: next nonce 5, tx nonce 3", -32000, K.NONCE_TOO_LOW),
    ("geth", "nonce too high", -32000, K.NONCE_TOO_HIGH),
    ("geth", "gapped-nonce tx from delegated accounts", -32000, K.NONCE_TOO_HIGH),
    ("geth", "in-flight transaction limit reached for delegated accounts", -32000, K.POOL_FULL),
    ("geth", "address already reserved", -32000, K.POOL_FULL),
    ("geth", "authority nonce too low", -32000, K.INVALID),
    ("geth", "insufficient funds for gas * price + value", -32000, K.INSUFFICIENT_FUNDS),
    (
        "geth",
        "insufficient funds for gas * price + value: address 0xb68D have 9934 want 9936",
        -32000,
        K.INSUFFICIENT_FUNDS,
    ),
    ("geth", "insufficient funds for transfer", -32000, K.INSUFFICIENT_FUNDS),
    ("geth", "max fee per gas less than block base fee", -32000, K.FEE_CAP_TOO_LOW),
    ("geth", "max fee per blob gas less than block blob gas fee", -32000, K.FEE_CAP_TOO_LOW),
    ("geth", "intrinsic gas too low", -32000, K.INVALID),
    ("geth", "exceeds block gas limit", -32000, K.INVALID),
    ("geth", "invalid sender", -32000, K.INVALID),
    ("geth", "negative value", -32000, K.INVALID),
    ("geth", "oversized data", -32000, K.INVALID),
    ("geth", "gas uint64 overflow", -32000, K.INVALID),
    ("geth", "max initcode size exceeded", -32000, K.INVALID),
    ("geth", "max priority fee per gas higher than max fee per gas", -32000, K.INVALID),
    ("geth", "sender not an eoa", -32000, K.INVALID),
    ("geth", "nonce has max value", -32000, K.INVALID),
    ("geth", "invalid chain id for signer", -32000, K.INVALID),
    (
        "geth",
        "only replay-protected (EIP-155) transactions allowed over RPC",
        -32000,
        K.INVALID,
    ),
    ("geth", "tx fee (1.10 ether) exceeds the configured cap (1.00 ether)", -32000, K.INVALID),
    ("geth", "rlp: expected input list for types.DynamicFeeTx", -32000, K.INVALID),
    ("geth", "txpool is full", -32000, K.POOL_FULL),
    ("geth", "account limit exceeded", -32000, K.POOL_FULL),
    ("geth", "future transaction tries to replace pending", -32000, K.POOL_FULL),
    # Nethermind: older releases answer AcceptTxResult codes (nameof), newer ones
    # TxPoolErrorMessages; ToString() is "Code, Message".
    ("nethermind", "AlreadyKnown", -32010, K.ACCEPTED),
    ("nethermind", "already known", -32010, K.ACCEPTED),
    ("nethermind", "OldNonce", -32010, K.NONCE_TOO_LOW),
    (
        "nethermind",
        "OldNonce, Current nonce: 22, nonce of rejected tx: 17",
        -32010,
        K.NONCE_TOO_LOW,
    ),
    ("nethermind", "NonceGap, Future nonce. Expected nonce: 10", -32010, K.NONCE_TOO_HIGH),
    ("nethermind", "NonceTooFarInFuture", -32010, K.NONCE_TOO_HIGH),
    ("nethermind", "nonce too far in future", -32010, K.NONCE_TOO_HIGH),
    ("nethermind", "delegation nonce gap", -32010, K.NONCE_TOO_HIGH),
    ("nethermind", "ReplacementNotAllowed", -32010, K.UNDERPRICED),
    ("nethermind", "OwnNonceAlreadyUsed", -32010, K.UNDERPRICED),
    ("nethermind", "FeeTooLow", -32010, K.UNDERPRICED),
    ("nethermind", "FeeTooLowToCompete", -32010, K.UNDERPRICED),
    (
        "nethermind",
        "FeeTooLow, EffectivePriorityFeePerGas too low 10 < 20, BaseFee: 30",
        -32010,
        K.UNDERPRICED,
    ),
    (
        "nethermind",
        "FeeTooLow, MaxFeePerGas too low. MaxFeePerGas: 50, BaseFee: 100, "
        "MaxPriorityFeePerGas:200, Block number: 5",
        -32010,
        K.FEE_CAP_TOO_LOW,
    ),
    ("nethermind", "InsufficientFunds", -32010, K.INSUFFICIENT_FUNDS),
    (
        "nethermind",
        "InsufficientFunds, Account balance: 4740799397601480913, cumulative cost: 220193420",
        -32010,
        K.INSUFFICIENT_FUNDS,
    ),
    (
        "nethermind",
        "GasLimitExceeded, Gas limit: 100, gas limit of rejected tx: 150",
        -32010,
        K.INVALID,
    ),
    ("nethermind", "gas limit reached", -32010, K.INVALID),
    ("nethermind", "SenderIsContract", -32010, K.INVALID),
    ("nethermind", "FailedToResolveSender", -32010, K.INVALID),
    ("nethermind", "failed to recover sender", -32010, K.INVALID),
    ("nethermind", "Int256Overflow", -32010, K.INVALID),
    ("nethermind", "Invalid, transaction Hash is null", -32010, K.INVALID),
    ("nethermind", "node is syncing", -32010, K.TRANSIENT),
    # Erigon: txpoolcfg.go DiscardReason strings, rpcdaemon prefixes the ImportResult name.
    ("erigon", "ALREADY_EXISTS: already known", -32000, K.ACCEPTED),
    ("erigon", "ALREADY_EXISTS", -32000, K.ACCEPTED),
    ("erigon", "existing txn with same hash", -32000, K.ACCEPTED),
    ("erigon", "FEE_TOO_LOW: replacement transaction underpriced", -32000, K.UNDERPRICED),
    ("erigon", "FEE_TOO_LOW: underpriced", -32000, K.UNDERPRICED),
    ("erigon", "fee too low", -32000, K.UNDERPRICED),
    ("erigon", "could not replace existing tx", -32000, K.UNDERPRICED),
    ("erigon", "INVALID: nonce too low", -32000, K.NONCE_TOO_LOW),
    ("erigon", "INVALID: insufficient funds", -32000, K.INSUFFICIENT_FUNDS),
    ("erigon", "INVALID: IntrinsicGas", -32000, K.INVALID),
    ("erigon", "INVALID: RLPTooLong", -32000, K.INVALID),
    ("erigon", "INVALID: GasUintOverflow", -32000, K.INVALID),
    ("erigon", "INVALID: initcode too large", -32000, K.INVALID),
    ("erigon", "pending sub-pool is full", -32000, K.POOL_FULL),
    ("erigon", "baseFee sub-pool is full", -32000, K.POOL_FULL),
    ("erigon", "blobs limit in txpool is full", -32000, K.POOL_FULL),
    ("erigon", "spammer", -32000, K.POOL_FULL),
    ("erigon", "tx is stale", -32000, K.NONCE_TOO_LOW),
    ("erigon", "internal error happened, see TxPool service logs", -32000, K.TRANSIENT),
    # Besu: RpcErrorType messages (what eth_sendRawTransaction answers) and
    # TransactionInvalidReason names (seen in `data` and logs).
    ("besu", "Known transaction", -32000, K.ACCEPTED),
    ("besu", "TRANSACTION_ALREADY_KNOWN", -32000, K.ACCEPTED),
    ("besu", "Replacement transaction underpriced", -32000, K.UNDERPRICED),
    ("besu", "TRANSACTION_REPLACEMENT_UNDERPRICED", -32000, K.UNDERPRICED),
    ("besu", "REPLACEMENT_UNDERPRICED", -32000, K.UNDERPRICED),
    ("besu", "Nonce too low", -32001, K.NONCE_TOO_LOW),
    ("besu", "NONCE_TOO_LOW", -32001, K.NONCE_TOO_LOW),
    ("besu", "Nonce too high", -32006, K.NONCE_TOO_HIGH),
    (
        "besu",
        "Transaction nonce is too distant from current sender nonce",
        -32000,
        K.NONCE_TOO_HIGH,
    ),
    ("besu", "An invalid transaction with a lower nonce exists", -32000, K.NONCE_TOO_HIGH),
    ("besu", "Upfront cost exceeds account balance", -32004, K.INSUFFICIENT_FUNDS),
    ("besu", "UPFRONT_COST_EXCEEDS_BALANCE", -32004, K.INSUFFICIENT_FUNDS),
    ("besu", "Gas price below configured minimum gas price", -32009, K.UNDERPRICED),
    ("besu", "Gas price below current base fee", -32009, K.FEE_CAP_TOO_LOW),
    ("besu", "blob gas price below current blob base fee", -32009, K.FEE_CAP_TOO_LOW),
    ("besu", "MAX_FEE_PER_GAS_BELOW_CURRENT_BASE_FEE", -32009, K.FEE_CAP_TOO_LOW),
    ("besu", "Intrinsic gas exceeds gas limit", -32003, K.INVALID),
    ("besu", "Transaction gas limit exceeds block gas limit", -32005, K.INVALID),
    ("besu", "Invalid signature", -32002, K.INVALID),
    ("besu", "Wrong chainId", -32000, K.INVALID),
    ("besu", "ChainId is required", -32000, K.INVALID),
    ("besu", "Max priority fee per gas exceeds max fee per gas", -32000, K.INVALID),
    ("besu", "Transaction fee cap exceeded", -32000, K.INVALID),
    (
        "besu",
        "Transaction pool not enabled. (Either txpool explicitly disabled, or node not yet in "
        "sync).",
        -32002,
        K.TRANSIENT,
    ),
    ("besu", "Initial sync is still in progress", -32008, K.TRANSIENT),
    # reth: RpcPoolError / RpcInvalidTransactionError (geth-compatible) and the pool's own
    # PoolError Display strings.
    ("reth", "already known", -32000, K.ACCEPTED),
    ("reth", "[0x5f3c] Already imported", -32000, K.ACCEPTED),
    ("reth", "replacement transaction underpriced", -32000, K.UNDERPRICED),
    (
        "reth",
        "[0x5f3c]: insufficient gas price to replace existing transaction.",
        -32000,
        K.UNDERPRICED,
    ),
    ("reth", "transaction underpriced", -32000, K.UNDERPRICED),
    ("reth", "[0x5f3c] Transaction feeCap 7 below chain minimum.", -32000, K.UNDERPRICED),
    (
        "reth",
        "transaction priority fee below minimum required priority fee 100",
        -32003,
        K.UNDERPRICED,
    ),
    ("reth", "nonce too low: next nonce 7, tx nonce 5", -32000, K.NONCE_TOO_LOW),
    (
        "reth",
        "insufficient funds for gas * price + value: have 1 want 2",
        -32003,
        K.INSUFFICIENT_FUNDS,
    ),
    ("reth", "max fee per gas less than block base fee", -32000, K.FEE_CAP_TOO_LOW),
    ("reth", "txpool is full", -32003, K.POOL_FULL),
    (
        "reth",
        "[0x5f3c] Transaction discarded outright due to pool size constraints.",
        None,
        K.POOL_FULL,
    ),
    ("reth", "0xab identified as spammer. Transaction 0x5f rejected.", None, K.POOL_FULL),
    ("reth", "intrinsic gas too high", -32000, K.INVALID),
    ("reth", "exceeds max transaction gas limit", -32000, K.INVALID),
    ("reth", "invalid chain ID", -32000, K.INVALID),
    ("reth", "failed to decode signed transaction", -32602, K.INVALID),
    ("reth", "oversized data: transaction size 200000, limit 131072", -32000, K.INVALID),
    # anvil 1.7.1 (crates/anvil/src/eth/error.rs), codes as observed on the wire
    ("anvil", "transaction already imported", -32003, K.ACCEPTED),
    ("anvil", "replacement transaction underpriced", -32003, K.UNDERPRICED),
    ("anvil", "nonce too low", -32003, K.NONCE_TOO_LOW),
    ("anvil", "Nonce too high", -32003, K.NONCE_TOO_HIGH),
    ("anvil", "Insufficient funds for gas * price + value", -32003, K.INSUFFICIENT_FUNDS),
    ("anvil", "max fee per gas less than block base fee", -32003, K.FEE_CAP_TOO_LOW),
    ("anvil", "intrinsic gas too low", -32000, K.INVALID),
    ("anvil", "intrinsic gas too high -- CallerGasLimitMoreThanBlock", -32000, K.INVALID),
    ("anvil", "invalid chain id for signer", -32003, K.INVALID),
    ("anvil", "Failed to decode transaction", -32602, K.INVALID),
    ("anvil", "Unknown transaction type not supported", -32602, K.INVALID),
    (
        "anvil",
        "Transaction gas limit is greater than the block gas limit, gas_limit: 1, cap: 2",
        -32003,
        K.INVALID,
    ),
    # providers / proxies
    ("provider", "Too Many Requests", None, K.RATE_LIMITED),
    ("provider", "daily request limit reached", -32005, K.RATE_LIMITED),
    ("provider", "rate limit exceeded", -32005, K.RATE_LIMITED),
    ("provider", "request timed out", None, K.TIMEOUT),
]


@pytest.mark.parametrize(
    ("client", "message", "code", "expected"),
    REAL_STRINGS,
    ids=[f"{c}:{m[:48]}" for c, m, _, _ in REAL_STRINGS],
)
def test_each_clients_real_wording_gets_the_designed_kind(
    client: str, message: str, code: int | None, expected: ErrorKind
) -> None:
    assert classify(message, code) is expected


@pytest.mark.parametrize(("client", "message", "code", "expected"), REAL_STRINGS[:40])
def test_matching_ignores_case(
    client: str, message: str, code: int | None, expected: ErrorKind
) -> None:
    assert classify(message.upper(), code) is expected
    assert classify(message.lower(), code) is expected


def test_more_specific_patterns_sit_above_the_general_ones_they_contain() -> None:
    needles = [needle for needle, _ in MESSAGE_RULES]
    assert needles.index("authority nonce too low") < needles.index("nonce too low")
    assert needles.index("maxfeepergas too low") < needles.index("feetoolow")
    assert needles.index("unknown transaction") < needles.index("known transaction")
    assert needles.index("replacement transaction underpriced") < needles.index("underpriced")


def test_table_patterns_are_lower_case_and_unique() -> None:
    needles = [needle for needle, _ in MESSAGE_RULES]
    assert all(needle == needle.lower() for needle in needles)
    assert len(needles) == len(set(needles))


def test_a_code_decides_only_when_no_message_pattern_matched() -> None:
    assert classify("something odd", -32005) is K.RATE_LIMITED
    assert classify("something odd", -32603) is K.TRANSIENT
    assert classify("something odd", -32602) is K.INVALID
    assert classify("nonce too low", -32005) is K.NONCE_TOO_LOW
    assert classify("something odd", -32000) is K.UNKNOWN


def test_besu_reason_in_the_data_field_is_read_when_the_message_is_generic() -> None:
    assert classify("Invalid params", -32000, data="TRANSACTION_REPLACEMENT_UNDERPRICED") is (
        K.UNDERPRICED
    )


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, K.RATE_LIMITED),
        (408, K.TIMEOUT),
        (504, K.TIMEOUT),
        (500, K.TRANSIENT),
        (502, K.TRANSIENT),
        (503, K.TRANSIENT),
        (401, K.UNKNOWN),
        (404, K.UNKNOWN),
    ],
)
def test_http_statuses_without_a_json_rpc_body_map_to_retry_or_report(
    status: int, expected: ErrorKind
) -> None:
    assert classify_http_status(status) is expected
    assert classify_reply(b"", http_status=status).kind is expected


def test_transport_failures_are_retryable_and_timeouts_are_told_apart() -> None:
    assert classify_exception(TimeoutError()) is K.TIMEOUT
    assert classify_exception(ConnectionResetError()) is K.TRANSIENT
    assert classify_exception(ConnectionRefusedError()) is K.TRANSIENT
    assert classify_exception(EOFError()) is K.TRANSIENT
    assert classify_exception(ValueError()) is K.UNKNOWN


TX_HASH = bytes.fromhex("7fed5402a9c91182b4528c3e8fe4be6df44cbcdcfb2f2c704bff5a0c05ab202c")


def test_a_result_with_our_hash_is_accepted_and_another_hash_is_not_trusted() -> None:
    ok = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x" + TX_HASH.hex()})
    assert classify_reply(ok, http_status=200, expected_hash=TX_HASH).kind is K.ACCEPTED
    other = orjson.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x" + "00" * 32})
    assert classify_reply(other, expected_hash=TX_HASH).kind is K.UNKNOWN


def test_a_json_rpc_error_reply_keeps_the_nodes_message_and_code() -> None:
    body = (
        b'{"jsonrpc":"2.0","id":1,"error":{"code":-32003,"message":"transaction already imported"}}'
    )
    verdict = classify_reply(body, http_status=200)
    assert (verdict.kind, verdict.message, verdict.code) == (
        K.ACCEPTED,
        "transaction already imported",
        -32003,
    )


def test_malformed_replies_are_transient_so_the_send_is_retried() -> None:
    assert classify_reply(b"<html>bad gateway</html>", http_status=200).kind is K.TRANSIENT
    assert classify_reply(b'{"jsonrpc":"2.0","id":1', http_status=200).kind is K.TRANSIENT
    assert classify_reply(b"[1, 2]").kind is K.TRANSIENT
    assert classify_reply(b'{"jsonrpc":"2.0","id":1}').kind is K.TRANSIENT
    assert classify_reply(b"<html>oops</html>", http_status=502).kind is K.TRANSIENT
    assert classify_reply(b"<html>slow down</html>", http_status=429).kind is K.RATE_LIMITED


def test_an_unrecognised_error_under_a_5xx_is_transient() -> None:
    body = b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"upstream went away"}}'
    assert classify_reply(body, http_status=503).kind is K.TRANSIENT
    assert classify_reply(body, http_status=200).kind is K.UNKNOWN


def test_every_kind_has_a_reaction_and_nonce_too_low_means_check_inclusion() -> None:
    assert set(REACTIONS) == set(ErrorKind)
    assert REACTIONS[K.NONCE_TOO_LOW] is Reaction.CHECK_INCLUSION
    assert REACTIONS[K.UNDERPRICED] is Reaction.BUMP_FEES
    assert REACTIONS[K.INSUFFICIENT_FUNDS] is Reaction.FAIL_ALERT
    assert REACTIONS[K.TRANSIENT] is Reaction.RETRY


@given(st.text(max_size=200), st.one_of(st.none(), st.integers(-40000, 40000)))
def test_classify_never_raises_on_arbitrary_input(message: str, code: int | None) -> None:
    assert classify(message, code) in set(ErrorKind)


@given(st.binary(max_size=300), st.one_of(st.none(), st.integers(100, 599)))
def test_classify_reply_never_raises_on_arbitrary_bytes(body: bytes, status: int | None) -> None:
    assert classify_reply(body, http_status=status).kind in set(ErrorKind)
