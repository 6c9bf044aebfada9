"""``kill -9`` of the real service at the intent path's two crash points (issue 14), with the
real enclave app over its unix socket (its real policy, nonce protection included), anvil and
the SQLite journal.

The service asks the enclave while the intent's fsync runs (``TxManager.complete``). The crash
points are set in the service process by ``tests/e2e/crashpoint/sitecustomize.py``:

- between the signature and the fsync: the enclave signed and logged the intent at nonce n, the
  journal lost it, nothing was sent, the bot got no answer. After the restart the bot sends its
  next intent, which must not get n (the enclave would refuse its payload there for ever);
  recovery read n from the enclave's audit log and took it with a noop. Before recovery did,
  that intent was refused by nonce protection and ended ``failed``.
- between the fsync and the send: durable, signed, never sent. Recovery signs it again (the
  same bytes) and sends it; resubmitting its key answers with it.

Either way the chain ends with every payload once, no nonce gap.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import pytest

from broadcaster.api.client import GWEI, ApiError, BroadcasterClient
from broadcaster.dev.anvil import DEV_ADDRESS, start_anvil, start_enclave
from broadcaster.dev.stack import TOKEN, write_config
from tests.e2e.service_process import service_process
from tests.e2e.support import mined_by_nonce
from tests.e2e.test_crash_recovery import wait_all_included

RECIPIENT = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
CRASHPOINT = Path(__file__).resolve().parent / "crashpoint"
REPO = Path(__file__).resolve().parents[2]
FIRST, CRASHED, NEXT = 100_001, 100_002, 100_003


async def _send(api: BroadcasterClient, value: int, key: str) -> dict[str, object]:
    return await api.send_intent(
        to=RECIPIENT,
        value=value,
        gas=21_000,
        max_fee_per_gas=3 * GWEI,
        max_priority_fee_per_gas=GWEI,
        key=key,
    )


@pytest.mark.parametrize("point", ["sign_before_fsync", "fsync_before_send"])
async def test_kill_9_at_an_intent_crash_point_loses_and_blocks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    async with (
        start_anvil("chain", block_time=1) as node,
        start_enclave(tmp_path / "enclave") as signer_url,
    ):
        config = write_config(tmp_path, node, signer_url)
        async with service_process(config) as service:
            monkeypatch.setenv("CRASH_AT", point)
            monkeypatch.setenv("CRASH_VALUE", str(CRASHED))
            monkeypatch.setenv(
                "PYTHONPATH",
                os.pathsep.join([str(CRASHPOINT), str(REPO), os.environ.get("PYTHONPATH", "")]),
            )
            await service.start()
            async with await BroadcasterClient.connect(service.api_url, token=TOKEN) as api:
                first = await _send(api, FIRST, "first")
                await wait_all_included(api, [str(first["id"])])
                with contextlib.suppress(ConnectionError, ApiError, OSError):
                    await _send(api, CRASHED, "crashed")
                    raise AssertionError("answered: the crash point was not reached")
            assert service.process is not None
            assert await service.process.wait() == -signal.SIGKILL
            monkeypatch.delenv("CRASH_AT")
            await service.start()
            async with await BroadcasterClient.connect(service.api_url, token=TOKEN) as api:
                # The bot moves on to its next intent (another payload; an identical resubmission
                # nonce protection would let through at n either way).
                nxt = await _send(api, NEXT, "next")
                ids = [str(nxt["id"])]
                if point == "fsync_before_send":  # durable: the key answers with the earlier one
                    ids.append(str((await _send(api, CRASHED, "crashed"))["id"]))
                await wait_all_included(api, ids)
            assert await service.stop() == 0
        mined = await mined_by_nonce(node)
        assert sorted(mined) == list(range(len(mined))), "a nonce gap remains"
        values = [int(tx["value"], 16) for _, tx in sorted(mined.items())]
        noops = [
            n
            for n, tx in mined.items()
            if tx["to"].lower() == DEV_ADDRESS.lower() and int(tx["value"], 16) == 0
        ]
        if point == "sign_before_fsync":
            # nonce 1 was signed for the lost intent: a noop took it, the next intent got 2
            assert values == [FIRST, 0, NEXT] and noops == [1]
        else:  # recovery signed the durable intent again (same bytes) and sent it
            assert values == [FIRST, CRASHED, NEXT] and noops == []
