"""Defense specs: ``--defense NAME[:VALUE,KEY=VALUE,...]`` parsed and validated in one place.

Grammar (whitespace around items is ignored; ``-`` in keys reads as ``_``)::

    option := "none" | spec ("+" spec)*    (one --defense value: specs applied together)
    spec   := name [":" item ("," item)*]
    item   := key "=" value | value     (a bare value only first, for the positional key)

A value is converted by the kind its defense declares: ``float`` (finite), ``bool``
(``true/false/1/0/yes/no``), ``str``, or a choice ``a|b``. Examples::

    cut-noise:gaussian,sigma=0.5,clip=1         cut-noise:laplace,b=0.1,clip=1
    cut-noise:gaussian,target_epsilon=8,clip=1,inference=true
    dp-sgd:epsilon=8,delta=1e-5    max-norm    marvell:s=1    isotropic:match=marvell,s=1
    adversarial:weight=1,decoder=conv    grad-sparsify:keep=0.1    mid:weight=0.01
    cae:confusion=1    dcae:bins=12    label-dp:epsilon=2    mixup:lam=0.5

Every mistake is one :class:`~nopeek.errors.ConfigError` line naming the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor

from nopeek.defenses.adversarial import Adversarial
from nopeek.defenses.base import Defense
from nopeek.defenses.cae import CAE
from nopeek.defenses.cut_noise import CutNoise
from nopeek.defenses.dcae import DCAE
from nopeek.defenses.dpsgd import DPSGD
from nopeek.defenses.label_dp import LabelDP
from nopeek.defenses.label_gradient import (
    IsotropicNoise,
    LabelGradientDefense,
    MaxNorm,
    MaxNormMult,
    binary_labels_error,
)
from nopeek.defenses.marvell import Marvell
from nopeek.defenses.mid import MID
from nopeek.defenses.mixup import Mixup
from nopeek.defenses.sparsify import GradientSparsification
from nopeek.errors import ConfigError
from nopeek.hooks import CutHook, TrainContext
from nopeek.plugins import ENTRY_GROUPS, hook_builder
from nopeek.registry import Registry
from nopeek.seeding import stream_seed

if TYPE_CHECKING:
    from nopeek.config import TrainConfig


def _check_plugin(name: str, entry: object) -> None:
    if not (isinstance(entry, type) and issubclass(entry, Defense)):
        raise TypeError(f"{entry!r} is not a nopeek.defenses.Defense subclass")
    if entry.name != name:
        raise TypeError(f"its class says name = {entry.name!r}, the entry point {name!r}")


# built-ins below; installed packages add theirs in the entry-point group nopeek.defenses
DEFENSES: Registry[type[Defense]] = Registry(
    "defense", plugins=ENTRY_GROUPS["defense"], check=_check_plugin
)
for _cls in (CutNoise, DPSGD, MaxNorm, MaxNormMult, Marvell, IsotropicNoise, Adversarial):
    DEFENSES.register(_cls.name, _cls)
for _cls in (GradientSparsification, MID, CAE, DCAE, LabelDP, Mixup):  # label defenses, issue 20
    DEFENSES.register(_cls.name, _cls)

_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _convert(name: str, key: str, raw: str, kind: str) -> Any:
    """Turn the text ``raw`` of option ``key`` into the kind the defense declares."""
    if kind == "float":
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ConfigError(f"{name} {key} must be a finite number, got {raw!r}; e.g. {key}=1")
        return value
    if kind == "bool":
        if raw.lower() not in _TRUE | _FALSE:
            raise ConfigError(f"{name} {key} must be true or false, got {raw!r}")
        return raw.lower() in _TRUE
    if "|" in kind and raw not in kind.split("|"):
        choices = ", ".join(kind.split("|"))
        raise ConfigError(f"{name} {key} must be one of {choices}, got {raw!r}")
    if not raw:
        raise ConfigError(f"{name} {key} is empty; give a value, e.g. {key}=...")
    return raw


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split and convert one spec -> ``(name, options)``; nothing is built yet.

    >>> parse_spec("cut-noise:gaussian,sigma=0.5,clip=1")
    ('cut-noise', {'mechanism': 'gaussian', 'sigma': 0.5, 'clip': 1.0})
    >>> parse_spec("marvell:scale=2")
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: unknown option 'scale' for marvell; valid options: s
    """
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"empty defense in {spec!r}; pass e.g. --defense max-norm")
    cls = DEFENSES.get(name)
    options: dict[str, Any] = {}
    items = [item.strip() for item in rest.split(",")] if rest.strip() else []
    for position, item in enumerate(items):
        key, eq, raw = item.partition("=")
        key, raw = key.strip().replace("-", "_"), raw.strip()
        if not eq:
            if position > 0 or cls.positional is None or not key:
                raise ConfigError(f"{name}: write key=value, not {item!r}, in {spec!r}")
            key, raw = cls.positional, item
        if key not in cls.options:
            valid = ", ".join(cls.options) or "none (write just the name)"
            raise ConfigError(f"unknown option {key!r} for {name}; valid options: {valid}")
        if key in options:
            raise ConfigError(f"{name} option {key!r} is given twice in {spec!r}; give it once")
        options[key] = _convert(name, key, raw, cls.options[key])
    return name, options


def parse_defense_option(text: str) -> tuple[str, ...]:
    """One ``--defense`` value -> the specs applied together (empty for ``none``). The same on
    every command: specs are joined by ``+``, except that a ``+`` followed by a digit stays
    inside a value (``epsilon=1e+1``).

    >>> parse_defense_option("cut-noise:gaussian,sigma=0.5+max-norm")
    ('cut-noise:gaussian,sigma=0.5', 'max-norm')
    >>> parse_defense_option("dp-sgd:epsilon=1e+1")
    ('dp-sgd:epsilon=1e+1',)
    """
    text = text.strip()
    if text.lower() == "none":
        return ()
    specs = tuple(s.strip() for s in re.split(r"\+(?![0-9])", text))
    if not text or any(not s for s in specs):
        raise ConfigError(
            f"empty defense in {text!r}; write specs joined by '+', e.g. "
            "cut-noise:gaussian,sigma=0.5+max-norm, or 'none'"
        )
    return specs


def parse_defenses(
    specs: Sequence[str],
    *,
    n_classes: int | None = None,
    alpha: float = 0.0,
    delta: float | None = None,
) -> list[Defense]:
    """Build the defenses of ``specs`` in order, checking values and combinations.

    ``n_classes`` (when known) rejects binary-only defenses on multi-class tasks; ``alpha`` (the
    NoPeek weight) and the label-gradient defenses are recorded as voiding DP-SGD's per-sample
    analysis; ``delta`` (the run's) must agree with a ``dp-sgd`` spec's own ``delta``.

    >>> [d.spec() for d in parse_defenses(["max-norm", "marvell:s=0.5"], n_classes=2)]
    ['max-norm', 'marvell:s=0.5']
    """
    hooks: list[Defense] = []
    for spec in specs:
        name, options = parse_spec(spec)
        if any(h.name == name for h in hooks):
            raise ConfigError(f"defense {name} is given twice; give each defense once")
        hooks.append(DEFENSES.get(name)(**options))
    if {"cae", "dcae"} <= {h.name for h in hooks}:
        raise ConfigError("dcae is cae followed by DiscreteSGD; give one of cae and dcae")
    for hook in hooks:
        if getattr(hook, "needs_binary", False) and n_classes is not None and n_classes != 2:
            raise binary_labels_error(hook.name, n_classes)
        if isinstance(hook, DPSGD):
            _check_dpsgd(hook, hooks, alpha=alpha, delta=delta)
    return hooks


@hook_builder("defenses")
def hooks_from_config(config: TrainConfig) -> list[CutHook]:
    """The defenses of ``config.defenses`` (the ``nopeek.hooks`` entry point ``defenses``).

    One-vs-rest tasks are binary, so binary-only defenses are checked against them; otherwise the
    class count is left to training. ``alpha`` and ``delta`` come from the config.

    >>> from nopeek.config import TrainConfig
    >>> [h.spec() for h in hooks_from_config(TrainConfig(one_vs_rest=0, defenses=["max-norm"]))]
    ['max-norm']
    """
    if not config.defenses:
        return []
    return list(
        parse_defenses(
            config.defenses,
            n_classes=2 if config.one_vs_rest is not None else None,
            alpha=config.alpha,
            delta=config.delta,
        )
    )


def _check_dpsgd(dpsgd: DPSGD, hooks: list[Defense], *, alpha: float, delta: float | None):
    if delta is not None and dpsgd.delta is not None and dpsgd.delta != delta:
        raise ConfigError(
            f"dp-sgd delta={dpsgd.delta} differs from --delta {delta}; give one delta "
            "(drop delta= from the spec or pass the same --delta)"
        )
    if alpha:
        dpsgd.note_coupling(f"nopeek alpha={alpha}")
    for hook in hooks:
        if isinstance(hook, LabelGradientDefense):
            dpsgd.note_coupling(hook.name)


def sender_transform(
    specs: Sequence[str], *, cut: str, seed: int, epochs: int = 1, delta: float = 1e-5
) -> Callable[[Tensor], Tensor]:
    """What the data party's defenses do to an activation it sends at ``cut`` at inference.

    For attacks with black-box query access to the client: a query returns what the client
    would *send*, not the raw segment output: every defense that declares ``acts_on_queries``
    (:class:`~nopeek.hooks.CutHook`; cut noise clips, and noises with ``inference=true``; a
    plug-in's forward defense likewise) transforms it, in ``specs`` order, with
    ``training=False``. Noise is drawn from generators seeded by ``seed`` (the attacker's
    queries get fresh noise, independent of the training run's). Returns the identity when no
    defense acts on queries.

    >>> import torch
    >>> t = sender_transform(["cut-noise:sigma=1,clip=1"], cut="conv2", seed=0)
    >>> float(t(torch.full((1, 4), 10.0)).norm())
    1.0
    """
    hooks = [h for h in parse_defenses(specs, delta=delta) if h.acts_on_queries]
    ctx = TrainContext(
        n_train=1,
        batch_size=1,
        epochs=epochs,
        seed=stream_seed(seed, "defense.attacker-queries"),
        delta=delta,
        parties={},
        data_party="client",
        label_party="server",
        device="cpu",
    )
    for hook in hooks:
        hook.setup(ctx)
    return Sent(hooks, cut)


class Sent:
    """What the data party sends at ``cut`` for a segment output ``z`` (N, *cut_shape):
    ``sent(z)`` passes it through every defense that acts on queries (noise drawn afresh),
    ``sent.public(z)`` through their public part only (:meth:`nopeek.hooks.CutHook.public`:
    cut noise's clipping), which a white-box attacker appends to the segment it inverts.

    >>> import torch
    >>> sent = sender_transform(["cut-noise:sigma=1,clip=1,inference=true"], cut="c", seed=0)
    >>> z = torch.full((1, 4), 10.0)
    >>> float(sent.public(z).norm()), torch.equal(sent(z), sent.public(z))
    (1.0, False)
    """

    def __init__(self, hooks: Sequence[CutHook], cut: str) -> None:
        self.hooks, self.cut = list(hooks), cut

    def __call__(self, z: Tensor) -> Tensor:
        for hook in self.hooks:
            z = hook.forward(self.cut, z, training=False)
        return z

    def public(self, z: Tensor) -> Tensor:
        for hook in self.hooks:
            z = hook.public(self.cut, z)
        return z


def run_sender(config: TrainConfig, cut: str, seed: int) -> Callable[[Tensor], Tensor]:
    """:func:`sender_transform` of a finished run's ``config`` at ``cut``: the ``sender`` that
    :func:`nopeek.attacks.run_attack` queries the client through (attacks import no defenses).

    >>> import torch
    >>> from nopeek.config import TrainConfig
    >>> send = run_sender(TrainConfig(defenses=["cut-noise:sigma=1,clip=1"]), "conv2", 0)
    >>> float(send(torch.full((1, 4), 10.0)).norm())
    1.0
    """
    return sender_transform(
        config.defenses, cut=cut, seed=seed, epochs=config.epochs, delta=config.delta
    )
