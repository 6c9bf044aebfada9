"""``python -m enclave``: the reference signer app (DESIGN.md sections 6 and 7).

    python -m enclave --listen URL --key-file FILE [--config FILE] [--audit-log FILE]
                      [--pki-dir DIR] [--pcr0 HEX] [--audit-after-reply] [--fsync]
                      [--busy-poll] [--max-connections N] [--read-timeout S]
    python -m enclave --mode nitro --listen vsock://-1:PORT --key-bundle FILE
                      --kms vsock://3:8000 --kms-region R --kms-ca FILE --kms-credentials FILE
                      --audit-log FILE [--generate-keys N --kms-key-id ID]
                      # keys only via KMS (or generated inside), attestation from /dev/nsm
    python -m enclave verify-log FILE [--keys FILE] [--key 0xPUB ...] [--expect-head SEQ:0xHASH]
    python -m enclave dev-pki DIR        # writes DIR/root.pem and DIR/root.key.pem
    python -m enclave measure            # prints this build's PCR0 (dev measurement)

The server prints ``listening on URL`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import sys
import time

from enclave.attestor import Attestor, DevAttestor, create_dev_pki, measure_pcr0
from enclave.audit import AuditLog, AuditStateError, iter_entries, verify_log
from enclave.config import KEYS_ENV, ConfigError, EnclaveConfig, load_config, load_keys, parse_keys
from enclave.core import EnclaveCore
from enclave.kms import KmsError, generate_sealed_keys, load_sealed_keys, seal_key_from
from enclave.kms_transport import KmsEndpoint, TransportError, load_credentials, parse_address
from enclave.nsm import NSM_DEVICE, NsmAttestor, NsmError
from enclave.policy import Policy
from enclave.server import BusyPoll, ServerLimits, serve
from signer_client.signing import LocalKey


def _serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m enclave", description="reference enclave signer")
    p.add_argument("--listen", help="vsock://CID:PORT | unix:///path | tcp://host:port")
    p.add_argument("--key-file", help="0x-hex private keys, one per line")
    p.add_argument("--config", help="TOML file (see config/enclave.example.toml)")
    p.add_argument(
        "--audit-log",
        help="append-only audit log file (JSON lines; FILE.head holds its sealed anchor); "
        "without it (dev mode only) the log lives in memory",
    )
    p.add_argument("--pki-dir", help="dev PKI directory with root.pem and root.key.pem")
    p.add_argument("--pcr0", help="override the PCR0 reported in attestation documents (hex)")
    p.add_argument("--mode", choices=("dev", "nitro"), help="overrides the config's mode")
    p.add_argument("--key-bundle", help="KMS key bundle (JSON, see enclave/kms.py)")
    p.add_argument(
        "--kms",
        metavar="ADDRESS",
        help="KMS over HTTPS via this stream: vsock://3:8000 (the parent's vsock-proxy to "
        "kms.<region>.amazonaws.com:443) or tcp://127.0.0.1:PORT (tests)",
    )
    p.add_argument("--kms-region", help="KMS region: the TLS name checked and the SigV4 scope")
    p.add_argument(
        "--kms-ca", help="the CA bundle trusted for KMS's certificate (pinned in the image)"
    )
    p.add_argument(
        "--kms-credentials",
        help="AWS credentials the parent hands in (JSON as IMDS serves them: AccessKeyId, "
        "SecretAccessKey, Token); they grant nothing without a valid attestation document",
    )
    p.add_argument(
        "--generate-keys",
        type=int,
        metavar="N",
        help="first start: generate N keys inside and seal them into --key-bundle (needs "
        "--kms-key-id); later starts load the bundle",
    )
    p.add_argument("--kms-key-id", help="the KMS key that seals generated keys")
    p.add_argument("--nsm-device", default=NSM_DEVICE, help="the NSM device (nitro mode)")
    p.add_argument(
        "--audit-after-reply",
        action="store_true",
        help="dev only: write audit entries after the reply (the default writes them before)",
    )
    p.add_argument("--audit-before-reply", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--max-connections", type=int, default=64, help="connections served at once")
    p.add_argument("--read-timeout", type=float, default=5.0, help="seconds to complete a frame")
    p.add_argument("--fsync", action="store_true", help="fsync the audit log on every commit")
    p.add_argument(
        "--busy-poll",
        action="store_true",
        help="poll instead of sleeping between requests (dedicated vCPUs only: uses a whole core)",
    )
    return p


class StartError(Exception):
    """The enclave refuses to start; the message says why."""


def _nitro_refusals(args: argparse.Namespace, config: EnclaveConfig) -> list[str]:
    """Everything that would let the parent choose the keys, the PKI or the measurement."""
    found = []
    if args.key_file or config.key_file:
        found.append("--key-file / key_file (keys arrive only via KMS in nitro mode)")
    if os.environ.get(KEYS_ENV):
        found.append(f"${KEYS_ENV} (keys arrive only via KMS in nitro mode)")
    if args.pcr0 or config.pcr0:
        found.append("--pcr0 / attestation.pcr0 (the NSM reports the measurement)")
    if args.pki_dir or config.pki_dir:
        found.append("--pki-dir / attestation.pki_dir (a dev PKI: documents come from the NSM)")
    if args.audit_after_reply or not config.audit_before_reply:
        found.append("--audit-after-reply / audit.before_reply = false (entries go first)")
    return found


def _kms_endpoint(args: argparse.Namespace) -> KmsEndpoint:
    """``--kms``, ``--kms-region``, ``--kms-ca`` and ``--kms-credentials``, all required."""
    missing = [
        flag
        for flag, value in (
            ("--kms ADDRESS", args.kms),
            ("--kms-region R", args.kms_region),
            ("--kms-ca FILE", args.kms_ca),
            ("--kms-credentials FILE", args.kms_credentials),
        )
        if not value
    ]
    if missing:
        raise StartError("--key-bundle needs " + ", ".join(missing) + " (KMS releases the key)")
    try:
        parse_address(args.kms)
    except ValueError as exc:
        raise StartError(str(exc)) from exc
    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", args.kms_region):
        raise StartError(f"--kms-region {args.kms_region!r}: not an AWS region name")
    return KmsEndpoint(
        args.kms, args.kms_region, args.kms_ca, load_credentials(args.kms_credentials)
    )


def _setup(args: argparse.Namespace, now: float) -> tuple[EnclaveCore, EnclaveConfig, bytes]:
    """Keys, attestor, audit log and restored nonce memory, or :class:`StartError`."""
    try:
        config = load_config(args.config)
    except (ConfigError, OSError) as exc:
        raise StartError(str(exc)) from exc
    mode = args.mode or config.mode
    audit_path = args.audit_log or config.audit_path
    attestor: Attestor | None
    if mode == "nitro":
        refused = _nitro_refusals(args, config)
        if refused:
            raise StartError("refused in nitro mode: " + "; ".join(refused))
        if not (args.key_bundle and args.kms):
            raise StartError("nitro mode needs --key-bundle FILE and --kms ADDRESS (KMS Decrypt)")
        if not audit_path:
            raise StartError(
                "nitro mode needs --audit-log FILE: without persistent, sealed state a restart "
                "would forget every signed nonce and sign a conflicting payload at one"
            )
        try:
            attestor = NsmAttestor(args.nsm_device)
            pcr0 = attestor.pcr0()
        except NsmError as exc:
            raise StartError(str(exc)) from exc
    else:
        pcr0_hex = args.pcr0 or config.pcr0
        pcr0 = bytes.fromhex(pcr0_hex.removeprefix("0x")) if pcr0_hex else measure_pcr0()
        pki_dir = args.pki_dir or config.pki_dir
        attestor = (
            DevAttestor.from_dir(pki_dir, {0: pcr0, 1: b"\0" * 48, 2: b"\0" * 48})
            if pki_dir
            else None
        )
    try:
        if args.key_bundle:
            kms = _kms_endpoint(args)
            if attestor is None:
                raise StartError("--key-bundle needs an attestor (--pki-dir in dev mode)")
            if args.generate_keys and not os.path.exists(args.key_bundle):
                if not args.kms_key_id or args.generate_keys < 1:
                    raise StartError("--generate-keys N needs N >= 1 and --kms-key-id ID")
                lines, data_key = generate_sealed_keys(
                    args.key_bundle, kms, args.kms_key_id, args.generate_keys,
                    attestor, now,
                )  # fmt: skip
                print(
                    f"enclave: generated {len(lines)} key(s) inside, sealed into "
                    f"{args.key_bundle}: " + ", ".join(LocalKey(k).address for k in lines),
                    file=sys.stderr,
                )
            else:
                lines, data_key = load_sealed_keys(args.key_bundle, kms, attestor, now)
            keys = parse_keys(lines)
            seal_key = seal_key_from(data_key)
        else:
            keys = load_keys(args.key_file or config.key_file, allow_env=True)
            seal_key = seal_key_from(b"".join(sorted(k.secret for k in keys)))
    except (ConfigError, OSError, KmsError, NsmError, TransportError) as exc:
        raise StartError(str(exc)) from exc
    policy = Policy(config.policy)
    # Without --audit-log (dev mode only, nitro mode refused above) the log lives in memory:
    # still served by audit_entries, so the broadcaster keeps its verified copy (DESIGN.md §6a).
    audit = AuditLog(
        audit_path or None,
        LocalKey(os.urandom(32)),
        fsync=args.fsync or config.audit_fsync,
        seal_key=seal_key,
    )
    core = EnclaveCore(keys, policy, audit=audit, attestor=attestor, mode=mode)
    if audit_path:
        try:
            core.restore_from_log(audit_path)
        except AuditStateError as exc:
            raise StartError(f"refusing to start: {exc}") from exc
    else:
        print(
            "enclave: no --audit-log: the audit log and nonce memory live in RAM and are lost on "
            "restart (dev only)",
            file=sys.stderr,
        )
    return core, config, pcr0


async def _run(args: argparse.Namespace) -> int:
    try:
        core, config, pcr0 = _setup(args, time.time())
    except StartError as exc:
        print(f"enclave: {exc}", file=sys.stderr)
        return 2
    listen = args.listen or config.listen
    if not listen:
        print("enclave: --listen URL is required", file=sys.stderr)
        return 2
    core.start(time.time(), pcr0)
    server = await serve(
        core,
        listen,
        audit_before_reply=not args.audit_after_reply and config.audit_before_reply,
        limits=ServerLimits(args.max_connections, args.read_timeout),
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
    if core.audit is not None:
        core.audit.close()
    return 0


def _verify_log(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m enclave verify-log")
    p.add_argument("file")
    p.add_argument(
        "--keys", help="file of trusted log public keys (0x-hex, one per line: the attested ones)"
    )
    p.add_argument("--key", action="append", help="trusted log public key (0x-hex), repeatable")
    p.add_argument("--expect-head", help="SEQ:0xHASH from a signed audit_head")
    args = p.parse_args(argv)
    trusted: set[str] | None = None
    if args.keys or args.key:
        trusted = set(args.key or [])
        if args.keys:
            with open(args.keys, encoding="ascii") as f:
                trusted |= {ln.split("#", 1)[0].strip().lower() for ln in f} - {""}
    head = None
    if args.expect_head:
        seq, _, digest = args.expect_head.partition(":")
        head = (int(seq), digest.lower())
    problems, keys = verify_log(args.file, trusted, head)
    for key in keys:
        print(f"segment key {key}")
    for problem in problems:
        print(problem)
    if not problems and head is None:
        print(
            "note: no --expect-head: only start entries are signed one by one, so without a "
            "signed head any later entry may have been rewritten (and a cut tail cannot be seen)"
        )
    if not problems and head is not None:
        after = sum(1 for e in iter_entries(args.file) if int(e["seq"]) > head[0])
        if after:
            print(f"note: {after} entries after seq {head[0]} are not covered by the signed head")
    if not problems and trusted is None:
        print("note: no --keys: a wholly re-signed log cannot be told from the genuine one")
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
