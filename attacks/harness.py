"""Run an attack on a finished run directory: grant what its threat model allows, score, write.

:func:`run_attack` rebuilds the data set and model from the run's ``config.json`` (weights from
``checkpoint.pt`` where granted), hands the attack an :class:`AttackInputs` holding only what its
:class:`ThreatModel` grants, scores the output against ground truth looked up *by sample id*,
and writes ``run_dir/attacks/<attack>.json`` (plus a PNG grid for images) atomically. Every
refusal is a one-line :class:`~nopeek.errors.ThreatModelError` raised before anything is written.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nopeek._io import safe_torch_load
from nopeek.attacks._scoring import check_ids, score, write_result
from nopeek.attacks.base import LABEL, Attack, AttackInputs, LabelScores, Reconstruction
from nopeek.attacks.registry import ATTACKS
from nopeek.config import TrainConfig
from nopeek.data import Dataset, Split, stratified_take
from nopeek.errors import CheckpointError, ConfigError, ThreatModelError
from nopeek.models import build_model, split
from nopeek.observe import Observations, Observed
from nopeek.topology import DATA_PREFIX, TOPOLOGIES, Topology

log = logging.getLogger(__name__)

_FIELDS = ("tensor", "ids", "epoch", "step")  # of an Observed
_RECORDED = {"activations": ("forward", "inference"), "gradients": ("backward", "train")}
_RECORDED["sent_activations"] = ("forward", "train")
_METRICS = ("ssim", "psnr", "mse")
_RECON_KEYS = (*_METRICS, *(f"baseline_{m}" for m in _METRICS), "dcor_reconstruction", "data_range")


@dataclass
class AttackResult:
    """One attack's outcome on one run; :meth:`to_json` is what ``attacks/<name>.json`` holds.

    Reconstruction attacks fill ``ssim`` ... ``data_range`` (``ssim`` is ``None`` for tabular
    data); label attacks fill ``auc`` (final epoch), ``auc_per_epoch`` and, when the attack
    makes hard guesses, ``accuracy`` (final epoch). ``output`` keeps the raw
    :class:`Reconstruction` or :class:`LabelScores` (not written to JSON).
    """

    attack: str
    kind: str
    threat_model: str
    cut: str
    run: str
    seed: int
    n_samples: int = 0
    steps: int | None = None
    aux_size: int | None = None
    ssim: float | None = None
    psnr: float | None = None
    mse: float | None = None
    baseline_ssim: float | None = None
    baseline_psnr: float | None = None
    baseline_mse: float | None = None
    dcor_reconstruction: float | None = None
    data_range: float | None = None
    auc: float | None = None
    auc_per_epoch: list[float | None] | None = None
    epochs: list[int] | None = None
    accuracy: float | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    output: Reconstruction | LabelScores | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Flat JSON: the shared keys plus this kind's metric keys (``None`` -> null)."""
        shared = ("attack", "kind", "threat_model", "n_samples", "cut", "run", "seed", "steps")
        out = {k: getattr(self, k) for k in shared}
        if self.aux_size is not None:
            out["aux_size"] = self.aux_size
        if self.kind == LABEL:
            out |= {k: getattr(self, k) for k in ("auc", "auc_per_epoch", "epochs")}
            if self.accuracy is not None:
                out["accuracy"] = self.accuracy
        else:
            out |= {k: getattr(self, k) for k in _RECON_KEYS}
        keep = {k: v for k, v in self.settings.items() if isinstance(v, (bool, int, float, str))}
        out["settings"] = {k: None if v != v else v for k, v in keep.items()}  # NaN -> null
        return out


def _load_config(run_dir: Path) -> TrainConfig:
    if not run_dir.is_dir():
        raise ConfigError(f"no run directory at {run_dir}; train one first with `nopeek train`")
    path = run_dir / "config.json"
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"cannot read {path} ({type(exc).__name__}); is {run_dir} a finished nopeek run?"
        ) from None


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


@dataclass
class _Run:
    """A finished run rebuilt for attacking at ``cut``: who sends and receives there."""

    run_dir: Path
    config: TrainConfig
    dataset: Dataset
    topology: Topology
    model: nn.Sequential
    cut: str
    sender: str  # the party sending activations across ``cut`` (it receives the gradients)
    receiver: str  # the party receiving them (it sends the gradients back)


def _build_model(config: TrainConfig, dataset: Dataset, seed: int) -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(
            config.model, input_shape=dataset.input_shape, n_classes=dataset.n_classes
        )


def _roles(topology: Topology) -> dict[str, tuple[str, str]]:
    """cut -> (party sending activations, party receiving them)."""
    out = {}
    for node in topology.nodes:
        for src in node.inputs:
            if not src.startswith(DATA_PREFIX) and topology.crosses(src, node.name):
                out[topology.node(src).cut or src] = (topology.node(src).party, node.party)
    return out


def _rebuild(run_dir: Path, config: TrainConfig, dataset: Dataset, cut: str | None) -> _Run:
    model = _build_model(config, dataset, config.seed)
    topology = TOPOLOGIES.get(config.topology)(model, config.cuts)
    roles = _roles(topology)
    cut = cut or config.cuts[0]
    if cut not in roles:
        raise ConfigError(
            f"run {run_dir} has no cut {cut!r}; its cuts are: {', '.join(roles)} (pass --cut)"
        )
    return _Run(run_dir, config, dataset, topology, model, cut, *roles[cut])


def _load_weights(run: _Run) -> None:
    """Load every party's trained segments from ``checkpoint.pt`` into ``run.model``."""
    state = safe_torch_load(run.run_dir / "checkpoint.pt")
    try:
        for party in run.topology.parties:
            modules = run.topology.modules_of(party)
            for module, sd in zip(modules, state["parties"][party], strict=True):
                module.load_state_dict(sd)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise CheckpointError(
            f"checkpoint in {run.run_dir} does not fit its config ({first}); retrain the run"
        ) from None
    run.model.eval()


def _refuse(run: _Run, attack: Attack, obs: Observations) -> None:
    """Raise a one-line :class:`ThreatModelError` if ``attack`` cannot run on ``run``."""
    tm, owners = attack.threat_model, run.topology.owners
    if attack.kind == LABEL and owners.get("y") == run.sender:
        raise ThreatModelError(
            f"at cut {run.cut} the gradients go to the {run.sender}, which holds the labels "
            f"already ({run.config.topology} topology); a label attack there is meaningless"
        )
    if attack.kind != LABEL and owners.get("x") == run.receiver:
        raise ThreatModelError(
            f"cut {run.cut} goes from {run.sender} to {run.receiver}, which holds the raw inputs "
            f"already; attack the data party's first cut ({run.config.cuts[0]})"
        )
    for grant, (direction, phase) in _RECORDED.items():
        if getattr(tm, grant) and not obs.has(cut=run.cut, direction=direction, phase=phase):
            raise ThreatModelError(
                f"{attack.name} needs the {phase} {grant} at cut {run.cut}, which {run.run_dir} "
                "did not record; retrain with --record-samples > 0"
            )
    needs_model = tm.client_weights or tm.query_client or tm.client_architecture
    if needs_model and not (run.run_dir / "checkpoint.pt").is_file():
        raise ThreatModelError(
            f"{attack.name} needs the client segment but {run.run_dir} has no checkpoint.pt; "
            "retrain the run (the checkpoint is written after every epoch)"
        )


def _aux(dataset: Dataset, size: int | None, seed: int, labels: bool) -> Split:
    """A seeded stratified subset of the aux split; labels replaced by -1 unless granted."""
    aux = dataset.aux
    if size is not None:
        if size > len(aux):
            raise ConfigError(f"--aux-size {size} exceeds the {len(aux)} auxiliary samples")
        aux = aux.subset(stratified_take(aux.y, size, seed)[0])
    return aux if labels else Split(aux.x, torch.full_like(aux.y, -1), aux.ids)


def _query(segment: nn.Module, batch: int = 512) -> Callable[[Tensor], Tensor]:
    """Black-box access: (B, *input_shape) -> (B, *cut_shape), detached, no gradients."""

    @torch.no_grad()
    def query(x: Tensor) -> Tensor:
        return torch.cat([segment(x[i : i + batch]).detach() for i in range(0, len(x), batch)])

    return query


def _as_sent(run: _Run, query: Callable[[Tensor], Tensor], seed: int):
    """A query returns what the client would *send*: its forward defenses (clipping, noise at
    inference) applied, as the deployed client would; the attacker's noise is freshly seeded."""
    if not run.config.defenses:
        return query
    from nopeek.defenses import sender_transform

    cfg = run.config
    send = sender_transform(
        cfg.defenses, cut=run.cut, seed=seed, epochs=cfg.epochs, delta=cfg.delta
    )
    return lambda x: send(query(x))


def _fresh(run: _Run, seed: int, part: int) -> Callable[[], nn.Module]:
    """Fresh segments before (``part`` 0) or after (1) the cut, from a seed derived from the
    attack's that never equals the training seed (never the client's own initial weights)."""
    init = int(np.random.SeedSequence([seed, 0x5EED, part]).generate_state(1)[0])
    init = init + 1 if init == run.config.seed else init
    return lambda: split(_build_model(run.config, run.dataset, init), [run.cut])[part]


def _grant(run: _Run, obs: Observations, attack: Attack, seed: int, aux: int | None):
    """An :class:`AttackInputs` with exactly what ``attack.threat_model`` grants."""
    tm, ds = attack.threat_model, run.dataset
    inputs = AttackInputs(ds.input_shape, ds.data_range, ds.n_classes, seed)
    if tm.activations:
        inputs.activations = obs.get(cut=run.cut, direction="forward", phase="inference")
    if tm.gradients:
        inputs.gradients = obs.get(cut=run.cut, direction="backward", phase="train")
    if tm.aux_data:
        inputs.aux = _aux(ds, aux, seed, tm.aux_labels)
    if tm.client_weights or tm.query_client:
        _load_weights(run)
        head = split(run.model, [run.cut])[0]  # raw inputs -> cut, sharing the loaded weights
        if tm.client_weights:
            inputs.client_segment = copy.deepcopy(head)
        if tm.query_client:
            inputs.query_client = _as_sent(run, _query(copy.deepcopy(head).eval()), seed)
    if tm.client_architecture:
        inputs.client_architecture = _fresh(run, seed, 0)
    if tm.sent_activations:
        inputs.sent_activations = obs.get(cut=run.cut, direction="forward", phase="train")
    if tm.tail_architecture:
        inputs.tail_architecture = _fresh(run, seed, 1)
    return inputs


def run_attack(
    run_dir: str | Path,
    name: str,
    *,
    steps: int | None = None,
    aux_size: int | None = None,
    n_samples: int | None = None,
    seed: int = 0,
    cut: str | None = None,
    options: dict[str, Any] | None = None,
    write: bool = True,
) -> AttackResult:
    """Run attack ``name`` on the finished run in ``run_dir`` and score it.

    ``cut`` defaults to the data party's first cut. ``n_samples`` keeps the victims with the
    smallest ids (default: the attack's ``default_samples``; label attacks: per epoch).
    ``aux_size`` draws a stratified, seeded subset of the aux split (default: all of it).
    ``options`` go to the attack (e.g. ``{"tv": 0.01}``). With ``write``, the JSON (and PNG)
    land in ``run_dir/attacks/<name>.json``, or ``<name>@<cut>.json`` for a non-default cut.
    """
    counts = {"steps": steps, "aux-size": aux_size, "n-samples": n_samples, "seed": seed}
    for key, value in counts.items():
        low = 0 if key == "seed" else 1
        if value is not None and (isinstance(value, bool) or int(value) < low):
            raise ConfigError(f"--{key} must be an integer >= {low}, got {value}")
    run_dir = Path(run_dir)
    attack, run, inputs = _prepare(run_dir, name, cut, seed, aux_size, n_samples)
    inputs.steps, inputs.options = steps, dict(options or {})
    output = attack.run(inputs)
    check_ids(name, output, inputs)
    result = AttackResult(
        attack=name,
        kind=attack.kind,
        threat_model=attack.threat_model.describe(),
        cut=run.cut,
        run=str(run_dir),
        seed=seed,
        steps=steps if steps is not None else getattr(attack, "default_steps", None),
        aux_size=len(inputs.aux) if inputs.aux is not None else None,
        settings=dict(output.extra),
        output=output,
        **score(output, run.dataset),
    )
    if write:
        stem = name if run.cut == run.config.cuts[0] else f"{name}@{run.cut}"
        write_result(run_dir / "attacks" / stem, result, run.dataset)
    return result


def _prepare(
    run_dir: Path, name: str, cut: str | None, seed: int, aux_size: int | None, n: int | None
) -> tuple[Attack, _Run, AttackInputs]:
    """Load the run, refuse what the attack may not do, and build its inputs."""
    config = _load_config(run_dir)
    entry = ATTACKS.get(name)  # an unknown name lists the valid ones
    attack: Attack = entry() if isinstance(entry, type) else entry
    if not (run_dir / "observations.pt").is_file():
        raise ThreatModelError(f"{run_dir} has no observations.pt; let its training finish first")
    obs = Observations.load(run_dir / "observations.pt")
    dataset = config.load_data()
    run = _rebuild(run_dir, config, dataset, cut)
    _refuse(run, attack, obs)
    inputs = _grant(run, obs, attack, seed, aux_size)
    n = n if n is not None else getattr(attack, "default_samples", None)
    if inputs.activations is not None:
        inputs.activations = _first_ids(inputs.activations, n)
    for key in ("gradients", "sent_activations"):
        if getattr(inputs, key) is not None:
            setattr(inputs, key, _first_ids_per_epoch(getattr(inputs, key), n))
    return attack, run, inputs
