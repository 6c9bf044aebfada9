"""Stage stamps inside ``broadcaster run``, for ``python -m bench.profile`` (never in production).

Python imports ``sitecustomize`` at start-up from ``sys.path``; ``bench.profile`` puts this
folder first on the service's ``PYTHONPATH`` and sets ``REACTION_TRACE`` to a file. Each traced
function is wrapped to stamp ``time.perf_counter_ns()`` on entry (``name>``) and exit
(``name<``); when a reorg reaction completes, one line goes to the file: the total and every
stamp as µs after the head's bytes were read. A stamp costs about 1 µs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

_TRACE = os.environ.get("REACTION_TRACE")

if _TRACE and "run" in sys.argv:
    _clock = time.perf_counter_ns
    _stamps: list[tuple[str, int]] = []
    _out = open(_TRACE, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime

    def _wrap(owner: Any, name: str, label: str, *, first: bool = False) -> None:
        original: Callable[..., Any] = getattr(owner, name)

        def traced(*args: Any, **kwargs: Any) -> Any:
            if first:
                _stamps.clear()
            _stamps.append((label + ">", _clock()))
            try:
                return original(*args, **kwargs)
            finally:
                _stamps.append((label + "<", _clock()))

        setattr(owner, name, traced)

    import broadcaster.rpc.fanout as fanout
    import broadcaster.rpc.transport.http as http
    import broadcaster.tx.manager as txmanager
    import broadcaster.tx.reaction as reaction
    import heads.parse as parse
    import heads.subscriber as subscriber
    import heads.tracker as tracker
    import nonce.book as book

    # The stages of docs/performance.md, in the order a reaction passes them.
    _wrap(subscriber, "parse_frame", "parse", first=True)
    _wrap(tracker.ChainTracker, "on_head", "tracker")
    _wrap(tracker, "parse_head", "parse_head")
    _wrap(parse, "verify_header_hash", "verify")  # heads.parse calls it (heads.header's)
    _wrap(tracker.ChainTracker, "_choose_tip", "choose_tip")
    _wrap(tracker.ChainTracker, "_diff", "diff")
    _wrap(reaction.ChainFollower, "on_chain", "on_chain")
    _wrap(book.NonceBook, "on_reorg", "book.on_reorg")
    _wrap(reaction.ChainFollower, "_send_presigned", "send_presigned")
    _wrap(fanout.FanOut, "submit_many", "submit_many")
    _wrap(fanout.FanOut, "submit", "submit")
    _wrap(http.HttpTransport, "send", "write")  # the socket write of one request
    _wrap(txmanager.TxManager, "on_written", "on_written")

    _done = reaction.ChainFollower._done

    def _reaction_done(self: Any, pending: Any, end_ns: int) -> None:
        start = pending.recv_ns
        _done(self, pending, end_ns)
        if start and pending.recv_ns == 0:  # reported just now
            stamps = " ".join(f"{label}:{(t - start) // 1000}" for label, t in _stamps)
            _out.write(f"TRACE total={(end_ns - start) // 1000} {stamps}\n")

    reaction.ChainFollower._done = _reaction_done  # type: ignore[method-assign]

_INTENT_TRACE = os.environ.get("INTENT_TRACE")

if _INTENT_TRACE and "run" in sys.argv:
    # The intent path (issue 14): frame read -> journal flush || signer round trip -> fan-out.
    # One line per intent whose first attempt reached every RPC, stamps as µs after the
    # frame read (FRAME_READ_NS). Intents must not overlap (the bench sends one at a time).
    import inspect

    _iclock = time.perf_counter_ns
    if os.environ.get("PROFILE_SWITCH_INTERVAL"):  # experiments: the GIL's hand-off to the writer
        sys.setswitchinterval(float(os.environ["PROFILE_SWITCH_INTERVAL"]))
    _istamps: list[tuple[str, int]] = []
    _iout = open(_INTENT_TRACE, "a", buffering=1)  # noqa: SIM115 - open for the process's lifetime

    def _iwrap(owner: Any, name: str, label: str) -> None:
        original: Callable[..., Any] = getattr(owner, name)
        if inspect.iscoroutinefunction(original):

            async def atraced(*args: Any, **kwargs: Any) -> Any:
                if label == "handle":
                    _istamps.clear()  # a new message: the previous intent's tail is not ours
                _istamps.append((label + ">", _iclock()))
                try:
                    return await original(*args, **kwargs)
                finally:
                    _istamps.append((label + "<", _iclock()))

            setattr(owner, name, atraced)
            return

        def traced(*args: Any, **kwargs: Any) -> Any:
            _istamps.append((label + ">", _iclock()))
            try:
                return original(*args, **kwargs)
            finally:
                _istamps.append((label + "<", _iclock()))

        setattr(owner, name, traced)

    import broadcaster.api.server as apiserver
    import broadcaster.rpc.fanout as ifanout
    import broadcaster.rpc.transport.http as ihttp
    import broadcaster.tx.executor as executor
    import broadcaster.tx.manager as imanager
    import nonce.book as ibook
    import nonce.journal as journal
    import signer_client.client as sclient
    import signer_client.verify as sverify

    _iwrap(apiserver.IntentApi, "handle_message", "handle")
    _iwrap(apiserver, "parse_intent", "parse_intent")
    _iwrap(imanager.TxManager, "admit", "admit")
    _iwrap(imanager.TxManager, "complete", "complete")
    _iwrap(journal, "_settle", "journal_settled")  # the flush's future resolved on the loop
    # The writer thread's batch (its SQLite commit, the fsync of a flush): stamped from that
    # thread, so the table shows when the commit began and ended against the signer's round trip.
    _iwrap(journal.SqliteJournal, "_write", "journal_write")
    _iwrap(sclient.SignerClient, "_roundtrip", "signer_rt")
    _iwrap(sclient._Connection, "data_received", "signer_reply_read")
    _iwrap(sverify.ReplyVerifier, "verify", "verify")
    _iwrap(executor.Executor, "sign", "executor.sign")
    _iwrap(ibook.NonceBook, "add_attempt", "add_attempt")
    _iwrap(ibook.NonceBook, "transition", "transition")
    _iwrap(executor.Executor, "send_first", "send_first")
    _iwrap(ifanout.FanOut, "submit", "submit")
    _iwrap(ihttp.HttpTransport, "send", "write")

    _intent_done = executor.Executor._intent_done

    def _traced_intent_done(self: Any, clock: Any, end_ns: int) -> None:
        start = clock.recv_ns
        _intent_done(self, clock, end_ns)
        if start and clock.recv_ns == 0:
            stamps = " ".join(f"{label}:{(t - start) // 1000}" for label, t in _istamps)
            _iout.write(f"TRACE total={(end_ns - start) // 1000} {stamps}\n")

    executor.Executor._intent_done = _traced_intent_done  # type: ignore[method-assign]
