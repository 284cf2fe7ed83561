"""Attack specs: ``--attack NAME[:KEY=VALUE,...]``, parsed in one place for every command.

Grammar of the ``--attack`` values (repeatable; whitespace around items is ignored, ``-`` in
keys reads as ``_``)::

    values := spec ("," spec)*             e.g. white-box:tv=0,inverse-network:width=64
    spec   := name [":" option ("," option)*] | "none"
    option := key "=" value                 (int, float, true/false, or text)

A comma item with ``=`` and no ``:`` continues the previous attack's options
(``inverse-network:width=32,lr=0.01``). Besides the keys an attack declares (``option_keys``), a
spec may set the budget keys ``steps``, ``aux_size`` and ``n_samples`` for its attack alone
(``white-box:steps=300``). ``nopeek attack``, ``sweep``, ``tune`` and ``audit`` all read
``--attack`` with :func:`parse_attack_runs` / :func:`parse_attacks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from nopeek.attacks.base import check_options
from nopeek.attacks.registry import ATTACKS
from nopeek.errors import ConfigError

BUDGET_KEYS = ("steps", "aux_size", "n_samples")
"""Keys every attack spec may set for its own attack: how hard it tries, on how many samples."""


@dataclass(frozen=True)
class AttackRun:
    """One attack of an ``--attack`` value: its ``name``, its own ``options`` (for
    ``run_attack(..., options=...)``) and the ``budget`` keys it sets for itself."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)


def _value(text: str) -> Any:
    """An attack option's value: int, float, true/false, or the string itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_attack(spec: str) -> tuple[str, dict[str, Any]]:
    """``"inverse-network:width=32,lr=0.01"`` -> ``("inverse-network", {"width": 32, "lr": 0.01})``.

    The options go to the attack (``run_attack(..., options=...)``); ``-`` in keys reads ``_``.

    >>> parse_attack("white-box:tv=0.05")
    ('white-box', {'tv': 0.05})
    """
    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(
                f"attack option {item!r} in {spec!r} needs key=value, e.g. inverse-network:width=32"
            )
        options[key.strip().replace("-", "_")] = _value(value.strip())
    return name.strip(), options


def parse_attacks(values: str | Sequence[str]) -> list[str]:
    """``--attack`` values -> attack specs. Commas separate attacks, except that an item with
    ``=`` and no ``:`` continues the previous attack's options; ``none`` is dropped.

    >>> parse_attacks("inverse-network:width=32,lr=0.01,white-box")
    ['inverse-network:width=32,lr=0.01', 'white-box']
    """
    texts = [values] if isinstance(values, str) else list(values)
    specs: list[str] = []
    for text in texts:
        for item in filter(None, (i.strip() for i in text.split(","))):
            if "=" in item and ":" not in item:
                if not specs:
                    raise ConfigError(f"attack option {item!r} comes before any attack name")
                specs[-1] += "," + item
            elif item != "none":
                specs.append(item)
    return specs


def parse_attack_runs(
    values: str | Sequence[str], *, budget: Sequence[str] = BUDGET_KEYS
) -> list[AttackRun]:
    """``--attack`` values -> one :class:`AttackRun` per attack, every one checked before any
    runs: a registered name (a miss lists the valid ones), each attack once, and only options
    the attack declares or the ``budget`` keys (one-line :class:`ConfigError` otherwise).

    >>> [(r.name, r.options, r.budget) for r in parse_attack_runs(["white-box:tv=0,steps=5"])]
    [('white-box', {'tv': 0}, {'steps': 5})]
    >>> parse_attack_runs("white-box,white-box")
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: --attack lists white-box twice; give each attack once
    """
    specs = parse_attacks(values)
    if not specs:
        raise ConfigError(f"--attack names no attack; choose from: {', '.join(ATTACKS.names())}")
    runs: list[AttackRun] = []
    for spec in specs:
        name, options = parse_attack(spec)
        check_options(ATTACKS.get(name), options, shared=budget)
        if any(r.name == name for r in runs):
            raise ConfigError(f"--attack lists {name} twice; give each attack once")
        own = {k: v for k, v in options.items() if k not in budget}
        runs.append(AttackRun(name, own, {k: v for k, v in options.items() if k in budget}))
    return runs
