"""broadcaster.scheduling: the EEVDF slice through sched_setattr(2), on this machine's kernel."""

from __future__ import annotations

import os
import platform
import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from broadcaster import scheduling
from broadcaster.scheduling import SliceResult, apply_slice, current_slice_us

T = TypeVar("T")


def in_fresh_thread(work: Callable[[], T]) -> T:
    """Run ``work`` in a new thread: a slice set there leaves the test runner's threads alone."""
    out: list[T] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    thread.join()
    return out[0]


def _kernel_at_least(major: int, minor: int) -> bool:
    parts = platform.release().split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


@pytest.mark.skipif(
    platform.system() != "Linux" or not _kernel_at_least(6, 12),
    reason="custom EEVDF slices need Linux 6.12",
)
def test_the_slice_is_applied_and_read_back_from_the_kernel() -> None:
    def work() -> tuple[SliceResult, int | None, int | None]:
        result = apply_slice(250)
        child: list[int | None] = []
        thread = threading.Thread(target=lambda: child.append(current_slice_us()))
        thread.start()
        thread.join()
        return result, current_slice_us(), child[0]

    result, now, inherited = in_fresh_thread(work)
    if result.reason.startswith("sched_setattr failed"):
        pytest.skip(f"this sandbox refuses the syscall: {result.reason}")  # seccomp, not the code
    assert result == SliceResult(True, 250, "applied")
    assert now == 250
    assert inherited == 250  # threads the service starts later (the journal writer) inherit it
    assert current_slice_us() != 250  # the calling thread only


@pytest.mark.skipif(platform.system() != "Linux", reason="Linux only")
def test_the_nice_value_set_outside_is_kept() -> None:
    def work() -> tuple[SliceResult, int]:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 5)
        return apply_slice(300), os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    result, nice = in_fresh_thread(work)
    assert nice == 5
    assert result.reason in ("applied",) or "ignores custom slices" in result.reason


@pytest.mark.parametrize("slice_us", [0, 99, 100_001])
def test_a_slice_outside_the_kernel_range_is_refused(slice_us: int) -> None:
    with pytest.raises(ValueError, match=r"outside \[100, 100000\]"):
        apply_slice(slice_us)


def test_an_unsupported_platform_says_so_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduling.platform, "machine", lambda: "riscv64")
    result = apply_slice(300)
    assert not result.applied
    assert result.reason.startswith("not supported on ")
    assert current_slice_us() is None
