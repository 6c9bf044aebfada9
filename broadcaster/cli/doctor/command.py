"""``broadcaster doctor [--json] [--canary SECONDS] [--root PATH] [--config FILE]``.

Exit status: 0 when nothing failed (warnings allowed), 1 when a check or the canary failed,
2 on a usage error (unreadable root or config).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from broadcaster.cli.doctor.canary import MAX_SECONDS, CanaryResult, run_canary
from broadcaster.cli.doctor.model import Host
from broadcaster.cli.doctor.report import exit_code, render_json, render_text, run_checks

__all__ = ["add_doctor_arguments", "host_for_root", "run_doctor"]


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_SECONDS:g}] seconds")
    return value


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--canary",
        type=_seconds,
        metavar="SECONDS",
        help="also run the jitter canary on the event loop for this long (try 10)",
    )
    parser.add_argument(
        "--root",
        default="/",
        metavar="PATH",
        help="read /proc and /sys under PATH (a container's bind mount of the host, tests)",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="the service's TOML file: check its [cpu] pinning"
    )


def host_for_root(root: str | Path) -> Host:
    """The real machine for ``/``. Under another root this process's own affinity says nothing
    about that tree, so CPUs come from its ``proc/self/status`` instead."""
    path = Path(root)
    if path.resolve() == Path("/"):
        return Host()
    return Host(root=path, affinity=lambda: None)


def _pinning(config_file: str | None) -> Sequence[int] | None:
    if config_file is None:
        return None
    from broadcaster.settings import load_config

    return load_config(config_file).cpu.pinning


def run_doctor(args: argparse.Namespace) -> int:
    if not os.path.isdir(args.root):
        print(f"broadcaster doctor: --root {args.root}: not a directory", file=sys.stderr)
        return 2
    try:
        pinning = _pinning(args.config)
    except ValueError as exc:  # ConfigError
        print(f"broadcaster doctor: {exc}", file=sys.stderr)
        return 2
    host = host_for_root(args.root)
    findings = run_checks(host, pinning)
    canary: CanaryResult | None = None
    if args.canary:
        if not args.json:
            print(f"running the jitter canary for {args.canary:g} s...", file=sys.stderr)
        try:
            canary = run_canary(args.canary, cpus=pinning or None)
        except OSError as exc:  # the pinning names CPUs this process may not use
            print(
                f"broadcaster doctor: canary not pinned ({exc}); running unpinned", file=sys.stderr
            )
            canary = run_canary(args.canary)
    if args.json:
        out = orjson.dumps(render_json(host, findings, canary), option=orjson.OPT_INDENT_2)
        sys.stdout.buffer.write(out + b"\n")
        sys.stdout.flush()
    else:
        sys.stdout.write(render_text(host, findings, canary))
    return exit_code(findings, canary)
