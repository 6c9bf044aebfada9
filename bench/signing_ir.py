"""Driver for instruction-count A/Bs of the signing paths (callgrind; load-independent).

``python -m bench.signing_ir MODE N`` runs N requests of one kind and nothing else:

* ``audit``: ``EnclaveCore.handle`` with the real policy and a real sealed ``AuditLog``, the log
  committed before the reply frame is encoded (as ``enclave/server.py`` does);
* ``noaudit``: the same without the log;
* ``verify``: ``ReplyVerifier.verify`` of one honest reply.

Per-request count: run it under ``valgrind --tool=callgrind --callgrind-out-file=/dev/null`` at N
and at 0 and divide the difference of the "Collected" totals by N. It imports neither
eth-account nor the bench harness, so the fixed start-up part stays small.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import Any

from enclave.audit import AuditLog
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.framing import encode_frame
from signer_client.signing import LocalKey
from signer_client.txcodec import body_items, signing_payload, tx_from_dict
from signer_client.verify import ReplyVerifier

KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
SENDER = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
TO = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
MESSAGES = 1_000


def tx(nonce: int) -> dict[str, Any]:
    return {"type": 2, "chainId": 31337, "nonce": nonce, "to": TO, "value": 10**16, "data": b"",
            "gas": 21000, "maxFeePerGas": 30 * 10**9, "maxPriorityFeePerGas": 2 * 10**9,
            "accessList": []}  # fmt: skip


def run(mode: str, n: int) -> None:
    if mode == "verify":
        key = LocalKey(KEY)
        verifier = ReplyVerifier()
        f = tx_from_dict(tx(1))
        raw, _, msg_hash = key.sign_fields(f)
        raw_hex, body = "0x" + raw.hex(), body_items(f)
        verifier.verify(f, msg_hash, key.address_bytes, raw_hex, None, body)
        for _ in range(n):
            verifier.verify(f, msg_hash, key.address_bytes, raw_hex, None, body)
        return
    if mode not in ("audit", "noaudit") or n > MESSAGES:
        raise SystemExit(f"usage: MODE in audit|noaudit|verify, N <= {MESSAGES} for signs")
    with tempfile.TemporaryDirectory() as tmp:
        audit = (
            AuditLog(os.path.join(tmp, "a.jsonl"), LocalKey(os.urandom(32)),
                     seal_key=os.urandom(32))
            if mode == "audit" else None
        )  # fmt: skip
        config = PolicyConfig(chain_ids=(31337,), rate_per_second=1e9, burst=10**9)
        core = EnclaveCore([LocalKey(KEY)], Policy(config), audit=audit)
        payloads = ["0x" + signing_payload(tx_from_dict(tx(i))).hex() for i in range(MESSAGES)]
        messages = [
            {"id": i, "method": "sign_transaction", "params": {"sender": SENDER, "payload": p}}
            for i, p in enumerate(payloads)
        ]
        now = time.time()
        for i in range(n):
            reply = core.handle(messages[i], now)
            if audit is not None:
                audit.commit()
            encode_frame(reply)
        if audit is not None:
            audit.close()


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]))
