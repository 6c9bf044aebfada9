"""The real enclave signer, in process, behind the tx manager's ``Signer`` seam.

:class:`SimEnclave` is the enclave app's own request handler (``enclave.core.EnclaveCore``) with
its real ``enclave.policy.Policy`` and hash-chained ``enclave.audit.AuditLog``: nonce protection,
the fee and tip caps, the ``to`` allowlist and the per-sender rate limit all bite exactly as in
production, on virtual time. It outlives the host process (a crash of the broadcaster does not
restart the enclave) and can be restarted on script, re-learning its signed nonces from its audit
log as ``python -m enclave`` does (``EnclaveCore.restore_from_log``), or losing them.

:class:`SimSigner` is what the manager holds: it encodes the request as ``SignerClient`` does
(protocol 2: the unsigned signing payload), hands it to the enclave after a scripted latency, maps
error replies to the client's exceptions (``signer_client.errors.remote_error``) and runs the
client's reply verification (``signer_client.verify.ReplyVerifier``) on every answer.
Scripted faults: ``down`` (``SignerUnavailable`` at once), ``hang`` (``SignerTimeout`` after
``timeout`` seconds), ``latency``. ``serial``: the enclave signs one request at a time (each
``latency`` long) and the rest wait their turn, urgent requests first
(``signer_client.priority``: a reorg reaction's and the presignatures, as ``SignerClient`` serves
its waiting requests), so a backlog of intents at the signer is modelled.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from enclave.audit import AuditLog
from enclave.core import EnclaveCore
from enclave.policy import Policy, PolicyConfig
from signer_client.authorization import parse_unsigned_authorization
from signer_client.errors import SignerTimeout, SignerUnavailable, remote_error
from signer_client.priority import URGENT
from signer_client.signing import LocalKey, SignedTx
from signer_client.txcodec import (
    TxFields,
    body_items,
    keccak,
    parse_address,
    signing_payload,
    tx_from_dict,
)
from signer_client.verify import ReplyVerifier

__all__ = ["SignRequest", "SimEnclave", "SimSigner"]


@dataclass(frozen=True, slots=True)
class SignRequest:
    """One ``sign_transaction`` the enclave decided on (``denied`` names the rule, if refused).

    ``previous`` is the last signature the enclave made at the same (sender, nonce) before this
    one, when this request is a different payload: i.e. the request is a replacement.
    """

    at: float
    sender: str
    fields: TxFields
    msg_hash: bytes
    denied: str | None
    reason: str | None
    previous: TxFields | None
    raw: bytes | None


class SimEnclave:
    """``EnclaveCore`` + ``Policy`` + ``AuditLog``, driven on the simulation's clock."""

    def __init__(
        self,
        keys: Sequence[str],
        policy: PolicyConfig,
        audit_path: Path,
        clock: Callable[[], float],
    ) -> None:
        self._keys = [LocalKey(k) for k in keys]
        self.policy_config = policy
        self.audit_path = audit_path
        self._clock = clock
        self._log_key = LocalKey(keccak(b"simulated enclave log key"))
        self.down = False
        self.hang = False
        self.latency = 0.0002
        self.timeout = 2.0
        self.serial = False  # one request at a time, urgent ones first (module docstring)
        # Every sign_transaction asked for: (clock, sender, nonce, urgent), in order.
        self.asked: list[tuple[float, str, int, bool]] = []
        self.requests: list[SignRequest] = []
        self.floors: list[tuple[str, int]] = []  # advance_nonce_floor calls, in order
        # sign_authorization answers given: (sender, chain id, delegate, nonce), in order.
        self.authorizations: list[tuple[str, int, str, int]] = []
        self.listeners: list[Callable[[SignRequest], None]] = []
        # Last signature per (sender, nonce), as the policy remembers it (for the invariants).
        self._last: dict[tuple[str, int], tuple[bytes, TxFields]] = {}
        self.restarts = 0
        self.core = self._boot(restore=False)

    def _boot(self, *, restore: bool) -> EnclaveCore:
        audit = AuditLog(str(self.audit_path), self._log_key)
        core = EnclaveCore(self._keys, Policy(self.policy_config), audit=audit)
        if restore:
            core.restore_from_log(str(self.audit_path))
        core.start(self._clock(), b"\x00" * 48)
        return core

    @property
    def addresses(self) -> list[str]:
        return ["0x" + k.address_bytes.hex() for k in self._keys]

    @property
    def log_key(self) -> str:
        """The log key its ``start`` entries announce (attestation would vouch for it)."""
        return "0x" + self.core.log_key.public_key.hex()

    def restart(self, *, keep_state: bool = True) -> None:
        """Restart the enclave: with ``keep_state`` its nonce memory comes back from the log."""
        assert self.core.audit is not None
        self.core.audit.close()
        if not keep_state:
            self.audit_path.unlink(missing_ok=True)
            self._last.clear()
        self.core = self._boot(restore=keep_state)
        self.restarts += 1

    def close(self) -> None:
        if self.core.audit is not None:
            self.core.audit.close()

    def handle(self, sender: str, fields: TxFields, payload: bytes) -> dict[str, Any]:
        """One request through the real handler; records what was decided."""
        now = self._clock()
        request = {
            "id": 1,
            "method": "sign_transaction",
            "params": {"sender": sender, "payload": "0x" + payload.hex()},
        }
        reply = self.core.handle(request, now)
        if self.core.audit is not None:
            self.core.audit.commit()  # the server commits right after the reply is written
        msg_hash = keccak(payload)
        last = self._last.get((sender, fields.nonce))
        previous = last[1] if last is not None and last[0] != msg_hash else None
        error = reply.get("error")
        raw: bytes | None = None
        if error is None:
            raw = bytes.fromhex(reply["result"]["raw"][2:])
            self._last[(sender, fields.nonce)] = (msg_hash, fields)
        decided = SignRequest(
            at=now,
            sender=sender,
            fields=fields,
            msg_hash=msg_hash,
            denied=None if error is None else str(error.get("rule") or error.get("code")),
            reason=None if error is None else str(error.get("reason")),
            previous=previous,
            raw=raw,
        )
        self.requests.append(decided)
        for listener in self.listeners:
            listener(decided)
        return reply

    def advance_floor(self, chain_id: int, sender: str, nonce: int) -> dict[str, Any]:
        """``advance_nonce_floor`` through the real handler."""
        params = {"chain": chain_id, "sender": sender, "nonce": nonce}
        reply = self.core.handle({"id": 1, "method": "advance_nonce_floor", "params": params},
                                 self._clock())  # fmt: skip
        if self.core.audit is not None:
            self.core.audit.commit()
        self.floors.append((sender.lower(), nonce))
        return reply

    def denials(self, rule: str | None = None) -> list[SignRequest]:
        return [r for r in self.requests if r.denied and (rule is None or r.denied == rule)]

    def signed(self) -> list[SignRequest]:
        return [r for r in self.requests if r.denied is None]


class SimSigner:
    """The manager's ``Signer`` seam over a :class:`SimEnclave` (see the module docstring)."""

    def __init__(self, enclave: SimEnclave) -> None:
        self.enclave = enclave
        self._verifier = ReplyVerifier()
        self._busy = False
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # (rank, seq, turn)
        self._seq = itertools.count()

    async def _turn(self) -> None:
        """Wait until the (serial) enclave is ours: urgent requests first, then in order."""
        if not self._busy:
            self._busy = True
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (0 if URGENT.get() else 1, next(self._seq), turn))
        await turn

    def _next(self) -> None:
        while self._waiting:
            _, _, turn = heapq.heappop(self._waiting)
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> SignedTx:
        enclave = self.enclave
        fields = tx_from_dict(tx)
        sender_bytes = parse_address(sender, "sender")
        sender_hex = "0x" + sender_bytes.hex()
        body = body_items(fields)
        payload = signing_payload(fields, body)
        enclave.asked.append((enclave._clock(), sender_hex, fields.nonce, URGENT.get()))
        if enclave.down:
            await asyncio.sleep(0)
            raise SignerUnavailable("signer down (scripted)")
        if enclave.hang:
            await asyncio.sleep(enclave.timeout)
            raise SignerTimeout(f"sign_transaction: no reply within {enclave.timeout}s")
        if enclave.serial:
            await self._turn()
            try:
                await asyncio.sleep(enclave.latency)
                if enclave.down:
                    raise SignerUnavailable("signer down (scripted)")
                reply = enclave.handle(sender_hex, fields, payload)
            finally:
                self._next()
        else:
            await asyncio.sleep(enclave.latency)
            if enclave.down:  # went down while the request was in flight
                raise SignerUnavailable("signer down (scripted)")
            reply = enclave.handle(sender_hex, fields, payload)
        error = reply.get("error")
        if error is not None:
            raise remote_error(error)
        result = reply["result"]
        return self._verifier.verify(
            fields, keccak(payload), sender_bytes, result.get("raw"), result.get("hash"), body
        )

    async def sign_authorization(self, authorization: Mapping[str, Any], sender: str) -> Any:
        """An EIP-7702 authorization through the real handler and policy (``allowed_delegates``,
        its nonce protection), verified as ``SignerClient.sign_authorization`` verifies it."""
        enclave = self.enclave
        chain_id, address, nonce = parse_unsigned_authorization(authorization)
        sender_bytes = parse_address(sender, "sender")
        if enclave.down:
            await asyncio.sleep(0)
            raise SignerUnavailable("signer down (scripted)")
        await asyncio.sleep(enclave.latency)
        sender_hex = "0x" + sender_bytes.hex()
        params = {
            "sender": sender_hex,
            "authorization": {
                "chainId": hex(chain_id), "address": "0x" + address.hex(), "nonce": hex(nonce),
            },
        }  # fmt: skip
        reply = enclave.core.handle(
            {"id": 1, "method": "sign_authorization", "params": params}, enclave._clock()
        )
        if enclave.core.audit is not None:
            enclave.core.audit.commit()
        error = reply.get("error")
        if error is not None:
            raise remote_error(error)
        enclave.authorizations.append((sender_hex, chain_id, "0x" + address.hex(), nonce))
        return self._verifier.verify_authorization(
            chain_id, address, nonce, sender_bytes, reply["result"].get("signature")
        )

    async def audit_entries(self, from_seq: int, limit: int = 1000) -> dict[str, Any]:
        """``audit_entries`` through the real handler (``SignerClient.audit_entries``)."""
        enclave = self.enclave
        if enclave.down:
            raise SignerUnavailable("signer down (scripted)")
        await asyncio.sleep(enclave.latency)
        params = {"from_seq": from_seq, "limit": limit}
        reply = enclave.core.handle(
            {"id": 1, "method": "audit_entries", "params": params}, enclave._clock()
        )
        error = reply.get("error")
        if error is not None:
            raise remote_error(error)
        result: dict[str, Any] = reply["result"]
        return result

    async def advance_nonce_floor(self, chain_id: int, sender: str, nonce: int) -> None:
        if self.enclave.down:
            raise SignerUnavailable("signer down (scripted)")
        error = self.enclave.advance_floor(chain_id, sender, nonce).get("error")
        if error is not None:
            raise remote_error(error)
