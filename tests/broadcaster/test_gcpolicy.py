"""The collector's settings of ``broadcaster run`` (broadcaster.gcpolicy, docs/performance.md)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from broadcaster import gcpolicy
from broadcaster.cli import run as cli_run


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()


def test_the_young_generation_is_large_and_the_older_ones_keep_cpython_defaults(
    restored_gc: None,
) -> None:
    gcpolicy.apply_thresholds()
    assert gc.get_threshold() == (gcpolicy.GEN0_THRESHOLD, 10, 10)
    assert gcpolicy.GEN0_THRESHOLD >= 10_000


def test_freezing_moves_the_survivors_out_of_later_full_passes(restored_gc: None) -> None:
    kept = [[i] for i in range(1000)]  # alive, tracked: must end up frozen
    frozen = gcpolicy.freeze_long_lived()
    assert frozen == gc.get_freeze_count() >= len(kept)
    collected = {id(o) for o in gc.get_objects()}  # gens 0-2: not the permanent generation
    assert not any(id(x) in collected for x in kept)


class _FakeService:
    """Just what ``_run`` uses of ``Service``: ``ready`` and ``run``."""

    def __init__(self, frozen: asyncio.Event) -> None:
        self.ready = asyncio.Event()
        self.frozen = frozen
        self.frozen_before_ready = False

    async def run(self) -> None:
        await asyncio.sleep(0)  # one pass of the loop before serving: nothing may freeze yet
        self.frozen_before_ready = self.frozen.is_set()
        self.ready.set()
        async with asyncio.timeout(10):  # a guard for a broken wiring, not a timing check
            await self.frozen.wait()


def test_run_freezes_once_the_service_is_ready(
    restored_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> _FakeService:
        frozen = asyncio.Event()

        def freeze() -> int:
            frozen.set()
            return 1

        monkeypatch.setattr(cli_run, "freeze_long_lived", freeze)
        service = _FakeService(frozen)
        await cli_run._run(service)  # type: ignore[arg-type]
        return service

    service = asyncio.run(main())
    assert service.frozen.is_set()
    assert not service.frozen_before_ready


def test_run_service_sets_the_thresholds_before_the_service_runs(
    restored_gc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # test_the_young_generation_... checks apply_thresholds itself; this checks that
    # ``broadcaster run`` calls it (removing the call from run_service passed every other test).
    gc.set_threshold(700, 10, 10)
    seen: list[tuple[int, ...]] = []
    config = object()
    monkeypatch.setattr(cli_run, "load_config", lambda path: config)
    monkeypatch.setattr(cli_run, "Service", lambda c: c)

    async def fake_run(service: object) -> None:
        assert service is config
        seen.append(gc.get_threshold())

    monkeypatch.setattr(cli_run, "_run", fake_run)
    assert cli_run.run_service("unused.toml") == 0
    assert seen == [(gcpolicy.GEN0_THRESHOLD, 10, 10)]
