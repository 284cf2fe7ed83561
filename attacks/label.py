"""Label inference from the gradients a party receives at a cut (issue #3, label part).

The attacker is the party that receives cut gradients but does not hold the labels: in vanilla
split learning the client (labels at the server), in u-shaped split learning the server (the
client's tail computes the loss and sends the gradient back). It never sees a label; it returns
:class:`~nopeek.attacks.base.LabelScores` and the harness scores them by sample id.

- ``norm`` (Li et al. 2022, ICLR): the score is the L2 norm of each example's cut gradient.
- ``direction`` (Li et al. 2022): the score is the cosine between each gradient and a reference
  direction; same-class gradients point the same way, opposite classes opposite ways.
- ``grad-match`` (after UnSplit, Erdogan et al. 2021): fit a clone of the label party's tail and
  give every example the label whose clone gradient best matches the one it received.

Binary scores need an orientation: which side is label 1? Like Li et al., the attacker assumes
it knows whether label 1 is the rarer class (``positive="minority"``, the default: fraud, ad
conversion, disease) or the commoner one (``positive="majority"``). Both cosine attacks call the
smaller of the two groups they find "the minority".
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from torch import Tensor, nn

from nopeek.attacks.base import LABEL, Attack, AttackInputs, LabelScores, ThreatModel
from nopeek.attacks.registry import register
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.observe import Observed
from nopeek.seeding import generator, seeded, stream_seed

log = logging.getLogger(__name__)

POSITIVE_CHOICES = ("minority", "majority")
REFERENCE_CHOICES = ("principal", "example")


def _choice(value: str | None, inputs: AttackInputs, name: str, choices: tuple[str, ...]) -> str:
    """The keyword ``value``, else ``inputs.options[name]``, else ``choices[0]``; validated."""
    value = value if value is not None else inputs.options.get(name, choices[0])
    if value not in choices:
        raise ConfigError(f"attack option {name}={value!r} is invalid; choose one of: {choices}")
    return str(value)


def _require_binary(inputs: AttackInputs, attack: str) -> None:
    """Norm and direction scores rank one class against the other: binary tasks only."""
    if inputs.n_classes != 2:
        raise ConfigError(
            f"the {attack} attack scores binary labels but this run has {inputs.n_classes} "
            "classes; train with --one-vs-rest K (class K vs the rest) or use --attack grad-match"
        )


def _by_epoch(grads: Observed) -> list[tuple[int, Observed]]:
    """The observed gradients split by training epoch, in epoch order."""
    return [(e, grads.at_epoch(e)) for e in sorted(set(grads.epoch.tolist()))]


def gradient_norms(g: Tensor) -> Tensor:
    """L2 norm of each example's gradient: g (M, *cut_shape) -> (M,).

    >>> gradient_norms(torch.tensor([[3.0, 4.0], [0.0, 1.0]]))
    tensor([5., 1.])
    """
    return g.detach().flatten(1).double().norm(dim=1).float()


def unit_rows(g: Tensor) -> Tensor:
    """Flatten g (M, *cut_shape) to (M, D) rows of unit L2 norm (all-zero rows stay zero)."""
    return F.normalize(g.detach().flatten(1).double(), dim=1, eps=1e-300)


def orient(scores: Tensor, *, positive: str) -> Tensor:
    """Flip signed scores (M,) so that label 1 is the minority side (or the majority side).

    The sides are ``scores > 0`` and ``scores < 0``; a tie counts the positive side as minority.

    >>> orient(torch.tensor([0.9, -0.8, -0.7]), positive="minority")
    tensor([ 0.9000, -0.8000, -0.7000])
    >>> orient(torch.tensor([0.9, -0.8, -0.7]), positive="majority")
    tensor([-0.9000,  0.8000,  0.7000])
    """
    positive_side_is_minority = bool((scores > 0).sum() <= (scores < 0).sum())
    return scores if positive_side_is_minority == (positive == "minority") else -scores


def cosine_scores(g: Tensor, *, reference: str, generator: torch.Generator) -> Tensor:
    """Cosine of each gradient g (M, *cut_shape) with a reference direction -> (M,) in [-1, 1].

    ``reference="example"``: the gradient of one example with a nonzero gradient, drawn with
    ``generator`` (Li et al.: any example serves). ``"principal"``: the top right-singular
    vector of the unit gradients, the axis they align with, which averages out a noisy single
    reference. The sign is not oriented (see :func:`orient`).

    >>> g = torch.tensor([[1.0, 0.1], [2.0, -0.1], [-1.0, 0.0]])
    >>> cosine_scores(g, reference="principal", generator=torch.Generator()).sign().abs().sum()
    tensor(3.)
    """
    u = unit_rows(g)
    if reference == "example":
        nonzero = torch.nonzero(u.abs().sum(1) > 0).flatten()
        if len(nonzero) == 0:
            return torch.zeros(len(u))
        ref = u[nonzero[int(torch.randint(len(nonzero), (1,), generator=generator))]]
    else:
        ref = torch.linalg.svd(u, full_matrices=False).Vh[0]
    return (u @ ref).float()


@register
class NormAttack(Attack):
    """Norm scoring (Li et al. 2022): score = ||cut gradient||, per epoch, binary tasks only.

    With imbalanced classes a model predicts the rare class with low probability, so a rare
    example's loss gradient (p - y) is large and a common example's small: a high norm means
    the minority class. ``positive="majority"`` negates the score (label 1 is the common class).
    The norm is class-agnostic, so a task with more than two classes raises a ``ConfigError``.
    """

    name = "norm"
    kind = LABEL
    binary_only = True
    threat_model = ThreatModel(gradients=True)
    option_keys = ("positive",)

    def __init__(self, *, positive: str | None = None) -> None:
        self.positive = positive

    def run(self, inputs: AttackInputs) -> LabelScores:
        _require_binary(inputs, self.name)
        positive = _choice(self.positive, inputs, "positive", POSITIVE_CHOICES)
        sign = 1.0 if positive == "minority" else -1.0
        ids, scores = {}, {}
        for epoch, seen in _by_epoch(inputs.need("gradients")):
            ids[epoch], scores[epoch] = seen.ids.clone(), sign * gradient_norms(seen.tensor)
        return LabelScores(ids=ids, scores=scores, extra={"positive": positive})


@register
class DirectionAttack(Attack):
    """Cosine scoring (Li et al. 2022), per epoch, binary tasks only.

    For a binary softmax the cut gradient is (p1 - y) * d(logit1 - logit0)/dz: its sign flips
    with the label while the Jacobian term points roughly the same way for all examples. So the
    cosine with a reference separates the classes; the side with fewer examples is called the
    minority and oriented by ``positive``. ``reference`` is ``"principal"`` (default) or
    ``"example"`` (see :func:`cosine_scores`). Clustering directions into more than two classes
    gives groups, not class names, so more than two classes raise a ``ConfigError``.
    """

    name = "direction"
    kind = LABEL
    binary_only = True
    threat_model = ThreatModel(gradients=True)
    option_keys = ("positive", "reference")

    def __init__(self, *, positive: str | None = None, reference: str | None = None) -> None:
        self.positive, self.reference = positive, reference

    def run(self, inputs: AttackInputs) -> LabelScores:
        _require_binary(inputs, self.name)
        positive = _choice(self.positive, inputs, "positive", POSITIVE_CHOICES)
        reference = _choice(self.reference, inputs, "reference", REFERENCE_CHOICES)
        gen = generator(inputs.seed, "attack.direction.reference")
        ids, scores = {}, {}
        for epoch, seen in _by_epoch(inputs.need("gradients")):
            raw = cosine_scores(seen.tensor, reference=reference, generator=gen)
            ids[epoch], scores[epoch] = seen.ids.clone(), orient(raw, positive=positive)
        return LabelScores(
            ids=ids, scores=scores, extra={"positive": positive, "reference": reference}
        )


def best_permutation(y_true: Tensor, y_pred: Tensor, n_classes: int) -> Tensor:
    """The relabelling of predicted classes that agrees most with the truth (for scoring).

    Returns ``perm`` (n_classes,) with ``perm[c]`` the true class matched to predicted class
    ``c``, from the Hungarian algorithm on the confusion matrix; ``perm[y_pred]`` is then
    comparable with ``y_true``. Only the harness (which holds the truth) may call this.

    >>> best_permutation(torch.tensor([0, 0, 1, 2]), torch.tensor([2, 2, 0, 1]), 3)
    tensor([1, 2, 0])
    """
    confusion = np.zeros((n_classes, n_classes))
    np.add.at(confusion, (y_pred.numpy(), y_true.numpy()), 1)
    rows, cols = linear_sum_assignment(-confusion)
    perm = torch.empty(n_classes, dtype=torch.long)
    perm[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return perm


def candidate_distances(tail: nn.Module, a: Tensor, g: Tensor, n_classes: int) -> Tensor:
    """Cosine distance between each observed gradient and the clone's one for every label.

    a, g: (M, *cut_shape) activations sent and gradients received. For candidate c the clone's
    gradient is d CE(tail(a_i), c) / d a_i (the batch-mean scale drops out of a cosine).
    Returns (M, n_classes) in [0, 2]; the tail must treat examples independently (no batch norm).
    """
    a = a.detach().requires_grad_(True)
    logits = tail(a)
    out = []
    for c in range(n_classes):
        target = torch.full((len(a),), c, dtype=torch.long)
        loss = F.cross_entropy(logits, target, reduction="sum")
        (grad,) = torch.autograd.grad(loss, a, retain_graph=c < n_classes - 1)
        out.append(1 - F.cosine_similarity(grad.flatten(1), g.flatten(1), dim=1, eps=1e-30))
    return torch.stack(out, dim=1).detach()


def fit_clone(
    tail: nn.Module,
    a: Tensor,
    g: Tensor,
    labels: Tensor,
    *,
    steps: int,
    opt: torch.optim.Optimizer,
) -> float:
    """Train the clone ``tail`` so its gradients for ``labels`` (M,) point like ``g``.

    Loss: mean cosine distance between d CE(tail(a_i), labels_i)/d a_i and g_i (UnSplit's
    gradient matching, in direction because the batch-mean scale is a nuisance). ``opt``
    updates the clone's weights (kept across rounds); returns the final loss.
    """
    loss = torch.zeros(())
    for _ in range(steps):
        x = a.detach().requires_grad_(True)
        ce = F.cross_entropy(tail(x), labels, reduction="sum")
        (grad,) = torch.autograd.grad(ce, x, create_graph=True)
        cos = F.cosine_similarity(grad.flatten(1), g.flatten(1), dim=1, eps=1e-30)
        loss = (1 - cos).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(loss.detach())


def direction_clusters(g: Tensor, n_classes: int, *, seed: int) -> Tensor:
    """Spherical k-means start: cluster the unit gradients (M, D) into ``n_classes`` groups."""
    if len(g) < n_classes:
        raise ThreatModelError(
            f"grad-match needs at least {n_classes} observed gradients, got {len(g)}; "
            "train with a larger --record-samples"
        )
    km = KMeans(n_clusters=n_classes, n_init=10, random_state=seed)
    return torch.as_tensor(km.fit_predict(unit_rows(g).numpy()), dtype=torch.long)


def _aligned_last_epoch(sent: Observed, grads: Observed) -> tuple[int, Tensor, Tensor, Tensor]:
    """(epoch, ids, a, g): the last epoch with sent activations, rows matched by sample id."""
    epoch = int(sent.epoch.max())
    s, r = sent.at_epoch(epoch), grads.at_epoch(epoch)
    where = {int(i): k for k, i in enumerate(s.ids)}
    keep = [k for k, i in enumerate(r.ids) if int(i) in where]
    if not keep:
        raise ThreatModelError(
            f"no example has both a sent activation and a received gradient in epoch {epoch}; "
            "pass gradients and sent activations from the same cut of the same run"
        )
    ids = r.ids[keep]
    rows = torch.as_tensor([where[int(i)] for i in ids])
    return epoch, ids, s.tensor[rows].float(), r.tensor[keep].float()


def _build_clone(inputs: AttackInputs, a: Tensor) -> nn.Module:
    """A fresh clone tail from a seed of its own (never the client's seeded initialisation)."""
    with seeded(inputs.seed, "attack.grad-match.clone"):
        clone = inputs.need("tail_architecture")()
    with torch.no_grad():
        shape = tuple(clone(a[:2]).shape)
    if shape != (min(2, len(a)), inputs.n_classes):
        raise ThreatModelError(
            f"the tail architecture maps the sent activations to {shape}, not (N, "
            f"{inputs.n_classes}) logits; grad-match attacks the last cut (the one before the loss)"
        )
    return clone


@register
class GradMatchAttack(Attack):
    """Gradient matching with a cloned tail (after UnSplit, Erdogan et al. 2021).

    The attacker sent activations a_i at the last cut and got gradients g_i back; it knows the
    architecture of the label party's tail and that the loss is cross-entropy, not the tail's
    weights. Start: spherical k-means of the gradient directions (from a random clone the
    alternation stalls). Then repeat up to ``rounds`` (5) times: fit the clone so its gradients for
    the current labels match (:func:`fit_clone`), and give each example the candidate label
    whose clone gradient is closest (:func:`candidate_distances`); stop when no label changes.
    Works on the last epoch only (sent activations are kept only there). Options: ``rounds``,
    ``lr`` (Adam, 3e-3), ``positive``; ``steps`` (per round) defaults to 300.

    Clone classes are class *indices of the clone*: a permutation of the classes (with the
    clone's rows) leaves every gradient unchanged, so without a known label the attacker learns
    which examples share a label, not its name. Binary: the smaller group is labelled by
    ``positive``. More classes: ``extra["classes_up_to_permutation"] = True``; the harness
    scores after :func:`best_permutation`.
    """

    name = "grad-match"
    kind = LABEL
    threat_model = ThreatModel(gradients=True, sent_activations=True, tail_architecture=True)
    option_keys = ("positive", "rounds", "lr")
    default_steps = 300

    def __init__(
        self, *, positive: str | None = None, rounds: int | None = None, lr: float | None = None
    ) -> None:
        self.positive, self.rounds, self.lr = positive, rounds, lr

    def _settings(self, inputs: AttackInputs) -> tuple[int, int, float]:
        """(steps per round, rounds, lr) from keywords, else ``inputs``/options, else defaults."""
        steps = self.default_steps if inputs.steps is None else int(inputs.steps)
        rounds = int(self.rounds if self.rounds is not None else inputs.options.get("rounds", 5))
        lr = float(self.lr if self.lr is not None else inputs.options.get("lr", 3e-3))
        if steps < 1 or rounds < 1 or not lr > 0:
            raise ConfigError(
                f"grad-match needs steps >= 1, rounds >= 1 and lr > 0, got {steps}, {rounds}, {lr}"
            )
        return steps, rounds, lr

    def run(self, inputs: AttackInputs) -> LabelScores:
        positive = _choice(self.positive, inputs, "positive", POSITIVE_CHOICES)
        steps, rounds, lr = self._settings(inputs)
        sent, grads = inputs.need("sent_activations"), inputs.need("gradients")
        epoch, ids, a, g = _aligned_last_epoch(sent, grads)
        k = inputs.n_classes
        clone = _build_clone(inputs, a)
        opt = torch.optim.Adam(clone.parameters(), lr=lr)
        labels = start = direction_clusters(
            g, k, seed=stream_seed(inputs.seed, "attack.grad-match.clusters")
        )
        for done in range(1, rounds + 1):
            loss = fit_clone(clone, a, g, labels, steps=steps, opt=opt)
            dist = candidate_distances(clone, a, g, k)
            changed = int((dist.argmin(1) != labels).sum())
            labels = dist.argmin(1)
            log.info("grad-match round %d: fit loss %.4f, %d labels changed", done, loss, changed)
            if changed == 0:
                break
        extra = {
            "epoch": epoch,
            "rounds": done,
            "fit_loss": loss,
            "changed_from_start": int((labels != start).sum()),
            "positive": positive,
            "classes_up_to_permutation": k > 2,
        }
        if k > 2:
            return LabelScores({epoch: ids}, {epoch: -dist}, {epoch: labels}, extra)
        pos = _positive_class(labels, positive)
        scores = dist[:, 1 - pos] - dist[:, pos]
        return LabelScores({epoch: ids}, {epoch: scores}, {epoch: (labels == pos).long()}, extra)


def _positive_class(labels: Tensor, positive: str) -> int:
    """Which of the two clone classes in ``labels`` (M,) the attacker calls label 1."""
    smaller = int(torch.bincount(labels, minlength=2).argmin())
    return smaller if positive == "minority" else 1 - smaller
