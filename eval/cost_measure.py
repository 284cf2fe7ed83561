"""The cost formulas checked against real runs: split learning (relay) vs FedAvg on one data set.

:func:`measure` trains the same reference model on the same shards from the same initial
weights twice, with ``K`` clients:

- by split learning with client weight sharing: ``nopeek train --topology many-clients``
  (clients take turns with the server, handing the client segment on), read from its wire log
  (every message it sent during training) and its per-party ``flops_<p>`` counts;
- by federated averaging (:func:`nopeek.eval.fedavg.fedavg`), read from its wire log and
  ``FlopCounterMode`` counts;

each until its test accuracy first reaches ``target`` or ``max_epochs`` have run (each method
may have its own learning rate, local epochs and epoch budget: :class:`Knobs`), and puts
next to every measured total the prediction of :mod:`nopeek.eval.cost`'s formulas for the same
``p``, ``q``, ``N``, ``eta`` and number of epochs. The split run is trained in one go for a
number of epochs that doubles until the target is reached (a fixed seed makes its first ``e``
epochs the same whatever the total), and its totals are taken up to the first epoch that
reaches the target.

The formulas count ``K`` weight hand-offs per epoch; a run has one fewer (its first client
starts with the initial weights), so measured split-learning bytes are ``eta*N`` values (times
the hops) below the prediction: far inside the 5 % that the tests allow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from nopeek.config import TrainConfig
from nopeek.errors import ConfigError
from nopeek.eval.cost import (
    BYTES_PER_VALUE,
    build_cost_model,
    fedavg_values,
    profile_split,
    sl_values,
    splitfed_values,
)
from nopeek.eval.fedavg import fedavg
from nopeek.runtime.channel import WireLog

FIRST_SPLIT_EPOCHS = 8
METHODS = ("split", "splitfed-v1", "splitfed-v2", "fedavg")


@dataclass(frozen=True)
class Knobs:
    """One method's training knobs: Adam's learning rate, the local epochs ``E`` of a round
    (SplitFed and FedAvg: passes over the own shard before the averaging; the relay has none)
    and the most epochs (rounds) it may take.

    >>> Knobs.parse("lr=3e-3,E=5,max=12", Knobs(1e-3, 1, 8))
    Knobs(lr=0.003, local_epochs=5, max_epochs=12)
    """

    lr: float
    local_epochs: int
    max_epochs: int

    @classmethod
    def parse(cls, text: str, base: Knobs) -> Knobs:
        """``lr=X,E=N,max=M`` (any of them; the others from ``base``), checked."""
        names = {"lr": "lr", "E": "local_epochs", "max": "max_epochs"}
        given: dict[str, float | int] = {}
        for part in filter(None, (t.strip() for t in text.split(","))):
            key, _, value = part.partition("=")
            if key not in names:
                raise ConfigError(
                    f"knob {key!r} in {text!r} is none of lr, E, max; e.g. lr=3e-3,E=5"
                )
            try:
                given[names[key]] = float(value) if key == "lr" else int(value)
            except ValueError:
                raise ConfigError(f"knob {part!r} needs a number, e.g. {key}=5") from None
        return replace(base, **given).checked()

    def checked(self) -> Knobs:
        if not 0 < self.lr < math.inf or self.local_epochs < 1 or self.max_epochs < 1:
            raise ConfigError(f"knobs need a finite lr > 0, E >= 1 and max >= 1, got {self}")
        return self


@dataclass(frozen=True)
class Measured:
    """One method trained to the target: epochs used, accuracy reached, and over those epochs
    the bytes of every training message (each once: the Singh et al. total) and the clients'
    FLOPs, measured and as the formulas predict them."""

    method: str
    clients: int
    epochs: int
    reached: bool
    test_accuracy: float
    bytes_total: float
    bytes_predicted: float
    flops_clients: float
    flops_predicted: float
    lr: float = 1e-3
    local_epochs: int = 1
    max_epochs: int = 0
    seconds: float = 0.0  # wall time of its training (the whole budget: see module doc)

    @property
    def bytes_error(self) -> float:
        """(measured - predicted) / predicted."""
        return (self.bytes_total - self.bytes_predicted) / self.bytes_predicted

    def to_json(self) -> dict:
        return asdict(self) | {"bytes_error": self.bytes_error}


def _first_hit(accuracies: list[float], target: float) -> int | None:
    return next((i + 1 for i, a in enumerate(accuracies) if a >= target), None)


def _train_bytes(wire: WireLog, epochs: int) -> float:
    return float(sum(r.nbytes for r in wire.records if r.phase == "train" and r.epoch < epochs))


def _split_run(base: TrainConfig, target: float, **topology: str | int):
    """Train the relay run (or ``topology``'s) for 8, 16, ... epochs until the target is
    reached (or ``base.epochs``, the method's budget)."""
    from nopeek.training.trainer import train

    max_epochs = base.epochs
    epochs = min(FIRST_SPLIT_EPOCHS, max_epochs)
    while True:
        cfg = TrainConfig(**(base.to_dict() | topology | {"epochs": epochs}))
        result = train(cfg, quiet=True)
        hit = _first_hit(result.metrics["test_accuracy_per_epoch"], target)
        if hit is not None or epochs >= max_epochs:
            return result, hit
        epochs = min(2 * epochs, max_epochs)


def measure(
    *,
    dataset: str = "digits",
    model: str = "digits-cnn",
    cut: str = "",
    clients: int = 10,
    target: float = 0.9,
    max_epochs: int = 100,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    relay: str = "peer",
    max_train: int | None = None,
    splitfed: tuple[str, ...] = (),
    knobs: Mapping[str, Knobs] | None = None,
) -> dict:
    """Split learning (many-clients relay), SplitFed (each version in ``splitfed``: v1, v2)
    and FedAvg trained to ``target`` test accuracy; returns ``{"setting": ..., "split":
    Measured, "splitfed-v1": Measured, ..., "fedavg": Measured}`` (see module doc).

    ``knobs``: per method of :data:`METHODS`, its own :class:`Knobs`; the others train with
    ``lr``, one local epoch and ``max_epochs``.

    >>> out = measure(clients=2, target=1.0, max_epochs=1, max_train=40)
    >>> sl = out["split"]  # one epoch: one hand-off fewer than the formula's K
    >>> sl.bytes_predicted - sl.bytes_total == out["setting"]["client_params"] * BYTES_PER_VALUE
    True
    >>> out["fedavg"].bytes_error
    0.0
    """
    if not 0.0 < target <= 1.0:
        raise ConfigError(f"--target must be an accuracy in (0, 1], got {target}")
    if max_epochs < 1:
        raise ConfigError(f"--max-epochs must be >= 1, got {max_epochs}")
    knob = _knobs(knobs or {}, Knobs(lr, 1, max_epochs))
    base = TrainConfig(
        dataset=dataset,
        model=model,
        cut=cut,
        topology="many-clients",
        clients=clients,
        relay=relay,
        epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device="cpu",
        max_train=max_train,
        record_samples=0,
        dcor_samples=64,
    )
    base.validate()
    base = base.resolved()
    ds = base.load_data()
    p = len(ds.train)
    net, _ = build_cost_model(base.model, input_shape=ds.input_shape, n_classes=ds.n_classes)
    prof = profile_split(net, input_shape=ds.input_shape, cut=base.cut, name=base.model)
    sl = _timed(_measure_split, _with(base, knob["split"]), prof, p, target)
    sf = {
        f"splitfed-{v}": _timed(_measure_splitfed, base, knob[f"splitfed-{v}"], prof, p, target, v)
        for v in splitfed
    }
    fl = _timed(_measure_fedavg, _with(base, knob["fedavg"]), ds, prof, target, knob["fedavg"])
    setting = {
        "dataset": dataset,
        "model": base.model,
        "cut": base.cut,
        "clients": clients,
        "p": p,
        "q": prof.q,
        "params": prof.params,
        "client_params": prof.client_params,
        "target": target,
        "max_epochs": max_epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "relay": relay,
        "knobs": {m: asdict(k) for m, k in knob.items()},
    }
    return {"setting": setting, "split": sl, **sf, "fedavg": fl}


def _timed(method: Callable[..., Measured], *args: Any) -> Measured:
    """``method(*args)`` with its wall time in ``seconds``."""
    began = time.perf_counter()
    out = method(*args)
    return replace(out, seconds=round(time.perf_counter() - began, 1))


def _knobs(given: Mapping[str, Knobs], default: Knobs) -> dict[str, Knobs]:
    unknown = sorted(set(given) - set(METHODS))
    if unknown:
        raise ConfigError(f"knobs for unknown methods {unknown}; use {', '.join(METHODS)}")
    out = {m: given.get(m, default).checked() for m in METHODS}
    if out["split"].local_epochs != 1:
        raise ConfigError("split learning (relay) has no local epochs: drop E from its knobs")
    return out


def _with(base: TrainConfig, knobs: Knobs) -> TrainConfig:
    """``base`` with a method's learning rate and epoch budget (its E goes to SplitFed's
    topology option or to FedAvg)."""
    return TrainConfig(**(base.to_dict() | {"lr": knobs.lr, "epochs": knobs.max_epochs}))


def _measure_split(base: TrainConfig, prof, p: int, target: float) -> Measured:
    split, hit = _split_run(base, target)
    hops = 2 if base.relay == "server" else 1
    per_epoch = sl_values(p=p, q=prof.q, clients=base.clients, shared=prof.client_params, hops=hops)
    method = f"split learning (relay, {base.relay})"
    return _from_run(method, base, split, hit, per_epoch, prof.flops_client * p)


def _measure_splitfed(
    base: TrainConfig, knobs: Knobs, prof, p: int, target: float, version: str
) -> Measured:
    base, passes = _with(base, knobs), knobs.local_epochs
    run, hit = _split_run(
        base,
        target,
        topology="splitfed",
        splitfed=version,
        relay="peer",
        local_epochs=passes,
    )
    per_epoch = splitfed_values(
        p=p, q=prof.q, clients=base.clients, shared=prof.client_params, local_epochs=passes
    )
    flops = passes * prof.flops_client * p
    return _from_run(f"SplitFed {version}", base, run, hit, per_epoch, flops, local_epochs=passes)


def _from_run(
    method: str,
    base: TrainConfig,
    run: Any,
    hit: int | None,
    values_per_epoch: float,
    flops_per_epoch: float,
    **extra: Any,
) -> Measured:
    """What a split run (relay or SplitFed) measured up to the epoch that reached the target
    (``hit``; all of them if none did), next to the formulas' ``values_per_epoch`` (values sent
    and received) and the clients' ``flops_per_epoch``."""
    accs = run.metrics["test_accuracy_per_epoch"]
    e = hit or len(accs)
    flops = sum(run.metrics.get(f"flops_client{k}", 0.0) for k in range(base.clients))
    return Measured(
        method=method,
        clients=base.clients,
        epochs=e,
        reached=hit is not None,
        test_accuracy=accs[e - 1],
        bytes_total=_train_bytes(run.wire, e),
        bytes_predicted=e * values_per_epoch * BYTES_PER_VALUE,
        flops_clients=e * flops,
        flops_predicted=e * flops_per_epoch,
        lr=base.lr,
        max_epochs=base.epochs,
        **extra,
    )


def _measure_fedavg(base: TrainConfig, ds, prof, target: float, knobs: Knobs) -> Measured:
    E = knobs.local_epochs
    fed = fedavg(base, target=target, dataset=ds, local_epochs=E)  # at most max_epochs rounds
    m, K = fed.metrics, base.clients
    rounds = m["epochs"]
    return Measured(
        method="federated learning (FedAvg)",
        clients=K,
        epochs=rounds,
        reached=m["test_accuracy"] >= target,
        test_accuracy=m["test_accuracy"],
        bytes_total=_train_bytes(fed.wire, rounds),
        bytes_predicted=rounds * fedavg_values(params=prof.params, clients=K) * BYTES_PER_VALUE,
        flops_clients=rounds * sum(m[f"flops_client{k}"] for k in range(K)),
        flops_predicted=rounds * E * prof.flops_model * len(ds.train),
        lr=base.lr,
        local_epochs=E,
        max_epochs=base.epochs,
    )


def format_measured(out: dict) -> str:
    """The measured comparison as a table: epochs, accuracy, client MB and GFLOPs (measured and
    predicted by the formulas), totals over the epochs it took to reach the target."""
    s = out["setting"]
    lines = [
        f"measured: {s['model']} on {s['dataset']} (p = {s['p']}), cut {s['cut']} (q = {s['q']}), "
        f"N = {s['params']:,}, client eta*N = {s['client_params']:,}, K = {s['clients']} "
        f"clients, until test accuracy >= {s['target']:g}",
        f"{'method':30s}{'lr':>7s}{'E':>3s}{'epochs':>8s}{'test acc':>9s}{'client MB':>11s}"
        f"{'formula':>10s}{'diff':>8s}{'client GFLOPs':>15s}{'formula':>10s}",
    ]
    methods: list[Measured] = [m for m in out.values() if isinstance(m, Measured)]
    for m in methods:
        epochs = f"{m.epochs}/{m.max_epochs}" + ("" if m.reached else "*")
        lines.append(
            f"{m.method:30s}{m.lr:7.0e}{m.local_epochs:3d}{epochs:>8s}{m.test_accuracy:9.3f}"
            f"{m.bytes_total / 1e6:11.3f}"
            f"{m.bytes_predicted / 1e6:10.3f}{m.bytes_error:8.2%}{m.flops_clients / 1e9:15.3f}"
            f"{m.flops_predicted / 1e9:10.3f}"
        )
    if not all(m.reached for m in methods):
        lines.append("* did not reach the target within its epoch budget")
    lines.append(
        "(epochs: used / budget, rounds for SplitFed and FedAvg, E local epochs each; client MB: "
        "every training message, each counted once; GFLOPs: all clients together)"
    )
    return "\n".join(lines)
