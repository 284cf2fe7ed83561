"""What a registered topology is: its builder, the options it takes, and its own rules.

Each configuration module (``basic``, ``vertical``, ``multitask``, ``clients``) declares its
topologies as :class:`TopologyBuilder` s and the config fields they take as :class:`Option` s:
the check of an option's value, and of a config against a topology (vertical needs two clients
or more, u-shaped two cuts), sit with the topology, not in :mod:`nopeek.config`, which asks the
topology it names. The config is read through :class:`Configured` (its fields by name), so this
layer, below the config, imports nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any, Protocol

from torch import nn

from nopeek.errors import ConfigError
from nopeek.topology.graph import Topology


class Configured(Protocol):
    """What a topology reads of a run's config (a :class:`nopeek.config.TrainConfig`): the name
    of its topology, the number of clients, and each :class:`Option`'s field by name."""

    topology: str
    clients: int


@dataclass(frozen=True)
class BuildContext:
    """What builders beyond two parties need: the data's shape and classes, a way to build a
    fresh seeded model (``make_model(input_shape, n_classes, index)``), and the options."""

    input_shape: tuple[int, ...]
    n_classes: int
    make_model: Callable[[tuple[int, ...], int, int], nn.Module]
    clients: int = 2
    merge: str = "concat"
    tasks: tuple[str, ...] = ("label",)
    relay: str = "peer"
    splitfed: str = "v2"
    local_epochs: int = 1
    label_party: str = "server"
    widths: tuple[int, ...] | None = None  # vertical: each client's feature count (own files)


_CONTEXT = {f.name for f in fields(BuildContext)}


def _as_is(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Option:
    """A config field that topologies take (``--field-name`` on the command line).

    ``check(value)`` refuses a bad value in one line naming the flag and returns what the
    builder gets in its :class:`BuildContext` (the parsed tasks; else the value). ``everywhere``:
    the value is checked whichever topology runs, so a typo never passes silently; otherwise
    only by the topologies that take it. ``only``: the topologies it applies to, where a value
    other than ``default`` elsewhere would change what the run means (``--label-party``), so
    the others refuse it rather than ignore it.
    """

    field: str
    check: Callable[[Any], Any] = _as_is
    everywhere: bool = True
    default: Any = None
    only: str | None = None

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


def one_of(flag: str, choices: Sequence[str]) -> Callable[[str], str]:
    """The check of an option that takes one of ``choices``.

    >>> one_of("--relay", ("peer", "server"))("p2p")
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: unknown --relay 'p2p'; choose one of: peer, server
    """

    def check(value: str) -> str:
        if value not in choices:
            raise ConfigError(f"unknown {flag} {value!r}; choose one of: {', '.join(choices)}")
        return value

    return check


def positive_int(flag: str, what: str = "") -> Callable[[Any], int]:
    """The check of an option that takes a whole number >= 1 (``what`` it counts, for the
    message).

    >>> positive_int("--clients")(0)
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: --clients must be an integer >= 1, got 0
    """
    said = f" ({what})" if what else ""

    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{flag} must be an integer >= 1{said}, got {value!r}")
        return value

    return check


CLIENTS_OPTION = Option("clients", positive_int("--clients"))
"""``--clients``: how many data parties (vertical, many-clients, splitfed)."""


def _ctx(ctx: BuildContext | None) -> BuildContext:
    if ctx is None:

        def refuse(*_: object) -> nn.Module:
            raise ValueError("this topology needs a BuildContext (input shape, model factory)")

        return BuildContext((), 0, refuse)
    return ctx


@dataclass(frozen=True)
class TopologyBuilder:
    """One registered topology: ``build(model, cuts, ctx)``, the :class:`Option` s it takes,
    ``rule(config)`` for its checks beyond each option's value (vertical: two clients or more),
    and ``fewer_cuts``, the one-line refusal of a single cut where it needs two or more.

    Called like its builder: ``TOPOLOGIES.get(name)(model, cuts, ctx)``.
    """

    name: str
    build: Callable[[nn.Module, Sequence[str], BuildContext], Topology]
    options: tuple[Option, ...] = ()
    rule: Callable[[Configured], None] | None = None
    fewer_cuts: str | None = None

    def __call__(
        self, model: nn.Module, cuts: Sequence[str], ctx: BuildContext | None = None
    ) -> Topology:
        return self.build(model, cuts, _ctx(ctx))

    def validate(self, config: Configured, others: Iterable[Option] = ()) -> None:
        """Refuse ``config`` for this topology in one line: the value of each option it takes
        and of each of ``others`` (the options of other topologies) checked ``everywhere``, one
        of ``others`` that applies ``only`` to other topologies set here, then its ``rule``."""
        taken = {option.field for option in self.options}
        for option in self.options:
            option.check(getattr(config, option.field))
        for option in others:
            value = getattr(config, option.field)
            if option.field in taken:
                continue
            if option.everywhere:
                option.check(value)
            if option.only is not None and value != option.default:
                raise ConfigError(
                    f"{option.flag} {value} applies to --topology {option.only} only; drop it"
                )
        if self.rule is not None:
            self.rule(config)

    def check_cuts(self, cuts: Sequence[str]) -> None:
        """Refuse a single cut where this topology needs two or more."""
        if self.fewer_cuts is not None and len(cuts) < 2:
            raise ConfigError(self.fewer_cuts)

    def context(self, config: Configured) -> dict[str, Any]:
        """The :class:`BuildContext` fields of the options this topology takes, from ``config``
        (the others keep their defaults: its builder does not read them)."""
        return {
            option.field: option.check(getattr(config, option.field))
            for option in self.options
            if option.field in _CONTEXT
        }
