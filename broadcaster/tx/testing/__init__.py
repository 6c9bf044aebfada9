"""A deterministic, in-process simulator for the tx manager (no sockets, no anvil, no sleeping).

Like httpx's ``MockTransport`` or the mock backend and action tests of Optimism's ``txmgr``, it
ships with the package so the manager's behaviour under reorgs, lagging or lying RPCs, a failing
signer and crashes can be tested deterministically and fast:

- ``vloop``: an asyncio event loop on virtual time (timers fire in order, instantly);
- ``chain`` / ``nodes``: a scripted chain (forks, reorgs of any depth, base-fee moves, nonces,
  fee-ordered mining) and execution clients with their own view, mempool and faults;
- ``heads``: head clients feeding the real ``heads.tracker.ChainTracker`` with propagation skew;
- ``rpc``: the manager's ``Submitter`` and ``ChainState`` seams over those nodes;
- ``signer``: the real enclave (``EnclaveCore`` + ``Policy`` + audit log) behind the ``Signer``
  seam, with the client's reply verification;
- ``journal``: the real SQLite journal with a crash-loss window on virtual time;
- ``adapter``: the one module that knows the manager's API;
- ``config``: keys, addresses, the enclave policy, :class:`SimConfig`;
- ``host``: one life of the broadcaster process; ``sim``: the world and its step actions;
- ``checker``: the invariants, checked at every status, signature, send and step.

Start with :class:`Sim` (``sim.py``'s docstring has an example).
"""

from broadcaster.tx.testing.adapter import FeeSettings, ManagerAdapter
from broadcaster.tx.testing.chain import Block, SimChain, SimTx, decode_tx
from broadcaster.tx.testing.checker import Checker, Told, Violation
from broadcaster.tx.testing.config import (
    CHAIN_ID,
    FOREIGN_TO,
    GWEI,
    KEYS,
    RECIPIENTS,
    SimConfig,
    default_policy,
)
from broadcaster.tx.testing.nodes import Network, Node
from broadcaster.tx.testing.signer import SignRequest, SimEnclave, SimSigner
from broadcaster.tx.testing.sim import Sim, SimFactory
from broadcaster.tx.testing.vloop import VirtualClock, VirtualDeadlock, VirtualTimeLoop

__all__ = [
    "CHAIN_ID",
    "FOREIGN_TO",
    "GWEI",
    "KEYS",
    "RECIPIENTS",
    "Block",
    "Checker",
    "FeeSettings",
    "ManagerAdapter",
    "Network",
    "Node",
    "SignRequest",
    "Sim",
    "SimChain",
    "SimConfig",
    "SimEnclave",
    "SimFactory",
    "SimSigner",
    "SimTx",
    "Told",
    "Violation",
    "VirtualClock",
    "VirtualDeadlock",
    "VirtualTimeLoop",
    "decode_tx",
    "default_policy",
]
