"""``broadcaster run --config FILE``: load the config, run the service on uvloop, drain on signals.

SIGTERM or SIGINT stops accepting intents, lets the journal flush and exits 0. A config with
errors exits 2 after listing every problem (as ``check-config`` does).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from broadcaster.gcpolicy import apply_thresholds, freeze_long_lived
from broadcaster.service import Service
from broadcaster.settings import ConfigError, load_config

__all__ = ["run_service"]

log = logging.getLogger(__name__)


async def _run(service: Service) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    stopping = False

    def stop(signame: str) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            log.info("%s: draining and stopping", signame)
            task.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig.name)
    freezing = loop.create_task(_freeze_when_ready(service), name="gc-freeze")
    try:
        await service.run()
    except asyncio.CancelledError:
        if not stopping:
            raise
    finally:
        freezing.cancel()


async def _freeze_when_ready(service: Service) -> None:
    """Start-up's objects out of the collector's full passes once serving (broadcaster.gcpolicy)."""
    await service.ready.wait()
    log.info("gc: %d start-up objects frozen", freeze_long_lived())


def run_service(config_path: str, *, log_level: str = "INFO") -> int:
    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"broadcaster run: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"broadcaster run: cannot read {config_path}: {exc}", file=sys.stderr)
        return 2
    import uvloop

    apply_thresholds()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_run(Service(config)))
    return 0
