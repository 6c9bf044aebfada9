"""An in-memory :class:`~broadcaster.rpc.transport.base.Transport` with scripted answers.

For tests and deterministic simulations of code that uses the fan-out, in the spirit of
``httpx.MockTransport``: nothing touches the network, every request written is recorded, and
what the "node" answers is decided per transaction by a script or a handler function::

    network = FakeNetwork(default=ACCEPT)            # every endpoint accepts everything...
    fanout = FanOut(endpoints, on_result=..., transport_factory=network)
    network["b"].script.extend([Reject("nonce too low"), NO_ANSWER])  # ...but b, for two txs
    network["c"].go_down()                           # and c refuses connections
    ...
    assert [r.raws for r in network["a"].requests] == [(raw,)]

Answers (one per transaction a request carries; a JSON-RPC batch carries several):

=================  ===============================================================================
``ACCEPT``         ``{"result": "0x" + keccak256(raw)}``: what a node answers for a fresh accept
``Reject(msg)``    a JSON-RPC error object with that message (any txpool error string) and code
``Result(value)``  ``{"result": value}``, e.g. someone else's hash
``RawReply(s, b)`` HTTP status ``s`` with body ``b`` as is, for the whole request (5xx, garbage)
``NO_ANSWER``      nothing, ever (the fan-out's timeout fires and it ``forget()``s the request)
``Late(t, a)``     answer ``a`` after ``t`` seconds of the event loop's clock; a *timeout* when
                   ``t`` exceeds the fan-out's timeout (the late reply is then never delivered,
                   since the fan-out forgot the request)
``DISCONNECT``     the connection drops: this request and every other unanswered one fail with
                   ``ConnectionResetError`` (the fake reconnects at once unless it is down)
=================  ===============================================================================

In a batch, element answers (``ACCEPT``, ``Reject``, ``Result``) give the elements of the reply
array; a whole-request answer (``RawReply``, ``NO_ANSWER``, ``DISCONNECT``) among them decides
for the whole request (the first such one); ``Late`` delays the whole reply by its largest
delay. Replies are bodies as an HTTP endpoint sends them (``Reply(status=200, body=...)``).

Where answers come from, in order: ``handler(request)`` if given (one answer for every
transaction of the request, or a sequence with one each, or None: no automatic answer); else
``script`` (a deque, one entry consumed per transaction) and, when it runs dry, ``default``. An
answer of None leaves the request to the test: :meth:`FakeTransport.reply` or
:meth:`FakeTransport.answer` it by ``rid`` (see :attr:`FakeTransport.unanswered`).

Delivery: on the next event-loop turn (``reply_delay=0.0``, the default: a real socket never
answers inside ``send``), after ``reply_delay`` seconds, or synchronously inside ``send`` with
``reply_delay=None`` (to exercise callers against a reply that arrives during the write).

Connection state, for the fan-out's lane: :meth:`set_ready` (busy: no free connection; the
lane queues), :meth:`go_down` / :meth:`come_up` (``wait_ready`` raises the connect error, as a
refused connection does), ``max_in_flight`` (busy while that many requests are unanswered).
Time comes only from the running event loop (``call_soon`` / ``call_later``), so a loop with a
virtual clock makes every run identical.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias

import orjson
import sha3  # safe-pysha3

from broadcaster.rpc.transport.base import OnReply, Reply, TransportClosed

if TYPE_CHECKING:
    from broadcaster.rpc.fanout import Endpoint

__all__ = [
    "ACCEPT",
    "DISCONNECT",
    "NO_ANSWER",
    "Accept",
    "Answer",
    "Disconnect",
    "FakeNetwork",
    "FakeTransport",
    "Handler",
    "Late",
    "NoAnswer",
    "RawReply",
    "Reject",
    "Request",
    "Result",
]


@dataclass(frozen=True, slots=True)
class Accept:
    """Answer with the transaction's hash, keccak256 of its raw bytes."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer with a JSON-RPC error: ``message`` is the node's words (``"nonce too low"``...)."""

    message: str
    code: int = -32000
    data: Any = None


@dataclass(frozen=True, slots=True)
class Result:
    """Answer ``{"result": value}`` (a wrong hash, ``null``...)."""

    value: Any


@dataclass(frozen=True, slots=True)
class RawReply:
    """Answer the whole request with this HTTP status and body, byte for byte."""

    status: int = 200
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class NoAnswer:
    """Never answer the request."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Drop the connection: the request and every other unanswered one fail."""


@dataclass(frozen=True, slots=True)
class Late:
    """Give ``answer`` after ``seconds`` (event-loop time)."""

    seconds: float
    answer: Answer = Accept()


Answer: TypeAlias = Accept | Reject | Result | RawReply | NoAnswer | Disconnect | Late

ACCEPT: Final = Accept()
NO_ANSWER: Final = NoAnswer()
DISCONNECT: Final = Disconnect()


@dataclass(frozen=True, slots=True, eq=False)
class Request:
    """One request the transport was given to write."""

    rid: int  # the transport-level id (the JSON-RPC id of a single request)
    body: bytes
    ids: tuple[int, ...]  # a batch's element ids, in order; () for a single request
    calls: tuple[dict[str, Any], ...]  # the JSON-RPC calls it carries, parsed, in order
    at: float  # the event loop's time of the write

    @property
    def batch(self) -> bool:
        return bool(self.ids)

    @property
    def raws(self) -> tuple[bytes, ...]:
        """The raw transactions carried (``params[0]`` of each call), in order."""
        return tuple(_raw_of(call) for call in self.calls)

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(str(call.get("method")) for call in self.calls)


Handler: TypeAlias = Callable[[Request], Answer | Sequence[Answer] | None]


def _raw_of(call: dict[str, Any]) -> bytes:
    params = call.get("params")
    if isinstance(params, list) and params and isinstance(params[0], str):
        text = params[0]
        try:
            return bytes.fromhex(text[2:] if text.startswith("0x") else text)
        except ValueError:
            return b""
    return b""


def _refused() -> OSError:
    return ConnectionRefusedError(111, "Connection refused")


class FakeTransport:
    """A scripted in-memory endpoint (see the module docstring). Not thread-safe; one loop."""

    def __init__(
        self,
        name: str,
        on_reply: OnReply,
        *,
        handler: Handler | None = None,
        script: Iterable[Answer] = (),
        default: Answer | None = None,
        reply_delay: float | None = 0.0,
        max_in_flight: int | None = None,
    ) -> None:
        self.name = name
        self.on_reply = on_reply
        self.handler = handler
        self.script: deque[Answer] = deque(script)
        self.default = default
        self.reply_delay = reply_delay
        self.max_in_flight = max_in_flight
        self.requests: list[Request] = []  # every request written, in order
        self.forgotten: list[int] = []  # rids the caller stopped waiting for
        self.refusals = 0  # wait_ready calls that raised because the fake was down
        self.closed = False
        self._busy = False
        self._down: Callable[[], BaseException] | None = None
        self._pending: dict[int, asyncio.Handle | None] = {}  # unanswered rid -> delivery
        self._changed = asyncio.Event()

    # -- scripting the connection -------------------------------------------------------------

    def set_ready(self, ready: bool) -> None:
        """``False``: busy (no free connection), ``wait_ready`` blocks; ``True``: free again."""
        self._busy = not ready
        self._changed.set()

    def go_down(
        self, error: Callable[[], BaseException] = _refused, *, drop_in_flight: bool = True
    ) -> None:
        """The endpoint stops taking connections: ``wait_ready`` raises ``error()``.

        ``drop_in_flight``: the unanswered requests fail too (their connections died with it).
        """
        self._down = error
        if drop_in_flight:
            self._drop_all(ConnectionResetError(104, f"{self.name}: connection reset by peer"))
        self._changed.set()

    def come_up(self) -> None:
        self._down = None
        self._changed.set()

    @property
    def down(self) -> bool:
        return self._down is not None

    @property
    def unanswered(self) -> list[int]:
        """The rids written and neither answered nor forgotten, oldest first."""
        return list(self._pending)

    def reply(self, rid: int, reply: Reply) -> None:
        """Deliver ``reply`` for ``rid`` now, by hand (also for a rid already answered or
        forgotten: the fan-out ignores replies it no longer waits for, which a test may check)."""
        handle = self._pending.pop(rid, None)
        if handle is not None:
            handle.cancel()
        self._changed.set()
        self.on_reply(rid, reply)

    def answer(self, rid: int, answer: Answer | Sequence[Answer]) -> None:
        """Answer ``rid`` with scripted answers now (one, or one per transaction)."""
        request = next(r for r in reversed(self.requests) if r.rid == rid)
        self._respond(request, self._expand(request, answer), delay=None)

    # -- Transport protocol ---------------------------------------------------------------------

    def ready(self) -> bool:
        if self.closed or self._busy or self._down is not None:
            return False
        return self.max_in_flight is None or len(self._pending) < self.max_in_flight

    def send(self, rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        if self.closed:
            raise TransportClosed(f"{self.name}: closed")
        if self._down is not None:
            raise TransportClosed(f"{self.name}: not connected")
        parsed = orjson.loads(body)
        calls = tuple(parsed) if isinstance(parsed, list) else (parsed,)
        request = Request(rid, body, tuple(ids), calls, asyncio.get_running_loop().time())
        self.requests.append(request)
        self._pending[rid] = None
        answers = self._answers(request)
        if answers is not None:
            self._respond(request, answers, delay=self.reply_delay)

    def forget(self, rid: int) -> None:
        self.forgotten.append(rid)
        handle = self._pending.pop(rid, None)
        if handle is not None:
            handle.cancel()
        self._changed.set()

    async def wait_ready(self) -> None:
        while not self.ready():
            if self.closed:
                raise TransportClosed(f"{self.name}: closed")
            if self._down is not None:
                self.refusals += 1
                raise self._down()
            self._changed.clear()
            await self._changed.wait()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        self.closed = True
        self._drop_all(TransportClosed(f"{self.name}: closed"))
        self._changed.set()

    # -- answering ------------------------------------------------------------------------------

    def _answers(self, request: Request) -> list[Answer] | None:
        if self.handler is not None:
            chosen = self.handler(request)
            return None if chosen is None else self._expand(request, chosen)
        answers: list[Answer] = []
        for _ in request.calls:
            if self.script:
                answers.append(self.script.popleft())
            elif self.default is not None:
                answers.append(self.default)
            else:
                return None  # a test answers this one by hand
        return answers

    @staticmethod
    def _expand(request: Request, answer: Answer | Sequence[Answer]) -> list[Answer]:
        if isinstance(answer, Sequence):
            if len(answer) != len(request.calls):
                raise ValueError(
                    f"{len(answer)} answers for a request of {len(request.calls)} calls"
                )
            return list(answer)
        return [answer] * len(request.calls)

    def _respond(self, request: Request, answers: list[Answer], delay: float | None) -> None:
        wait = max((a.seconds for a in answers if isinstance(a, Late)), default=0.0)
        inner = [a.answer if isinstance(a, Late) else a for a in answers]
        whole = next((a for a in inner if isinstance(a, RawReply | NoAnswer | Disconnect)), None)
        if isinstance(whole, NoAnswer):
            return
        if delay is None and wait == 0:
            self._deliver(request, inner, whole)
            return
        loop = asyncio.get_running_loop()
        total = (delay or 0.0) + wait
        if total > 0:
            handle: asyncio.Handle = loop.call_later(total, self._deliver, request, inner, whole)
        else:
            handle = loop.call_soon(self._deliver, request, inner, whole)
        if request.rid in self._pending:
            self._pending[request.rid] = handle

    def _deliver(self, request: Request, answers: list[Answer], whole: Answer | None) -> None:
        rid = request.rid
        if rid not in self._pending:
            return  # forgotten, or failed with the connection meanwhile
        if isinstance(whole, Disconnect):
            self._drop_all(ConnectionResetError(104, f"{self.name}: connection reset by peer"))
            return
        del self._pending[rid]
        self._changed.set()
        if isinstance(whole, RawReply):
            self.on_reply(rid, Reply(status=whole.status, body=whole.body))
            return
        elements = [
            _element(call, answer) for call, answer in zip(request.calls, answers, strict=True)
        ]
        payload: Any = elements if request.batch else elements[0]
        self.on_reply(rid, Reply(status=200, body=orjson.dumps(payload)))

    def _drop_all(self, failure: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for handle in pending.values():
            if handle is not None:
                handle.cancel()
        self._changed.set()
        for rid in pending:
            self.on_reply(rid, Reply(failure=failure))


def _element(call: dict[str, Any], answer: Answer) -> dict[str, Any]:
    reply: dict[str, Any] = {"jsonrpc": "2.0", "id": call.get("id")}
    if isinstance(answer, Reject):
        error: dict[str, Any] = {"code": answer.code, "message": answer.message}
        if answer.data is not None:
            error["data"] = answer.data
        reply["error"] = error
    elif isinstance(answer, Result):
        reply["result"] = answer.value
    else:  # Accept (whole-request answers never get here)
        reply["result"] = "0x" + sha3.keccak_256(_raw_of(call)).hexdigest()
    return reply


@dataclass
class FakeNetwork:
    """A ``transport_factory`` for :class:`~broadcaster.rpc.fanout.FanOut`: one
    :class:`FakeTransport` per endpoint, found by name (``network["a"]``), all made with the
    same options (each can be re-scripted afterwards)."""

    handler: Handler | None = None
    default: Answer | None = None
    reply_delay: float | None = 0.0
    max_in_flight: int | None = None
    transports: dict[str, FakeTransport] = field(default_factory=dict)

    def __call__(self, endpoint: Endpoint, on_reply: OnReply) -> FakeTransport:
        fake = FakeTransport(
            endpoint.name,
            on_reply,
            handler=self.handler,
            default=self.default,
            reply_delay=self.reply_delay,
            max_in_flight=self.max_in_flight,
        )
        self.transports[endpoint.name] = fake
        return fake

    def __getitem__(self, name: str) -> FakeTransport:
        return self.transports[name]
