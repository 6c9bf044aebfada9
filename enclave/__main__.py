"""``python -m enclave``: the reference signer app (DESIGN.md sections 6 and 7).

    python -m enclave --listen URL --key-file FILE [--config FILE] [--audit-log FILE]
                      [--pki-dir DIR] [--pcr0 HEX] [--audit-before-reply] [--fsync]
                      [--busy-poll]
    python -m enclave verify-log FILE [--key 0xPUB ...] [--expect-head SEQ:0xHASH]
    python -m enclave dev-pki DIR        # writes DIR/root.pem and DIR/root.key.pem
    python -m enclave measure            # prints this build's PCR0 (dev measurement)

The server prints ``listening on URL`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time

from enclave.attestor import DevAttestor, create_dev_pki, measure_pcr0
from enclave.audit import AuditLog, verify_log
from enclave.config import ConfigError, load_config, load_keys
from enclave.core import EnclaveCore
from enclave.policy import Policy
from enclave.server import BusyPoll, serve
from signer_client.signing import LocalKey


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m enclave", description="reference enclave signer")
    p.add_argument("--listen", help="vsock://CID:PORT | unix:///path | tcp://host:port")
    p.add_argument("--key-file", help="0x-hex private keys, one per line")
    p.add_argument("--config", help="TOML file (see config/enclave.example.toml)")
    p.add_argument(
        "--audit-log", help="append-only audit log file (JSON lines); without it, memory only"
    )
    p.add_argument("--pki-dir", help="dev PKI directory with root.pem and root.key.pem")
    p.add_argument("--pcr0", help="override the PCR0 reported in attestation documents (hex)")
    p.add_argument("--audit-before-reply", action="store_true", help="log before replying")
    p.add_argument("--fsync", action="store_true", help="fsync the audit log on every commit")
    p.add_argument(
        "--busy-poll",
        action="store_true",
        help="poll instead of sleeping between requests (dedicated vCPUs only: uses a whole core)",
    )
    return p


async def _run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        keys = load_keys(args.key_file or config.key_file, allow_env=config.mode == "dev")
    except (ConfigError, OSError) as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return 2
    listen = args.listen or config.listen
    if not listen:
        print("enclave: --listen URL is required", file=sys.stderr)
        return 2
    pcr0_hex = args.pcr0 or config.pcr0
    pcr0 = bytes.fromhex(pcr0_hex.removeprefix("0x")) if pcr0_hex else measure_pcr0()
    policy = Policy(config.policy)
    audit_path = args.audit_log or config.audit_path
    # Without --audit-log the log lives in memory only, as in a real enclave (DESIGN.md §6a):
    # the broadcaster streams it out (audit_entries) and keeps the verified copy.
    audit = AuditLog(
        audit_path or None, LocalKey(os.urandom(32)), fsync=args.fsync or config.audit_fsync
    )
    pki_dir = args.pki_dir or config.pki_dir
    attestor = (
        DevAttestor.from_dir(pki_dir, {0: pcr0, 1: b"\0" * 48, 2: b"\0" * 48}) if pki_dir else None
    )
    core = EnclaveCore(keys, policy, audit=audit, attestor=attestor, mode=config.mode)
    if audit_path:
        core.restore_from_log(audit_path)
    core.start(time.time(), pcr0)
    server = await serve(
        core, listen, audit_before_reply=args.audit_before_reply or config.audit_before_reply
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    poller = BusyPoll(loop)
    if args.busy_poll:
        poller.start()
    print(f"listening on {listen}", flush=True)
    async with server:
        await stop.wait()
    poller.stop()
    if audit is not None:
        audit.close()
    return 0


def _verify_log(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m enclave verify-log")
    p.add_argument("file")
    p.add_argument("--key", action="append", help="trusted log public key (0x-hex), repeatable")
    p.add_argument("--expect-head", help="SEQ:0xHASH from the audit_head method")
    args = p.parse_args(argv)
    head = None
    if args.expect_head:
        seq, _, digest = args.expect_head.partition(":")
        head = (int(seq), digest)
    problems, keys = verify_log(args.file, set(args.key) if args.key else None, head)
    for key in keys:
        print(f"segment key {key}")
    for problem in problems:
        print(problem)
    print("OK: log intact" if not problems else f"FAIL: {len(problems)} problem(s)")
    return 0 if not problems else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify-log"]:
        return _verify_log(argv[1:])
    if argv[:1] == ["dev-pki"]:
        if len(argv) != 2:
            print("usage: python -m enclave dev-pki DIR", file=sys.stderr)
            return 2
        cert, _ = create_dev_pki(argv[1])
        print(f"wrote {cert} (pin this root in the client) and its key")
        return 0
    if argv[:1] == ["measure"]:
        print("0x" + measure_pcr0().hex())
        return 0
    args = _serve_parser().parse_args(argv)
    try:
        import uvloop

        return int(uvloop.run(_run(args)))
    except ImportError:
        return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
