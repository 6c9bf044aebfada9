"""The intent API: JSON-RPC 2.0 over HTTP and websocket on one port (DESIGN.md §7).

Methods: ``broadcaster_sendIntent``, ``broadcaster_getIntent``, ``broadcaster_cancelIntent``,
``broadcaster_sendBundle`` (:mod:`broadcaster.api.bundles`; ``broadcaster_getIntent`` and
``broadcaster_cancelIntent`` also take a bundle id), ``broadcaster_subscribe`` /
``broadcaster_unsubscribe`` (status notifications as
``broadcaster_subscription`` messages; websocket only), and the Ethereum methods bots use:
``eth_chainId``, ``eth_blockNumber``, ``eth_accounts``, ``eth_sendTransaction`` (we sign),
``eth_sendRawTransaction`` (signed elsewhere: tracked and rebroadcast byte for byte),
``eth_subscribe("newHeads")`` / ``eth_unsubscribe`` (websocket only; ethers' and viem's websocket
providers wait for blocks this way), and read-only ``eth_`` methods passed through to an RPC.
``eth_getTransactionReceipt`` and ``eth_getTransactionByHash`` of a hash any intent ever had
answer about its canonical attempt (:mod:`broadcaster.api.continuity`). Anything else: ``-32601``.

Access (:mod:`broadcaster.api.access`): full-access tokens and tenants; the transport
(:mod:`broadcaster.api.transport`) authenticates, this module scopes every method.
Limits: a message over ``max_message_bytes`` gets a ``-32600`` answer; each token has a token
bucket (``-32005`` when empty) and at most ``max_connections_per_token`` connections. Errors
follow JSON-RPC 2.0: ``-32700`` parse error, ``-32600`` invalid request, ``-32601`` method not
found, ``-32602`` invalid params (the message names the field or the raw-transaction rule),
``-32000`` could not be carried out, ``-32010`` not accepting intents (:data:`NOT_ACCEPTING`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from broadcaster.api.access import Access, Principals
from broadcaster.api.bundles import RawSlot, parse_bundle
from broadcaster.api.continuity import canonical_attempt
from broadcaster.api.envelope import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    NOT_ACCEPTING,
    RATE_LIMITED,
    SERVER_ERROR,
    ApiLimits,
    Connection,
    Dispatcher,
    RpcError,
)
from broadcaster.api.intents import (
    IntentDefaults,
    ParamError,
    checksum_address,
    idempotency_conflict,
    intent_json,
    new_intent_id,
    parse_data,
    parse_intent,
    parse_private,
    parse_quantity,
)
from broadcaster.api.rawtx import check_authorities, check_nonce_gap, check_raw_transaction
from broadcaster.api.subscriptions import Subscriptions
from broadcaster.api.transport import ApiServer
from broadcaster.rpc.chain_reader import ChainReadError, NodeError
from broadcaster.tx.blobs import BlobError, SidecarBusy, kzg_slot, prepare_sidecar
from broadcaster.tx.bundle_plans import (
    BUNDLE_ID_PREFIX,
    BundleSpec,
    bundle_status,
    encode_spec,
)
from broadcaster.tx.manager import TxManager
from broadcaster.tx.routing import Router
from nonce import Attempt, AttemptReason, Intent, TxRecord, TxState
from nonce.errors import DuplicateIdempotencyKey, InvalidIntent, NonceError, NonceInUse
from signer_client.txcodec import keccak

__all__ = ["NOT_ACCEPTING", "PASS_THROUGH", "ApiLimits", "IntentApi", "intent_json"]

_Client = Connection  # the name the tests and fuzzers have always used

log = logging.getLogger(__name__)

# Read-only methods passed through to an RPC so unchanged bots can fill gas and fees.
PASS_THROUGH = frozenset(
    {
        "eth_estimateGas",
        "eth_maxPriorityFeePerGas",
        "eth_gasPrice",
        "eth_feeHistory",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getTransactionCount",
        "eth_getTransactionReceipt",
        "eth_getTransactionByHash",
        "eth_getBalance",
        "eth_getCode",
        "eth_call",
        "net_version",
        "web3_clientVersion",
    }
)
_CONTINUITY = frozenset({"eth_getTransactionReceipt", "eth_getTransactionByHash"})

_TX_HASH = re.compile(r"0x[0-9a-fA-F]{64}")
# What an intent id can look like: ours (32 hex digits) or a raw transaction's ("raw-" + hash).
# Anything else cannot be in the journal, so it is never looked up on disk.
_INTENT_ID = re.compile(r"[0-9a-f]{32}|raw-[0-9a-f]{64}")
_GIVEN_UP = frozenset({TxState.CANCELLED, TxState.EXPIRED, TxState.FAILED})
_BUNDLES_KEPT = 65_536  # bundle ids broadcaster_getIntent still answers (oldest forgotten first)


class IntentApi(Dispatcher):
    """Serves the API for one :class:`TxManager`.

    ``intake`` is the "accepting intents?" gate: ``None`` to accept, else the reason to refuse
    (``-32010``, the reason as message); a standby instance answers so, naming its leader.
    """

    def __init__(
        self,
        manager: TxManager,
        *,
        chain_id: int,
        accounts: Sequence[str],
        tokens: Sequence[str],
        tenants: Sequence[tuple[str, str, Sequence[str]]] = (),
        limits: ApiLimits | None = None,
        tip_number: Callable[[], int | None] = lambda: None,
        passthrough: Callable[..., Awaitable[Any]] | None = None,
        on_intent: Callable[[str], None] = lambda status: None,
        priority_fee: int = 1_000_000_000,
        max_gap_fill: int = 4,
        subscriptions: Subscriptions | None = None,
        intake: Callable[[], str | None] = lambda: None,
        routing: tuple[bool, bool, bool] = (False, False, True),
        router: Router | None = None,
    ) -> None:
        """``routing``: ``([routing] private, any private/builder rpc, any public rpc)``;
        ``router``: where ``broadcaster_sendBundle`` registers bundles (builders only)."""
        if not tokens and not tenants:
            raise ValueError("the API needs at least one token or tenant")
        self.manager = manager
        self.chain_id = chain_id
        self.accounts = [a.lower() for a in accounts]
        super().__init__(limits or ApiLimits(), on_intent)
        self.principals = Principals(tokens, tenants)
        self._tip_number = tip_number
        self._passthrough = passthrough
        self._priority_fee = priority_fee  # [fees] priority_fee_wei: the tip of intents without one
        self._max_gap_fill = max_gap_fill
        self._intake = intake
        self._routing = routing
        self._router = router
        self._bundles: dict[str, BundleSpec] = {}  # by id, for getIntent / cancelIntent
        self._disk = asyncio.Semaphore(self.limits.disk_lookups)
        # Built by the service before the manager (its observers notify there); or our own.
        self.subscriptions = subscriptions if subscriptions is not None else Subscriptions()
        self._methods = {
            "broadcaster_sendIntent": self._send_intent,
            "broadcaster_getIntent": self._get_intent,
            "broadcaster_cancelIntent": self._cancel_intent,
            "broadcaster_sendBundle": self._send_bundle,
            "broadcaster_subscribe": self._subscribe,
            "broadcaster_unsubscribe": self._unsubscribe,
            "eth_chainId": self._chain_id,
            "eth_blockNumber": self._block_number,
            "eth_sendTransaction": self._eth_send_transaction,
            "eth_sendRawTransaction": self._eth_send_raw_transaction,
            "eth_accounts": self._eth_accounts,
            "eth_subscribe": self._eth_subscribe,
            "eth_unsubscribe": self._unsubscribe,
        }

    # -- server ----------------------------------------------------------------------------------

    async def serve(self, host: str, port: int) -> ApiServer:
        """Start listening; the caller owns the returned server (``close()``, ``wait_closed()``)."""
        return await ApiServer(self, self._on_intent).start(host, port)

    def connection(
        self, ws: Any, token: str, access: Access, transport: str = "websocket"
    ) -> Connection:
        return Connection(ws, token, self.limits, access, transport)

    async def _other(self, client: Connection, method: str, params: Any) -> Any:
        if method in _CONTINUITY and self._passthrough is not None:
            return await self._continuity(client, method, params)
        if method in PASS_THROUGH and self._passthrough is not None:
            return await self._pass(method, params if isinstance(params, list) else [])
        return await super()._other(client, method, params)

    # -- helpers ---------------------------------------------------------------------------------

    async def _pass(self, method: str, params: list[Any]) -> Any:
        """``method`` answered by the node (``passthrough`` is called as ``ChainReader.call``:
        ``(method, *params)``)."""
        assert self._passthrough is not None
        try:
            return await self._passthrough(method, *params)
        except NodeError as exc:  # the node's own answer (a revert, a bad parameter): pass it on
            raise RpcError(exc.code, exc.message, exc.data) from exc
        except ChainReadError as exc:
            raise RpcError(SERVER_ERROR, f"{method}: no node answered ({exc})") from exc

    def _defaults(self, client: Connection) -> IntentDefaults:
        return IntentDefaults(
            chain_id=self.chain_id,
            accounts=client.access.senders(self.accounts),
            base_fee=self.manager.base_fee,
            priority_fee=self._priority_fee,
            private=self._routing[0],
            private_routes=self._routing[1],
            public_routes=self._routing[2],
            managed=self.accounts,
        )

    def _check_intake(self) -> None:
        refusal = self._intake()
        if refusal is not None:
            self._on_intent("rejected")
            raise RpcError(NOT_ACCEPTING, refusal)

    def _own(self, client: Connection, record: TxRecord | None) -> TxRecord | None:
        """``record`` if the caller may see it; otherwise as if it did not exist."""
        return record if record is not None and client.access.owns(record) else None

    async def _submit(self, client: Connection, intent: Intent, params: Any = None) -> TxRecord:
        self._check_intake()
        try:
            with kzg_slot() if intent.blobs else contextlib.nullcontext():
                async with client.admission:
                    if intent.blobs:
                        # KZG off the event loop before the intent takes a nonce, in its turn:
                        # a connection's intents get nonces in the order they arrived
                        await prepare_sidecar(intent.blobs)
                    record = await self.manager.admit(intent)
            await self.manager.complete(record)
        except BlobError as exc:
            self._on_intent("rejected")
            raise RpcError(INVALID_PARAMS, f"invalid params: blobs: {exc}") from exc
        except SidecarBusy as exc:
            self._on_intent("rejected")
            raise RpcError(RATE_LIMITED, f"blobs: {exc}") from exc
        except DuplicateIdempotencyKey as exc:
            self._on_intent("duplicate")
            earlier = exc.record
            if not client.access.owns(earlier):
                # Keys are scoped per tenant, so this is only reachable through a key someone
                # else's namespace holds: refuse without naming (or handing over) that intent.
                raise RpcError(
                    INVALID_PARAMS,
                    "invalid params: key: already used by another request; use a new key",
                ) from exc
            differs = idempotency_conflict(params, intent, earlier.intent)
            if differs is not None:
                raise RpcError(
                    INVALID_PARAMS,
                    f"invalid params: key: already used for intent {earlier.intent.id} with a "
                    f"different {differs}: a key names one request; use a new key for a new one",
                    intent_json(earlier),
                ) from exc
            return earlier
        except InvalidIntent as exc:
            self._on_intent("rejected")
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc}") from exc
        except NonceError as exc:
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        except RuntimeError as exc:  # shutting down
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        self._on_intent("accepted")
        if record.state.value == "failed":
            raise RpcError(
                SERVER_ERROR,
                f"intent failed: {record.state_reason}",
                intent_json(record),
            )
        return record

    async def _lookup(self, client: Connection, wanted: str) -> TxRecord | None:
        """The caller's record named by ``wanted``: an intent id, or any attempt's hash."""
        manager = self.manager
        record = manager.book.find_intent(wanted)
        if record is None and _TX_HASH.fullmatch(wanted):
            # Any attempt's transaction hash names its intent too (what eth_sendTransaction
            # gave the bot), while the record is in memory.
            record = manager.book.by_hash(bytes.fromhex(wanted[2:]))
        if record is None and _INTENT_ID.fullmatch(wanted):
            # Not in memory: perhaps evicted to the journal. A bounded number of these disk
            # reads at once (they run in the default executor, which the signer's vsock
            # connect needs too): a flood of made-up ids waits here instead of filling it.
            async with self._disk:
                record = await manager.find(wanted)
        return self._own(client, record)

    async def _record(self, client: Connection, params: Any) -> TxRecord:
        if isinstance(params, list):
            if len(params) != 1:
                raise ParamError("params", "expected [id]")
            params = params[0]
        if isinstance(params, dict):
            params = params.get("id")
        if type(params) is not str or not params:
            raise ParamError("id", "expected the intent id string")
        record = await self._lookup(client, params)
        if record is None:
            raise RpcError(
                INVALID_PARAMS, f"invalid params: id: no intent {params!r:.100} is known here"
            )
        return record

    # -- broadcaster_* -------------------------------------------------------------------------

    async def _send_intent(self, client: Connection, params: Any) -> dict[str, Any]:
        intent = parse_intent(params, self._defaults(client))
        scoped = client.access.scoped_key(intent.key)
        if scoped != intent.key:
            intent = _replace_key(intent, scoped)
        record = await self._submit(client, intent, params)
        out = intent_json(record)
        return {k: out[k] for k in ("id", "from", "nonce", "hash", "status")}

    async def _get_intent(self, client: Connection, params: Any) -> dict[str, Any]:
        spec = await self._bundle_named(client, params)
        if spec is not None:
            return await self._bundle_json(client, spec)
        return self._member_json(await self._record(client, params))

    async def _cancel_intent(self, client: Connection, params: Any) -> dict[str, Any]:
        spec = await self._bundle_named(client, params)
        record = None
        if spec is None:
            record = await self._record(client, params)
            spec = self._bundle_of(record)
        self._check_intake()  # a cancel signs a noop: only the instance that sends may
        if spec is None:
            assert record is not None
            try:
                await self.manager.cancel(record)
            except NonceError as exc:
                raise RpcError(SERVER_ERROR, str(exc), intent_json(record)) from exc
            return intent_json(record)
        # A bundle is atomic: cancelling it or any member cancels every member (each one's
        # noop takes its nonce); the router sends eth_cancelBundle on the first.
        router = self._router
        for member in spec.members:
            found = await self._lookup(client, member)
            if found is None or found.settled or found.state in _GIVEN_UP:
                continue
            if router is not None and not router.claim_cancel(member):
                continue  # already being cancelled (its bundle died): one noop per nonce
            try:
                await self.manager.cancel(found)
            except BaseException as exc:
                if router is not None:
                    router.release_cancel(member)
                if isinstance(exc, NonceError):
                    raise RpcError(SERVER_ERROR, str(exc), self._member_json(found)) from exc
                raise
        if record is not None:
            return self._member_json(record)
        return await self._bundle_json(client, spec)

    # -- bundles (DESIGN.md 5a) -------------------------------------------------------------------

    async def _send_bundle(self, client: Connection, params: Any) -> dict[str, Any]:
        router = self._router
        parsed = parse_bundle(
            params,
            self._defaults(client),
            ours=self.accounts,
            tip=self._tip_number(),
            builders=router is not None and router.builders,
        )
        assert router is not None
        self._check_intake()
        spec = BundleSpec(
            BUNDLE_ID_PREFIX + new_intent_id(),
            tuple(s.raw if isinstance(s, RawSlot) else s.id for s in parsed.slots),
            parsed.first_block,
            parsed.max_block,
            parsed.reverting,
        )
        # Journaled before the members (the same flush makes it durable with them: a restart
        # re-targets it), registered before them (their attempts build the bundle).
        self.manager.open_bundle(spec.id, encode_spec(spec))
        router.add_bundle(spec)
        self._remember(spec)
        records: dict[str, TxRecord] = {}
        try:
            for intent in parsed.intents:
                records[intent.id] = await self._submit(client, intent)
        except BaseException:
            # Nothing was sent (the bundle waits for its last member): it is dead -- a member
            # admitted but signed later (the request was cancelled mid-way) is never sent
            # alone -- and the nonces the members already took are given back (their noops).
            router.kill_bundle(spec.id)
            self._bundles.pop(spec.id, None)
            for record in records.values():
                if record.settled or record.state in _GIVEN_UP:
                    continue
                if not router.claim_cancel(record.intent.id):
                    continue  # kill_bundle's cancel has it
                try:
                    await self.manager.cancel(record)
                except (NonceError, RuntimeError):
                    router.release_cancel(record.intent.id)
                    log.warning("bundle %s: member %s not cancelled", spec.id, record.intent.id)
            raise
        hashes: list[str | None] = []
        for slot in parsed.slots:
            if isinstance(slot, RawSlot):
                hashes.append("0x" + slot.hash.hex())
                continue
            latest = records[slot.id].latest
            hashes.append(None if latest is None else "0x" + latest.hash.hex())
        return {"id": spec.id, "hashes": hashes, "intents": list(spec.members)}

    def restore_bundle(self, spec: BundleSpec) -> None:
        """A bundle reloaded from the journal at start-up: answerable again by its id."""
        self._remember(spec)

    def _remember(self, spec: BundleSpec) -> None:
        self._bundles[spec.id] = spec
        while len(self._bundles) > _BUNDLES_KEPT:
            del self._bundles[next(iter(self._bundles))]

    def _bundle_of(self, record: TxRecord) -> BundleSpec | None:
        router = self._router
        bundle_id = router.member_of.get(record.intent.id) if router is not None else None
        return None if bundle_id is None else self._bundles.get(bundle_id)

    def _member_json(self, record: TxRecord) -> dict[str, Any]:
        out = intent_json(record)
        spec = self._bundle_of(record)
        if spec is not None:
            out["bundle"] = spec.id
        return out

    async def _bundle_named(self, client: Connection, params: Any) -> BundleSpec | None:
        """The bundle ``params`` names (``[id]`` or ``{id}``), if it is one the caller owns."""
        wanted = params[0] if isinstance(params, list) and len(params) == 1 else params
        if isinstance(wanted, dict):
            wanted = wanted.get("id")
        if type(wanted) is not str or not wanted.startswith(BUNDLE_ID_PREFIX):
            return None
        spec = self._bundles.get(wanted)
        if spec is not None:
            for member in spec.members:
                if await self._lookup(client, member) is None:
                    spec = None  # another tenant's (or forgotten): as if unknown
                    break
        if spec is None:
            raise RpcError(
                INVALID_PARAMS, f"invalid params: id: no bundle {wanted!r:.100} is known here"
            )
        return spec

    async def _bundle_json(self, client: Connection, spec: BundleSpec) -> dict[str, Any]:
        """The bundle's status (:func:`~broadcaster.tx.bundle_plans.bundle_status` of its
        members'), its members (as ``broadcaster_getIntent`` answers them, in order), the
        current hash of every transaction in bundle order and its ``replacementUuid``."""
        members: dict[str, dict[str, Any]] = {}
        for member in spec.members:
            record = await self._lookup(client, member)
            if record is not None:
                members[member] = self._member_json(record)
        hashes: list[str | None] = []
        for slot in spec.slots:
            if isinstance(slot, bytes):
                hashes.append("0x" + keccak(slot).hex())
            else:
                hashes.append(members[slot]["hash"] if slot in members else None)
        return {
            "id": spec.id,
            "status": bundle_status([m["status"] for m in members.values()]),
            "intents": list(members.values()),
            "hashes": hashes,
            "replacementUuid": spec.uuid,
        }

    def _websocket_only(self, client: Connection, method: str) -> None:
        if client.transport != "websocket":
            raise RpcError(
                METHOD_NOT_FOUND,
                f"{method} needs a websocket (notifications cannot be sent over HTTP): "
                "connect to ws://host:port/TOKEN",
            )

    def _check_room(self, client: Connection) -> None:
        if self.subscriptions.count(client) >= self.limits.max_subscriptions:
            raise RpcError(
                SERVER_ERROR,
                f"too many subscriptions on this connection (at most "
                f"{self.limits.max_subscriptions}): broadcaster_unsubscribe one first",
            )

    async def _subscribe(self, client: Connection, params: Any) -> str:
        self._websocket_only(client, "broadcaster_subscribe")
        ids: frozenset[str] | None = None
        if isinstance(params, list) and params:
            wanted = params[0]
            if isinstance(wanted, str):
                wanted = [wanted]
            if not isinstance(wanted, list) or not all(isinstance(i, str) for i in wanted):
                raise ParamError("params", "expected [] (all intents) or [[intent ids]]")
            if not wanted:  # would silently match nothing, forever
                raise ParamError("params[0]", "no intent ids: pass [] to follow all intents")
            if len(wanted) > 1024:
                raise ParamError("params[0]", "at most 1024 intent ids per subscription")
            resolved = set()
            for item in wanted:
                if not client.access.full or _TX_HASH.fullmatch(item):
                    # A tenant follows only its own intents, named by id or any hash; a hash
                    # is resolved to the intent it names.
                    record = await self._lookup(client, item)
                    if record is None:
                        raise RpcError(
                            INVALID_PARAMS,
                            f"invalid params: params[0]: no intent {item!r:.100} is known here",
                        )
                    resolved.add(record.intent.id)
                else:
                    resolved.add(item)  # full access may follow an id before it exists
            ids = frozenset(resolved)
        self._check_room(client)
        return self.subscriptions.subscribe(client, ids)

    async def _unsubscribe(self, client: Connection, params: Any) -> bool:
        sub_id = params[0] if isinstance(params, list) and params else params
        return self.subscriptions.unsubscribe(client, sub_id) if isinstance(sub_id, str) else False

    # -- eth_* -----------------------------------------------------------------------------------

    async def _eth_subscribe(self, client: Connection, params: Any) -> str:
        self._websocket_only(client, "eth_subscribe")
        kind = params[0] if isinstance(params, list) and params else None
        if kind != "newHeads":
            raise ParamError("params[0]", 'only "newHeads" is served here')
        self._check_room(client)
        return self.subscriptions.subscribe_heads(client)

    async def _chain_id(self, client: Connection, params: Any) -> str:
        return hex(self.chain_id)

    async def _block_number(self, client: Connection, params: Any) -> str:
        tip = self._tip_number()
        if tip is None and self._passthrough is not None:
            # No new head since start (an idle chain): ask the node rather than fail the bot.
            number = await self._pass("eth_blockNumber", [])
            if isinstance(number, str):
                return number
        if tip is None:
            raise RpcError(SERVER_ERROR, "no block seen yet: the node has not sent a head")
        return hex(tip)

    async def _eth_accounts(self, client: Connection, params: Any) -> list[str]:
        return [checksum_address(a) for a in client.access.senders(self.accounts)]

    async def _continuity(self, client: Connection, method: str, params: Any) -> Any:
        """``eth_getTransactionReceipt`` / ``eth_getTransactionByHash`` of a hash an intent of
        the caller's ever had: asked about its canonical attempt (:mod:`.continuity`)."""
        params = params if isinstance(params, list) else []
        if len(params) == 1 and type(params[0]) is str and _TX_HASH.fullmatch(params[0]):
            asked = bytes.fromhex(params[0][2:])
            record = self._own(client, self.manager.book.by_hash(asked))
            if record is not None:
                attempt = canonical_attempt(record, asked)
                if attempt is None:
                    return None
                if method == "eth_getTransactionReceipt":
                    return await self._canonical_receipt(record, attempt)
                answer = await self._pass(method, ["0x" + attempt.hash.hex()])
                if answer is None and attempt.hash != asked and record.included_hash is None:
                    # The node never saw the latest attempt (sent only to private endpoints,
                    # or not yet): the hash asked about may still be in its pool.
                    answer = await self._pass(method, params)
                if _stale(answer, record, attempt):
                    return None
                return answer
        return await self._pass(method, params)

    async def _canonical_receipt(self, record: TxRecord, attempt: Attempt) -> Any:
        """The node's receipt of ``attempt`` only if it is the attempt our canonical block
        holds, *in that block*: not included (yet), or a payload whose nonce a noop took (a
        cancel), is ``null``; so is a receipt a lagging node still has from an abandoned block
        (it may even say ``status: 1`` for a trade the canonical chain never made)."""
        block = record.block
        if record.included_hash is None or attempt.hash != record.included_hash or block is None:
            return None
        answer = await self._pass("eth_getTransactionReceipt", ["0x" + attempt.hash.hex()])
        found = answer.get("blockHash") if isinstance(answer, Mapping) else None
        if not isinstance(found, str) or found.lower() != block.hash.lower():
            return None  # the node has not (yet) the block we call canonical
        return answer

    async def _eth_send_transaction(self, client: Connection, params: Any) -> str:
        tx = params[0] if isinstance(params, list) and len(params) == 1 else params
        if not isinstance(tx, Mapping):
            raise ParamError("params", "expected [transaction object]")
        tx = dict(tx)
        tx.pop("nonce", None)  # nonces are the broadcaster's to allocate
        asked = dict(tx)  # as the bot sent it: a gas we estimate is not part of its request
        defaults = self._defaults(client)
        if "gas" not in tx:
            if self._passthrough is None:
                raise ParamError("gas", "required")
            if parse_private(tx, defaults):
                # DESIGN.md 5a: eth_estimateGas goes to public nodes (chain reads never go to
                # private or builder endpoints, which do not serve it): estimating would show
                # the private transaction's calldata to the very mempool it avoids.
                raise ParamError(
                    "gas",
                    "required for a private transaction (estimating it would show its calldata "
                    "to a public node); pass gas explicitly",
                )
            # Name a bad field before asking the node; estimate what will actually be signed.
            draft = parse_intent(tx, defaults, require_gas=False)
            call: dict[str, Any] = {"from": draft.sender, "value": hex(draft.value)}
            if draft.to is not None:
                call["to"] = draft.to
            if draft.data:
                call["data"] = "0x" + draft.data.hex()
            reason = "no estimate"
            try:
                estimate = await self._passthrough("eth_estimateGas", call)
            except NodeError as exc:  # the node's own answer: a revert, a bad parameter
                estimate, reason = None, exc.message
            except ChainReadError as exc:
                raise RpcError(SERVER_ERROR, f"eth_estimateGas: no node answered ({exc})") from exc
            if estimate is None:
                raise ParamError(
                    "gas",
                    f"not given, and the node could not estimate it ({reason}: the transaction "
                    "would probably revert); pass gas explicitly",
                )
            tx["gas"] = parse_quantity(estimate, "gas")
        intent = parse_intent(tx, defaults)
        # The same key namespace as broadcaster_sendIntent (else a tenant could name another
        # tenant's scoped key), and the request itself for the conflict check of its fee fields.
        scoped = client.access.scoped_key(intent.key)
        if scoped != intent.key:
            intent = _replace_key(intent, scoped)
        record = await self._submit(client, intent, asked)
        latest = record.latest
        if latest is None:
            raise RpcError(
                SERVER_ERROR,
                f"intent {record.intent.id} accepted but not signed yet (the signer is "
                "unavailable; signing is retried): follow it with broadcaster_getIntent",
                intent_json(record),
            )
        return "0x" + latest.hash.hex()

    async def _next_nonce(self, sender: str) -> int | None:
        """Our next nonce for ``sender``; for a sender we never synced, the node's pending
        count (``None`` when no node can say: the manager's own check still applies)."""
        upcoming = self.manager.book.peek_next(sender)
        if upcoming is not None or self._passthrough is None:
            return upcoming
        try:
            count = await self._passthrough("eth_getTransactionCount", sender, "pending")
        except (NodeError, ChainReadError):
            return None
        return int(count, 16) if type(count) is str and count.startswith("0x") else None

    async def _eth_send_raw_transaction(self, client: Connection, params: Any) -> str:
        if not isinstance(params, list) or len(params) != 1:
            raise ParamError("params", "expected [signed transaction as 0x-hex bytes]")
        raw = parse_data(params[0], "params[0]")
        fields, signed = check_raw_transaction(raw, chain_id=self.chain_id, access=client.access)
        check_authorities(fields, self.accounts)
        sender = signed.sender.lower()
        existing = self.manager.book.by_hash(signed.hash)
        if existing is not None:
            return "0x" + signed.hash.hex()  # already tracked: "already known"
        self._check_intake()
        if fields.type == 3:
            raise ParamError(
                "params[0]",
                "a blob transaction's canonical form carries no sidecar and no node takes it; "
                "send broadcaster_sendIntent with blobs (the service builds the sidecar)",
            )
        check_nonce_gap(fields.nonce, await self._next_nonce(sender), self._max_gap_fill)
        intent = Intent(
            id=f"raw-{signed.hash.hex()}",
            sender=sender,
            to="0x" + fields.to.hex() if fields.to else None,
            value=fields.value,
            data=fields.data,
            gas=fields.gas,
            max_fee_per_gas=fields.fee_cap,
            max_priority_fee_per_gas=fields.tip_cap,
            chain_id=self.chain_id,
            tx_type=fields.type,
            external=True,
            # Raw bytes follow [routing] private (and a private-only deployment's endpoints).
            private=self._routing[0] or not self._routing[2],
        )
        try:
            await self.manager.submit_raw(intent, fields.nonce, signed)
        except InvalidIntent as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc}") from exc
        except NonceInUse as exc:
            raise RpcError(
                SERVER_ERROR,
                f"nonce {exc.nonce} of {checksum_address(sender)} is already taken by intent "
                f"{exc.occupant} (a replacement signed elsewhere is not accepted)",
            ) from exc
        except NonceError as exc:
            raise RpcError(SERVER_ERROR, str(exc)) from exc
        self._on_intent("accepted")
        return "0x" + signed.hash.hex()

    # -- notifications ---------------------------------------------------------------------------

    def notify(self, record: TxRecord, event: str) -> None:
        """Queue a status notification for every subscription that wants ``record`` (sync)."""
        self.subscriptions.notify(record, event)


def _stale(answer: Any, record: TxRecord, attempt: Attempt) -> bool:
    """``answer`` (a transaction object) says ``attempt`` is mined where our canonical chain
    says otherwise: another attempt took its nonce (a cancel's noop, a replacement that won), or
    it is in another block (a lagging node still on an abandoned branch)."""
    found = answer.get("blockHash") if isinstance(answer, Mapping) else None
    if found is None or record.included_hash is None or record.block is None:
        return False  # pending, or we have no canonical block to say otherwise (yet)
    if attempt.hash != record.included_hash:
        return True
    return not isinstance(found, str) or found.lower() != record.block.hash.lower()


def _replace_key(intent: Intent, key: str | None) -> Intent:
    return dataclasses.replace(intent, key=key)


_ = AttemptReason  # status events name attempt reasons too (resent)
