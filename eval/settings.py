"""Sweep settings: which defenses a run uses, how a setting is written and named on disk.

Grammar of one ``--defense`` value (each value is a separate setting, crossed with every
``--alpha``)::

    option   := "none" | spec ("+" spec)*
    spec     := name [":" arg ("," arg)*]          e.g. cut-noise:gaussian,sigma=0.5,clip=1
    arg      := value | key "=" value

``+`` joins defenses applied together in one run (``cut-noise:sigma=0.5+max-norm``); a ``+``
followed by a digit stays inside a value (``epsilon=1e+1``). Both steps are the defenses' own
(:func:`nopeek.defenses.parse_defense_option`, :func:`nopeek.defenses.parse_defenses`), so a
``--defense`` value reads the same in ``nopeek train``, ``sweep`` and ``tune``.

A run directory is named ``<slug>-seed<k>``: the slug spells alpha and the defenses with
characters safe in file names (``alpha0.5_cut-noise-gaussian-sigma0.5-clip1``).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from nopeek.attacks.spec import parse_attack as parse_attack  # re-exported: one parser
from nopeek.attacks.spec import parse_attacks as parse_attacks
from nopeek.config import TrainConfig
from nopeek.defenses.spec import parse_defense_option
from nopeek.errors import ConfigError

_MAX_SLUG = 80


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: the NoPeek weight and the defense specs applied together."""

    alpha: float = 0.0
    defenses: tuple[str, ...] = ()

    @property
    def undefended(self) -> bool:
        return self.alpha == 0 and not self.defenses

    @property
    def label(self) -> str:
        """A human-readable name.

        >>> Setting(0.5, ("max-norm",)).label
        'alpha=0.5 + max-norm'
        """
        if self.undefended:
            return "undefended"
        parts = [f"alpha={self.alpha:g}"] if self.alpha else []
        return " + ".join(parts + list(self.defenses))

    @property
    def slug(self) -> str:
        """A file-name-safe, unique-per-setting name.

        >>> Setting(0.5, ("cut-noise:gaussian,sigma=0.5",)).slug
        'alpha0.5_cut-noise-gaussian-sigma0.5'
        """
        text = f"alpha{self.alpha:g}"
        if self.defenses:
            text += "_" + "+".join(self.defenses)
        text = re.sub(r"[:,]", "-", text).replace("=", "")
        text = re.sub(r"[^A-Za-z0-9.+_-]", "-", text)
        if len(text) > _MAX_SLUG:
            digest = hashlib.sha1("|".join(self.defenses).encode()).hexdigest()[:8]
            text = f"{text[: _MAX_SLUG - 9]}-{digest}"
        return text

    def config(self, base: TrainConfig, *, seed: int) -> TrainConfig:
        """``base`` with this setting's alpha and defenses and the given seed."""
        data = base.to_dict() | {"alpha": self.alpha, "defenses": list(self.defenses)}
        return TrainConfig(**(data | {"seed": seed}))


def parse_floats(text: str, *, what: str) -> list[float]:
    """``"0,0.5,1"`` -> ``[0.0, 0.5, 1.0]`` with a one-line error naming ``what``.

    >>> parse_floats("0, 0.5", what="--alpha")
    [0.0, 0.5]
    """
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"{what} takes comma-separated numbers, e.g. 0,0.5,1; got {text!r}"
        ) from None
    if not values:
        raise ConfigError(f"{what} is empty; give comma-separated numbers, e.g. 0,0.5,1")
    if not all(math.isfinite(v) for v in values):
        raise ConfigError(f"{what} takes finite numbers, e.g. 0,0.5,1; got {text!r}")
    return values


def parse_ints(text: str, *, what: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]`` (seeds)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(
            f"{what} takes comma-separated integers, e.g. 0,1,2; got {text!r}"
        ) from None
    if not values or len(set(values)) != len(values):
        raise ConfigError(f"{what} needs distinct integers, e.g. 0,1,2; got {text!r}")
    return values


def make_settings(alphas: Sequence[float], defenses: Sequence[str] = ("none",)) -> list[Setting]:
    """Every alpha crossed with every ``--defense`` option; the undefended setting comes first.

    The undefended setting (alpha 0, no defense) is always included: the report card and the
    trade-off score measure every other setting against it.

    >>> [s.label for s in make_settings([0.5], ["none", "max-norm"])]
    ['undefended', 'alpha=0.5', 'alpha=0.5 + max-norm']
    """
    options = [parse_defense_option(d) for d in defenses] or [()]
    found = [Setting(float(a), d) for a, d in itertools.product(alphas, options)]
    settings = [Setting()] + [s for s in found if not s.undefended]
    settings = list(dict.fromkeys(settings))
    slugs = [s.slug for s in settings]
    clash = sorted({s for s in slugs if slugs.count(s) > 1})
    if clash:
        raise ConfigError(f"two settings map to the run name {clash[0]!r}; write them differently")
    return settings
