"""The service's configuration: one TOML file (DESIGN.md section 7).

``model`` holds the values (frozen dataclasses), ``reader`` the checking TOML reader that records
every problem with its key path, ``loader`` builds a :class:`Config` from a file, ``render``
writes one from values. ``broadcaster check-config`` lives in :mod:`broadcaster.cli.check_config`.
"""

from broadcaster.settings.loader import (
    checksum_address,
    config_from_dict,
    load_config,
    parse_config,
)
from broadcaster.settings.model import (
    DEFAULT_FINALITY_DEPTH,
    AccountConfig,
    ApiConfig,
    AuditConfig,
    ClientConfig,
    Config,
    ConfigError,
    ConfigProblem,
    CpuConfig,
    FeesConfig,
    ForkChoice,
    HeadsConfig,
    JournalConfig,
    ListenAddress,
    MetricsConfig,
    RoutingConfig,
    RpcConfig,
    SignerConfig,
    TenantConfig,
)
from broadcaster.settings.render import render_config

__all__ = [
    "DEFAULT_FINALITY_DEPTH",
    "AccountConfig",
    "ApiConfig",
    "AuditConfig",
    "ClientConfig",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "CpuConfig",
    "FeesConfig",
    "ForkChoice",
    "HeadsConfig",
    "JournalConfig",
    "ListenAddress",
    "MetricsConfig",
    "RoutingConfig",
    "RpcConfig",
    "SignerConfig",
    "TenantConfig",
    "checksum_address",
    "config_from_dict",
    "load_config",
    "parse_config",
    "render_config",
]
