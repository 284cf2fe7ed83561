"""Turn a config's defense specs and malicious-server name into hooks (the CLI, sweeps and
tuning all train through here, so a setting means the same everywhere)."""

from __future__ import annotations

from nopeek.config import TrainConfig
from nopeek.hooks import CutHook


def build_hooks(config: TrainConfig) -> list[CutHook]:
    """Defenses (from :mod:`nopeek.defenses`) then the malicious server (:mod:`nopeek.attacks`)."""
    hooks: list[CutHook] = []
    if config.defenses:
        from nopeek.defenses import parse_defenses

        hooks += parse_defenses(
            config.defenses,
            n_classes=2 if config.one_vs_rest is not None else None,
            alpha=config.alpha,
            delta=config.delta,
        )
    if config.malicious_server:
        from nopeek.attacks import build_malicious_server

        hooks.append(build_malicious_server(config.malicious_server, config))
    return hooks
