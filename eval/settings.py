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

Compressors are a third dimension (``nopeek sweep --compress``, each value a ``--compress``
option of :mod:`nopeek.compress.spec` or ``none``), crossed with the other two.

A run directory is named ``<slug>-seed<k>``: the slug spells alpha, the defenses and the
compressors with characters safe in file names (``alpha0.5_cut-noise-gaussian-sigma0.5-clip1``,
``alpha0_c-forwardtopk-0.1``).
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
from nopeek.compress import canonical
from nopeek.config import TrainConfig
from nopeek.defenses.spec import parse_defense_option
from nopeek.errors import ConfigError

_MAX_SLUG = 80


@dataclass(frozen=True)
class Setting:
    """One point of a sweep: the NoPeek weight, the defense specs applied together and the
    compressors at the cut (a canonical ``--compress`` value, "" for none)."""

    alpha: float = 0.0
    defenses: tuple[str, ...] = ()
    compress: str = ""

    @property
    def undefended(self) -> bool:
        """The plain run: no NoPeek, no defense, nothing compressed."""
        return self.alpha == 0 and not self.defenses and not self.compress

    @property
    def label(self) -> str:
        """A human-readable name.

        >>> Setting(0.5, ("max-norm",)).label
        'alpha=0.5 + max-norm'
        >>> Setting(compress="forward=int8").label
        'compress forward=int8'
        """
        if self.undefended:
            return "undefended"
        parts = [f"alpha={self.alpha:g}"] if self.alpha else []
        parts += list(self.defenses) + ([f"compress {self.compress}"] if self.compress else [])
        return " + ".join(parts)

    @property
    def slug(self) -> str:
        """A file-name-safe, unique-per-setting name.

        >>> Setting(0.5, ("cut-noise:gaussian,sigma=0.5",)).slug
        'alpha0.5_cut-noise-gaussian-sigma0.5'
        """
        text = f"alpha{self.alpha:g}"
        if self.defenses:
            text += "_" + "+".join(self.defenses)
        if self.compress:
            text += "_c-" + self.compress
        text = re.sub(r"[:,]", "-", text).replace("=", "")
        text = re.sub(r"[^A-Za-z0-9.+_-]", "-", text)
        if len(text) > _MAX_SLUG:
            digest = hashlib.sha1("|".join(self.defenses + (self.compress,)).encode())
            digest = digest.hexdigest()[:8]
            text = f"{text[: _MAX_SLUG - 9]}-{digest}"
        return text

    def config(self, base: TrainConfig, *, seed: int) -> TrainConfig:
        """``base`` with this setting's alpha, defenses and compressors and the given seed."""
        data = base.to_dict() | {"alpha": self.alpha, "defenses": list(self.defenses)}
        data["compress"] = self.compress or None
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


def make_settings(
    alphas: Sequence[float],
    defenses: Sequence[str] = ("none",),
    compress: Sequence[str] = ("none",),
) -> list[Setting]:
    """Every alpha crossed with every ``--defense`` and every ``--compress`` option; the
    undefended setting comes first.

    The undefended setting (alpha 0, no defense, nothing compressed) is always included: the
    report card and the trade-off score measure every other setting against it.

    >>> [s.label for s in make_settings([0.5], ["none", "max-norm"])]
    ['undefended', 'alpha=0.5', 'alpha=0.5 + max-norm']
    >>> [s.label for s in make_settings([0], compress=["none", "forward=topk:0.10"])]
    ['undefended', 'compress forward=topk:0.1']
    """
    options = [parse_defense_option(d) for d in defenses] or [()]
    squeezes = list(dict.fromkeys(canonical(c) for c in compress)) or [""]
    found = [Setting(float(a), d, c) for a, d, c in itertools.product(alphas, options, squeezes)]
    settings = [Setting()] + [s for s in found if not s.undefended]
    settings = list(dict.fromkeys(settings))
    slugs = [s.slug for s in settings]
    clash = sorted({s for s in slugs if slugs.count(s) > 1})
    if clash:
        raise ConfigError(f"two settings map to the run name {clash[0]!r}; write them differently")
    return settings
