"""``broadcaster check-config FILE``: every problem with its key path, or what the file sets up."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from broadcaster.settings import checksum_address

if TYPE_CHECKING:
    from broadcaster.settings.model import Config

# ---------------------------------------------------------------- broadcaster check-config


def _warnings(config: Config) -> list[str]:
    """Legal but probably not meant for production."""
    out = []
    for index, token in enumerate(config.api.tokens):
        if token in {"change-me", "changeme", "dev-token"} or len(token) < 16:
            out.append(f"api.tokens[{index}]: short or placeholder token; use a long random one")
    for index, tenant in enumerate(config.api.tenants):
        if len(tenant.token) < 16 or tenant.token.startswith("change-me"):
            out.append(
                f"api.tenants[{index}].token: short or placeholder token; use a long random one"
            )
    if config.signer.endpoint.scheme == "vsock" and config.signer.pcr0 is None:
        out.append("signer: vsock without attestation_root/pcr0 trusts whatever answers there")
    if len(config.clients) < 2:
        out.append("clients: a single newHeads source cannot outvote a lying or lagging node")
    if config.heads.watchdog_seconds is None:
        out.append("heads.watchdog_seconds = 0: a stuck subscription is never reconnected")
    return out


def describe_config(config: Config) -> str:
    """A short, human summary of what a valid config sets up (``check-config`` prints it)."""
    fees = config.fees
    cap = "no cap" if fees.max_fee_cap_wei is None else f"cap {fees.max_fee_cap_wei} wei"
    signer = config.signer
    attested = "attested (pcr0 pinned)" if signer.pcr0 else "not attested"
    api = config.api
    watchdog = config.heads.watchdog_seconds
    lines = [
        f"chain {config.chain_id}, fork choice {config.fork_choice}, "
        f"finality depth {config.finality_depth}",
        f"clients ({len(config.clients)}): "
        + ", ".join(f"{c.name}={c.url}" for c in config.clients),
        f"rpcs ({len(config.rpcs)}): "
        + ", ".join(
            f"{r.name}={r.url}"
            + ("" if r.kind == "public" else f" ({r.kind}{', auth ' + r.auth if r.auth else ''})")
            for r in config.rpcs
        ),
        *(
            [
                "auth: X-Flashbots-Signature on "
                + ", ".join(r.name for r in config.rpcs if r.auth)
                + ", signed by the signer's auth key: the enclave's [policy] auth_address must "
                "name one of its loaded keys (else each request to them fails: logged at connect, "
                'signer_errors_total{kind="no_auth_key"}, bundles_total{result="failed"})'
            ]
            if any(r.auth for r in config.rpcs)
            else []
        ),
        f"routing: private = {str(config.routing.private).lower()}"
        f" (chain reads: {len(config.public_rpcs)} public rpcs + the clients)",
        f"signer: {signer.url} ({attested}, timeout {signer.timeout_seconds:g} s)",
        f"accounts ({len(config.accounts)}): " + ", ".join(a.address for a in config.accounts),
        f"fees: bump {fees.bump_percent}%, default tip {fees.priority_fee_wei} wei, {cap}",
        f"api: {api.listen}, HTTP and websocket ({len(api.tokens)} token(s), "
        f"{len(api.tenants)} tenant(s), max message {api.max_message_bytes} bytes, "
        f"{api.rate_per_token:g} req/s per token, burst {api.rate_burst}, "
        f"{api.max_connections_per_token} connections per token)",
        f"metrics: http://{config.metrics.listen}/metrics (and /healthz)",
        f"journal: {_journal(config)}",
        "heads watchdog: " + ("off" if watchdog is None else f"{watchdog:g} s"),
        "cpu pinning: " + (", ".join(map(str, config.cpu.pinning)) or "none"),
        *(
            f"tenant {t.name}: " + ", ".join(checksum_address(a) for a in t.accounts)
            for t in api.tenants
        ),
    ]
    lines += [f"warning: {w}" for w in _warnings(config)]
    return "\n".join(lines)


def run_check_config(
    path: str | Path, *, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """``broadcaster check-config FILE``: 0 and a summary if valid, 1 and every problem if not."""
    from broadcaster.settings.loader import load_config
    from broadcaster.settings.model import ConfigError

    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        config = load_config(path)
    except ConfigError as exc:
        count = len(exc.problems)
        print(f"{path}: {count} error{'s' * (count != 1)}", file=err)
        for problem in exc.problems:
            print(f"  {problem}", file=err)
        return 1
    print(f"{path}: OK", file=out)
    for line in describe_config(config).splitlines():
        print(f"  {line}", file=out)
    return 0


def _journal(config: Config) -> str:
    if config.journal.url is None:
        return str(config.journal.path)
    from nonce.pg_journal import redact

    ha = config.ha
    lease = f", [ha] instance {ha.instance}, lease {ha.lease_seconds:g} s" if ha else ""
    return f"{redact(config.journal.url)} (PostgreSQL{lease})"
