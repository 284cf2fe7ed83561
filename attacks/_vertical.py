"""What a vertical run's prediction receiver sees: the victims' predictions, the trained model
as a function of its own and the victim's features, and its own feature slice.

In vertical split learning (:func:`nopeek.topology.vertical.vertical`) the clients hold column
blocks of every sample; the label party (the server, or a client with ``--label-party``) gets
the model's output for each sample. A feature-inference attacker on predictions (Luo et al.,
ICDE 2021) is that party: it attacks one *victim* client's columns (the attacked edge's sender).

- ``predictions`` (M, classes): the softmax of the fusion top applied to what every client
  sent at the cut for the victims in the inference phase (the recorded messages, defenses
  included), i.e. what the deployed model answers for those samples; ids in id order.
- ``own_features`` (M, *own_shape): the attacker's own columns of the victims, its clients'
  slices joined along the last axis. The attacker's clients: the label party when it is a
  client; with the labels at the server (which holds no columns), every client but the victim
  (the server colluding with the other clients).
- ``joint_model(own, victim)``: the trained bottoms and fusion top in eval mode, taking the
  attacker's columns and the victim's (white-box: Luo et al.'s adversary holds the trained
  model's parameters, the passive party's bottom included, as in VFLAIR's implementation).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from nopeek.attacks._scoring import truth
from nopeek.attacks._target import Target, load_weights
from nopeek.attacks.base import Attack, AttackInputs, ThreatModel
from nopeek.config import TrainConfig
from nopeek.errors import ThreatModelError
from nopeek.observe import Observations, Observed

VERTICAL = "vertical"


def needs_vertical(attack: Attack | type[Attack]) -> bool:
    """Whether ``attack``'s threat model grants what only a vertical run has."""
    tm = attack.threat_model
    return tm.predictions or tm.joint_model or tm.own_features


def vertical_refusal(name: str, config: TrainConfig) -> str | None:
    """Why ``name`` (an attack on predictions) cannot run on ``config``'s runs, or None."""
    if config.topology != VERTICAL:
        return (
            f"{name} infers a vertical client's features from the model's predictions; "
            f"a {config.topology} run has no feature slices (use --topology vertical)"
        )
    return None


def refuse(run: Target, attack: Attack) -> None:
    """A one-line :class:`ThreatModelError` if ``attack`` cannot attack ``run``'s edge."""
    why = vertical_refusal(attack.name, run.config)
    if why is not None:
        raise ThreatModelError(why)
    if run.sender == run.topology.objectives[0].party:
        raise ThreatModelError(
            f"{run.sender} holds the labels and gets the predictions: it is the attacker, not "
            f"a victim; attack another client (--party)"
        )


def attackers(run: Target) -> list[str]:
    """The clients whose columns the attacker holds (see the module docstring)."""
    clients = [e.sender for e in run.topology.edges() if e.cut == run.cut]
    label = run.topology.objectives[0].party
    if label in clients:
        return [label]
    return [c for c in clients if c != run.sender]


class JointModel(nn.Module):
    """``forward(own, victim)``: the attacker's columns (N, *own_shape) and the victim's
    (N, *victim_shape) -> logits (N, classes), through the trained bottoms and the fusion."""

    def __init__(
        self,
        bottoms: dict[str, nn.Module],
        order: list[str],
        victim: str,
        widths: dict[str, int],
        fusion: nn.Module,
    ) -> None:
        super().__init__()
        self.bottoms = nn.ModuleDict(bottoms)
        self.order, self.victim, self.widths = list(order), victim, dict(widths)
        self.fusion = fusion

    def forward(self, own: Tensor, victim: Tensor) -> Tensor:
        slices = dict(zip(self.widths, own.split(list(self.widths.values()), dim=-1)))
        slices[self.victim] = victim
        return self.fusion(*(self.bottoms[c](slices[c]) for c in self.order))


def _sent(obs: Observations, run: Target, client: str) -> Observed:
    """``client``'s inference messages at the attacked cut, in id order."""
    seen = obs.get(
        cut=run.cut, direction="forward", phase="inference", sender=client, receiver="server"
    )
    order = torch.argsort(seen.ids, stable=True)
    return Observed(seen.tensor[order], seen.ids[order], seen.epoch[order], seen.step[order])


def _slice(run: Target, client: str, x: Tensor) -> Tensor:
    """``client``'s columns of full inputs ``x``."""
    node = run.topology.node(next(e.src for e in run.topology.edges() if e.sender == client))
    key = node.inputs[0].split(":", 1)[1]
    return run.topology.derived[key][1](x)


def grant(inputs: AttackInputs, run: Target, obs: Observations, tm: ThreatModel) -> None:
    """Fill ``inputs.predictions``, ``own_features`` and ``joint_model`` as ``tm`` grants."""
    clients = [e.sender for e in run.topology.edges() if e.cut == run.cut]
    sent = {c: _sent(obs, run, c) for c in clients}
    ids = sent[run.sender].ids
    if any(not torch.equal(s.ids, ids) for s in sent.values()):
        raise ThreatModelError(
            f"the clients of {run.run_dir} recorded different inference samples; retrain the run"
        )
    load_weights(run)
    fusion = run.segments["server"]
    own = attackers(run)
    if tm.predictions:
        with torch.no_grad():
            logits = fusion(*(sent[c].tensor.float() for c in clients))
        v = sent[run.sender]
        inputs.predictions = Observed(torch.softmax(logits, -1), ids.clone(), v.epoch, v.step)
    x = truth(run.full, ids)[0]
    if tm.own_features:
        inputs.own_features = torch.cat([_slice(run, c, x) for c in own], dim=-1)
    if tm.joint_model:
        bottoms = {}
        for edge in (e for e in run.topology.edges() if e.cut == run.cut):
            bottoms[edge.sender] = copy.deepcopy(run.segments[edge.src]).eval()
        widths = {c: _slice(run, c, x[:1]).shape[-1] for c in own}
        model = JointModel(bottoms, clients, run.sender, widths, copy.deepcopy(fusion).eval())
        inputs.joint_model = model.requires_grad_(False)


def trim(inputs: AttackInputs, n: int | None) -> None:
    """Keep the ``n`` victims with the smallest ids (predictions are in id order already)."""
    if n is None or inputs.predictions is None:
        return
    p = inputs.predictions
    inputs.predictions = Observed(p.tensor[:n], p.ids[:n], p.epoch[:n], p.step[:n])
    if inputs.own_features is not None:
        inputs.own_features = inputs.own_features[:n]
