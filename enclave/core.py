"""The enclave app's request handler: sans-I/O, one call per decoded request.

``EnclaveCore.handle(message, now)`` returns the reply object; the asyncio server (``server.py``)
only moves frames. The sign path is written for speed (server-side p50 ~34 us, of which ~25.5 us is
libsecp256k1's signature): sender lookup by lowercase hex; the signing payload arrives as bytes
(protocol 2) and is decoded strictly by one flat walk (``signer_client.payload``), so its hash
needs no re-encoding and its RLP body is reused for the raw encoding; signatures go
straight through libsecp256k1 (``signer_client.secp``); the reply carries only the raw bytes.
Audit entries are queued here, as closures, and built, hashed, signed and written by the adapter
after the reply has left (see ``AuditLog``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from enclave.attestor import DevAttestor
from enclave.audit import AuditLog, EntriesEvicted
from enclave.policy import Policy
from signer_client.errors import PolicyDenied, TransactionError, TxFieldError
from signer_client.payload import decode_payload
from signer_client.protocol import PROTOCOL_VERSION, error_reply, hello_info_bytes
from signer_client.signing import LocalKey
from signer_client.txcodec import (
    TxFields,
    body_items,
    encode_signed,
    keccak,
    signing_payload,
    tx_from_dict,
)

__all__ = ["EnclaveCore"]


def _sign_entry(sender_hex: str, f: TxFields, msg_hash: bytes, raw: bytes) -> dict[str, Any]:
    # Built when the entry is committed, after the reply is written: even the tx hash is computed
    # here, off the reply path (the client hashes the raw bytes itself).
    return {
        "sender": sender_hex,
        "chain": f.chain_id,
        "nonce": f.nonce,
        "signing_hash": "0x" + msg_hash.hex(),
        "tx_hash": "0x" + keccak(raw).hex(),
        "fee_cap": hex(f.fee_cap),
        "tip_cap": hex(f.tip_cap),
    }


class EnclaveCore:
    def __init__(
        self,
        keys: list[LocalKey],
        policy: Policy,
        *,
        audit: AuditLog | None = None,
        attestor: DevAttestor | None = None,
        mode: str = "dev",
    ) -> None:
        if not keys:
            raise ValueError("the enclave needs at least one signing key")
        self.keys = {"0x" + k.address_bytes.hex(): k for k in keys}
        self.policy = policy
        self.audit = audit
        self.attestor = attestor
        self.log_key = audit.key if audit is not None else LocalKey(os.urandom(32))
        self.hello_result: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "mode": mode,
            "addresses": [k.address for k in keys],
            "chain_ids": list(policy.config.chain_ids),
            "policy_hash": policy.hash,
            "log_public_key": "0x" + self.log_key.public_key.hex(),
        }
        self._user_data = keccak(hello_info_bytes(self.hello_result))
        self._methods: dict[str, Callable[[Any, Any, float], dict[str, Any]]] = {
            "sign_transaction": self._sign,
            "hello": self._hello,
            "attestation": self._attestation,
            "audit_head": self._audit_head,
            "audit_entries": self._audit_entries,
        }

    def start(self, now: float, pcr0: bytes) -> None:
        """Open an audit segment: the ``start`` entry announces the log key and the policy."""
        if self.audit is not None:
            self.audit.append(
                now,
                "start",
                {**self.hello_result, "pcr0": "0x" + pcr0.hex(), "policy": self.policy.describe()},
            )
            self.audit.commit()

    def handle(self, message: dict[str, Any], now: float) -> dict[str, Any]:
        request_id = message.get("id")
        name = message.get("method")
        if name == "sign_transaction":  # the hot one: no table lookup
            method: Callable[[Any, Any, float], dict[str, Any]] | None = self._sign
        else:
            method = self._methods.get(name)  # type: ignore[arg-type]
        if method is None:
            return error_reply(request_id, "unknown_method", f"no method {message.get('method')!r}")
        try:
            return method(request_id, message.get("params") or {}, now)
        except TransactionError as exc:  # TxFieldError (dict form), TxDecodeError (payload)
            return error_reply(request_id, "bad_request", exc.reason)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return error_reply(request_id, "bad_request", f"malformed params: {exc!r}")

    # ------------------------------------------------------------ methods

    def _sign(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        sender_hex = params["sender"]
        key = self.keys.get(sender_hex)  # clients send lowercase hex: one lookup
        if key is None:
            sender_hex = sender_hex.lower()
            key = self.keys.get(sender_hex)
            if key is None:
                return error_reply(request_id, "unknown_sender", f"no key for {params['sender']}")
        payload_hex = params.get("payload")
        if payload_hex is not None:
            # Protocol 2: the unsigned signing payload. Decoded strictly (it must be the one
            # canonical encoding of the fields we return), so the policy checks exactly what the
            # signature will cover, and its hash needs no re-encoding.
            if type(payload_hex) is not str or payload_hex[:2] != "0x":
                raise TxFieldError("payload", "expected a 0x-hex string")
            payload = bytes.fromhex(payload_hex[2:])
            f, body = decode_payload(payload)
            msg_hash = keccak(payload)
        else:  # the eth-account style dict form (protocol 1's, still accepted)
            f = tx_from_dict(params["tx"])
            body = body_items(f)
            msg_hash = keccak(signing_payload(f, body))
        try:
            self.policy.check(f, key.address_bytes, msg_hash, now)
        except PolicyDenied as exc:
            if self.audit is not None:
                self.audit.append(
                    now,
                    "deny",
                    {
                        "sender": sender_hex,
                        "chain": f.chain_id,
                        "nonce": f.nonce,
                        "signing_hash": "0x" + msg_hash.hex(),
                        "rule": exc.rule,
                        "reason": exc.reason,
                    },
                )
            return error_reply(request_id, "policy_denied", exc.reason, rule=exc.rule)
        sig = key.sign_hash(msg_hash)
        raw = encode_signed(f, sig[64], sig[:32], sig[32:64], body)
        if self.audit is not None:
            self.audit.append(now, "sign", partial(_sign_entry, sender_hex, f, msg_hash, raw))
        return {"id": request_id, "result": {"raw": "0x" + raw.hex()}}

    def _hello(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        return {"id": request_id, "result": self.hello_result}

    def _attestation(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        if self.attestor is None:
            return error_reply(request_id, "unsupported", "this signer has no attestation PKI")
        nonce = bytes.fromhex(str(params["nonce"]).removeprefix("0x"))
        if len(nonce) > 512:
            return error_reply(request_id, "bad_request", "nonce longer than 512 bytes")
        doc = self.attestor.document(nonce, self._user_data, self.log_key.public_key, now)
        return {"id": request_id, "result": {"document": "0x" + doc.hex()}}

    def _audit_head(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        if self.audit is None:
            return error_reply(request_id, "unsupported", "audit log disabled")
        self.audit.commit()
        return {"id": request_id, "result": self.audit.signed_head()}

    def _audit_entries(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        """``{from_seq, limit}`` -> ``{entries, head}``: committed entries (DESIGN.md §6a) and the
        signed head they lead to, so the broadcaster can keep a verified copy."""
        if self.audit is None:
            return error_reply(request_id, "unsupported", "audit log disabled")
        from_seq, limit = params.get("from_seq", 1), params.get("limit", 1000)
        if type(from_seq) is not int or type(limit) is not int or from_seq < 0 or limit < 0:
            return error_reply(
                request_id, "bad_request", "from_seq and limit must be non-negative integers"
            )
        self.audit.commit()
        try:
            entries = self.audit.entries(from_seq, limit)
        except EntriesEvicted as exc:
            return error_reply(request_id, "evicted", str(exc))
        # The head signed at the page's last entry: every page is authenticated on its own (the
        # entries after a segment's start need no signature each).
        at = (int(entries[-1]["seq"]), str(entries[-1]["hash"])) if entries else None
        return {
            "id": request_id,
            "result": {"entries": entries, "head": self.audit.signed_head(at)},
        }

    def restore_from_log(self, path: str) -> int:
        """Re-learn signed nonces from an existing audit log: nonce protection survives restarts."""
        from enclave.audit import iter_entries

        count = 0
        try:
            entries = iter_entries(path)
        except FileNotFoundError:
            return 0
        for e in entries:
            if e.get("kind") == "sign":
                d = e["data"]
                self.policy.restore(
                    int(d["chain"]),
                    bytes.fromhex(d["sender"][2:]),
                    int(d["nonce"]),
                    bytes.fromhex(d["signing_hash"][2:]),
                    int(d["fee_cap"], 16),
                    int(d["tip_cap"], 16),
                )
                count += 1
        return count
