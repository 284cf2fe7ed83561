"""Audit a client segment exported from the user's own deployment: what do its activations leak?

:func:`audit` takes the segment (:func:`~nopeek.attacks._client_file.load_client_model`) or only
what crossed the wire (:func:`~nopeek.attacks._client_file.load_activations`), the victims'
data and the attacker's own auxiliary data, and runs reconstruction attacks under their threat
models, as :func:`~nopeek.attacks.harness.run_attack` does on a run directory:

- **victims** (:func:`load_data`): every row of a data file (``npz:PATH``, ...; any count,
  labels optional), or the *test split* of a bundled set or of one file given as both victims
  and aux (split as ``nopeek train`` splits it, same seed: a segment trained by nopeek on it
  never saw them). With ``activations`` the ids may name a sample of any split.
- **aux**: the attacker's own data: a data file whole, else the spec's *aux split*. Its mean
  image is the baseline of every score. Labels only where a threat model grants them.
- The segment is run on the victims under ``no_grad`` in batches, keeping sample ids; white-box
  gets a copy of it, inverse-network only query access (with the aux inputs); neither sees the
  victims' inputs. Attacks needing what an exported segment cannot give (a fresh copy of the
  architecture, training-phase gradients) are refused in one line naming the threat model.

Writes ``out/attacks/<name>.json`` (+ ``.png`` for images) and ``out/report.md`` into a
:class:`~nopeek.rundir.RunDir` of kind ``audit``; every check runs before anything is written.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nopeek.attacks._client_file import FrozenSegment, load_activations, load_client_model
from nopeek.attacks._scoring import check_ids, score, truth, write_result
from nopeek.attacks._sending import query_segment
from nopeek.attacks.base import LABEL, Attack, AttackInputs, Known, check_options
from nopeek.attacks.harness import _first_ids
from nopeek.attacks.known_pairs import set_aside_aux
from nopeek.attacks.registry import ATTACKS
from nopeek.attacks.result import AttackResult, report_markdown
from nopeek.attacks.search import check_budget, search_options
from nopeek.config import check_seed
from nopeek.data import DATASETS, Dataset, Split, load_dataset
from nopeek.data.user import data_file_format, load_whole
from nopeek.distance import distance_correlation
from nopeek.errors import ConfigError, CutShapeError, ThreatModelError
from nopeek.io import atomic_write_bytes, atomic_write_json
from nopeek.models.packing import Layout, Packed
from nopeek.observe import Observed
from nopeek.rundir import RunDir
from nopeek.schema import brief

__all__ = [
    "AuditInputs",
    "FrozenSegment",
    "audit",
    "load_activations",
    "load_client_model",
    "load_data",
    "record",
    "report_markdown",
]

log = logging.getLogger(__name__)

_GIVEN = {"activations", "aux_data", "aux_labels", "aux_activations", "client_weights"}
_GIVEN |= {"query_client"}
_NEEDS_SEGMENT = ("client_weights", "query_client")
DCOR_SAMPLES = 1000  # victims the distance correlation is measured on
BUDGET = ("steps", "n_samples")  # what an attack spec may set for its own attack in an audit


@dataclass
class AuditInputs:
    """The audit's material: ``segment`` (B, *input_shape) -> (B, *cut_shape), or ``None`` when
    only ``recorded`` activations are given; ``victims`` (the data set whose samples the
    activations belong to: its test split is recorded) and the attacker's ``aux`` split."""

    segment: nn.Module | None
    recorded: Observed | None
    victims: Dataset
    aux: Split


def load_data(
    victims: str,
    aux: str,
    *,
    seed: int = 0,
    data_root: str | None = None,
    target: str | None = None,
    image_size: int | None = None,
) -> tuple[Dataset, Split]:
    """The victims' data set (its ``test`` split holds the victims) and the attacker's samples,
    for the data set specs ``victims`` and ``aux``.

    A data file (``npz:PATH``, ``csv:PATH``, ``imagefolder:PATH``) is read whole
    (:func:`nopeek.data.user.load_whole`): every row is a victim, or the attacker's; any count,
    labels optional. A bundled set, or one file given for both, is split as ``nopeek train``
    splits it (with ``seed``): the victims are its test split, the attacker holds its aux split.
    """
    options = {"target": target, "image_size": image_size}

    def split(spec: str) -> Dataset:
        given = {} if spec in DATASETS else options
        return load_dataset(spec, seed=seed, data_root=data_root, **given)

    if victims == aux:
        ds = split(victims)
        return ds, ds.aux
    whole = {s: data_file_format(s) is not None for s in (victims, aux)}
    victim_set = load_whole(victims, **options) if whole[victims] else split(victims)
    own = load_whole(aux, **options) if whole[aux] else split(aux)
    return victim_set, own.test if whole[aux] else own.aux


def record(segment: nn.Module, victims: Split, *, batch: int = 256) -> Observed:
    """What ``segment`` sends for ``victims``: (N, *cut_shape) under ``no_grad``, with ids."""
    out = []
    with torch.no_grad():
        for i in range(0, len(victims), batch):
            x = victims.x[i : i + batch]
            try:
                z = segment(x)
            except Exception as exc:  # whatever the user's module raises on a bad input
                raise CutShapeError(
                    f"the client segment fails on the victims' inputs {tuple(x.shape)} "
                    f"({brief(exc)}); export it for inputs shaped like the victims', with a "
                    "dynamic batch dimension (torch.export.Dim)"
                ) from None
            if isinstance(z, (tuple, list)) and z and all(isinstance(t, Tensor) for t in z):
                z = Layout.of(z, "client-model output").pack(z)  # a skip crosses its cut
            if not isinstance(z, Tensor):
                raise CutShapeError(
                    f"the client segment returns {type(z).__name__}, not tensors; export "
                    "the part of the model up to one cut"
                )
            out.append(z.detach().float())
    z = torch.cat(out)
    zeros = torch.zeros(len(z), dtype=torch.long)
    return Observed(z, victims.ids.clone(), zeros, zeros.clone())


def _refuse(attack: Attack, has_segment: bool, own_aux: bool) -> None:
    tm = attack.threat_model
    needs = "+".join(k for k, v in vars(tm).items() if v)
    if attack.kind == LABEL:
        raise ThreatModelError(
            f"{attack.name} is a label attack ({needs}): it needs training-phase gradients, "
            "which an audit of a deployed segment does not have; audit reconstruction attacks"
        )
    extra = sorted(k for k, v in vars(tm).items() if v and k not in _GIVEN)
    if extra:
        raise ThreatModelError(
            f"{attack.name} needs {', '.join(extra)} (threat model {needs}), which an exported "
            "segment does not give; run it on a nopeek run with `nopeek attack`"
        )
    if tm.aux_activations and not own_aux:
        raise ThreatModelError(
            f"{attack.name} matches the recorded activations to the attacker's own samples by "
            "id, so --aux must be the same data as --victims (its aux split is the attacker's)"
        )
    if not has_segment and any(getattr(tm, k) for k in _NEEDS_SEGMENT):
        raise ThreatModelError(
            f"{attack.name} needs the client segment (threat model {needs}) and only "
            "--activations were given; add --client-model FILE"
        )


def _own_aux(material: AuditInputs) -> bool:
    """Whether the attacker's aux split is the victims' set's own (ids name the same samples)."""
    aux, own = material.aux, material.victims.aux
    return torch.equal(aux.ids, own.ids) and torch.equal(aux.x, own.x)


def _copy(segment: nn.Module) -> nn.Module:
    if isinstance(segment, Packed):
        return Packed(_copy(segment.segment), takes=segment.takes, gives=segment.gives)
    own = getattr(segment, "copy", None)
    return own() if callable(own) else copy.deepcopy(segment)


def one_tensor(segment: nn.Module, victims: Dataset) -> nn.Module:
    """``segment``, packed (:mod:`nopeek.models.packing`) if it returns several tensors (a skip
    crosses its cut), so that every attack sees one tensor, as training sends it."""
    with torch.no_grad():
        out = segment(victims.test.x[:2])
    if isinstance(out, (tuple, list)):
        return Packed(segment, gives=Layout.of(out, "client-model output"))
    return segment


def _grant(attack: Attack, material: AuditInputs, seed: int) -> AttackInputs:
    """An :class:`AttackInputs` holding exactly what ``attack.threat_model`` grants."""
    tm, ds, aux = attack.threat_model, material.victims, material.aux
    inputs = AttackInputs(ds.input_shape, ds.data_range, ds.n_classes, seed)
    if tm.activations:
        inputs.activations = material.recorded
    if tm.aux_data:
        inputs.aux = aux if tm.aux_labels else Split(aux.x, torch.full_like(aux.y, -1), aux.ids)
        if _own_aux(material):  # the attacker's samples are never its victims
            set_aside_aux(inputs, aux.ids, pairs=tm.aux_activations)
    if tm.client_weights:
        inputs.client_segment = _copy(material.segment)
    if tm.query_client:
        inputs.query_client = query_segment(_copy(material.segment).eval())
    return inputs


def _scoring_set(victims: Dataset, aux: Split) -> Dataset:
    """Ground truth by id from every split of the victims' set; the baseline from ``aux``.

    The attacker's aux rows get negative ids, so they never shadow a victim with the same id
    from another file."""
    both = (victims.train, victims.aux)
    train = Split(*(torch.cat([getattr(p, f) for p in both]) for f in ("x", "y", "ids")))
    negative = -1 - torch.arange(len(aux), dtype=torch.long)
    return replace(victims, train=train, aux=Split(aux.x, aux.y, negative))


def _check_material(material: AuditInputs) -> None:
    ds, aux = material.victims, material.aux
    if tuple(aux.x.shape[1:]) != tuple(ds.input_shape):
        raise ConfigError(
            f"the aux inputs are {tuple(aux.x.shape[1:])} but the victims' are {ds.input_shape}; "
            "give --aux data shaped like the victims'"
        )
    if len(aux) == 0:
        raise ConfigError("the aux split is empty; give --aux data with more samples")
    rec, seg = material.recorded, material.segment
    known = torch.cat([ds.train.ids, ds.test.ids, ds.aux.ids])
    if rec is not None and not bool(torch.isin(rec.ids, known).all()):
        bad = int(rec.ids[~torch.isin(rec.ids, known)][0])
        raise ConfigError(
            f"--activations name sample id {bad}, which is not in the victims' data set "
            f"{ds.name}; give the --victims the activations were recorded for"
        )
    if rec is not None and seg is not None:
        want = tuple(record(seg, ds.test.subset(torch.arange(min(2, len(ds.test))))).tensor.shape)
        if tuple(rec.tensor.shape[1:]) != want[1:]:
            raise CutShapeError(
                f"--activations are {tuple(rec.tensor.shape[1:])} per sample but the client "
                f"segment sends {want[1:]}; give activations recorded at this segment's cut"
            )


def audit(
    material: AuditInputs,
    attacks: Sequence[str],
    out: str | Path,
    *,
    steps: int | None = None,
    n_samples: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    label: str = "",
    options: Mapping[str, Mapping[str, Any]] | None = None,
    attack_budget: int | None = None,
) -> list[AttackResult]:
    """Run ``attacks`` on ``material`` and write their results and ``report.md`` to ``out``.

    ``n_samples`` keeps the victims with the smallest ids (default: each attack's
    ``default_samples``); ``steps`` defaults per attack; ``label`` names the audited segment in
    the JSON's ``run`` field (default: ``out``); ``options[name]`` go to attack ``name``
    (e.g. ``{"white-box": {"tv": 0.0}}``; an undeclared key is refused), except ``steps`` and
    ``n_samples`` (:data:`BUDGET`), which override the shared ones for that attack. With
    ``attack_budget``, every attack runs as a family (:func:`nopeek.attacks.search.search`,
    that many configurations at the first rung): its worst case is its result, and the search
    goes to ``out/attacks/<name>.strongest.json``.
    """
    check_seed(seed, what="--seed")
    if attack_budget is not None:
        check_budget(attack_budget)
    chosen = _choose(material, attacks, options or {}, {"steps": steps, "n_samples": n_samples})
    _check_material(material)
    if material.recorded is None:  # (a segment that fails on the victims is one line here)
        material = replace(material, recorded=record(material.segment, material.victims.test))
    if material.segment is not None:
        material = replace(material, segment=one_tensor(material.segment, material.victims))
    truth_set = _scoring_set(material.victims, material.aux)
    leakage = measure_dcor(material.recorded, truth_set)
    target = RunDir(out, "audit")
    target.plan(overwrite=overwrite)  # refuse a bad --out before the (slow) attacks run
    label = label or str(out)
    results, searches = [], []
    for attack, opts, budget in chosen:
        steps_n = budget["steps"], budget["n_samples"]
        if attack_budget is None:
            results.append(_run_one(attack, material, truth_set, *steps_n, seed, label, opts))
            continue
        one = partial(_run_one, attack, material, truth_set, n=budget["n_samples"], label=label)
        shapes = tuple(material.recorded.tensor.shape[1:]), tuple(material.victims.input_shape)
        searches.append(search_options(attack, Known(*shapes), one, options=opts, seed=seed,
                                       steps=budget["steps"], budget=attack_budget, run=label,
                                       cut="client-model output"))  # fmt: skip
        results.append(searches[-1].worst.result)
    with target.writing(overwrite=overwrite) as where:
        for result in results:
            write_result(where / RunDir.ATTACKS / result.attack, result, truth_set)
            result.path = Path(out) / RunDir.ATTACKS / f"{result.attack}.json"
        for found in searches:
            atomic_write_json(where / RunDir.ATTACKS / f"{found.attack}.strongest.json",
                              found.to_json())  # fmt: skip
            found.path = Path(out) / RunDir.ATTACKS / f"{found.attack}.strongest.json"
        atomic_write_bytes(where / "leakage.json", (json.dumps(leakage, indent=2) + "\n").encode())
        atomic_write_bytes(where / "report.md", report_markdown(results, leakage).encode())
    return results


def _choose(
    material: AuditInputs,
    names: Sequence[str],
    options: Mapping[str, Mapping[str, Any]],
    shared: dict[str, int | None],
) -> list[tuple[Attack, dict[str, Any], dict[str, int | None]]]:
    """Each attack with its own options and its budget (``steps``, ``n_samples``: its spec's,
    else ``shared``), checked before anything runs: a known name, given once, declared
    options, counts >= 1, and a threat model the audit can grant."""
    if not names:
        raise ConfigError(f"--attack names no attack; choose from: {', '.join(ATTACKS.names())}")
    if len(set(names)) < len(names):
        raise ConfigError(f"--attack lists an attack twice: {','.join(names)}; give each once")
    chosen = []
    for name in names:
        entry = ATTACKS.get(name)  # an unknown name lists the valid ones
        attack: Attack = entry() if isinstance(entry, type) else entry
        given = dict(options.get(name, {}))
        check_options(attack, given, shared=BUDGET)
        budget = shared | {k: given.pop(k) for k in BUDGET if k in given}
        for key, n in budget.items():
            if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
                flag = key.replace("_", "-")
                raise ConfigError(f"--{flag} must be an integer >= 1, got {n!r} (for {name})")
        _refuse(attack, material.segment is not None, _own_aux(material))
        if attack.threat_model.aux_labels and bool((material.aux.y < 0).any()):
            raise ThreatModelError(f"{name} needs the aux labels; give --aux data with labels")
        chosen.append((attack, given, budget))
    return chosen


def measure_dcor(recorded: Observed, truth_set: Dataset, limit: int = DCOR_SAMPLES) -> dict:
    """Distance correlation between the recorded samples' inputs and what crossed for them.

    A measurement that needs no attacker (the auditor holds the victims' inputs): 1 when the
    message determines the input up to a similarity transform, near 0 when independent. On
    the ``limit`` recorded samples with the smallest ids.
    """
    seen = _first_ids(recorded, limit)
    x, _ = truth(truth_set, seen.ids)
    z = seen.tensor.reshape(len(seen.ids), -1).double()
    value = float(distance_correlation(x.reshape(len(x), -1).double(), z))
    return {"dcor_inputs_activations": value, "n": len(seen.ids)}


def _run_one(
    attack: Attack,
    material: AuditInputs,
    truth_set: Dataset,
    steps: int | None,
    n: int | None,
    seed: int,
    label: str,
    options: dict[str, Any],
) -> AttackResult:
    inputs = _grant(attack, material, seed)
    inputs.options = options
    n = n if n is not None else attack.default_samples
    inputs.activations = _first_ids(inputs.activations, n)
    inputs.steps = steps
    output = attack.run(inputs)
    check_ids(attack.name, output, inputs)
    return AttackResult(
        attack=attack.name,
        kind=attack.kind,
        threat_model=attack.threat_model.describe(),
        cut="client-model output",
        party="client",
        receiver="server",
        run=label,
        seed=seed,
        steps=steps if steps is not None else attack.default_steps,
        aux_size=len(inputs.aux) if inputs.aux is not None else None,
        settings=dict(output.extra),
        output=output,
        **score(output, truth_set),
    )
