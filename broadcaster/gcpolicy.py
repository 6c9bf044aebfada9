"""The garbage collector's settings for ``broadcaster run``, a long-lived, allocating process.

Why this exists (measured, docs/performance.md "Intent path, session 9"): with CPython's default
thresholds (700, 10, 10) the cyclic collector took about 10% of the service's CPU while intents
streamed (892 ms of 9.0 s over an 8 s throughput window), and every gen-2 pass walked the whole
heap, start-up included (the imported modules, the config, the recovered book: ~120k objects),
stopping the event loop for 54-112 ms each, about every 1.5 s. A stop of the loop is a stop of
every intent and of any reorg reaction at once.

Two changes, neither touching what is collected (cycles are still found; only later):

* :func:`apply_thresholds`: a young generation of :data:`GEN0_THRESHOLD` objects. Under load
  most of what an intent allocates (frames, futures, dicts of its request) is alive while its
  journal flush and signature are awaited, so a 700-object gen 0 found most of it alive and
  promoted it, only for it to die in gen 1 or 2, which then had to be walked. With 20,000 those
  objects mostly die before a pass: the same window spent 82 ms in the collector, longest stop
  12 ms.
* :func:`freeze_long_lived`: once the service is up, collect once and move every surviving
  object to the permanent generation (``gc.freeze``), so later full passes walk only what was
  allocated since. What start-up built lives as long as the process anyway.
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
    """Collect, then freeze what survives (call once the service is serving); returns how many
    objects are now frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
