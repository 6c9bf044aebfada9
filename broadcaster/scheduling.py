"""How the service asks the Linux scheduler for the CPU quickly when a head frame arrives.

Why this exists (measured with ``make bench``, docs/performance.md): a reorg reaction's writes
to the RPC endpoints cost 10-20 µs each when nothing else wants our CPU, but 100-250 µs each when
an endpoint's process runs on the same machine (a local node, or the bench harness). A write on
a TCP or unix socket wakes the reader with the kernel's *sync* hint ("the writer is about to
sleep"), so the reader is queued on the writer's CPU and, having slept longer, preempts the
writer as soon as the write returns. The reaction then waits for the reader's whole turn
before its next write: with three RPCs, up to three such turns.

Two remedies, both unprivileged:

* a short **EEVDF slice** (``sched_setattr(2)`` with ``sched_runtime`` on a ``SCHED_OTHER``
  thread, Linux 6.12 and later): the thread's virtual deadline comes sooner, so a woken reader
  no longer preempts it in the middle of a reaction. It does not take more CPU than its fair
  share; it gets it in shorter, earlier pieces, which is what a mostly idle, latency-bound
  service wants. Older kernels accept the call and ignore it; :func:`apply_slice` reads the
  value back and says so.
* a **yield** (``sched_yield(2)``) right after the reaction's last write: the reader queued
  behind us (a co-located node receiving the replacement) runs at once instead of waiting for
  our bookkeeping. Its cost when nobody waits is one syscall (about 1 µs).

Operators who can grant ``CAP_SYS_NICE`` may prefer ``chrt -f`` or a negative nice value;
:func:`apply_slice` leaves a thread whose policy is not ``SCHED_OTHER`` alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import struct
from dataclasses import dataclass

__all__ = ["SLICE_MAX_US", "SLICE_MIN_US", "SliceResult", "apply_slice", "current_slice_us"]

log = logging.getLogger(__name__)

# The kernel clamps a custom slice to [0.1 ms, 100 ms] (kernel/sched/syscalls.c).
SLICE_MIN_US = 100
SLICE_MAX_US = 100_000

# struct sched_attr (include/uapi/linux/sched/types.h), the first version (48 bytes):
# size u32, policy u32, flags u64, nice s32, priority u32, runtime u64, deadline u64, period u64.
_SCHED_ATTR = struct.Struct("=IIQiIQQQ")
_SCHED_OTHER = 0
_SYSCALLS = {  # (sched_setattr, sched_getattr) per architecture
    "x86_64": (314, 315),
    "aarch64": (274, 275),
}


@dataclass(frozen=True, slots=True)
class SliceResult:
    """What :func:`apply_slice` did: ``applied`` is true when the kernel reports the slice."""

    applied: bool
    slice_us: int | None  # the thread's slice as the kernel reports it afterwards
    reason: str


def _syscalls() -> tuple[ctypes.CDLL, int, int] | None:
    numbers = _SYSCALLS.get(platform.machine())
    if numbers is None or platform.system() != "Linux":
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return libc, numbers[0], numbers[1]


def _get_attr(libc: ctypes.CDLL, getattr_nr: int) -> tuple[int, ...] | None:
    buf = ctypes.create_string_buffer(_SCHED_ATTR.size)
    if libc.syscall(getattr_nr, 0, buf, _SCHED_ATTR.size, 0) != 0:
        return None
    return _SCHED_ATTR.unpack(buf.raw)


def current_slice_us() -> int | None:
    """The calling thread's EEVDF slice in µs (None where the kernel does not say)."""
    calls = _syscalls()
    if calls is None:
        return None
    attr = _get_attr(calls[0], calls[2])
    if attr is None or attr[1] != _SCHED_OTHER or attr[5] == 0:
        return None
    return int(attr[5] // 1000)


def apply_slice(slice_us: int) -> SliceResult:
    """Ask for an EEVDF slice of ``slice_us`` for the calling thread (and threads it starts).

    Never raises: a kernel or platform without the feature gets a result that says why, and the
    service runs on with the kernel's default slice.
    """
    if not SLICE_MIN_US <= slice_us <= SLICE_MAX_US:
        raise ValueError(f"slice {slice_us} µs is outside [{SLICE_MIN_US}, {SLICE_MAX_US}]")
    calls = _syscalls()
    if calls is None:
        return SliceResult(
            False, None, f"not supported on {platform.system()} {platform.machine()}"
        )
    libc, setattr_nr, getattr_nr = calls
    attr = _get_attr(libc, getattr_nr)
    if attr is None:
        return SliceResult(False, None, f"sched_getattr failed: {os.strerror(ctypes.get_errno())}")
    _size, policy, _flags, nice, _priority, _runtime, _deadline, _period = attr
    if policy != _SCHED_OTHER:
        return SliceResult(False, None, f"scheduling policy {policy} was set outside; left alone")
    # Keep the nice value the operator may have given (systemd Nice=, nice(1)).
    wanted = _SCHED_ATTR.pack(_SCHED_ATTR.size, _SCHED_OTHER, 0, nice, 0, slice_us * 1000, 0, 0)
    if libc.syscall(setattr_nr, 0, ctypes.create_string_buffer(wanted), 0) != 0:
        return SliceResult(False, None, f"sched_setattr failed: {os.strerror(ctypes.get_errno())}")
    got = current_slice_us()
    if got is None or abs(got - slice_us) > 1:
        # Before Linux 6.12 the runtime of a SCHED_OTHER thread is accepted and ignored.
        return SliceResult(False, got, f"the kernel ({platform.release()}) ignores custom slices")
    return SliceResult(True, got, "applied")
