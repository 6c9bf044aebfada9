"""The fence: nothing is signed or written once the lease deadline has passed (a fake clock)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from broadcaster.ha.errors import LeaseLost
from broadcaster.ha.fence import MARGIN, Fence, FencedSigner, FencedTransport
from signer_client import SignedTx


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class RecordingSigner:
    def __init__(self) -> None:
        self.calls = 0
        self.floors: list[tuple[int, str, int]] = []

    async def advance_nonce_floor(self, chain_id: int, sender: str, nonce: int) -> None:
        self.floors.append((chain_id, sender, nonce))

    async def sign_transaction(self, tx: Mapping[str, Any], sender: str) -> SignedTx:
        self.calls += 1
        return SignedTx(b"\x02", b"\x00" * 32, sender, 0, 1, 2)


class RecordingTransport:
    name = "rpc0"

    def __init__(self) -> None:
        self.sent: list[int] = []

    def ready(self) -> bool:
        return True

    def send(self, rid: int, body: bytes, ids: Sequence[int] = ()) -> None:
        self.sent.append(rid)

    def forget(self, rid: int) -> None: ...

    async def wait_ready(self) -> None: ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...


def fence() -> tuple[Fence, Clock, list[str]]:
    clock, lapses = Clock(), []
    return Fence(lapses.append, clock=clock), clock, lapses


def test_the_deadline_counts_from_when_the_grant_was_sent_less_the_margin() -> None:
    f, clock, lapses = fence()
    f.extend(sent_at=99.0, lease_seconds=2.0, epoch=3)
    assert f.deadline == pytest.approx(99.0 + 2.0 * (1 - MARGIN))
    f.check()  # 100.0 < 100.8
    clock.now = 100.8
    with pytest.raises(LeaseLost):
        f.check()
    assert lapses == ["lease deadline passed"]


def test_a_lapsed_fence_stays_lapsed_and_reports_once() -> None:
    f, _, lapses = fence()
    f.extend(sent_at=100.0, lease_seconds=2.0, epoch=1)
    f.lapse("taken")
    f.extend(sent_at=100.0, lease_seconds=2.0, epoch=1)  # a late renewal answer
    with pytest.raises(LeaseLost):
        f.check()
    assert lapses == ["taken"]
    assert not f.valid()


def test_a_fence_never_granted_lets_nothing_through() -> None:
    f, _, lapses = fence()
    with pytest.raises(LeaseLost):
        f.check()
    assert len(lapses) == 1


async def test_the_signer_is_not_called_past_the_deadline() -> None:
    f, clock, _ = fence()
    f.extend(sent_at=100.0, lease_seconds=1.0, epoch=1)
    inner = RecordingSigner()
    signer = FencedSigner(inner, f)
    await signer.sign_transaction({}, "0x")
    clock.now = 101.0  # paused past the lease (SIGSTOP), then resumed
    with pytest.raises(LeaseLost):
        await signer.sign_transaction({}, "0x")
    assert inner.calls == 1


async def test_the_enclaves_nonce_window_moves_only_behind_the_fence() -> None:
    f, clock, _ = fence()
    f.extend(sent_at=100.0, lease_seconds=1.0, epoch=1)
    inner = RecordingSigner()
    signer = FencedSigner(inner, f)
    await signer.advance_nonce_floor(1, "0xabc", 7)
    assert inner.floors == [(1, "0xabc", 7)]
    clock.now = 101.0
    with pytest.raises(LeaseLost):
        await signer.advance_nonce_floor(1, "0xabc", 8)
    assert inner.floors == [(1, "0xabc", 7)]


def test_no_transport_write_past_the_deadline() -> None:
    f, clock, _ = fence()
    f.extend(sent_at=100.0, lease_seconds=1.0, epoch=1)
    inner = RecordingTransport()
    transport = FencedTransport(inner, f)
    transport.send(1, b"{}")
    clock.now = 100.9
    with pytest.raises(RuntimeError, match="lease lapsed"):  # the lane settles it unwritten
        transport.send(2, b"{}")
    assert inner.sent == [1]


def test_the_fence_clock_counts_time_the_machine_spent_suspended() -> None:
    """CLOCK_MONOTONIC stops while a machine is suspended (a paused VM, a host asleep): a leader
    woken after its lease would still think it leads. The fence counts on CLOCK_BOOTTIME."""
    import time

    from broadcaster.ha.fence import FENCE_CLOCK

    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    reading = FENCE_CLOCK()
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert before <= reading <= after
    assert Fence(lambda why: None).now() >= after
