"""What a simulation is made of: the chain id, test keys and addresses, the enclave's policy and
:class:`SimConfig` (the topology, fees and timings a scenario varies)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from broadcaster.tx.testing.adapter import FeeSettings
from enclave.policy import PolicyConfig

__all__ = [
    "CHAIN_ID",
    "FOREIGN_TO",
    "GWEI",
    "KEYS",
    "RECIPIENTS",
    "SimConfig",
    "default_policy",
]

GWEI = 10**9
CHAIN_ID = 31337
KEYS = (  # anvil's public dev keys 0-2: test material, never funds
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
)
RECIPIENTS = (
    "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc",
    "0x90f79bf6eb2c4f870365e785982e1f101e93b906",
)
FOREIGN_TO = "0x15d34aaf54267db7d7c367839aaf71a00a2c6a65"  # not in the enclave's allowlist


def default_policy() -> PolicyConfig:
    return PolicyConfig(
        chain_ids=(CHAIN_ID,),
        allowed_to=RECIPIENTS,
        max_fee_per_gas=1000 * GWEI,
        max_priority_fee_per_gas=100 * GWEI,
        rate_per_second=1000.0,
        burst=1000,
    )


@dataclass(frozen=True)
class SimConfig:
    """``nodes`` are execution clients; ``head_clients`` feed the tracker, ``rpcs`` take sends,
    ``readers`` answer chain reads (in failover order); ``delays`` is each node's lag behind the
    block producer (propagation skew). ``finality_depth`` is small so runs reach finality fast."""

    nodes: tuple[str, ...] = ("a", "b", "c")
    head_clients: tuple[str, ...] = ("a", "b")
    rpcs: tuple[str, ...] = ("a", "b", "c")
    readers: tuple[str, ...] = ("a", "b")
    delays: Mapping[str, float] = field(default_factory=lambda: {"a": 0.0, "b": 0.03, "c": 0.06})
    senders: int = 1
    base_fee: int = 10 * GWEI
    block_time: float = 2.0
    finality_depth: int = 8
    fees: FeeSettings = field(default_factory=FeeSettings)
    policy: PolicyConfig = field(default_factory=default_policy)
    presign: bool = True
    retain_settled: int = 10_000
    linger: float | None = 0.002
    history: int = 3
    builder: bool = False  # a builder endpoint (section 5a): the producer builds its bundles
    # The service's default ([audit] enabled): an intent's fsync and signature overlap and
    # recovery reads the enclave's audit log (broadcaster.tx.unjournaled). False: flush, sign.
    overlap: bool = True
