"""Read an endpoint's answer to a JSON-RPC batch of ``eth_sendRawTransaction`` calls.

Pure and synchronous, like :mod:`broadcaster.rpc.error_table`, whose classifiers it applies to each
element. JSON-RPC 2.0 section 6 ("Batch"): the answer to an array of requests is an array of
responses, in any order, matched to the requests by ``id``. What :func:`classify_batch_reply`
makes of an answer:

========================================  ===============================================
answer                                    every job of the batch gets
========================================  ===============================================
a JSON array                              its own element, classified as a single reply
                                          (``classify_response`` with its expected hash);
                                          no element for its id: ``TRANSIENT``
transport failure (reset, closed)         that failure (``classify_exception``)
HTTP 408 / 429 / 5xx, not an array        the HTTP/JSON-RPC classification of the answer
2xx body that is not JSON (truncated)     ``TRANSIENT``, as for a single request
a JSON-RPC rate-limit error object        ``RATE_LIMITED``: throttled, not refused
any other non-array answer                :class:`BatchRefused`: the endpoint does not take
(``-32600`` "batch not supported",        batches; the fan-out re-sends the jobs one by one
a 4xx, a lone object)                     and stops batching for that endpoint
========================================  ===============================================

The timeout of a batch is the fan-out's business (one timer per written request).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from broadcaster.rpc.error_table import (
    ErrorKind,
    Verdict,
    classify_exception,
    classify_reply,
    classify_response,
)
from broadcaster.rpc.transport.base import Reply

__all__ = ["BatchRefused", "classify_batch_reply", "failure_verdict"]


@dataclass(frozen=True, slots=True)
class BatchRefused:
    """The endpoint answered a batch with something other than an array: it takes none."""

    reason: str


def failure_verdict(exc: BaseException) -> Verdict:
    """A transport failure (no reply could be read) as a verdict, its message naming it."""
    text = str(exc) or type(exc).__name__
    return Verdict(classify_exception(exc), f"{type(exc).__name__}: {text}")


def _retryable_status(status: int | None) -> bool:
    # The server (or a proxy) is overloaded or slow: says nothing about batch support.
    return status is not None and (status in (408, 429) or status >= 500)


def classify_batch_reply(
    reply: Reply, ids: Sequence[int], hashes: Sequence[bytes]
) -> list[Verdict] | BatchRefused:
    """One verdict per request of the batch (``ids[i]`` expects ``hashes[i]``), or a refusal.

    See the module docstring for the table. The verdicts are in the order of ``ids``.
    """
    if reply.failure is not None:
        return [failure_verdict(reply.failure)] * len(ids)
    status = reply.status
    payload: Any = reply.payload
    if payload is None:
        try:
            payload = orjson.loads(reply.body or b"")
        except orjson.JSONDecodeError:
            if status is not None and status >= 300 and not _retryable_status(status):
                return BatchRefused(f"HTTP {status} to a batch")
            return [classify_reply(reply.body, http_status=status)] * len(ids)
    if isinstance(payload, list):
        return _per_element(payload, ids, hashes, status)
    verdict = classify_response(payload, http_status=status)
    if _retryable_status(status) or verdict.kind is ErrorKind.RATE_LIMITED:
        return [verdict] * len(ids)
    reason = verdict.message or f"{str(payload)[:120]}"
    if verdict.code is not None:
        reason = f"{verdict.code} {reason}"
    return BatchRefused(reason)


def _per_element(
    elements: list[Any], ids: Sequence[int], hashes: Sequence[bytes], status: int | None
) -> list[Verdict]:
    by_id: dict[int, Any] = {}
    for element in elements:
        if isinstance(element, dict):
            rid = element.get("id")
            if isinstance(rid, int) and not isinstance(rid, bool):
                by_id[rid] = element
    verdicts: list[Verdict] = []
    for rid, tx_hash in zip(ids, hashes, strict=True):
        element = by_id.get(rid)
        if element is None:
            # ErrorKind has no "protocol error" kind; a reply that lost our request is what
            # TRANSIENT already means for a malformed single reply: resending is safe (the
            # worst answer it can get is "already known"), so it is retried like one.
            verdicts.append(Verdict(ErrorKind.TRANSIENT, f"batch reply has no element id {rid}"))
        else:
            verdicts.append(classify_response(element, http_status=status, expected_hash=tx_hash))
    return verdicts
