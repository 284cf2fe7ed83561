"""Known-pairs attack: an inverse network trained on leaked (input, activation) pairs only.

Threat model: an attacker who saw what crossed the wire and also knows the inputs behind some of
those messages (records leaked elsewhere, samples it contributed itself, a public subset), but
can neither query the client nor read its weights: a server holding nothing but the traffic
and a few matched records. It trains a decoder ``activation -> input`` on the known pairs and
applies it to the other observed activations (the inverse network of He, Zhang & Lee 2019, in
their query-free setting with known plaintexts).

This is the attack for an audit of recorded traffic alone (``nopeek audit --activations FILE``):
the known pairs are the recorded activations of the attacker's own aux samples, matched by
sample id; the victims are the other recorded samples.
"""

from __future__ import annotations

from dataclasses import fields

import torch
from torch import Tensor

from nopeek.attacks.base import AttackInputs, ThreatModel
from nopeek.attacks.inverse_network import InverseNetwork
from nopeek.attacks.registry import register
from nopeek.errors import ThreatModelError
from nopeek.observe import Observed


def split_known(observed: Observed, aux_ids: Tensor) -> tuple[Observed, Observed]:
    """``observed`` split into (victims, known): the rows whose id is not / is in ``aux_ids``.

    >>> z = Observed(torch.zeros(3, 2), torch.tensor([5, 1, 7]), torch.zeros(3), torch.zeros(3))
    >>> [o.ids.tolist() for o in split_known(z, torch.tensor([1]))]
    [[5, 7], [1]]
    """
    known = torch.isin(observed.ids, aux_ids)
    parts = [
        Observed(*(getattr(observed, f.name)[mask] for f in fields(Observed)))
        for mask in (~known, known)
    ]
    return parts[0], parts[1]


def set_aside_aux(inputs: AttackInputs, aux_split_ids: Tensor, *, pairs: bool) -> None:
    """The attacker's own samples are never its victims: drop the observed rows of samples of
    the aux split (``aux_split_ids``, the whole split) from ``inputs.activations``. With
    ``pairs`` (the threat model grants known pairs) those of the attacker's ``inputs.aux``
    become ``inputs.aux_activations``. Observations of the victims alone are left as they are.
    """
    if inputs.activations is None:
        return
    inputs.activations, own = split_known(inputs.activations, aux_split_ids)
    if len(inputs.activations.ids) == 0:
        raise ThreatModelError(
            "every observed sample is one of the attacker's own aux samples, so there is no "
            "victim to attack; serve the test split too (`nopeek infer --split test,aux`)"
        )
    if pairs:
        inputs.aux_activations = split_known(own, inputs.need("aux").ids)[1]


@register
class KnownPairs(InverseNetwork):
    """Learn ``activation -> input`` from known (input, activation) pairs; decode the victims.

    ``aux`` holds the attacker's inputs and ``aux_activations`` what crossed the wire for them
    (matched by id); ``activations`` are the victims. Options as for the inverse network, but
    ``repeats``: it cannot query, so it has one message per known pair (noisy as sent).

    Knowledge assumed: the victims' messages, and the attacker's own aux inputs with what
    crossed the wire for them; no queries, no weights; the defenses' mechanism only (its
    ``--strongest`` family builds decoders wider than an adversarial defender's own).

    >>> from nopeek.attacks import ATTACKS
    >>> ATTACKS.get("known-pairs").threat_model.describe()
    'activations+aux_data+aux_activations'
    """

    name = "known-pairs"
    threat_model = ThreatModel(activations=True, aux_data=True, aux_activations=True)
    option_keys = tuple(k for k in InverseNetwork.option_keys if k != "repeats")

    def repeats(self, inputs: AttackInputs) -> int:
        return 1  # no queries: what crossed the wire once for each known pair

    def pairs(self, inputs: AttackInputs, repeats: int = 1) -> tuple[Tensor, Tensor]:
        aux, seen = inputs.need("aux"), inputs.need("aux_activations")
        position = {int(i): k for k, i in enumerate(aux.ids.tolist())}
        rows = [k for k, i in enumerate(seen.ids.tolist()) if int(i) in position]
        rows.sort(key=lambda k: position[int(seen.ids[k])])  # in the order of the aux data
        if len(rows) < 2:
            raise ThreatModelError(
                f"known-pairs needs the recorded activations of at least 2 of the attacker's "
                f"aux samples, found {len(rows)}; record what the client sends for the aux split "
                "too (`nopeek infer --split test,aux`, then --observations; or an --activations "
                "file whose ids include aux ids)"
            )
        z = seen.tensor[rows]
        x = aux.x[[position[int(seen.ids[k])] for k in rows]]
        return z, x
