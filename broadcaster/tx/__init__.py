"""The transaction side (DESIGN.md §5): intents in, signed attempts out, every reorg survived.

``TxManager`` (``manager.py``) is composed of ``Executor``, ``ChainFollower``,
``InclusionTracker``, ``NonceSync``/``Retention`` and ``Recovery``; its decisions are the pure
functions of ``plans.py`` and ``pricing.py``. ``broadcaster.tx.testing`` is the deterministic
simulator for tests (users' too).
"""

from broadcaster.tx.manager import CancelFailed, TxManager
from broadcaster.tx.pricing import FeePolicy
from broadcaster.tx.reasons import ResendReason
from broadcaster.tx.seams import ChainState, Durable, Signer, Submitter, TxObserver

__all__ = [
    "CancelFailed",
    "ChainState",
    "Durable",
    "FeePolicy",
    "ResendReason",
    "Signer",
    "Submitter",
    "TxManager",
    "TxObserver",
]
