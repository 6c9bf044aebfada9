"""Classify what an RPC endpoint answered to ``eth_sendRawTransaction``.

Pure and synchronous: no I/O, no clock. The fan-out (``broadcaster.rpc.fanout``) feeds it the
JSON-RPC reply (or the HTTP status / transport failure) and acts on the :class:`ErrorKind` it
gets back, following DESIGN.md section 5:

- ``already known`` / ``known transaction`` -> the node holds our bytes: :attr:`ErrorKind.ACCEPTED`;
- ``nonce too low`` -> *check inclusion*. One lagging or forked node saying it is **not** proof of
  inclusion: the caller reconciles against the canonical chain, never trusts this alone;
- ``replacement transaction underpriced`` / ``transaction underpriced`` -> bump fees;
- ``insufficient funds`` -> fail the intent and alert;
- timeouts, 5xx and connection failures -> retry with backoff.

Matching is a case-insensitive substring search over the error message, in table order, so the
more specific pattern sits above the general one (``authority nonce too low`` before
``nonce too low``; ``maxfeepergas too low`` before ``feetoolow``). The JSON-RPC error code is a
secondary signal, used only when no message pattern matched (EIP-1474 codes; every client
returns ``-32000`` for most pool rejections, so codes alone say little). The HTTP status comes
last. Every table group cites the client source its strings come from.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "CODE_RULES",
    "MESSAGE_RULES",
    "REACTIONS",
    "ErrorKind",
    "Reaction",
    "Verdict",
    "classify",
    "classify_exception",
    "classify_http_status",
    "classify_reply",
    "classify_response",
]


class ErrorKind(enum.StrEnum):
    """What an endpoint's answer means for our transaction (values are metric label values)."""

    ACCEPTED = "accepted"  # in the pool: a fresh accept or an "already known"
    NONCE_TOO_LOW = "nonce_too_low"  # nonce used (by us, or this node is ahead/forked): check
    NONCE_TOO_HIGH = "nonce_too_high"  # gap before our nonce on this node: resync nonces
    UNDERPRICED = "underpriced"  # below pool minimum or replace rule: bump fees
    FEE_CAP_TOO_LOW = "fee_cap_too_low"  # maxFeePerGas below the base fee: re-sign above it
    INSUFFICIENT_FUNDS = "insufficient_funds"  # fail the intent, alert
    INVALID = "invalid"  # the transaction itself is wrong (gas, signature, chain id...): fail
    POOL_FULL = "pool_full"  # the node's pool is full or limits the sender: retry later
    RATE_LIMITED = "rate_limited"  # provider throttling (HTTP 429, -32005): retry later
    TIMEOUT = "timeout"  # no answer in time: retry with backoff
    TRANSIENT = "transient"  # 5xx, connection refused/reset, malformed reply: retry with backoff
    UNKNOWN = "unknown"  # unrecognised answer: report, do not retry blindly
    # Local outcomes of the fan-out, never returned by classify():
    DROPPED = "dropped"  # the endpoint's queue was full (or the fan-out closed): not sent


class Reaction(enum.StrEnum):
    """What the caller should do about a kind (DESIGN.md section 5)."""

    DONE = "done"
    CHECK_INCLUSION = "check_inclusion"
    RESYNC_NONCE = "resync_nonce"
    BUMP_FEES = "bump_fees"
    FAIL_ALERT = "fail_alert"
    FAIL = "fail"
    RETRY = "retry"
    REPORT = "report"


REACTIONS: Final[Mapping[ErrorKind, Reaction]] = {
    ErrorKind.ACCEPTED: Reaction.DONE,
    ErrorKind.NONCE_TOO_LOW: Reaction.CHECK_INCLUSION,
    ErrorKind.NONCE_TOO_HIGH: Reaction.RESYNC_NONCE,
    ErrorKind.UNDERPRICED: Reaction.BUMP_FEES,
    ErrorKind.FEE_CAP_TOO_LOW: Reaction.BUMP_FEES,
    ErrorKind.INSUFFICIENT_FUNDS: Reaction.FAIL_ALERT,
    ErrorKind.INVALID: Reaction.FAIL,
    ErrorKind.POOL_FULL: Reaction.RETRY,
    ErrorKind.RATE_LIMITED: Reaction.RETRY,
    ErrorKind.TIMEOUT: Reaction.RETRY,
    ErrorKind.TRANSIENT: Reaction.RETRY,
    ErrorKind.UNKNOWN: Reaction.REPORT,
    ErrorKind.DROPPED: Reaction.REPORT,
}

_A, _LOW, _HIGH = ErrorKind.ACCEPTED, ErrorKind.NONCE_TOO_LOW, ErrorKind.NONCE_TOO_HIGH
_UNDER, _BASEFEE = ErrorKind.UNDERPRICED, ErrorKind.FEE_CAP_TOO_LOW
_FUNDS, _INVALID, _FULL = ErrorKind.INSUFFICIENT_FUNDS, ErrorKind.INVALID, ErrorKind.POOL_FULL
_RATE, _TIMEOUT, _TRANSIENT = ErrorKind.RATE_LIMITED, ErrorKind.TIMEOUT, ErrorKind.TRANSIENT

# (substring, kind), lower-case, first match wins. Order matters only where one pattern is a
# substring of another's message; those pairs are commented.
MESSAGE_RULES: Final[tuple[tuple[str, ErrorKind], ...]] = (
    # --- Must win over the generic "nonce too low" / "underpriced" / "invalid" below. ---
    # geth core/txpool/errors.go ErrAuthorityNonceTooLow (EIP-7702 authorization, not our nonce)
    ("authority nonce too low", _INVALID),
    # Nethermind TxPool/Filters/FeeTooLowFilter.cs: "FeeTooLow, MaxFeePerGas too low.
    # MaxFeePerGas: 50, BaseFee: 100, ..." is below the base fee, not below a pool minimum.
    ("maxfeepergas too low", _BASEFEE),
    # anvil BlockchainError::UnknownTransactionType "Unknown transaction type not supported":
    # contains "known transaction", which would otherwise read as ACCEPTED.
    ("unknown transaction", _INVALID),
    # --- ACCEPTED: the node already holds these exact bytes. ---
    # geth core/txpool/errors.go ErrAlreadyKnown; reth rpc-eth-types error/mod.rs
    # RpcPoolError::AlreadyKnown; Erigon txpoolcfg.go DiscardReason AlreadyKnown;
    # Nethermind TxPoolErrorMessages.AlreadyKnown (newer releases)
    ("already known", _A),
    # geth < 1.9.11 core/tx_pool.go "known transaction: <hash>"; Besu RpcErrorType
    # ETH_SEND_TX_ALREADY_KNOWN "Known transaction"
    ("known transaction", _A),
    # Nethermind TxPool/AcceptTxResult.cs nameof(AlreadyKnown) (older releases answer the code)
    ("alreadyknown", _A),
    # Erigon turbo/jsonrpc send_transaction.go: "ALREADY_EXISTS: already known" (txpool proto
    # ImportResult name, then the DiscardReason)
    ("already_exists", _A),
    # anvil crates/anvil/src/eth/error.rs PoolError::AlreadyImported -> "transaction already
    # imported" (-32003); reth transaction-pool error.rs PoolError "[hash] Already imported";
    # OpenEthereum "Transaction with the same hash was already imported."
    ("already imported", _A),
    # Besu TransactionInvalidReason.TRANSACTION_ALREADY_KNOWN (enum name, seen in `data`)
    ("transaction_already_known", _A),
    # Erigon txpoolcfg.go DiscardReason DuplicateHash ("existing txn with same hash"; older
    # releases "existing tx with same hash")
    ("with same hash", _A),
    # --- UNDERPRICED: replacement rule (geth's +10%, DESIGN.md section 5) or pool minimum. ---
    # geth core/txpool/errors.go ErrReplaceUnderpriced; Erigon DiscardReason ReplaceUnderpriced;
    # reth RpcPoolError::ReplaceUnderpriced; anvil PoolError::ReplacementUnderpriced (rpc text);
    # Besu RpcErrorType ETH_SEND_TX_REPLACEMENT_UNDERPRICED "Replacement transaction underpriced"
    ("replacement transaction underpriced", _UNDER),
    # Besu TransactionInvalidReason.TRANSACTION_REPLACEMENT_UNDERPRICED (enum name in `data`)
    ("replacement_underpriced", _UNDER),
    # Nethermind AcceptTxResult.ReplacementNotAllowed (code) and OwnNonceAlreadyUsed (another
    # of our attempts holds the nonce and local replacement is refused)
    ("replacementnotallowed", _UNDER),
    ("ownnoncealreadyused", _UNDER),
    # reth transaction-pool error.rs PoolError::ReplacementUnderpriced Display, and anvil's
    # internal PoolError Display: "insufficient gas price to replace existing transaction"
    ("insufficient gas price to replace", _UNDER),
    # Erigon DiscardReason NotReplaced "could not replace existing tx"
    ("could not replace existing", _UNDER),
    # --- FEE_CAP_TOO_LOW: below the block base fee (re-sign above the new base fee). ---
    # geth core/error.go ErrFeeCapTooLow; reth RpcInvalidTransactionError::FeeCapTooLow; anvil
    # InvalidTransactionError::FeeCapTooLow: "max fee per gas less than block base fee"
    ("less than block base fee", _BASEFEE),
    # geth core/error.go ErrBlobFeeCapTooLow "max fee per blob gas less than block blob gas fee"
    ("less than block blob gas fee", _BASEFEE),
    # Besu RpcErrorType GAS_PRICE_BELOW_CURRENT_BASE_FEE "Gas price below current base fee",
    # BLOB_GAS_PRICE_BELOW_CURRENT_BLOB_BASE_FEE; TransactionInvalidReason
    # MAX_FEE_PER_GAS_BELOW_CURRENT_BASE_FEE
    ("below current base fee", _BASEFEE),
    ("below current blob base fee", _BASEFEE),
    ("below_current_base_fee", _BASEFEE),
    # anvil InvalidTransactionError::BlobFeeCapTooLow
    ("greater than tx-specified `max_fee_per_blob_gas`", _BASEFEE),
    # --- UNDERPRICED (pool minimum / competition). ---
    # geth core/txpool/errors.go ErrUnderpriced "transaction underpriced"; newer geth
    # ErrTxGasPriceTooLow "transaction gas price below minimum"; reth RpcPoolError::Underpriced;
    # Erigon DiscardReason UnderPriced ("underpriced") and FeeTooLow ("fee too low"), also
    # proto ImportResult FEE_TOO_LOW; Nethermind FeeTooLow / FeeTooLowToCompete (older codes)
    ("transaction underpriced", _UNDER),
    ("gas price below minimum", _UNDER),
    # Besu RpcErrorType GAS_PRICE_TOO_LOW "Gas price below configured minimum gas price";
    # TransactionInvalidReason GAS_PRICE_TOO_LOW / TRANSACTION_PRICE_TOO_LOW
    ("below configured minimum gas price", _UNDER),
    ("gas_price_too_low", _UNDER),
    ("transaction_price_too_low", _UNDER),
    # reth transaction-pool error.rs PoolErrorKind::FeeCapBelowMinimumProtocolFeeCap
    # "transaction feeCap {0} below chain minimum"; reth PriorityFeeBelowMinimum
    ("below chain minimum", _UNDER),
    ("priority fee below minimum", _UNDER),
    ("feetoolow", _UNDER),  # Nethermind FeeTooLow, FeeTooLowToCompete
    ("fee_too_low", _UNDER),  # Erigon ImportResult FEE_TOO_LOW
    ("fee too low", _UNDER),  # Erigon DiscardReason FeeTooLow
    ("underpriced", _UNDER),  # Erigon DiscardReason UnderPriced (bare word), any other wording
    # --- INSUFFICIENT_FUNDS: fail the intent, alert. ---
    # geth core/error.go ErrInsufficientFunds "insufficient funds for gas * price + value" and
    # ErrInsufficientFundsForTransfer; reth/anvil same wording ("Insufficient funds ..." in
    # anvil); Erigon DiscardReason InsufficientFunds "insufficient funds"
    ("insufficient funds", _FUNDS),
    ("insufficientfunds", _FUNDS),  # Nethermind AcceptTxResult.InsufficientFunds (code)
    # Besu RpcErrorType TRANSACTION_UPFRONT_COST_EXCEEDS_BALANCE "Upfront cost exceeds account
    # balance"; TransactionInvalidReason UPFRONT_COST_EXCEEDS_BALANCE
    ("upfront cost exceeds account balance", _FUNDS),
    ("upfront_cost_exceeds_balance", _FUNDS),
    ("insufficient balance", _FUNDS),  # OpenEthereum, geth "insufficient balance for transfer"
    # --- NONCE_TOO_HIGH: a gap before our nonce on that node. ---
    # geth core/error.go ErrNonceTooHigh; Besu RpcErrorType NONCE_TOO_HIGH "Nonce too high";
    # anvil "Nonce too high"
    ("nonce too high", _HIGH),
    ("nonce_too_high", _HIGH),
    # Nethermind AcceptTxResult.NonceGap (code) / NonceTooFarInFuture; TxPoolErrorMessages
    # "nonce too far in future"; "delegation nonce gap" (NotCurrentNonceForDelegation)
    ("noncegap", _HIGH),
    ("nonce too far in future", _HIGH),
    ("noncetoofarinfuture", _HIGH),
    ("nonce gap", _HIGH),
    # Besu RpcErrorType NONCE_TOO_FAR_IN_FUTURE_FOR_SENDER "Transaction nonce is too distant
    # from current sender nonce"; LOWER_NONCE_INVALID_TRANSACTION_EXISTS
    ("too distant from current sender nonce", _HIGH),
    ("nonce_too_far_in_future", _HIGH),
    ("invalid transaction with a lower nonce exists", _HIGH),
    # geth core/txpool/legacypool/legacypool.go ErrOutOfOrderTxFromDelegated
    ("gapped-nonce", _HIGH),
    # --- NONCE_TOO_LOW: check inclusion against the canonical chain, never trust it alone. ---
    # geth core/error.go ErrNonceTooLow ("nonce too low: next nonce 5, tx nonce 3" in newer
    # geth); reth "nonce too low: next nonce {state}, tx nonce {tx}"; Erigon DiscardReason
    # NonceTooLow; anvil "nonce too low"; Besu RpcErrorType NONCE_TOO_LOW "Nonce too low"
    ("nonce too low", _LOW),
    ("nonce_too_low", _LOW),  # Besu TransactionInvalidReason NONCE_TOO_LOW
    ("oldnonce", _LOW),  # Nethermind AcceptTxResult.OldNonce (code)
    ("tx is stale", _LOW),  # Erigon ImportResult STALE ("tx is stale", older rpcdaemon)
    # --- POOL_FULL: retry later, maybe on the other endpoints first. ---
    # geth legacypool.go ErrTxPoolOverflow "txpool is full"; reth RpcPoolError::TxPoolOverflow
    ("txpool is full", _FULL),
    # Erigon DiscardReason PendingPoolOverflow / BaseFeePoolOverflow / QueuedPoolOverflow
    # ("pending sub-pool is full", ...) and BlobPoolOverflow "blobs limit in txpool is full"
    ("sub-pool is full", _FULL),
    ("in txpool is full", _FULL),
    # reth transaction-pool error.rs DiscardedOnInsert / SpammerExceededCapacity
    ("pool size constraints", _FULL),
    ("identified as spammer", _FULL),
    # geth core/txpool/errors.go ErrAccountLimitExceeded; legacypool ErrFutureReplacePending
    ("account limit exceeded", _FULL),
    ("future transaction tries to replace pending", _FULL),
    # geth core/txpool/errors.go ErrInflightTxLimitReached: an EIP-7702-delegated account (or one
    # with a pending authorization) may have one transaction in flight; the next waits for it.
    ("in-flight transaction limit reached for delegated accounts", _FULL),
    # geth core/txpool/errors.go ErrAlreadyReserved: a blob and a non-blob transaction from one
    # account cannot coexist in geth's pools (the blobpool and the legacypool reserve senders).
    ("address already reserved", _FULL),
    ("spammer", _FULL),  # Erigon DiscardReason Spammer
    # --- RATE_LIMITED: providers (EIP-1474 -32005 "limit exceeded", HTTP 429 bodies). ---
    ("rate limit", _RATE),
    ("too many requests", _RATE),
    ("request limit", _RATE),
    # --- TRANSIENT: the node cannot take transactions right now. ---
    # Besu RpcErrorType TX_POOL_DISABLED "Transaction pool not enabled..." and
    # CHAIN_HEAD_WORLD_STATE_NOT_AVAILABLE "Initial sync is still in progress"
    ("transaction pool not enabled", _TRANSIENT),
    ("initial sync is still in progress", _TRANSIENT),
    # Nethermind TxPoolErrorMessages.NodeIsSyncing "node is syncing" / AcceptTxResult.Syncing
    ("node is syncing", _TRANSIENT),
    # Erigon rpcdaemon ImportResult INTERNAL_ERROR "internal error happened, see TxPool ..."
    ("internal error", _TRANSIENT),
    ("timeout", _TIMEOUT),
    ("timed out", _TIMEOUT),
    # --- INVALID: the transaction itself is wrong; resending the same bytes cannot help. ---
    # geth core/error.go ErrIntrinsicGas; reth/anvil "intrinsic gas too low"/"too high";
    # Erigon DiscardReason IntrinsicGas ("IntrinsicGas"); Besu INTRINSIC_GAS_EXCEEDS_LIMIT
    # "Intrinsic gas exceeds gas limit"
    ("intrinsic gas", _INVALID),
    ("intrinsicgas", _INVALID),
    ("intrinsic_gas", _INVALID),
    # geth core/txpool/errors.go ErrGasLimit "exceeds block gas limit"; Besu
    # EXCEEDS_BLOCK_GAS_LIMIT "Transaction gas limit exceeds block gas limit"; reth
    # "exceeds max transaction gas limit"; Nethermind GasLimitExceeded / "gas limit reached"
    ("exceeds block gas limit", _INVALID),
    ("exceeds max transaction gas limit", _INVALID),
    ("gaslimitexceeded", _INVALID),
    ("gas limit reached", _INVALID),
    ("gas limit too high", _INVALID),
    ("gas limit is too high", _INVALID),
    ("greater than the block gas limit", _INVALID),  # anvil TxGasLimitGreaterThanCap
    # geth ErrInvalidSender; Besu "Invalid signature"; Nethermind FailedToResolveSender /
    # "failed to recover sender"; reth "invalid transaction signature"
    ("invalid sender", _INVALID),
    ("invalid signature", _INVALID),
    ("invalid transaction signature", _INVALID),
    ("failedtoresolvesender", _INVALID),
    ("failed to recover sender", _INVALID),
    # chain id: geth "invalid chain id for signer"; reth "invalid chain ID"; Besu "Wrong chainId",
    # "ChainId not supported", "ChainId is required"; anvil "Incompatible EIP-155 transaction";
    # geth internal/ethapi "only replay-protected (EIP-155) transactions allowed over RPC"
    ("chain id", _INVALID),
    ("chainid", _INVALID),
    ("eip-155", _INVALID),
    # geth core/error.go ErrTipAboveFeeCap, ErrTipVeryHigh, ErrFeeCapVeryHigh; Besu
    # "Max priority fee per gas exceeds max fee per gas"
    ("max priority fee per gas higher than", _INVALID),
    ("max priority fee per gas exceeds max fee per gas", _INVALID),
    ("max fee per gas higher than", _INVALID),
    # geth ErrNegativeValue, ErrOversizedData, ErrGasUintOverflow, ErrMaxInitCodeSizeExceeded,
    # ErrSenderNoEOA, ErrTxTypeNotSupported, ErrNonceMax; Erigon RLPTooLong, GasUintOverflow
    ("negative value", _INVALID),
    ("oversized data", _INVALID),
    ("gas uint64 overflow", _INVALID),
    ("gasuintoverflow", _INVALID),
    ("initcode size exceeded", _INVALID),
    ("initcode too large", _INVALID),
    ("sender not an eoa", _INVALID),
    ("sender is not an eoa", _INVALID),
    ("senderiscontract", _INVALID),  # Nethermind AcceptTxResult.SenderIsContract
    ("transaction type not supported", _INVALID),
    ("unsupported transaction type", _INVALID),
    ("nonce has max value", _INVALID),
    ("rlptoolong", _INVALID),
    # geth internal/ethapi "tx fee (1.10 ether) exceeds the configured cap (1.00 ether)"; reth
    # same; Besu TX_FEECAP_EXCEEDED "Transaction fee cap exceeded"
    ("exceeds the configured cap", _INVALID),
    ("fee cap exceeded", _INVALID),
    # decoding: anvil "Failed to decode transaction"; reth "failed to decode signed
    # transaction"; geth "rlp: ..."; Nethermind Invalid / "transaction invalid"; Erigon
    # ImportResult INVALID ("INVALID: <reason>", specific reasons matched above first)
    ("failed to decode", _INVALID),
    ("rlp:", _INVALID),
    ("int256overflow", _INVALID),
    ("transaction cost overflow", _INVALID),
    ("transaction invalid", _INVALID),
    ("tx is invalid", _INVALID),
    ("invalid:", _INVALID),
    # Last resort: Nethermind AcceptTxResult.Invalid answers "Invalid" / "Invalid, <detail>".
    ("invalid", _INVALID),
)

# JSON-RPC error code -> kind, used only when no message rule matched (EIP-1474; JSON-RPC 2.0).
CODE_RULES: Final[Mapping[int, ErrorKind]] = {
    -32700: _INVALID,  # parse error: the request we built is not JSON
    -32600: _INVALID,  # invalid request
    -32602: _INVALID,  # invalid params (undecodable raw transaction)
    -32603: _TRANSIENT,  # internal error
    -32002: _TRANSIENT,  # resource unavailable (Besu: txpool disabled while syncing)
    -32005: _RATE,  # limit exceeded (EIP-1474); providers use it for throttling
}


@dataclass(frozen=True, slots=True)
class Verdict:
    """One classified answer: the kind, the node's message, its JSON-RPC code."""

    kind: ErrorKind
    message: str | None = None
    code: int | None = None
    result: str | None = None  # the `result` of a successful reply (the transaction hash)


def classify(
    message: str | None,
    code: int | None = None,
    *,
    http_status: int | None = None,
    data: object = None,
) -> ErrorKind:
    """Map a JSON-RPC error (message, code, optional ``data``) and/or HTTP status to a kind.

    Message rules first (the wording is the only reliable cross-client signal), then the
    ``data`` field (Besu and some proxies put the reason there), then the code, then the HTTP
    status. Nothing matched -> :attr:`ErrorKind.UNKNOWN`.
    """
    texts = [text.lower() for text in (message, data) if isinstance(text, str) and text]
    if texts:
        # Rule order decides across both fields: Besu's "Invalid params" + data
        # "TRANSACTION_REPLACEMENT_UNDERPRICED" is UNDERPRICED, not the generic "invalid".
        for needle, kind in MESSAGE_RULES:
            for lowered in texts:
                if needle in lowered:
                    return kind
    if code is not None:
        by_code = CODE_RULES.get(code)
        if by_code is not None:
            return by_code
    if http_status is not None:
        return classify_http_status(http_status)
    return ErrorKind.UNKNOWN


def classify_http_status(status: int) -> ErrorKind:
    """HTTP status of a reply without a usable JSON-RPC body (RFC 9110 section 15)."""
    if 200 <= status < 300:
        return ErrorKind.UNKNOWN  # 2xx without a JSON-RPC body: not an answer we understand
    if status == 429:
        return ErrorKind.RATE_LIMITED
    if status in (408, 504):
        return ErrorKind.TIMEOUT
    if status >= 500:
        return ErrorKind.TRANSIENT
    return ErrorKind.UNKNOWN  # 401/403/404...: a misconfigured endpoint, report it


def classify_exception(exc: BaseException) -> ErrorKind:
    """Transport failures (already converted to builtin exceptions at the transport boundary)."""
    if isinstance(exc, TimeoutError):
        return ErrorKind.TIMEOUT
    if isinstance(exc, (ConnectionError, OSError, EOFError)):
        return ErrorKind.TRANSIENT
    return ErrorKind.UNKNOWN


def _verdict_from_error(error: object, http_status: int | None) -> Verdict:
    if not isinstance(error, Mapping):
        text = str(error)
        return Verdict(classify(text, http_status=http_status), text)
    message = error.get("message")
    message = message if isinstance(message, str) else None
    code = error.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    data = error.get("data")
    data_text = data if isinstance(data, str) else None
    kind = classify(message, code, http_status=http_status, data=data_text)
    return Verdict(kind, message, code)


def classify_reply(
    body: bytes | None,
    *,
    http_status: int | None = None,
    expected_hash: bytes | None = None,
) -> Verdict:
    """Classify a whole ``eth_sendRawTransaction`` reply body (JSON-RPC 2.0 response object).

    A ``result`` is :attr:`ErrorKind.ACCEPTED` when it is the hash we expect (a node returning a
    different hash is not trusted: :attr:`ErrorKind.UNKNOWN`). A body that is not a JSON-RPC
    response is :attr:`ErrorKind.TRANSIENT` (a proxy's HTML error page, a truncated reply):
    resending is safe, the worst answer it can get is "already known".
    """
    if http_status is not None and http_status >= 300 and not body:
        return Verdict(classify_http_status(http_status), f"HTTP {http_status}")
    try:
        reply: Any = orjson.loads(body or b"")
    except orjson.JSONDecodeError:
        kind = ErrorKind.TRANSIENT
        if http_status is not None and http_status >= 300:
            kind = classify_http_status(http_status)
            if kind is ErrorKind.UNKNOWN:
                kind = ErrorKind.TRANSIENT if http_status >= 500 else kind
        snippet = (body or b"")[:120].decode("utf-8", "replace")
        return Verdict(kind, f"malformed JSON-RPC reply: {snippet!r}")
    return classify_response(reply, http_status=http_status, expected_hash=expected_hash)


def classify_response(
    reply: Any,
    *,
    http_status: int | None = None,
    expected_hash: bytes | None = None,
) -> Verdict:
    """Classify an already-parsed JSON-RPC 2.0 response object (see :func:`classify_reply`)."""
    if not isinstance(reply, dict):
        return Verdict(ErrorKind.TRANSIENT, f"unexpected JSON-RPC reply: {str(reply)[:120]}")
    if reply.get("error") is not None:
        verdict = _verdict_from_error(reply["error"], http_status)
        if verdict.kind is ErrorKind.UNKNOWN and http_status is not None and http_status >= 500:
            return Verdict(ErrorKind.TRANSIENT, verdict.message, verdict.code)
        return verdict
    if "result" in reply:
        result = reply["result"]
        if not isinstance(result, str):
            return Verdict(ErrorKind.UNKNOWN, f"unexpected result: {str(result)[:120]}")
        if expected_hash is not None and result.lower() != "0x" + expected_hash.hex():
            return Verdict(ErrorKind.UNKNOWN, f"node returned hash {result}", result=result)
        return Verdict(ErrorKind.ACCEPTED, result=result)
    if http_status is not None and http_status >= 300:
        return Verdict(classify_http_status(http_status), f"HTTP {http_status}")
    return Verdict(ErrorKind.TRANSIENT, "JSON-RPC reply without result or error")
