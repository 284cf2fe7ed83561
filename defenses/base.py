"""What every defense shares: declared options, a seeded noise generator, per-sample rows.

A defense is a :class:`~nopeek.hooks.CutHook` that declares its spec options (``options``: key ->
kind, see :mod:`nopeek.defenses.spec`), takes them as keyword-only constructor arguments, and
draws all of its noise from :class:`torch.Generator` s of the ``defense.noise`` streams of
:mod:`nopeek.seeding` (the run's seed, a fixed per-defense purpose number, the party), so a seed
fixes a run and ``--resume`` replays it exactly (the generators' states travel in
:meth:`state_dict`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from nopeek.errors import ConfigError
from nopeek.hooks import CutHook, TrainContext
from nopeek.seeding import generator


def rows(t: Tensor) -> Tensor:
    """``t``: (N, *shape) -> (N, prod(shape)), one row per sample (a view when possible)."""
    return t.reshape(len(t), -1)


def check_positive(defense: str, key: str, value: float | None, *, example: str) -> None:
    """Raise a one-line ConfigError unless ``value`` is a finite number > 0 (None is allowed)."""
    if value is None:
        return
    if isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{defense} {key} must be a finite number > 0, got {value}; {example}")


class Defense(CutHook):
    """Base class of the defenses: spec options, seeded generators, parameters for metrics.

    Subclasses set ``name``, ``options`` (spec key -> kind: ``float``, ``bool``, ``str`` or
    ``"a|b"`` choices), optionally ``positional`` (the key a bare first value sets) and
    ``purpose`` (a fixed number that separates this defense's noise stream from the others').
    """

    name: ClassVar[str] = ""
    options: ClassVar[dict[str, str]] = {}
    positional: ClassVar[str | None] = None
    purpose: ClassVar[int] = 0

    def __init__(self) -> None:
        self._generators: dict[str, torch.Generator] = {}
        # running sums behind the defense's metrics (means over the steps): kept in its state,
        # so a resumed run reports what the uninterrupted one does
        self._sums: dict[str, float] = {}

    def params(self) -> dict[str, Any]:
        """The resolved parameters (what the spec gave plus defaults and calibrated values)."""
        return {}

    def spec(self) -> str:
        """The canonical spec string of this defense with its resolved parameters."""
        items = [f"{k}={_fmt(v)}" for k, v in self.params().items() if v is not None]
        return self.name + (":" + ",".join(items) if items else "")

    def _seed_generators(self, ctx: TrainContext, *streams: str) -> None:
        """One generator per named noise stream (``defense.noise`` i), on the training device."""
        self._generators = {s: self._noise_generator(ctx, i) for i, s in enumerate(streams)}

    def _noise_generator(self, ctx: TrainContext, i: int) -> torch.Generator:
        """The generator of this defense's noise stream ``i`` at its party, on ``ctx.device``."""
        return generator(
            ctx.seed, "defense.noise", self.purpose, self.party_index, i, device=ctx.device
        )

    def generator(self, stream: str) -> torch.Generator:
        """The generator of ``stream``; defenses draw noise only after :meth:`setup`."""
        if stream not in self._generators:
            raise RuntimeError(f"{self.name}: call setup(ctx) before using the defense")
        return self._generators[stream]

    def state_dict(self) -> dict[str, Any]:
        state = {"generators": {k: g.get_state() for k, g in self._generators.items()}}
        return state | ({"sums": dict(self._sums)} if self._sums else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state["generators"].items():
            self.generator(key).set_state(value)
        self._sums = dict(state.get("sums", self._sums))


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
