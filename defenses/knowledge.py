"""What a Kerckhoffs attacker knows of a run's defenses: their mechanism, never their secrets.

The attack side (:func:`nopeek.attacks.search.strongest`) imports no defense; it is handed these
functions, as :func:`nopeek.attacks.run_attack` is handed :func:`~nopeek.defenses.run_sender`
(which answers its queries as the deployed client would, fresh noise included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nopeek.defenses.adversarial import _WIDTH, Adversarial
from nopeek.defenses.spec import parse_defenses

if TYPE_CHECKING:
    from nopeek.config import TrainConfig

KINDS = ("conv", "mlp")


def simulated_decoders(config: TrainConfig) -> dict[str, int]:
    """Decoder kind -> width of the decoder the data party trained against (the adversarial
    defense's simulated attacker), for the kinds it builds; empty without that defense.

    An attacker that builds a decoder of the same kind and width plays the game the client was
    trained to win; :meth:`nopeek.attacks.inverse_network.InverseNetwork.family` builds only
    wider ones. ``decoder=auto`` builds the kind the attacker's own rule would (conv for
    spatial cuts of images), so both kinds are named.

    >>> from nopeek.config import TrainConfig
    >>> simulated_decoders(TrainConfig(defenses=["adversarial:weight=1"]))
    {'conv': 32, 'mlp': 256}
    >>> simulated_decoders(TrainConfig(defenses=["adversarial:decoder=mlp,width=64"]))
    {'mlp': 64}
    >>> simulated_decoders(TrainConfig())
    {}
    """
    out: dict[str, int] = {}
    for hook in parse_defenses(config.defenses or ()):
        if isinstance(hook, Adversarial):
            kinds = KINDS if hook.kind == "auto" else (hook.kind,)
            out |= {k: hook.width or _WIDTH[k] for k in kinds}
    return out
