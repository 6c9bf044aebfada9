"""The asyncio signer client: two persistent, pipelined connections (lanes) per signer.

The ordinary lane carries every request; the urgent lane carries those made inside
``signer_client.urgent()`` (a reorg reaction's re-signs, noops, presignatures, bumps, its auth
signatures). Its ``hello`` asks the enclave for the urgent lane, which the enclave answers ahead
of the ordinary lane's backlog (``enclave/server.py``). Each lane is handshaken alike: ``hello``
compared with the pins, attestation with its own nonce and channel key, and both lanes must be
bound to the same attested key.

Usage (one design, two spellings)::

    client = await SignerClient.connect("unix:///run/enclave.sock")   # connected, hello'd, attested
    signed = await client.sign_transaction(tx, sender)
    await client.close()

    async with SignerClient(url) as client:          # connects on enter, closes on exit
        ...

``SignerClient.connect(url)`` returns an open client; ``async with`` on it (or on an unopened one)
opens if needed and always closes. After a connection loss the client reconnects on the next
request, with jittered exponential backoff, re-running ``hello`` (and the attestation check when an
:class:`AttestationPolicy` is given) before any request is sent on the new connection.

Requests in flight when a connection dies are re-sent: signing is deterministic (RFC 6979), so a
re-sent request gets the identical transaction, never a second one. A per-request timeout raises
:class:`SignerTimeout` and resets the connection. Every reply goes through :class:`ReplyVerifier`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import coincurve

from signer_client import flashbots
from signer_client.attestation import AttestationPolicy, AttestationResult, verify_attestation
from signer_client.authorization import SignedAuthorization, parse_unsigned_authorization
from signer_client.channel import derive_mac_key, open_sealed
from signer_client.endpoints import Endpoint, connect_vsock_socket, parse_endpoint, set_nodelay
from signer_client.errors import (
    AttestationError,
    FrameTooLarge,
    HelloMismatch,
    PolicyDenied,
    ProtocolError,
    ReplyVerificationError,
    SignerError,
    SignerTimeout,
    SignerUnavailable,
    TruncatedFrame,
    TxFieldError,
    remote_error,
)
from signer_client.events import EventSink, SignerEvent, backoff
from signer_client.framing import FrameDecoder, encode_frame, parse_message
from signer_client.priority import (
    LOCKED,
    ORDINARY_LEVEL,
    REACTION,
    TICKET,
    URGENT,
    URGENT_RESERVE,
    Ticket,
)
from signer_client.protocol import (
    SignerInfo,
    SignerPins,
    check_hello,
    head_digest,
    hello_info_bytes,
    parse_hello,
)
from signer_client.secp import recover_uncompressed
from signer_client.signing import SignedTx
from signer_client.txcodec import (
    TxFields,
    body_items,
    keccak,
    parse_address,
    signing_payload,
    tx_from_dict,
)
from signer_client.verify import ReplyVerifier

__all__ = ["SignerClient"]


class _ConnectionLost(SignerUnavailable):
    """Internal: the connection died with the request in flight (safe to re-send)."""


#: Most frames one coalesced ``write`` carries (see :meth:`_Connection.send`).
COALESCE_FRAMES = 8

#: The lanes: indexes of ``SignerClient._lanes``.
ORDINARY, URGENT_LANE = 0, 1


class _Connection(asyncio.Protocol):
    """One stream to the signer: writes frames, resolves reply futures by id.

    Frames are coalesced per event-loop pass (:meth:`send`): the first frame of a pass is written
    at once, so a lone request (a reorg reaction's re-sign) leaves exactly as before; frames sent
    later in the same pass are queued and leave together in one ``write``, when
    :data:`COALESCE_FRAMES` have gathered or at the start of the next pass. A ``send`` syscall on
    a unix socket costs ~2 us (it also wakes the signer); joined, ~0.4 us a frame. The cap keeps
    the signer busy while we are still building the rest of a burst: flushing a whole burst only
    at the end of the pass left the two processes taking turns instead of working side by side
    (measured: wall per sign up ~20% at 100 in flight, for no less CPU than batches of 8).
    """

    def __init__(self, on_event: Callable[[str], None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.decoder = FrameDecoder()
        self.closed = False
        self._on_event = on_event
        self._error: SignerError | None = None
        # None: nothing written in this loop pass yet; a list: a flush is scheduled and frames
        # sent meanwhile wait in it.
        self._queued: list[bytes] | None = None
        # Set once attested with a client key: every reply must carry the channel MAC.
        self.mac_key: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        set_nodelay(transport)

    def send(self, frame: bytes) -> None:
        """Write ``frame`` now if it is the first of this loop pass, else with the next flush."""
        queued = self._queued
        if queued is not None:
            queued.append(frame)
            if len(queued) >= COALESCE_FRAMES:
                self._queued = []
                self.transport.write(b"".join(queued))  # type: ignore[union-attr]
            return
        self.transport.write(frame)  # type: ignore[union-attr]
        self._queued = []
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        queued, self._queued = self._queued, None
        # A closed connection's requests were failed with it and are re-sent on the next one.
        if queued and not self.closed:
            self.transport.write(queued[0] if len(queued) == 1 else b"".join(queued))  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        try:
            bodies = self.decoder.feed(data)
        except FrameTooLarge as exc:
            self._on_event(SignerEvent.FRAME_TOO_LARGE)
            self.abort(exc)
            return
        pending = self.pending
        mac_key = self.mac_key
        for body in bodies:
            if mac_key is not None:
                try:
                    body = open_sealed(mac_key, body)
                except ReplyVerificationError as exc:
                    # Not from the attested enclave (a relay answering by itself): nothing on
                    # this connection can be trusted any more.
                    self._on_event(SignerEvent.CHANNEL_INVALID)
                    self.abort(exc)
                    return
            try:
                message = parse_message(body)
            except ProtocolError as exc:
                self._on_event(SignerEvent.PROTOCOL_ERROR)
                self.abort(exc)
                return
            request_id = message.get("id")
            if request_id is not None and type(request_id) is not int:
                # Our ids are ints; a list or object here would not even be a dict key.
                self._on_event(SignerEvent.PROTOCOL_ERROR)
                self.abort(ProtocolError(f"reply id is not an integer: {request_id!r:.60}"))
                return
            fut = pending.pop(request_id, None)  # type: ignore[arg-type]
            if fut is None:
                self._on_event(SignerEvent.LATE_REPLY)
            elif not fut.done():
                fut.set_result(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        try:
            self.decoder.eof()
        except TruncatedFrame:
            self._on_event(SignerEvent.FRAME_TRUNCATED)
        self._on_event(SignerEvent.DISCONNECTED)
        error = self._error or _ConnectionLost(f"connection lost: {exc or 'closed by peer'}")
        self._fail_all(error)

    def abort(self, error: SignerError) -> None:
        """Fatal protocol violation: fail everything in flight with ``error`` and drop the link."""
        self._error = error
        self._fail_all(error)
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def _fail_all(self, error: SignerError) -> None:
        pending, self.pending = self.pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)


def _auth_header(info: SignerInfo | None, result: dict[str, Any], body: bytes) -> str:
    """Check a ``sign_auth`` reply against ``hello`` and the body; the header value."""
    if info is None or info.auth_address is None:
        raise ReplyVerificationError("auth_address", "the signer's hello names no auth key")
    expected = info.auth_address
    signature = result.get("signature")
    if not isinstance(signature, str) or not signature.startswith("0x") or len(signature) != 132:
        raise ReplyVerificationError("signature", "expected 65 bytes of 0x-hex")
    try:
        sig = bytes.fromhex(signature[2:])
        address = bytes.fromhex(expected.removeprefix("0x"))
        value = flashbots.header_value(address, sig)
    except ValueError as exc:
        raise ReplyVerificationError("signature", str(exc)) from None
    flashbots.recover_header(value, body)  # the auth key's, over this body
    if any(a.lower() == expected.lower() for a in info.addresses):
        raise ReplyVerificationError("auth_address", "the auth key is a transaction account")
    return value


def _ignore(kind: str) -> None:
    pass


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class SignerClient:
    """Client for the enclave signer (``vsock://``, ``unix://``, ``tcp://``).

    :param url: signer endpoint.
    :param timeout: seconds per request, reconnects and re-sends included.
    :param connect_timeout: seconds for one connection attempt (hello and attestation included).
    :param max_in_flight: requests outstanding at once; further callers wait for a slot.
    :param attestation: when set, every new connection must present a valid attestation document
        (pinned root, PCR0, fresh nonce) before it is used. ``None`` trusts the endpoint (dev).
    :param pins: compared with ``hello`` on every new connection before it is used (mode, policy
        hash, accounts, chain ids); a mismatch raises :class:`HelloMismatch` naming the field.
        With ``attestation`` set, replies are accepted only with the MAC of a channel keyed by
        ECDH with the attested key (``signer_client/channel.py``).
    :param on_event: called with a :class:`SignerEvent` kind on every failure / lifecycle event.
    :param backoff: factory of reconnect delay iterators (tests inject a deterministic one).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 2.0,
        connect_timeout: float = 2.0,
        max_in_flight: int = 256,
        attestation: AttestationPolicy | None = None,
        pins: SignerPins | None = None,
        on_event: EventSink | None = None,
        backoff: Callable[[], Iterator[float]] = backoff,
    ) -> None:
        self.url = url
        self.endpoint: Endpoint = parse_endpoint(url)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.attestation_policy = attestation
        self.pins = pins
        self._emit: EventSink = on_event if on_event is not None else _ignore
        self._backoff_factory = backoff
        # A request slot is a counter, not an ``asyncio.Semaphore``: ``async with`` a semaphore
        # costs ~1.2 us per request even when free (two coroutines); see _acquire_slot.
        self._max_in_flight = max_in_flight
        self._in_flight = 0
        # Waiters by level (signer_client.priority): a reaction's own requests, then the
        # lock-holding urgent ones (presignatures, bumps), then the ordinary ones; each first
        # come first served.
        self._waiters: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque(), deque())
        self._reaction_waiters = self._waiters[REACTION]
        self._urgent_waiters = self._waiters[LOCKED]
        self._slot_waiters = self._waiters[ORDINARY_LEVEL]
        # Two lanes, each its own connection, handshake and channel (DESIGN.md 6a): index
        # ORDINARY for everything, URGENT for requests made inside ``urgent()``, which the enclave
        # answers ahead of the ordinary connection's backlog (``enclave/server.py``: BATCH).
        self._lanes: list[_Connection | None] = [None, None]
        self._connect_locks = (asyncio.Lock(), asyncio.Lock())
        self._ids = itertools.count(1)
        self._verifier = ReplyVerifier()
        self._senders: dict[str | bytes, tuple[bytes, str]] = {}
        self._deadlines: dict[asyncio.Future[dict[str, Any]], float] = {}
        self._watchdog: asyncio.TimerHandle | None = None
        self._watch_at = math.inf
        self._closed = False
        self._reopen: asyncio.Task[None] | None = None  # the urgent lane, re-opened (_fallback)
        self.info: SignerInfo | None = None
        self.attested: AttestationResult | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> SignerClient:
        """Create a client and open its connection (hello + attestation) before returning."""
        client = cls(url, **kwargs)
        try:
            await client.open()
        except BaseException:
            await client.close()
            raise
        return client

    async def open(self) -> None:
        """Open both lanes (the urgent one too: a reaction must not pay a handshake)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_timeout
        await self._connected(deadline, ORDINARY)
        await self._connected(deadline, URGENT_LANE)

    @property
    def _conn(self) -> _Connection | None:
        """The ordinary lane's connection."""
        return self._lanes[ORDINARY]

    async def __aenter__(self) -> SignerClient:
        if not self.connected:
            await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._reopen is not None:
            self._reopen.cancel()
            self._reopen = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog, self._watch_at = None, math.inf
        lanes, self._lanes = self._lanes, [None, None]
        for conn in lanes:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
                conn.abort(SignerUnavailable("client closed"))

    # ------------------------------------------------------------ requests

    async def sign_transaction(
        self, tx: Mapping[str, Any] | TxFields, sender: str | bytes
    ) -> SignedTx:
        """Have the signer sign ``tx`` as ``sender``; return it only after full verification.

        ``tx`` is an eth-account style dict or, faster (no dict normalisation), a
        :class:`TxFields`. The request carries the unsigned signing payload (protocol 2); the
        enclave decodes it strictly, checks its policy on the decoded fields and signs its hash.
        """
        fields = tx if isinstance(tx, TxFields) else tx_from_dict(tx)
        sender_bytes, sender_hex = self._sender(sender)
        try:
            body = body_items(fields)
            payload = signing_payload(fields, body)
        except (OverflowError, TypeError, ValueError, AttributeError) as exc:
            # A TxFields built by hand with a negative or non-int quantity (dicts are checked).
            raise TxFieldError("tx", f"not encodable: {exc}") from exc
        params = {"sender": sender_hex, "payload": "0x" + payload.hex()}
        try:
            # keccak(payload) is computed once the request is written, while the signer works.
            result, msg_hash = await self._call("sign_transaction", params, payload)
        except PolicyDenied:
            self._emit(SignerEvent.POLICY_DENIED)
            raise
        try:
            signed = self._verifier.verify(
                fields, msg_hash, sender_bytes, result.get("raw"), result.get("hash"), body
            )
        except ReplyVerificationError:
            self._emit(SignerEvent.REPLY_INVALID)
            raise
        self._emit(SignerEvent.SIGNED)
        return signed

    async def sign_authorization(
        self, authorization: Mapping[str, Any], sender: str | bytes
    ) -> SignedAuthorization:
        """Have the signer sign an EIP-7702 authorization ``{chainId, address, nonce}`` as
        ``sender``; the enclave signs only delegations to its ``allowed_delegates``. Returned only
        after the signature is checked to be ``sender``'s over this very authorization; it goes
        into a type-4 ``authorizationList`` as it is (or as ``.as_dict()``)."""
        chain_id, address, nonce = parse_unsigned_authorization(authorization)
        sender_bytes, sender_hex = self._sender(sender)
        params = {
            "sender": sender_hex,
            "authorization": {
                "chainId": hex(chain_id), "address": "0x" + address.hex(), "nonce": hex(nonce),
            },
        }  # fmt: skip
        try:
            result, _ = await self._call("sign_authorization", params)
        except PolicyDenied:
            self._emit(SignerEvent.POLICY_DENIED)
            raise
        try:
            signed = self._verifier.verify_authorization(
                chain_id, address, nonce, sender_bytes, result.get("signature")
            )
        except ReplyVerificationError:
            self._emit(SignerEvent.REPLY_INVALID)
            raise
        self._emit(SignerEvent.SIGNED)
        return signed

    async def sign_auth(self, body: bytes) -> str:
        """The ``X-Flashbots-Signature`` header value for request ``body`` (DESIGN.md 5a), signed
        by the signer's auth key. Returned only after the signature is checked to recover the
        address the (attested) ``hello`` named as the auth key, over this very body, and that
        address is none of the signer's transaction accounts."""
        digest = flashbots.body_hash(body)
        if self.info is not None and self.info.auth_address is None:
            # Known from hello: no round trip, and counted as what it is (a deployment whose
            # auth = "flashbots" endpoints have no key to sign with), not as a policy denial.
            self._emit(SignerEvent.NO_AUTH_KEY)
            raise PolicyDenied("auth_key", "the signer's policy names no auth key (auth_address)")
        try:
            result, _ = await self._call("sign_auth", {"body_hash": "0x" + digest.hex()})
        except PolicyDenied as exc:
            no_key = exc.rule == "auth_key"
            self._emit(SignerEvent.NO_AUTH_KEY if no_key else SignerEvent.POLICY_DENIED)
            raise
        try:
            value = _auth_header(self.info, result, body)
        except ReplyVerificationError:
            self._emit(SignerEvent.REPLY_INVALID)
            raise
        self._emit(SignerEvent.SIGNED)
        return value

    def _sender(self, sender: str | bytes) -> tuple[bytes, str]:
        """``(20 bytes, lowercase 0x-hex)`` of a sender, parsed once per spelling."""
        if type(sender) is not str and type(sender) is not bytes:  # bytearray, memoryview
            address = parse_address(sender, "sender")
            return address, "0x" + address.hex()
        known = self._senders.get(sender)
        if known is None:
            address = parse_address(sender, "sender")
            known = (address, "0x" + address.hex())
            if len(self._senders) < 4096:  # a service has a handful of accounts; stay bounded
                self._senders[sender] = known
        return known

    async def hello(self) -> SignerInfo:
        return parse_hello((await self._call("hello", {}))[0])

    async def advance_nonce_floor(self, chain_id: int, sender: str, nonce: int) -> None:
        """Tell the enclave nonces below ``nonce`` of ``sender`` will never be signed again: it
        forgets and refuses them, so its nonce window (bounded by refusing, never by forgetting)
        follows an account whose nonce moved on outside it. It only ever rises."""
        params = {"chain": chain_id, "sender": sender.lower(), "nonce": nonce}
        await self._call("advance_nonce_floor", params)

    async def audit_head(self) -> dict[str, Any]:
        """``{seq, hash, signature}``; the signature is checked against the hello's log key (the
        attested one when attestation is on): raise ``ReplyVerificationError`` otherwise."""
        result = (await self._call("audit_head", {}))[0]
        try:
            seq, head, sig = int(result["seq"]), str(result["hash"]), str(result["signature"])
            signer = recover_uncompressed(bytes.fromhex(sig[2:]), head_digest(seq, head))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReplyVerificationError("audit_head", f"malformed head: {exc!r}") from exc
        expected = self.info.log_public_key.removeprefix("0x").lower() if self.info else None
        if signer is None or signer.hex() != expected:
            self._emit(SignerEvent.REPLY_INVALID)
            raise ReplyVerificationError("audit_head", "head not signed by the signer's log key")
        return result

    async def audit_entries(self, from_seq: int, limit: int = 1000) -> dict[str, Any]:
        """``{"entries": [...], "head": {seq, hash, signature}}``: the enclave's committed audit
        entries from ``from_seq`` on (at most ``limit``; the enclave caps it) and its signed head.
        Unverified here: ``broadcaster.audit`` checks every entry before keeping it."""
        return (await self._call("audit_entries", {"from_seq": from_seq, "limit": limit}))[0]

    async def _call(
        self, method: str, params: dict[str, Any], digest_of: bytes | None = None
    ) -> tuple[dict[str, Any], bytes]:
        """``(result, keccak(digest_of))``; the hash is computed after the request is written."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        ticket = TICKET.get()
        level = LOCKED if URGENT.get() else ORDINARY_LEVEL
        if ticket is not None:
            level = ticket.level
        if level == ORDINARY_LEVEL:
            if (
                self._in_flight < self._max_in_flight
                and not self._slot_waiters
                and not self._urgent_waiters
                and not self._reaction_waiters
            ):
                self._in_flight += 1
            else:
                await self._acquire_slot(level, ticket)
        elif (
            self._in_flight < self._max_in_flight + URGENT_RESERVE
            and not self._reaction_waiters
            and (level == REACTION or not self._urgent_waiters)
        ):
            self._in_flight += 1
        else:
            await self._acquire_slot(level, ticket)
        # A ticket promoted while it waited goes on the urgent lane too.
        urgent_now = level < ORDINARY_LEVEL or (ticket is not None and ticket.level < level)
        lane = URGENT_LANE if urgent_now else ORDINARY
        try:
            while True:
                conn = self._lanes[lane]
                if conn is None or conn.closed:
                    conn = self._fallback(lane)
                if conn is None:
                    conn = await self._connected(deadline, lane)
                try:
                    return await self._roundtrip(conn, method, params, deadline, digest_of)
                except _ConnectionLost:
                    if loop.time() >= deadline:
                        raise SignerTimeout(f"{method}: connection lost, no time left") from None
                    self._emit(SignerEvent.RETRY)
        finally:
            self._release_slot()

    async def _acquire_slot(self, level: int, ticket: Ticket | None = None) -> None:
        """Wait at ``level``, first come first served, until a finishing request hands us its
        slot (the higher levels are handed one first: :meth:`_release_slot`). Promoting
        ``ticket`` meanwhile (priority inheritance: a reaction waits for the nonce lock its
        holder holds) moves us to the reaction queue's tail."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        waiters[level].append(waiter)
        previous = move = None
        if ticket is not None and level > REACTION:
            previous = ticket.on_promote

            def move() -> None:
                if previous is not None:
                    previous()
                with contextlib.suppress(ValueError):
                    waiters[level].remove(waiter)
                    waiters[REACTION].append(waiter)
                    self._grant_free()

            ticket.on_promote = move
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed a slot just as we were cancelled: pass it on
            else:  # (a release may have dropped it already)
                for queue in waiters:
                    if waiter in queue:
                        queue.remove(waiter)
            raise
        finally:
            if ticket is not None and ticket.on_promote is move:
                ticket.on_promote = previous

    def _grant_free(self) -> None:
        """Hand the free urgent slots to the reaction queue (a waiter just promoted into it)."""
        waiters = self._reaction_waiters
        while waiters and self._in_flight < self._max_in_flight + URGENT_RESERVE:
            waiter = waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)

    def _release_slot(self) -> None:
        # The slot goes straight to the next caller: a reaction's first, then a lock holder's,
        # then an ordinary one only while the slots in use are within max_in_flight (the urgent
        # reserve is not theirs).
        for level, waiters in enumerate(self._waiters):
            if level == ORDINARY_LEVEL and self._in_flight > self._max_in_flight:
                break
            while waiters:
                waiter = waiters.popleft()
                if not waiter.done():
                    waiter.set_result(None)
                    return
        self._in_flight -= 1

    async def _roundtrip(
        self,
        conn: _Connection,
        method: str,
        params: dict[str, Any],
        deadline: float,
        digest_of: bytes | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        loop = asyncio.get_running_loop()
        request_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        conn.pending[request_id] = fut
        frame = encode_frame({"id": request_id, "method": method, "params": params})
        conn.send(frame)
        # Hashing here overlaps it with the signer's work instead of adding it to the latency.
        digest = b"" if digest_of is None else keccak(digest_of)
        deadlines = self._deadlines
        deadlines[fut] = deadline
        if deadline < self._watch_at:
            self._arm_watchdog(loop, deadline)
        try:
            reply = await fut
        except TimeoutError:
            conn.pending.pop(request_id, None)
            self._emit(SignerEvent.TIMEOUT)
            self._drop(conn, SignerTimeout(f"{method}: no reply within {self.timeout}s"))
            raise SignerTimeout(f"{method}: no reply within {self.timeout}s") from None
        finally:
            deadlines.pop(fut, None)
        error = reply.get("error")
        if error is not None:
            exc = remote_error(error)
            if not isinstance(exc, PolicyDenied):
                self._emit(SignerEvent.REMOTE_ERROR)
            raise exc
        result = reply.get("result")
        if type(result) is not dict:
            self._emit(SignerEvent.PROTOCOL_ERROR)
            raise ProtocolError(f"{method}: reply has neither result object nor error")
        return result, digest

    # One timer for all requests in flight instead of one per request: arming and cancelling a
    # loop timer costs ~2 us per request, a dict entry ~0.1 us. It fires at the earliest deadline.

    def _arm_watchdog(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        self._watch_at = when
        self._watchdog = loop.call_at(when, self._on_watchdog, loop)

    def _on_watchdog(self, loop: asyncio.AbstractEventLoop) -> None:
        self._watchdog, self._watch_at = None, math.inf
        deadlines = self._deadlines
        # uvloop's timers have millisecond resolution: treat "due within 1 ms" as due.
        now = loop.time() + 0.001
        for fut in [f for f, when in deadlines.items() if when <= now]:
            del deadlines[fut]
            _expire(fut)
        if deadlines:
            self._arm_watchdog(loop, min(deadlines.values()))

    def _drop(self, conn: _Connection, error: SignerError) -> None:
        """Reset a connection we no longer trust (timeout): in-flight requests are re-sent."""
        lanes = self._lanes
        for lane in (ORDINARY, URGENT_LANE):
            if lanes[lane] is conn:
                lanes[lane] = None
        conn.abort(_ConnectionLost(str(error)))

    # ------------------------------------------------------------ connecting

    def _fallback(self, lane: int) -> _Connection | None:
        """The urgent lane is down but the ordinary one is up: the ordinary connection, now, and
        the urgent lane re-opened in the background. A reaction never waits for a handshake (nor
        for what a new connection makes the service do first: its log re-checked before
        anything is signed, ``broadcaster.audit.gate``), which stalled a sender's later
        re-signs until the tip moved and their dropped bytes went out again instead."""
        if lane != URGENT_LANE:
            return None
        conn = self._lanes[ORDINARY]
        if conn is None or conn.closed:
            return None
        if self._reopen is None or self._reopen.done():
            self._reopen = asyncio.get_running_loop().create_task(self._reopen_urgent())
        return conn

    async def _reopen_urgent(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(SignerError):  # counted by _establish; retried on next use
            await self._connected(loop.time() + self.connect_timeout, URGENT_LANE, both=False)

    async def _connected(
        self, deadline: float, lane: int = ORDINARY, *, both: bool = True
    ) -> _Connection:
        """The lane's connection, opened if need be; ``both``: the other lane too, at the same
        moment (the first request opens both, so a reaction's first urgent request does not
        pay the urgent lane's handshake)."""
        conn = self._lanes[lane]
        if conn is not None and not conn.closed:
            return conn
        if self._closed:
            raise SignerUnavailable("client is closed")
        async with self._connect_locks[lane]:
            conn = self._lanes[lane]
            if conn is None or conn.closed:
                conn = await self._establish(deadline, lane)
                self._lanes[lane] = conn
        other = self._lanes[1 - lane]
        if both and (other is None or other.closed):
            try:
                await self._connected(deadline, 1 - lane, both=False)
            except AttestationError:
                raise  # the lanes reach different enclaves, or a pin differs: fail closed
            except SignerError:
                pass  # unreachable now: this lane serves meanwhile (_fallback), counted
        return conn

    async def _establish(self, deadline: float, lane: int = ORDINARY) -> _Connection:
        loop = asyncio.get_running_loop()
        delays = self._backoff_factory()
        last: Exception | None = None
        while True:
            budget = min(self.connect_timeout, deadline - loop.time())
            if budget <= 0:
                raise SignerUnavailable(f"{self.endpoint}: cannot connect ({last})") from last
            try:
                conn = await asyncio.wait_for(self._open_stream(), budget)
                await self._handshake(conn, loop.time() + budget, lane)
            except HelloMismatch:
                self._emit(SignerEvent.HELLO_MISMATCH)
                raise
            except AttestationError:
                self._emit(SignerEvent.ATTESTATION_FAILED)
                raise
            except (OSError, TimeoutError, SignerError) as exc:
                last = exc
                self._emit(SignerEvent.CONNECT_FAILED)
                await asyncio.sleep(min(next(delays), max(0.0, deadline - loop.time())))
                continue
            self._emit(SignerEvent.CONNECTED)
            return conn

    async def _open_stream(self) -> _Connection:
        loop = asyncio.get_running_loop()
        ep = self.endpoint
        conn = _Connection(self._emit)
        if ep.scheme == "unix":
            await loop.create_unix_connection(lambda: conn, ep.path)
        elif ep.scheme == "tcp":
            await loop.create_connection(lambda: conn, ep.host, ep.port)
        else:
            sock = await connect_vsock_socket(ep.cid, ep.port, self.connect_timeout)
            await loop.create_connection(lambda: conn, sock=sock)
        return conn

    async def _handshake(self, conn: _Connection, deadline: float, lane: int = ORDINARY) -> None:
        """``hello`` (compared with the pins), then the attestation and the channel key, on
        either lane alike; the urgent lane's ``hello`` asks the enclave for its lane."""
        try:
            hello_params = {"lane": "urgent"} if lane == URGENT_LANE else {}
            hello_result, _ = await self._roundtrip(conn, "hello", hello_params, deadline)
            info = parse_hello(hello_result)
            if self.pins is not None:
                check_hello(info, self.pins)
            policy = self.attestation_policy
            if policy is not None:
                nonce = os.urandom(32)
                ephemeral = coincurve.PrivateKey()
                doc, _ = await self._roundtrip(
                    conn,
                    "attestation",
                    {
                        "nonce": "0x" + nonce.hex(),
                        "client_key": "0x" + ephemeral.public_key.format(compressed=True).hex(),
                    },
                    deadline,
                )
                document = doc.get("document")
                if not isinstance(document, str) or not document.startswith("0x"):
                    raise AttestationError("format", "attestation reply has no 0x-hex document")
                attested = verify_attestation(
                    bytes.fromhex(document[2:]),
                    policy,
                    nonce=nonce,
                    user_data=keccak(hello_info_bytes(hello_result)),
                )
                if attested.public_key.hex() != info.log_public_key.removeprefix("0x").lower():
                    raise HelloMismatch(
                        "public_key", "the attested public key is not the hello's log key"
                    )
                other = self._lanes[1 - lane]
                if (
                    other is not None
                    and not other.closed
                    and self.attested is not None
                    and attested.public_key != self.attested.public_key
                ):
                    # Both lanes must reach the one enclave: two genuine enclaves would keep
                    # two memories of signed nonces (nonce protection split in half).
                    raise HelloMismatch(
                        "public_key", "the two lanes reach enclaves with different attested keys"
                    )
                try:
                    conn.mac_key = derive_mac_key(ephemeral.secret, attested.public_key, nonce)
                except ValueError as exc:
                    raise AttestationError("public_key", str(exc)) from exc
                self.attested = attested
                self._emit(SignerEvent.ATTESTED)
            self.info = info
        except BaseException:
            conn.abort(SignerUnavailable("handshake failed"))
            raise

    @property
    def connected(self) -> bool:
        """Both lanes open (a lost one reconnects on its next request)."""
        return all(c is not None and not c.closed for c in self._lanes)
