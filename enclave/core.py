"""The enclave app's request handler: sans-I/O, one call per decoded request.

``EnclaveCore.handle(message, now)`` returns the reply object; the asyncio server (``server.py``)
only moves frames. The sign path is written for speed (server-side p50 ~34 us, of which ~25.5 us is
libsecp256k1's signature): sender lookup by lowercase hex; the signing payload arrives as bytes
(protocol 2) and is decoded strictly by one flat walk (``signer_client.payload``), so its hash
needs no re-encoding and its RLP body is reused for the raw encoding; signatures go
straight through libsecp256k1 (``signer_client.secp``); the reply carries only the raw bytes.
Audit entries are queued here, as closures, and built, hashed and written by the adapter's
``commit`` before the replies leave (the default; a failed write fails the replies closed, see
``server.py``). ``hello``, ``attestation``, denials and bad requests are logged too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

from enclave.attestor import Attestor
from enclave.audit import AuditLog, AuditWriteError, EntriesEvicted, load_verified
from enclave.policy import Policy, intent_hash, is_noop
from signer_client.authorization import authorization_hash, parse_unsigned_authorization
from signer_client.channel import derive_mac_key
from signer_client.errors import PolicyDenied, TransactionError, TxFieldError
from signer_client.flashbots import auth_signing_hash
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


_EMPTY_KECCAK = keccak(b"")
_EMPTY_KECCAK_HEX = _EMPTY_KECCAK.hex()


def _sign_entry(
    sender_hex: str, sender: bytes, f: TxFields, msg_hash: bytes, raw: bytes
) -> dict[str, Any]:
    """The ``data`` of a ``sign`` entry, built in commit, not in the policy path: the whole intent
    (DESIGN.md section 6a), so the log can be compared with the chain field by field.

    Built with its keys already in sorted order, at every level (``AuditLog.append(...,
    canonical=True)``): the entry is then dumped without ``OPT_SORT_KEYS``, to the same bytes
    (``tests/enclave/test_audit_canonical.py`` compares it with the sorted dump)."""
    data = f.data
    if data:
        data_keccak = keccak(data)
        dk_hex = data_keccak.hex()
    else:  # the common case (transfers, noops): a constant
        data_keccak, dk_hex = _EMPTY_KECCAK, _EMPTY_KECCAK_HEX
    tx_type = f.type
    fee_cap = f.gas_price if f.max_fee_per_gas is None else f.max_fee_per_gas
    tip_cap = f.gas_price if f.max_priority_fee_per_gas is None else f.max_priority_fee_per_gas
    head: dict[str, Any] = {"access_list_len": len(f.access_list)}
    if tx_type == 4:  # "authorizations" < "chain"
        head["authorizations"] = [_auth_entry(a) for a in f.authorizations]
    elif tx_type == 3:  # "blob_fee_cap" < "blob_hashes" < "chain"
        head["blob_fee_cap"] = hex(f.max_fee_per_blob_gas)  # type: ignore[arg-type]
        head["blob_hashes"] = ["0x" + h.hex() for h in f.blob_hashes]
    return {
        **head,
        "chain": f.chain_id,
        "data_keccak": "0x" + dk_hex,
        "data_len": len(data),
        "fee_cap": hex(fee_cap),  # type: ignore[arg-type]
        "gas": f.gas,
        "intent": "0x" + intent_hash(f, data_keccak).hex(),
        "nonce": f.nonce,
        "noop": is_noop(f, sender),
        "sender": sender_hex,
        "signing_hash": "0x" + msg_hash.hex(),
        "tip_cap": hex(tip_cap),  # type: ignore[arg-type]
        "to": "0x" + f.to.hex(),
        "tx_hash": "0x" + keccak(raw).hex(),
        "type": tx_type,
        "value": hex(f.value),
    }


def _auth_entry(a: Any) -> dict[str, Any]:
    from signer_client.secp import recover_uncompressed

    sig = a.r.to_bytes(32, "big") + a.s.to_bytes(32, "big") + bytes((a.y_parity,))
    try:
        pub = recover_uncompressed(sig, authorization_hash(a.chain_id, a.address, a.nonce))
    except (ValueError, OverflowError):
        pub = None
    return {  # in sorted key order (see _sign_entry)
        "address": "0x" + a.address.hex(),
        "authority": None if pub is None else "0x" + keccak(pub[1:])[12:].hex(),
        "chain": a.chain_id,
        "nonce": a.nonce,
    }


class Session:
    """Per-connection state the adapter keeps: the channel MAC key once attested, and the lane
    the connection's ``hello`` asked for (``urgent``: the adapter answers it ahead of queued
    ordinary requests, ``server.py``)."""

    __slots__ = ("mac_key", "pending_key", "urgent")

    def __init__(self) -> None:
        self.mac_key: bytes | None = None
        self.pending_key: bytes | None = None  # takes effect after the attestation reply
        self.urgent = False


class EnclaveCore:
    def __init__(
        self,
        keys: list[LocalKey],
        policy: Policy,
        *,
        audit: AuditLog | None = None,
        attestor: Attestor | None = None,
        mode: str = "dev",
        log_key: LocalKey | None = None,
    ) -> None:
        # The auth key (DESIGN.md 5a) is held apart: ``self.keys`` -- the only keys
        # sign_transaction and sign_authorization look up -- never contains it.
        wanted = policy.config.auth_address
        self.auth_key: LocalKey | None = None
        if wanted is not None:
            auth = [k for k in keys if "0x" + k.address_bytes.hex() == wanted]
            if not auth:
                raise ValueError(f"policy.auth_address {wanted} names no loaded key")
            self.auth_key = auth[0]
            # By address, not identity: a key source listing the auth key twice must not leave
            # a copy among the transaction keys.
            keys = [k for k in keys if k.address_bytes != self.auth_key.address_bytes]
        if not keys:
            raise ValueError("the enclave needs at least one signing key")
        self.keys = {"0x" + k.address_bytes.hex(): k for k in keys}
        self.policy = policy
        self.audit = audit
        self.attestor = attestor
        self.log_key = (
            audit.key
            if audit is not None
            else log_key
            if log_key is not None
            else LocalKey(os.urandom(32))
        )
        self.session: Session | None = None  # the connection of the request being handled
        self.hello_result: dict[str, Any] = {
            "protocol": PROTOCOL_VERSION,
            "mode": mode,
            "addresses": [k.address for k in keys],
            "chain_ids": list(policy.config.chain_ids),
            "policy_hash": policy.hash,
            "log_public_key": "0x" + self.log_key.public_key.hex(),
        }
        if self.auth_key is not None:
            self.hello_result["auth_address"] = self.auth_key.address
        self._user_data = keccak(hello_info_bytes(self.hello_result))
        self._methods: dict[str, Callable[[Any, Any, float], dict[str, Any]]] = {
            "sign_transaction": self._sign,
            "sign_authorization": self._sign_authorization,
            "sign_auth": self._sign_auth,
            "hello": self._hello,
            "attestation": self._attestation,
            "audit_head": self._audit_head,
            "audit_entries": self._audit_entries,
            "advance_nonce_floor": self._advance_floor,
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

    def handle(
        self, message: dict[str, Any], now: float, session: Session | None = None
    ) -> dict[str, Any]:
        request_id = message.get("id")
        name = message.get("method")
        if name == "sign_transaction":  # the hot one: no table lookup
            method: Callable[[Any, Any, float], dict[str, Any]] | None = self._sign
        else:
            method = self._methods.get(name)  # type: ignore[arg-type]
        if method is None:
            return self._bad(request_id, now, "unknown_method", f"no method {name!r:.80}")
        self.session = session
        try:
            return method(request_id, message.get("params") or {}, now)
        except TransactionError as exc:  # TxFieldError (dict form), TxDecodeError (payload)
            return self._bad(request_id, now, "bad_request", exc.reason, name)
        except RecursionError:
            return self._bad(request_id, now, "bad_request", "params nested too deeply", name)
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
            return self._bad(
                request_id, now, "bad_request", f"malformed params: {exc!r:.200}", name
            )

    def bad_frame(self, now: float, reason: str) -> dict[str, Any]:
        """A frame that is not a request at all (the adapter's parse failed): logged, answered."""
        return self._bad(None, now, "bad_request", reason)

    def _bad(
        self, request_id: Any, now: float, code: str, reason: str, method: object = None
    ) -> dict[str, Any]:
        if self.audit is not None:
            self.audit.append(
                now, "bad_request", {"code": code, "method": str(method)[:64], "reason": reason}
            )
        return error_reply(request_id if type(request_id) is int else None, code, reason)

    # ------------------------------------------------------------ methods

    def _sign(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        sender_hex = params["sender"]
        key = self.keys.get(sender_hex)  # clients send lowercase hex: one lookup
        if key is None:
            sender_hex = sender_hex.lower()
            key = self.keys.get(sender_hex)
            if key is None:
                return self._bad(
                    request_id,
                    now,
                    "unknown_sender",
                    f"no key for {params['sender']!s:.80}",
                    "sign_transaction",
                )
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
                        "type": f.type,
                        "to": "0x" + f.to.hex(),
                        "value": hex(f.value),
                        "data_keccak": "0x" + keccak(f.data).hex(),
                        "signing_hash": "0x" + msg_hash.hex(),
                        "rule": exc.rule,
                        "reason": exc.reason,
                    },
                )
            return error_reply(request_id, "policy_denied", exc.reason, rule=exc.rule)
        sig = key.sign_hash(msg_hash)
        raw = encode_signed(f, sig[64], sig[:32], sig[32:64], body)
        if self.audit is not None:
            self.audit.append(
                now,
                "sign",
                partial(_sign_entry, sender_hex, key.address_bytes, f, msg_hash, raw),
                canonical=True,
            )
        return {"id": request_id, "result": {"raw": "0x" + raw.hex()}}

    def _sign_authorization(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        """``{sender, authorization: {chainId, address, nonce}}`` -> ``{signature}`` (65 bytes
        ``r || s || yParity``, 0x-hex) over EIP-7702's ``keccak256(0x05 || rlp([chainId,
        address, nonce]))``, only to an address in ``allowed_delegates``."""
        sender_hex = str(params["sender"]).lower()
        key = self.keys.get(sender_hex)
        if key is None:
            return self._bad(
                request_id,
                now,
                "unknown_sender",
                f"no key for {params['sender']!s:.80}",
                "sign_authorization",
            )
        chain_id, address, nonce = parse_unsigned_authorization(params["authorization"])
        msg_hash = authorization_hash(chain_id, address, nonce)
        entry = {
            "sender": sender_hex,
            "chain": chain_id,
            "address": "0x" + address.hex(),
            "nonce": nonce,
            "signing_hash": "0x" + msg_hash.hex(),
        }
        try:
            self.policy.check_authorization(chain_id, address, key.address_bytes, now, nonce=nonce)
        except PolicyDenied as exc:
            if self.audit is not None:
                self.audit.append(
                    now, "deny", {**entry, "type": "authorization", "rule": exc.rule,
                                  "reason": exc.reason},
                )  # fmt: skip
            return error_reply(request_id, "policy_denied", exc.reason, rule=exc.rule)
        sig = key.sign_hash(msg_hash)
        if self.audit is not None:
            self.audit.append(now, "authorize", entry)
        return {"id": request_id, "result": {"signature": "0x" + sig.hex()}}

    def _sign_auth(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        """``{body_hash}`` (32 bytes, 0x-hex: ``keccak256`` of a request body) -> ``{address,
        signature}``: the auth key's EIP-191 signature of the text ``0x<body_hash>``, the
        ``X-Flashbots-Signature`` (DESIGN.md 5a). The enclave does the EIP-191 wrapping itself, so
        no caller-chosen hash is ever signed with the auth key (``signer_client.flashbots``)."""
        text = params["body_hash"]
        if type(text) is not str or text[:2] != "0x" or len(text) != 66:
            raise TxFieldError("body_hash", "expected 32 bytes of 0x-hex")
        digest = bytes.fromhex(text[2:])
        key = self.auth_key
        try:
            if key is None:
                raise PolicyDenied("auth_key", "this enclave's policy names no auth key")
            self.policy.check_auth(key.address_bytes)
        except PolicyDenied as exc:
            if self.audit is not None:
                self.audit.append(
                    now, "deny", {"type": "auth", "body_hash": text, "rule": exc.rule,
                                  "reason": exc.reason},
                )  # fmt: skip
            return error_reply(request_id, "policy_denied", exc.reason, rule=exc.rule)
        msg_hash = auth_signing_hash(digest)
        sig = key.sign_hash(msg_hash)
        if self.audit is not None:
            self.audit.append(
                now,
                "auth",
                {
                    "address": "0x" + key.address_bytes.hex(),
                    "body_hash": text.lower(),
                    "signing_hash": "0x" + msg_hash.hex(),
                },
            )
        return {
            "id": request_id,
            "result": {"address": key.address, "signature": "0x" + sig.hex()},
        }

    def _hello(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        # ``{"lane": "urgent"}``: the client's second connection, for a reorg reaction's
        # requests. It changes only the order the adapter answers in, never what is signed, so
        # a host that marks every connection urgent gains nothing but its own lost priority.
        lane = params.get("lane") if type(params) is dict else None
        if lane not in (None, "ordinary", "urgent"):
            return self._bad(request_id, now, "bad_request", f"unknown lane {lane!r:.40}", "hello")
        if self.session is not None:
            self.session.urgent = lane == "urgent"
        if self.audit is not None:
            self.audit.append(now, "hello", {"lane": lane} if lane == "urgent" else {})
        return {"id": request_id, "result": self.hello_result}

    def _attestation(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        if self.attestor is None:
            return error_reply(request_id, "unsupported", "this signer has no attestor")
        nonce = bytes.fromhex(str(params["nonce"]).removeprefix("0x"))
        if len(nonce) > 512:
            return self._bad(request_id, now, "bad_request", "nonce longer than 512 bytes")
        client_key = params.get("client_key")
        if client_key is not None:
            peer = bytes.fromhex(str(client_key).removeprefix("0x"))
            key = derive_mac_key(self.log_key.secret, peer, nonce)
            if self.session is not None:
                self.session.pending_key = key
        try:
            doc = self.attestor.document(nonce, self._user_data, self.log_key.public_key, now)
        except Exception as exc:  # NsmError, a device gone: an answer, not a dropped connection
            if self.session is not None:
                self.session.pending_key = None
            return self._bad(request_id, now, "internal", f"attestor failed: {exc!s:.200}")
        if self.audit is not None:
            self.audit.append(
                now,
                "attestation",
                {"nonce": "0x" + nonce.hex(), "channel": client_key is not None},
            )
        return {"id": request_id, "result": {"document": "0x" + doc.hex()}}

    def _audit_head(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        if self.audit is None:
            return error_reply(request_id, "unsupported", "audit log disabled")
        try:
            self.audit.commit()
        except AuditWriteError:
            # The queued entries stay queued: the server's own commit retries them and fails
            # every reply of this read closed if it fails again.
            return error_reply(request_id, "audit_failed", "audit log write failed")
        return {"id": request_id, "result": self.audit.signed_head()}

    def _audit_entries(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        """``{from_seq, limit}`` -> ``{entries, head}``: committed entries (DESIGN.md §6a) and the
        head signed at the page's last entry, so the broadcaster can keep a verified copy."""
        if self.audit is None:
            return error_reply(request_id, "unsupported", "audit log disabled")
        from_seq, limit = params.get("from_seq", 1), params.get("limit", 1000)
        if type(from_seq) is not int or type(limit) is not int or from_seq < 0 or limit < 0:
            return self._bad(
                request_id, now, "bad_request", "from_seq and limit must be non-negative integers"
            )
        try:
            self.audit.commit()
        except AuditWriteError:
            return error_reply(request_id, "audit_failed", "audit log write failed")
        try:
            entries = self.audit.entries(from_seq, limit)
        except EntriesEvicted as exc:
            return error_reply(request_id, "evicted", str(exc))
        # The head signed at the page's last entry: every page is authenticated on its own (the
        # entries after a segment's start carry no signature of their own).
        at = (int(entries[-1]["seq"]), str(entries[-1]["hash"])) if entries else None
        return {
            "id": request_id,
            "result": {"entries": entries, "head": self.audit.signed_head(at)},
        }

    def _advance_floor(self, request_id: Any, params: Any, now: float) -> dict[str, Any]:
        """``{chain, sender, nonce}``: the chain's confirmed nonce; older nonces are refused."""
        sender = bytes.fromhex(str(params["sender"]).lower().removeprefix("0x"))
        chain, nonce = int(params["chain"]), int(params["nonce"])
        self.policy.advance_floor(chain, sender, nonce)
        if self.audit is not None:
            self.audit.append(
                now, "nonce_floor", {"sender": "0x" + sender.hex(), "chain": chain, "nonce": nonce}
            )
        return {"id": request_id, "result": {}}

    def restore_from_log(self, path: str) -> int:
        """Re-learn signed nonces from the enclave's own log: nonce protection survives restarts.

        The log is verified first (:func:`enclave.audit.load_verified`: chained, and ending at its
        sealed anchor when the log is sealed); one that is not raises ``AuditStateError`` and the
        app refuses to start, rather than forget what it signed."""
        seal_key = self.audit.seal_key if self.audit is not None else None
        count = 0
        entries = load_verified(path, seal_key)
        if (
            self.audit is not None
            and self.audit.path is not None
            and os.path.abspath(self.audit.path) == os.path.abspath(path)
        ):
            self.audit.resync()  # the tail past the sealed anchor may have been cut
        for e in entries:
            kind = e.get("kind")
            d = e["data"]
            if kind == "sign":
                intent = d.get("intent")
                self.policy.restore(
                    int(d["chain"]),
                    bytes.fromhex(d["sender"][2:]),
                    int(d["nonce"]),
                    bytes.fromhex(d["signing_hash"][2:]),
                    int(d["fee_cap"], 16),
                    int(d["tip_cap"], 16),
                    bytes.fromhex(intent[2:]) if intent else None,
                    bool(d.get("noop", False)),
                    int(d.get("blob_fee_cap", "0x0"), 16),
                )
                count += 1
            elif kind == "authorize":
                self.policy.restore_authorization(
                    int(d["chain"]),
                    bytes.fromhex(d["sender"][2:]),
                    int(d["nonce"]),
                    bytes.fromhex(d["address"][2:]),
                )
            elif kind == "nonce_floor":
                self.policy.advance_floor(
                    int(d["chain"]), bytes.fromhex(d["sender"][2:]), int(d["nonce"])
                )
        return count
