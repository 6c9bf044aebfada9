"""The configuration's values: frozen dataclasses, and the error that lists every problem.

:mod:`broadcaster.settings.loader` builds them from the TOML file (DESIGN.md section 7);
``config/broadcaster.example.toml`` documents every key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from broadcaster.errors import BroadcasterError
from signer_client.endpoints import Endpoint

__all__ = [
    "DEFAULT_FINALITY_DEPTH",
    "DEFAULT_SLICE_US",
    "MIN_BUMP_PERCENT",
    "RPC_KINDS",
    "AccountConfig",
    "ApiConfig",
    "ClientConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "CpuConfig",
    "FeesConfig",
    "ForkChoice",
    "HaConfig",
    "HeadsConfig",
    "JournalConfig",
    "ListenAddress",
    "MetricsConfig",
    "RoutingConfig",
    "RpcAuth",
    "RpcConfig",
    "RpcKind",
    "SignerConfig",
    "TenantConfig",
]

ForkChoice = Literal["latest", "first-seen"]
DEFAULT_FINALITY_DEPTH = 64
MIN_BUMP_PERCENT = 10  # geth's txpool.pricebump default (nonce.fees.MIN_BUMP_PERCENT)
DEFAULT_SLICE_US = 300  # docs/performance.md: the reaction figures at 100, 300 µs and the default


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with the file: where (``path``, e.g. ``fees.bump_percent``) and what."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(BroadcasterError, ValueError):
    """The file cannot be used. ``problems`` lists every problem found, grouped by section."""

    def __init__(self, problems: Sequence[ConfigProblem], source: str | None = None) -> None:
        self.problems = tuple(problems)
        self.source = source
        head = f"{source}: " if source else ""
        count = len(self.problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{head}{count} configuration error{'s' * (count != 1)}\n{lines}")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    """``host:port`` to bind (``[::1]:9650`` for IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """A ``newHeads`` source: an execution client's websocket (``ws://`` or ``wss://``)."""

    name: str
    url: str


RpcKind = Literal["public", "private", "builder"]
RPC_KINDS: tuple[RpcKind, ...] = ("public", "private", "builder")
RpcAuth = Literal["flashbots"]


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """A broadcast target (``http(s)://`` or ``ws(s)://``), DESIGN.md section 5a.

    ``kind``: ``public`` (``eth_sendRawTransaction``; also serves chain reads), ``private``
    (``eth_sendPrivateTransaction {tx, maxBlockNumber}``, Flashbots Protect style) or
    ``builder`` (``eth_sendBundle`` / ``eth_cancelBundle``). Private and builder endpoints
    never serve chain reads. ``auth``: ``"flashbots"`` (the ``X-Flashbots-Signature`` header).
    """

    name: str
    url: str
    kind: RpcKind = "public"
    auth: RpcAuth | None = None

    @property
    def public(self) -> bool:
        return self.kind == "public"


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    """``[routing] private``: the default of an intent's ``private`` flag (section 5a)."""

    private: bool = False


@dataclass(frozen=True, slots=True)
class SignerConfig:
    """The enclave signer. With ``attestation_root`` and ``pcr0`` set, every connection must
    present a valid Nitro attestation document (pinned root, expected PCR0) and replies are taken
    only over the channel bound to the attested key. ``policy_hash`` and ``mode``, with the
    configured accounts and chain id, are compared with ``hello`` before first use (§6a)."""

    url: str
    endpoint: Endpoint
    timeout_seconds: float = 2.0
    connect_timeout_seconds: float = 2.0
    max_in_flight: int = 256
    attestation_root: Path | None = None
    pcr0: str | None = None  # 96 lowercase hex digits (48 bytes, SHA-384)
    policy_hash: str | None = None  # 0x + 64 lowercase hex: hello's policy_hash must equal it
    mode: str | None = None  # "dev" | "nitro": hello's mode must equal it


@dataclass(frozen=True, slots=True)
class AccountConfig:
    """A sender the signer holds a key for. ``address`` is stored EIP-55 checksummed."""

    address: str


@dataclass(frozen=True, slots=True)
class FeesConfig:
    """Fee policy (wei). ``bump_percent``: raise on a re-sign at the same nonce (geth's replace
    rule needs >= 10). ``priority_fee_wei``: tip for intents that give none. ``max_fee_cap_wei``:
    never sign a ``maxFeePerGas`` above this (``None``: no cap here; the enclave policy may cap).
    ``presign_replacements``: once a transaction is included, sign its replacement (fees bumped)
    in the background, so a reorg that drops it sends the replacement with no signer round trip.
    ``max_gap_fill``: noops (0-value self-transfers) signed per sender to plug nonce gaps before
    an alert asks an operator; also how far ahead of the next nonce a raw transaction may be."""

    bump_percent: int = MIN_BUMP_PERCENT
    priority_fee_wei: int = 1_000_000_000
    max_fee_cap_wei: int | None = None
    presign_replacements: bool = True
    max_gap_fill: int = 4


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """``[[api.tenants]]``: one bot's scoped token. It sends only from ``accounts`` (lowercase
    addresses) and sees, follows and cancels only the intents of those accounts."""

    name: str
    token: str
    accounts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ApiConfig:
    """The intent API (JSON-RPC 2.0 over HTTP ``POST /`` and websocket on one port).

    ``tokens``: full access; ``tenants``: scoped access (at least one of the two).
    ``max_connections_per_token``: open websockets plus HTTP requests being answered, per token.
    """

    listen: ListenAddress
    tokens: tuple[str, ...]
    max_message_bytes: int = 1 << 20
    rate_per_token: float = 10_000.0  # requests per second, token bucket (above the 5,000/s target)
    rate_burst: int = 20_000  # bucket size
    tenants: tuple[TenantConfig, ...] = ()
    max_connections_per_token: int = 256


@dataclass(frozen=True, slots=True)
class MetricsConfig:
    """Where Prometheus scrapes ``/metrics`` (and ``/healthz`` answers)."""

    listen: ListenAddress


@dataclass(frozen=True, slots=True)
class JournalConfig:
    """The journal: ``path``, a SQLite file (the embedded default; relative to the config
    file's directory), or ``url``, a PostgreSQL database (``postgresql://...``, for
    active/standby with ``[ha]``). Exactly one of them is set."""

    path: Path | None = None
    url: str | None = None

    @property
    def target(self) -> Path | str:
        """What :mod:`nonce.backends` opens: the path or the URL."""
        if self.url is not None:
            return self.url
        assert self.path is not None
        return self.path


@dataclass(frozen=True, slots=True)
class HaConfig:
    """Active/standby (DESIGN.md §9): ``instance`` names this process to the others (the
    leader a standby names), ``lease_seconds`` is the leader lease; only with ``[journal] url``."""

    instance: str
    lease_seconds: float = 2.0


@dataclass(frozen=True, slots=True)
class HeadsConfig:
    """``watchdog_seconds``: an open subscription without a new block (a head whose hash the
    client has not announced before) for this long is reconnected (``None``, written ``0`` in
    the file: never)."""

    watchdog_seconds: float | None = 30.0


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """The audit copy and the live reconciler (DESIGN.md §6a; ``broadcaster.audit``).

    ``enabled``: stream the enclave's audit log into the journal and reconcile every canonical
    block against it. ``stop_signing_on_foreign``: once a foreign transaction from an account is
    seen, the service signs nothing more for that account (intents are refused with an error
    naming it) until an operator restarts it. ``poll_seconds``: how often the audit log is
    fetched when nothing asks sooner.
    """

    enabled: bool = True
    stop_signing_on_foreign: bool = False
    poll_seconds: float = 1.0


@dataclass(frozen=True, slots=True)
class CpuConfig:
    """How the service asks for the CPU (see :mod:`broadcaster.scheduling`).

    ``pinning``: CPU ids to pin the service to (``sched_setaffinity``); empty: leave it to the
    OS. ``slice_us``: the EEVDF slice asked for (Linux >= 6.12), ``None`` (``0`` in the file):
    the kernel's default. ``yield_after_reaction``: give the CPU away right after a reorg
    reaction's last write, so a co-located reader runs at once.
    """

    pinning: tuple[int, ...] = ()
    slice_us: int | None = DEFAULT_SLICE_US
    yield_after_reaction: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    chain_id: int
    fork_choice: ForkChoice
    finality_depth: int
    clients: tuple[ClientConfig, ...]
    rpcs: tuple[RpcConfig, ...]
    signer: SignerConfig
    accounts: tuple[AccountConfig, ...]
    fees: FeesConfig
    api: ApiConfig
    metrics: MetricsConfig
    journal: JournalConfig
    heads: HeadsConfig = HeadsConfig()
    cpu: CpuConfig = CpuConfig()
    routing: RoutingConfig = RoutingConfig()
    ha: HaConfig | None = None
    audit: AuditConfig = AuditConfig()
    source: Path | None = None

    @property
    def public_rpcs(self) -> tuple[RpcConfig, ...]:
        """The ``kind = "public"`` endpoints: the only ``[[rpcs]]`` chain reads may use."""
        return tuple(r for r in self.rpcs if r.kind == "public")

    @property
    def private_rpcs(self) -> tuple[RpcConfig, ...]:
        """The ``private`` and ``builder`` endpoints: where ``private: true`` intents go."""
        return tuple(r for r in self.rpcs if r.kind != "public")
