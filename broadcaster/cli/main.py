"""The ``broadcaster`` command line (DESIGN.md §7).

broadcaster run --config FILE
broadcaster demo
broadcaster record --client a=ws://127.0.0.1:8545 --out heads.jsonl.gz
broadcaster replay FILE [--json]
broadcaster check-config FILE
broadcaster doctor
broadcaster audit --config FILE --from-block N [--to-block M] [--json] [--keys FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import orjson

__all__ = ["main"]


def _describe(event: dict[str, Any]) -> str:
    """One human-readable line per replay event."""
    kind = event["event"]
    if kind == "reorg":
        anc = event["ancestor"]
        return (
            f"reorg depth {event['depth']} at #{anc['number']} {anc['hash'][:12]}: "
            f"-{len(event['old'])} +{len(event['new'])} blocks (client {event.get('client')})"
        )
    if kind == "deep_reorg":
        new = event["new_tip"]
        return f"DEEP REORG ({event['reason']}) -> #{new['number']} {new['hash'][:12]}"
    if kind == "rejected":
        return (
            f"rejected {event['hash']} from {event['client']}: {event['reason']} {event['detail']}"
        )
    if kind in ("quarantine", "release"):
        what = "quarantined" if kind == "quarantine" else "released from quarantine"
        return f"client {event['client']} {what} ({event['unconfirmed']} unconfirmed blocks)"
    tip = event.get("tip") or {}
    return (
        f"{event['heads']} heads, {event['reorgs']} reorgs (max depth {event['max_depth']}), "
        f"{event['deep_reorgs']} deep, {event['rejected']} rejected, "
        f"{event['quarantined']} quarantined, "
        f"{event['invalid_lines']} invalid lines; tip #{tip.get('number')} {tip.get('hash')}"
    )


def _cmd_replay(args: argparse.Namespace) -> int:
    from heads.replay import replay

    out = sys.stdout.buffer
    try:
        for event in replay(
            args.file,
            finality_depth=args.finality_depth,
            fork_choice=args.fork_choice,
            verify=not args.no_verify,
            clients=args.clients,
        ):
            if args.json:
                out.write(orjson.dumps(event) + b"\n")
            else:
                out.write(_describe(event).encode() + b"\n")
    except OSError as exc:
        print(f"broadcaster replay: {exc}", file=sys.stderr)
        return 2
    out.flush()
    return 0


def _cmd_record(args: argparse.Namespace) -> int:
    from broadcaster.cli.record import run_record

    return run_record(args)


def _cmd_demo(args: argparse.Namespace) -> int:
    from broadcaster.cli.demo import run_demo

    return run_demo(args)


def _cmd_check_config(args: argparse.Namespace) -> int:
    from broadcaster.cli.check_config import run_check_config

    return run_check_config(args.file)


def _cmd_audit(args: argparse.Namespace) -> int:
    from broadcaster.cli.audit import run_audit

    return run_audit(args)


def _cmd_run(args: argparse.Namespace) -> int:
    from broadcaster.cli.run import run_service

    return run_service(args.config, log_level=args.log_level)


def _add_replay(sub: Any) -> None:
    replay = sub.add_parser("replay", help="replay a recorded head stream through the tracker")
    replay.add_argument("file", help="recording (JSON lines, optionally .gz)")
    replay.add_argument("--json", action="store_true", help="print JSON lines (DESIGN.md §4)")
    replay.add_argument("--finality-depth", type=int, default=64)
    replay.add_argument("--fork-choice", choices=["latest", "first-seen"], default="latest")
    replay.add_argument("--no-verify", action="store_true", help="skip header hash checks")
    replay.add_argument(
        "--clients",
        type=int,
        default=None,
        help="clients configured when it was recorded (re-anchor rule; default: those seen)",
    )
    replay.set_defaults(func=_cmd_replay)


def _root_parser() -> tuple[argparse.ArgumentParser, Any]:
    parser = argparse.ArgumentParser(
        prog="broadcaster", description="Reorg-aware transaction broadcaster"
    )
    return parser, parser.add_subparsers(dest="command", required=True)


def build_replay_parser() -> argparse.ArgumentParser:
    """The parser with only `replay` on it.

    Building the full parser imports the record, audit and doctor commands (aiohttp, web3-side
    RPC, coincurve, the tx manager: ~0.8 s), all before the first head is read; replay needs none
    of it (DESIGN.md §8, replay throughput; issue 12 item 6).
    """
    parser, sub = _root_parser()
    _add_replay(sub)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser, sub = _root_parser()
    _add_replay(sub)

    from broadcaster.cli.record import add_record_arguments

    record = sub.add_parser("record", help="record live newHeads streams to a file")
    add_record_arguments(record)
    record.set_defaults(func=_cmd_record)

    demo = sub.add_parser("demo", help="run the demo on local anvil nodes")
    demo.add_argument("--anvil", help="path to the anvil binary (default: ANVIL_BIN or PATH)")
    demo.set_defaults(func=_cmd_demo)

    run = sub.add_parser("run", help="run the service")
    run.add_argument("--config", required=True, help="the service's TOML file")
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file, listing every problem")
    check.add_argument("file")
    check.set_defaults(func=_cmd_check_config)

    from broadcaster.cli.audit import add_audit_arguments

    audit = sub.add_parser(
        "audit", help="check the chain's transactions from our accounts against the audit log"
    )
    add_audit_arguments(audit)
    audit.set_defaults(func=_cmd_audit)

    from broadcaster.cli.doctor.command import add_doctor_arguments, run_doctor

    doctor = sub.add_parser("doctor", help="check this host for latency pitfalls")
    add_doctor_arguments(doctor)
    doctor.set_defaults(func=run_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the first word picks the light parser; anything else (help, other commands) gets all.
    parser = build_replay_parser() if argv[:1] == ["replay"] else build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
