"""Turn a config's defense specs and malicious-server name into hooks."""

from __future__ import annotations

from nopeek.config import TrainConfig
from nopeek.errors import ConfigError
from nopeek.hooks import CutHook


def build_hooks(config: TrainConfig) -> list[CutHook]:
    """Defenses (from :mod:`nopeek.defenses`) then the malicious server (:mod:`nopeek.attacks`)."""
    hooks: list[CutHook] = []
    if config.defenses:
        try:
            from nopeek.defenses import parse_defenses
        except ImportError:
            raise ConfigError("defenses are not available in this installation") from None
        hooks += parse_defenses(
            config.defenses,
            n_classes=2 if config.one_vs_rest is not None else None,
            alpha=config.alpha,
            delta=config.delta,
        )
    if config.malicious_server:
        try:
            from nopeek.attacks import build_malicious_server
        except ImportError:
            raise ConfigError("malicious servers are not available in this installation") from None
        hooks.append(build_malicious_server(config.malicious_server, config))
    return hooks
