"""Crash points for ``tests/e2e/test_intent_crash_points.py``, loaded into the real service
process (``python -m broadcaster run``) through ``PYTHONPATH``; production code has no hook.

``CRASH_AT`` names the point, ``CRASH_VALUE`` the intent (by its ``value``) whose admission arms
it; the process then kills itself with SIGKILL (``kill -9``, nothing flushed or closed):

- ``sign_before_fsync``: every journal write from then on stalls (an fsync that takes its time),
  and the process dies as soon as the enclave's signature of that intent is back (verified):
  the enclave signed and logged it, the journal never made it durable;
- ``fsync_before_send``: the process dies at the first fan-out submit after it: the intent is
  durable and signed, nothing was written to any RPC, the bot never got its answer.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping

POINT = os.environ.get("CRASH_AT", "")
VALUE = int(os.environ.get("CRASH_VALUE", "0"))
armed: list[bool] = []


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


if POINT:
    from broadcaster.rpc.fanout import FanOut
    from broadcaster.tx.manager import TxManager
    from nonce.journal import SqliteJournal
    from signer_client.client import SignerClient

    admit = TxManager.admit

    async def _admit(self, intent):  # type: ignore[no-untyped-def]
        if intent.value == VALUE:
            armed.append(True)
        return await admit(self, intent)

    TxManager.admit = _admit  # type: ignore[method-assign]

    if POINT == "sign_before_fsync":
        write = SqliteJournal._write

        def _write(self, entries, *, durable):  # type: ignore[no-untyped-def]
            if armed:
                time.sleep(60)  # the writer thread: the loop goes on, the signer answers
            return write(self, entries, durable=durable)

        SqliteJournal._write = _write  # type: ignore[method-assign]
        sign = SignerClient.sign_transaction

        async def _sign(self, tx, sender, *args, **kwargs):  # type: ignore[no-untyped-def]
            signed = await sign(self, tx, sender, *args, **kwargs)
            value = tx.get("value", 0) if isinstance(tx, Mapping) else tx.value
            if armed and int(value) == VALUE:
                _die()
            return signed

        SignerClient.sign_transaction = _sign  # type: ignore[method-assign]
    elif POINT == "fsync_before_send":
        submit, submit_many = FanOut.submit, FanOut.submit_many

        def _submit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if armed:
                _die()
            return submit(self, *args, **kwargs)

        def _submit_many(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            if armed:
                _die()
            return submit_many(self, *args, **kwargs)

        FanOut.submit = _submit  # type: ignore[method-assign]
        FanOut.submit_many = _submit_many  # type: ignore[method-assign]
    else:
        raise SystemExit(f"CRASH_AT={POINT!r}: not a crash point")
