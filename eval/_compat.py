"""Up-front checks that a sweep's attacks and defenses fit its task, before anything trains."""

from __future__ import annotations

from collections.abc import Sequence

from nopeek.config import TrainConfig
from nopeek.errors import ConfigError


def check_attack_options(specs: Sequence[str]) -> None:
    """Each spec's options must be ones its attack declares, or the shared ``steps``,
    ``aux_size`` and ``n_samples`` (one line listing the valid keys otherwise).

    >>> check_attack_options(["white-box:stepz=2"])
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: unknown option 'stepz' for attack white-box; valid options: tv, lr, restarts, decode, steps, aux_size, n_samples
    """  # noqa: E501
    from nopeek.attacks import ATTACKS, check_options
    from nopeek.eval.settings import parse_attack
    from nopeek.eval.sweep import ATTACK_OPTIONS

    for spec in specs:
        name, options = parse_attack(spec)
        check_options(ATTACKS.get(name), options, shared=ATTACK_OPTIONS)


def attack_kind(name: str) -> str:
    """``"reconstruction"`` or ``"label"`` for a registered attack (a miss lists valid names)."""
    from nopeek.attacks import ATTACKS

    entry = ATTACKS.get(name)
    return entry.kind


def n_classes(config: TrainConfig) -> int:
    """Classes of the task ``config`` trains on (2 with one-vs-rest)."""
    if config.one_vs_rest is not None:
        return 2
    if config.class_names is not None:  # a data file's, filled in by resolved()
        return len(config.class_names)
    from nopeek.data import load_dataset

    ds = load_dataset(config.dataset, seed=config.seed, data_root=config.data_root)
    return ds.n_classes


def data_kind(config: TrainConfig) -> str:
    """``"image"`` or ``"tabular"``: what ``config``'s data set holds (a data file's header or
    listing is read; a bundled set is loaded, torchvision sets are images)."""
    from nopeek.data import VISION_SPECS
    from nopeek.data.user import describe

    user = describe(config.dataset, target=config.target, image_size=config.image_size)
    if user is not None:
        return user.kind
    if config.dataset in VISION_SPECS:
        return "image"
    from nopeek.data import load_dataset

    return load_dataset(config.dataset, seed=config.seed, data_root=config.data_root).kind


def check_attacks_fit(base: TrainConfig, attacks: Sequence[str]) -> None:
    """Unknown attacks or options, duplicates and binary-only label attacks on a multi-class task
    fail here.

    ``attacks`` are attack specs (``name[:key=value,...]``); an attack is binary-only when its
    class declares ``binary_only`` (:class:`~nopeek.attacks.Attack`), plug-ins included.

    >>> check_attacks_fit(TrainConfig(dataset="digits"), ["norm"])
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: attack 'norm' needs a binary task, but digits has 10 classes; ...
    """
    from nopeek.eval.settings import parse_attack

    names = [parse_attack(a)[0] for a in attacks]
    if len(set(names)) != len(names):
        raise ConfigError(f"--attack lists an attack twice: {','.join(names)}; give each once")
    from nopeek.attacks import ATTACKS

    for name in names:
        attack_kind(name)
    check_attack_options(attacks)
    binary = [a for a in names if ATTACKS.get(a).binary_only]
    if binary:
        k = n_classes(base)
        if k != 2:
            raise ConfigError(
                f"attack {binary[0]!r} needs a binary task, but {base.dataset} has {k} classes; "
                "add --one-vs-rest K (e.g. --one-vs-rest 0) or drop the label attacks"
            )


def check_defenses(
    specs: Sequence[str], *, n_classes: int, alpha: float = 0.0, delta: float | None = None
) -> None:
    """Build the defenses of ``specs`` as training will (one-line errors for bad specs and for
    binary-only label defenses on a multi-class task)."""
    if not specs:
        return
    from nopeek.defenses import parse_defenses

    parse_defenses(list(specs), n_classes=n_classes, alpha=alpha, delta=delta)


MULTI_CLIENT = ("vertical", "many-clients", "splitfed")


def _on_predictions(name: str) -> bool:
    """Whether attack ``name`` is the prediction receiver's (GRN): never of the label party."""
    from nopeek.attacks import ATTACKS

    return bool(ATTACKS.get(name).threat_model.predictions)


def attack_targets(config: TrainConfig, name: str) -> list[tuple[str, str | None]]:
    """``(result stem, party)`` for each edge a sweep attacks with ``name`` on a run of
    ``config``: one per client in a topology with several clients (``white-box@client1``), so
    the report shows leakage per client; otherwise the default edge (``white-box``, ``None``).

    A label attack on a U-shaped run attacks the second cut (the server's gradient comes
    back from the client's tail), which its stem names, as the harness writes it.

    >>> attack_targets(TrainConfig(topology="vertical", clients=2), "white-box")
    [('white-box@client0', 'client0'), ('white-box@client1', 'client1')]
    >>> attack_targets(TrainConfig(topology="u-shaped", cut="conv2,fc1"), "norm")
    [('norm@fc1', None)]
    """
    if config.topology == "u-shaped" and attack_kind(name) == "label" and len(config.cuts) > 1:
        return [(f"{name}@{config.cuts[-1]}", None)]
    if config.topology not in MULTI_CLIENT:
        return [(name, None)]
    clients = [f"client{k}" for k in range(config.clients)]
    if attack_kind(name) == "label" or _on_predictions(name):  # the label party attacks
        clients = [c for c in clients if c != config.label_party]
    return [(f"{name}@{c}", c) for c in clients]
