"""The errors of ``broadcaster/``, in one tree (CONVENTIONS.md 6). Each is defined beside the code
that raises it and rooted here, so ``except BroadcasterError`` catches every one of ours::

    BroadcasterError
    ├── ConfigError        settings.model      the config cannot be used (every problem, key path)
    ├── ParamError         api.intents         an API parameter missing or malformed -> -32602
    ├── RpcError           api.server          a JSON-RPC error answer to send (code, message, data)
    ├── ApiError           api.client          the service answered a bot's request with an error
    ├── ChainReadError     rpc.chain_reader    no RPC endpoint gave a usable answer to a chain read
    │   ├── NodeError                          the node's own JSON-RPC error (a revert, a bad param)
    │   └── UnlocatedNonce                     (sender, nonce) is used on chain, its block not found
    ├── TransportClosed    rpc.transport.base  an RPC connection closed before a reply came
    │   └── ProtocolError  rpc.transport.http  the peer's reply is not HTTP/1.1
    ├── SignRefused        tx.executor         the enclave's policy refused (a reason that stays)
    └── CancelFailed       tx.manager          the cancel's noop could not be signed (a NonceError)

Third-party exceptions (aiohttp, websockets, OSError, sqlite3) are converted at the boundary that
meets them and chained with ``from``; ``nonce/``, ``heads/`` and ``signer_client/`` have trees of
their own (``nonce.errors``, ``heads.errors``, ``signer_client.errors``).
"""

from __future__ import annotations

__all__ = ["BroadcasterError"]


class BroadcasterError(Exception):
    """Base of every error ``broadcaster/`` raises."""
