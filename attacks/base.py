"""What every attack shares: its threat model, what the harness hands it, what it returns.

An attack declares a :class:`ThreatModel`; the harness builds an :class:`AttackInputs` holding
exactly what that threat model grants (observed messages at a cut, the attacker's auxiliary
data, query access to the client segment, the client's weights, or its architecture only) and
nothing else. Ground truth never enters :class:`AttackInputs`: the harness scores the returned
reconstruction or label scores against the data set by sample id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from nopeek.data import Split
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.observe import Observed

if TYPE_CHECKING:
    from nopeek.compress import Compressor
    from nopeek.config import TrainConfig

RECONSTRUCTION = "reconstruction"
LABEL = "label"


@dataclass(frozen=True)
class ThreatModel:
    """What the attacker sees. Every flag that is False is withheld by the harness."""

    activations: bool = False  # forward messages at the cut (inference phase, victims' inputs)
    gradients: bool = False  # backward messages at the cut (training phase, per epoch)
    aux_data: bool = False  # the attacker's own data: the disjoint auxiliary split
    query_client: bool = False  # black-box queries x -> client segment(x)
    client_weights: bool = False  # white-box: a copy of the trained client segment
    client_architecture: bool = False  # a freshly initialised client segment, no weights
    aux_labels: bool = False  # labels of the auxiliary data (for supervised helpers)
    # Label attacks by the party that receives gradients (e.g. the u-shaped server):
    sent_activations: bool = False  # its own forward messages at the gradient cut (train phase)
    tail_architecture: bool = False  # a fresh copy of the segment after that cut, no weights
    # Known pairs: what crossed the wire for the attacker's own aux samples (matched by id)
    aux_activations: bool = False
    # Model completion: the attacking data party's own inputs (its feature slice) of the
    # training samples, without labels (it trained on them)
    own_train_inputs: bool = False
    # Feature inference from predictions (vertical runs): the party that receives the model's
    # output for the victims (the label party), the trained model as a function of its own
    # and the victim's features, and its own feature slice of the victims
    predictions: bool = False
    joint_model: bool = False
    own_features: bool = False
    # The attacker's own trained segment after the cut (it receives the activations: the
    # server's model, cut -> logits)
    receiver_segment: bool = False

    def __post_init__(self) -> None:
        if self.aux_activations and not (self.aux_data and self.activations):
            raise ValueError("aux_activations (known pairs) needs aux_data and activations")

    def describe(self) -> str:
        """A short, stable string for ``threat_model`` in the attack's JSON."""
        granted = [name for name, value in vars(self).items() if value]
        return "+".join(granted) or "nothing"


@dataclass(frozen=True)
class Known:
    """What an attacker knows of the attacked system besides its threat model's grants: the
    shapes it sees and the defenses' *mechanism* (Kerckhoffs), never their secrets (noise
    draws, the defender's weights).

    ``fresh_noise``: the client's messages carry noise drawn afresh for every message (so an
    aux sample queried twice gets two answers); ``defender_widths``: decoder kind (``conv`` /
    ``mlp``) -> width of the data party's own simulated attacker (the adversarial defense
    trained the client against it); empty when the run has none.
    """

    cut_shape: tuple[int, ...]
    input_shape: tuple[int, ...]
    fresh_noise: bool = False
    defender_widths: Mapping[str, int] = field(default_factory=dict)


@dataclass
class AttackInputs:
    """Exactly what the threat model grants; every other field is ``None``.

    Shapes: ``activations.tensor`` (M, *cut_shape), ``gradients.tensor`` (M, *cut_shape) with
    ``gradients.epoch`` (M,); ``aux.x`` (A, *input_shape); ``query_client(x)`` maps
    (B, *input_shape) -> (B, *cut_shape) without gradients to the client's weights.
    ``sent_activations`` holds what the gradient receiver itself sent forward at the gradient cut
    in the training phase (M', *cut_shape), with ids and epochs (the trainer keeps them for the
    last epoch only); ``tail_architecture()`` builds a freshly initialised copy of the segment
    that maps those activations to the logits, i.e. the last segment (N, *cut_shape) ->
    (N, classes), whose loss is the mean cross-entropy over the batch. ``aux_activations``
    (A', *cut_shape) are the observed messages of samples in ``aux`` (matched by id), taken out
    of ``activations``. In a vertical run, ``predictions.tensor`` (M, classes) holds the
    model's confidence scores (softmax) for the victims ``predictions.ids``; ``own_features``
    (M, *own_shape) the attacker's own feature columns of the same victims, in id order (its
    slices joined along the last axis); ``joint_model(own, victim)`` maps (N, *own_shape) and
    the victim's slice (N, *input_shape) to the logits (N, classes) with the trained weights.
    ``receiver_segment`` maps (N, *cut_shape) to the logits (N, classes): the trained segment of
    the party that receives the activations (its own), in eval mode, frozen.

    ``own_train_inputs`` holds the attacking data party's own inputs of the training samples
    (its view: a vertical client's feature slice), labels -1, in id order.

    ``compressor``: with ``activations``, the compressor the run applies to them on the wire
    (its configuration is public), whose decode the recorded activations are; None when the
    cut is not compressed forward.
    """

    input_shape: tuple[int, ...]
    data_range: float
    n_classes: int
    seed: int
    steps: int | None = None
    activations: Observed | None = None
    gradients: Observed | None = None
    aux: Split | None = None
    query_client: Callable[[Tensor], Tensor] | None = None
    client_segment: nn.Module | None = None
    client_architecture: Callable[[], nn.Module] | None = None
    sent_activations: Observed | None = None
    tail_architecture: Callable[[], nn.Module] | None = None
    aux_activations: Observed | None = None
    own_train_inputs: Split | None = None
    predictions: Observed | None = None
    own_features: Tensor | None = None
    joint_model: nn.Module | None = None
    receiver_segment: nn.Module | None = None
    compressor: Compressor | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def need(self, name: str) -> Any:
        """The granted item ``name``; a missing one is a :class:`ThreatModelError`."""
        value = getattr(self, name)
        if value is None:
            raise ThreatModelError(f"this attack needs {name}, which its threat model withholds")
        return value


@dataclass
class Reconstruction:
    """A reconstruction attack's output: ``x_hat`` (M, *input_shape) for sample ``ids`` (M,)."""

    ids: Tensor
    x_hat: Tensor
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LabelScores:
    """A label attack's output per epoch: ``scores[e]`` (M_e,) or (M_e, classes) for ``ids[e]``.

    Higher score = more likely positive (binary); for multi-class, per-class scores. ``predicted``
    holds hard label guesses where the attack makes them (gradient matching).
    """

    ids: dict[int, Tensor]
    scores: dict[int, Tensor]
    predicted: dict[int, Tensor] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Attack:
    """Base class: set ``name``, ``kind``, ``threat_model`` and ``option_keys``; implement
    :meth:`run`.

    ``name`` is the attack's one name: the registry files the class under it (a plug-in's entry
    point must carry the same name). ``option_keys`` lists every key of
    :attr:`AttackInputs.options` that :meth:`run` reads; :func:`check_options` refuses any other
    key, so a typo is never recorded as applied.

    What the layers above need to know of an attack is declared here too, so that none of them
    keeps a list of attack names:

    - ``binary_only``: it scores one class against the other, so sweeps, benchmarks and tune
      refuse it on a task with more than two classes before anything trains (its :meth:`run`
      refuses such a run too, for a direct ``run_attack``);
    - ``default_steps``: its optimisation steps when the caller gives none (None: it has no
      steps), recorded as ``steps`` in its result and searched from by ``--strongest``;
    - ``default_samples``: how many victims it attacks when the caller gives no ``n_samples``
      (None: every observed one).
    """

    name: str = ""
    kind: str = RECONSTRUCTION
    threat_model: ThreatModel = ThreatModel()
    option_keys: tuple[str, ...] = ()
    binary_only: ClassVar[bool] = False
    default_steps: ClassVar[int | None] = None
    default_samples: ClassVar[int | None] = None
    search_space: ClassVar[Mapping[str, tuple[Any, ...]]] = {}
    """The attack's strength knobs for ``--strongest`` (:mod:`nopeek.attacks.search`): knob ->
    candidate values, the first being what the attack does by default. A knob is an option key
    or a budget key of :func:`~nopeek.attacks.run_attack` (``steps``, ``aux_size``); empty: the
    attack runs as a family of one (its defaults) over several seeds."""

    @classmethod
    def family(cls, known: Known) -> dict[str, tuple[Any, ...]]:
        """The knobs and candidates to search, given what the attacker knows of the run
        (``known``: its shapes and the defenses' mechanism, Kerckhoffs): :attr:`search_space`
        unless an attack adapts it."""
        return dict(cls.search_space)

    @classmethod
    def refusal(cls, config: TrainConfig) -> str | None:
        """Why this attack cannot run on any run of ``config`` (None: it may), known before
        training (e.g. a topology it does not apply to); a benchmark marks such cells with it.
        The harness still refuses what only a finished run shows."""
        return None

    def run(self, inputs: AttackInputs) -> Reconstruction | LabelScores:
        raise NotImplementedError


def check_options(
    attack: type[Attack] | Attack, keys: Iterable[str], *, shared: Sequence[str] = ()
) -> None:
    """Refuse option ``keys`` that ``attack`` does not declare (``shared``: keys every attack
    takes in this context, e.g. a sweep's ``steps``), in one line listing the valid keys.

    >>> class Blur(Attack):
    ...     name, option_keys = "blur", ("radius",)
    >>> check_options(Blur, ["radius"])
    >>> check_options(Blur, ["radios"])
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: unknown option 'radios' for attack blur; valid options: radius
    """
    valid = [*attack.option_keys, *(k for k in shared if k not in attack.option_keys)]
    unknown = [k for k in keys if k not in valid]
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for attack {attack.name}; valid options: "
            f"{', '.join(valid) or 'none (write just the name)'}"
        )
