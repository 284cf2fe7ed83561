"""Run an attack on a finished run directory: grant what its threat model allows, score, write.

:func:`run_attack` rebuilds the data set and model from the run's ``config.json`` (weights from
``checkpoint.pt`` where granted), hands the attack an :class:`AttackInputs` holding only what its
:class:`ThreatModel` grants, scores the output against ground truth looked up *by sample id*,
and writes ``run_dir/attacks/<attack>.json`` (plus a PNG grid for images) atomically. Every
refusal is a one-line :class:`~nopeek.errors.ThreatModelError` raised before anything is written.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import torch

from nopeek.attacks import _vertical
from nopeek.attacks._folders import RunFolders
from nopeek.attacks._scoring import check_ids, score, write_result
from nopeek.attacks._sending import Sender, as_sent, forward_codec, query_segment, then_public
from nopeek.attacks._target import (
    Target,
    client_segment,
    fresh,
    load_weights,
    rebuild,
    receiver_segment,
)
from nopeek.attacks.base import (
    LABEL,
    Attack,
    AttackInputs,
    check_options,
)
from nopeek.attacks.known_pairs import set_aside_aux
from nopeek.attacks.registry import ATTACKS
from nopeek.attacks.result import AttackResult
from nopeek.config import TrainConfig, check_seed
from nopeek.data import Dataset, Split, stratified_take
from nopeek.errors import ConfigError, ThreatModelError
from nopeek.observe import Observations, Observed
from nopeek.rundir import RunDir
from nopeek.seeding import stream_seed

log = logging.getLogger(__name__)

_FIELDS = ("tensor", "ids", "epoch", "step")  # of an Observed
_RECORDED = {"activations": ("forward", "inference"), "gradients": ("backward", "train")}
_RECORDED["sent_activations"] = ("forward", "train")


def _first_ids(observed: Observed, n: int | None) -> Observed:
    """The ``n`` observations with the smallest sample ids (all if ``n`` is None), id order."""
    order = torch.argsort(observed.ids, stable=True)
    order = order if n is None else order[:n]
    return Observed(*(getattr(observed, f)[order] for f in _FIELDS))


def _first_ids_per_epoch(observed: Observed, n: int | None) -> Observed:
    if n is None:
        return observed
    parts = [_first_ids(observed.at_epoch(int(e)), n) for e in torch.unique(observed.epoch)]
    return Observed(*(torch.cat([getattr(p, f) for p in parts]) for f in _FIELDS))


def _refuse(run: Target, attack: Attack, obs: Observations) -> None:
    """Raise a one-line :class:`ThreatModelError` if ``attack`` cannot run on ``run``."""
    tm, topo = attack.threat_model, run.topology
    why = attack.refusal(run.config)
    if why is not None:
        raise ThreatModelError(why)
    if _vertical.needs_vertical(attack):
        _vertical.refuse(run, attack)
    if attack.kind == LABEL and run.sender in topo.label_parties:
        raise ThreatModelError(
            f"at cut {run.cut} the gradients go to {run.sender}, which holds the labels "
            f"already ({run.config.topology} topology); a label attack there is meaningless "
            "(pick another --cut or --party)"
        )
    if attack.kind != LABEL and run.receiver in topo.data_parties:
        raise ThreatModelError(
            f"cut {run.cut} goes from {run.sender} to {run.receiver}, which holds the raw inputs "
            f"already; attack a data party's cut ({topo.edges()[0].cut})"
        )
    for grant, (direction, phase) in _RECORDED.items():
        if getattr(tm, grant) and not _observed(obs, run, direction, phase).has(
            cut=run.cut, direction=direction, phase=phase
        ):
            raise ThreatModelError(
                f"{attack.name} needs the {phase} {grant} at cut {run.cut}, which {run.run_dir} "
                "did not record; retrain with --record-samples > 0"
            )
    weights = tm.client_weights or tm.query_client
    if run.folders is not None and run.folders.parties:  # the sender's own checkpoint
        home, needs_model = run.folders.folder_of(run.sender) if weights else None, weights
    else:
        home, needs_model = run.run_dir, weights or tm.client_architecture
    if needs_model and not RunDir(home, "run").checkpoint_path.is_file():
        raise ThreatModelError(
            f"{attack.name} needs the client segment but {home} has no "
            f"{RunDir.CHECKPOINT}; retrain the run (the checkpoint is written after every epoch)"
        )


def _aux(dataset: Dataset, size: int | None, seed: int, labels: bool) -> Split:
    """A seeded stratified subset of the aux split; labels replaced by -1 unless granted."""
    aux = dataset.aux
    if size is not None:
        if size > len(aux):
            raise ConfigError(f"--aux-size {size} exceeds the {len(aux)} auxiliary samples")
        aux = aux.subset(stratified_take(aux.y, size, stream_seed(seed, "attack.aux-subset"))[0])
    return aux if labels else Split(aux.x, torch.full_like(aux.y, -1), aux.ids)


def _grant(
    run: Target,
    obs: Observations,
    attack: Attack,
    seed: int,
    aux: int | None,
    sender: Sender | None = None,
):
    """An :class:`AttackInputs` with exactly what ``attack.threat_model`` grants."""
    tm, ds = attack.threat_model, run.dataset
    inputs = AttackInputs(ds.input_shape, ds.data_range, ds.n_classes, seed)
    if tm.activations:
        inputs.activations = _get(obs, run, "forward", "inference")
        inputs.compressor = forward_codec(run)
    if tm.gradients:
        inputs.gradients = _get(obs, run, "backward", "train")
    if tm.aux_data:
        inputs.aux = _aux(ds, aux, seed, tm.aux_labels)
        set_aside_aux(inputs, ds.aux.ids, pairs=tm.aux_activations)  # never its own samples
    if tm.client_weights or tm.query_client:
        load_weights(run)
        head = client_segment(run)  # raw inputs -> cut, sharing the loaded weights
        if tm.client_weights:
            inputs.client_segment = then_public(run, copy.deepcopy(head), seed, sender)
        if tm.query_client:
            query = query_segment(copy.deepcopy(head).eval())
            inputs.query_client = as_sent(run, query, seed, sender)
    if tm.client_architecture:
        build = fresh(run, seed, 0)
        inputs.client_architecture = lambda: then_public(run, build(), seed, sender)
    if tm.sent_activations:
        inputs.sent_activations = _get(obs, run, "forward", "train")
    if tm.tail_architecture:
        inputs.tail_architecture = fresh(run, seed, 1)
    if tm.own_train_inputs:
        inputs.own_train_inputs = _own_train_inputs(run, attack)
    if _vertical.needs_vertical(attack):
        _vertical.grant(inputs, run, obs, tm)
    if tm.receiver_segment:
        inputs.receiver_segment = receiver_segment(run)
    return inputs


def _own_train_inputs(run: Target, attack: Attack) -> Split:
    """The training samples as the attacked edge's sender holds them (its own inputs: a
    vertical client's feature slice), in id order, labels withheld (-1)."""
    if run.sender not in run.topology.data_parties or run.topology.strategy != "single":
        raise ThreatModelError(
            f"{attack.name} completes a data party's own model on its own training inputs, but "
            f"{run.sender} (sender at cut {run.cut}) holds none of its own in a "
            f"{run.config.topology} run; attack a data party's cut in a vanilla, vertical or "
            "multi-hop run (--cut, --party)"
        )
    train = run.dataset.train
    order = torch.argsort(train.ids)
    return Split(train.x[order], torch.full_like(train.y[order], -1), train.ids[order])


def _ends(obs: Observations, run: Target, direction: str, phase: str) -> dict[str, str]:
    """Who sent a message in ``direction`` on the attacked edge, and who received it.

    Many clients (relay, SplitFed) share one client segment after training, so the inference
    messages are recorded once, through one client's path: every client's inference traffic is
    that segment's, and the attacker of any client observes it.
    """
    sender, receiver = (run.sender, run.receiver)
    if direction != "forward":
        sender, receiver = receiver, sender
    if phase == "inference" and run.topology.strategy != "single":
        found = obs.senders(cut=run.cut, direction=direction, phase=phase)
        if sender not in found and len(found) == 1:
            sender = found[0]
    return {"sender": sender, "receiver": receiver}


def _observed(obs: Observations, run: Target, direction: str, phase: str) -> Observations:
    """``obs`` restricted to the attacked edge's messages in ``direction``."""
    ends = _ends(obs, run, direction, phase)
    keys = obs.keys(cut=run.cut, direction=direction, phase=phase, **ends)
    return Observations({k: obs.groups[k] for k in keys})


def _get(obs: Observations, run: Target, direction: str, phase: str):
    return obs.get(
        cut=run.cut, direction=direction, phase=phase, **_ends(obs, run, direction, phase)
    )


def run_attack(
    run_dir: str | Path,
    name: str,
    *,
    steps: int | None = None,
    aux_size: int | None = None,
    n_samples: int | None = None,
    seed: int = 0,
    cut: str | None = None,
    party: str | None = None,
    options: dict[str, Any] | None = None,
    write: bool = True,
    observations: str | Path | None = None,
    sender: Sender | None = None,
) -> AttackResult:
    """Run attack ``name`` on the finished run in ``run_dir`` and score it.

    ``cut`` and ``party`` pick the attacked edge: the cut, and the party whose activations
    the attacker observes there (see :mod:`nopeek.attacks._target` for the defaults).
    ``n_samples`` keeps the victims with the smallest ids (default: the attack's
    ``default_samples``; label attacks: per epoch).
    ``aux_size`` draws a stratified, seeded subset of the aux split (default: all of it).
    ``options`` go to the attack (e.g. ``{"tv": 0.01}``); a key the attack does not declare
    (``option_keys``) is refused. ``seed`` is in 0..2**31 - 1. With ``write``, the JSON (and
    PNG) land in ``run_dir/attacks/<name>.json``, with ``@<cut>`` for a non-default cut and
    ``@<party>`` when ``party`` is given (``white-box@client1.json``). Every check runs before
    anything is loaded or written. ``observations`` attacks another observations file than
    ``run_dir/observations.pt`` (e.g. what ``nopeek infer`` recorded while serving), with the
    run's model and data. ``sender(config, cut, seed)`` gives what the client's forward
    defenses do to what it sends (:func:`nopeek.defenses.run_sender`): query answers on a
    defended run pass through it, as the deployed client's would.
    """
    counts = {"steps": steps, "aux-size": aux_size, "n-samples": n_samples}
    for key, value in counts.items():
        if value is not None and (isinstance(value, bool) or int(value) < 1):
            raise ConfigError(f"--{key} must be an integer >= 1, got {value}")
    check_seed(seed, what="--seed")
    check_options(ATTACKS.get(name), options or {})
    run_dir = Path(run_dir)
    attack, run, inputs = _prepare(
        run_dir, name, cut, party, seed, aux_size, n_samples, observations, sender=sender
    )
    inputs.steps, inputs.options = steps, dict(options or {})
    output = attack.run(inputs)
    check_ids(name, output, inputs)
    result = AttackResult(
        attack=name,
        kind=attack.kind,
        threat_model=attack.threat_model.describe(),
        cut=run.cut,
        party=run.sender,
        receiver=run.receiver,
        run=str(run_dir),
        seed=seed,
        steps=steps if steps is not None else attack.default_steps,
        aux_size=len(inputs.aux) if inputs.aux is not None else None,
        settings=dict(output.extra),
        output=output,
        **score(output, run.dataset, seed=seed),
    )
    if write:
        stem = name if run.cut == run.topology.edges()[0].cut else f"{name}@{run.cut}"
        stem += f"@{party}" if party is not None else ""
        home = run.folders.home if run.folders else run_dir  # the attacker's folder
        write_result(home / RunDir.ATTACKS / stem, result, run.dataset)
        result.path = RunDir(home, "run").attack_path(stem)
    return result


def _check_served_from(observations: Path, config: TrainConfig) -> None:
    """Refuse traffic that ``nopeek infer --dataset OTHER`` served: its sample ids number the
    rows of that other data set, so scoring them against the run's samples would be wrong."""
    served = observations.parent / "inference.json"
    if not served.is_file():
        return
    meta = RunDir(observations.parent, "inference").read_json("inference.json")
    data = meta.get("data") if isinstance(meta, dict) else None
    own = config.dataset
    if isinstance(data, str) and data != own and not data.startswith(f"{own}:"):
        raise ThreatModelError(
            f"{observations} was served from --dataset {data}, not from the run's {own}; its "
            "sample ids do not name the run's samples, so nothing can score the attack: serve "
            "a split of the run's data (`nopeek infer --split test`)"
        )


def _prepare(
    run_dir: Path,
    name: str,
    cut: str | None,
    party: str | None,
    seed: int,
    aux_size: int | None,
    n: int | None,
    observations: str | Path | None = None,
    *,
    sender: Sender | None = None,
) -> tuple[Attack, Target, AttackInputs]:
    """Load the run, refuse what the attack may not do, and build its inputs."""
    folders = RunFolders.find(run_dir)  # a distributed run's: see nopeek.attacks._folders
    config = folders.config()
    entry = ATTACKS.get(name)  # an unknown name lists the valid ones
    attack: Attack = entry() if isinstance(entry, type) else entry
    obs = None  # a distributed run's: its attacker's, once the attacked edge is known
    if observations is not None:
        if not Path(observations).is_file():
            raise ThreatModelError(
                f"no observations file at {Path(observations)}; pass one `nopeek infer` wrote"
            )
        _check_served_from(Path(observations), config)
        obs = Observations.load(observations)
    elif not folders.parties:
        obs = RunDir.open(run_dir, "run").observations()
    dataset = config.load_data()
    passive = attack.kind == LABEL or _vertical.needs_vertical(attack)  # not the label party
    run = rebuild(run_dir, config, dataset, cut=cut, party=party, label=passive)
    run.folders = folders.resolve(run.topology, run.sender if passive else run.receiver)
    if obs is None:
        obs = RunDir.open(run.folders.home, "run").observations()
    _refuse(run, attack, obs)
    inputs = _grant(run, obs, attack, seed, aux_size, sender)
    n = n if n is not None else attack.default_samples
    if inputs.activations is not None:
        inputs.activations = _first_ids(inputs.activations, n)
    if inputs.own_train_inputs is not None and n is not None:
        inputs.own_train_inputs = inputs.own_train_inputs.subset(
            torch.arange(min(n, len(inputs.own_train_inputs)))
        )
    _vertical.trim(inputs, n)
    for key in ("gradients", "sent_activations"):
        if getattr(inputs, key) is not None:
            setattr(inputs, key, _first_ids_per_epoch(getattr(inputs, key), n))
    return attack, run, inputs
