"""The garbage collector's settings for ``broadcaster run``, a long-lived, allocating process.

Why this exists (measured, docs/performance.md "The collector's stops, session 9"): with
CPython's default thresholds (700, 10, 10) the cyclic collector ran full (gen-2) passes of
72-92 ms about every 1.3 s while intents streamed (678 ms in the collector over a 5 s
throughput window). Every full pass walks the whole heap, start-up included (the imported
modules, the config, the recovered book: ~70k objects), and stops the event loop meanwhile: a
stop of the loop is a stop of every intent and of any reorg reaction at once.

Two changes, neither touching what is collected (cycles are still found; only later):

* :func:`apply_thresholds`: a young generation of :data:`GEN0_THRESHOLD` objects. Under load
  most of what an intent allocates (frames, futures, dicts of its request) is alive while its
  journal flush and signature are awaited, so a 700-object gen 0 found most of it alive and
  promoted it, only for it to die in gen 1 or 2, which then had to be walked. With 20,000 those
  objects mostly die before a pass: the same window spent 222 ms in the collector (start-up
  included), its longest stop 13-46 ms.
* :func:`freeze_long_lived`: once the service is up, move every tracked object to the permanent
  generation (``gc.freeze``), so later full passes walk only what was allocated since. What
  start-up built lives as long as the process anyway; frozen objects are still freed by
  reference counting (a pruned ``TxRecord`` goes as before). No collection first: at that point
  the service already serves, and a full pass there measured 41-72 ms (a large recovered book)
  to find 56 garbage objects, which are frozen instead (a bounded, one-off cost).
"""

from __future__ import annotations

import gc
from typing import Final

__all__ = ["GEN0_THRESHOLD", "apply_thresholds", "freeze_long_lived"]

GEN0_THRESHOLD: Final = 20_000
# Gens 1 and 2 keep CPython's defaults: one gen-1 pass per 10 young ones, one full pass per 10
# gen-1 ones (and only once the long-lived objects grew by 25%: CPython's own rule).
_OLDER: Final = (10, 10)


def apply_thresholds() -> None:
    """Set the collector's thresholds for the service's process (once, at start)."""
    gc.set_threshold(GEN0_THRESHOLD, *_OLDER)


def freeze_long_lived() -> int:
    """Freeze every tracked object (call once the service is serving); returns how many objects
    are now frozen."""
    gc.freeze()
    return gc.get_freeze_count()
