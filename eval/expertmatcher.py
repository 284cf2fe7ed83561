"""ExpertMatcher: a server holding one expert per domain picks one from hidden representations.

After Sharma, Vepakomma, Swedish, Chang, Kalpathy-Cramer and Raskar (2019), "ExpertMatcher:
Automating ML Model Selection for Clients using Hidden Representations". The server holds, per
domain, an expert classifier and an autoencoder fitted to that domain's representations; the
client encodes its samples and sends only the representations (through an
:class:`~nopeek.runtime.channel.InProcessChannel`, so every byte is on the wire log); the server
assigns each sample to the expert whose autoencoder reconstructs it best (lowest mean squared
error), and answers with that expert's class scores. The whole batch's choice (lowest mean error
over the client's samples) is reported too.

**The client's encoder** is a fixed random feature map agreed with the server through a shared
seed: for images a 3x3 convolution to 16 channels, ReLU and 2x2 average pooling ((1, 8, 8) ->
(16, 4, 4)); for features a linear map to 32 values and ReLU. It needs no training data of any
party, the server can fit its autoencoders and experts to representations of its own domain
data, and the representation keeps the domain's look (background level, stroke orientation), so
matching works. The price: the server knows the encoder, so the representations are as
invertible as a shallow random network; ``match.json`` reports the reconstruction attack (an
inverse network trained on aux data of the client's domain, SSIM vs the mean-image baseline).

Built-in domains come from the bundled digits (train/test/aux splits as ``load_dataset``):
``digits``, ``digits:inverted`` (1 - x), ``digits:rotated`` (rot90 in the image plane) and
``digits:noisy`` (+ Gaussian noise of sigma 0.2, seeded, clipped to [0, 1]); any data file spec
``nopeek.data.load_dataset`` reads (``npz:PATH``, ``csv:PATH``, ``imagefolder:PATH``) is a
domain too, when its samples have the other domains' shape. The server fits on each domain's
train split, the client holds the test split (held out), the attacker the aux split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nopeek.attacks.inverse_network import build_decoder, fit_decoder
from nopeek.attacks.metrics import baseline_reconstruction, reconstruction_report
from nopeek.config import check_seed
from nopeek.data import FORMATS, Dataset, load_dataset
from nopeek.errors import ConfigError, DataError
from nopeek.io import atomic_write_json
from nopeek.rundir import RunDir
from nopeek.runtime.channel import ACTIVATION, InProcessChannel, Message, WireLog
from nopeek.seeding import seeded, stream_seed

log = logging.getLogger(__name__)

BUILTIN = ("digits", "digits:inverted", "digits:rotated", "digits:noisy")
NOISE_SIGMA = 0.2
CUT = "representation"  # client -> server: the hidden representation
ANSWER = "expert"  # server -> client: the chosen expert's class scores
BATCH = 128
FIT_STEPS = 300
ATTACK_STEPS = 300


def _transform(variant: str, x: Tensor, seed: int) -> Tensor:
    """Digits (N, 1, 8, 8) in [0, 1] as domain ``variant`` sees them."""
    if variant == "inverted":
        return 1.0 - x
    if variant == "rotated":
        return torch.rot90(x, 1, dims=(2, 3)).contiguous()
    gen = torch.Generator().manual_seed(seed)
    return (x + NOISE_SIGMA * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)


def load_domain(name: str, *, seed: int) -> Dataset:
    """Domain ``name``: a built-in digits variant or a data file spec (see module docstring)."""
    base, sep, variant = name.partition(":")
    if name in BUILTIN:
        ds = load_dataset("digits", seed=seed)
        if not sep:
            return replace(ds, name=name)
        parts = {
            s: replace(
                getattr(ds, s),
                x=_transform(
                    variant,
                    getattr(ds, s).x,
                    stream_seed(seed, "expertmatcher.domain-noise", name, i),
                ),
            )
            for i, s in enumerate(("train", "test", "aux"))
        }
        return replace(ds, name=name, **parts)
    if not sep or base not in FORMATS:
        raise ConfigError(
            f"unknown domain {name!r}; use {', '.join(BUILTIN)} or a data file "
            "(npz:PATH, csv:PATH, imagefolder:PATH)"
        )
    return load_dataset(name, seed=seed)


def agreed_encoder(input_shape: tuple[int, ...], *, seed: int) -> nn.Module:
    """The client's fixed encoder, its random weights fixed by ``seed`` (shared with the server):
    images (C, H, W) -> (16, H/2, W/2); features (F,) -> (32,).

    >>> tuple(agreed_encoder((1, 8, 8), seed=0)(torch.zeros(2, 1, 8, 8)).shape)
    (2, 16, 4, 4)
    """
    with seeded(seed, "expertmatcher.encoder"):
        if len(input_shape) == 3:
            pool = 2 if min(input_shape[1:]) >= 2 else 1
            enc = nn.Sequential(
                nn.Conv2d(input_shape[0], 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(pool)
            )
        else:
            enc = nn.Sequential(
                nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 32), nn.ReLU()
            )
    for p in enc.parameters():
        p.requires_grad_(False)
    return enc.eval()


@torch.no_grad()
def encode(encoder: nn.Module, x: Tensor) -> Tensor:
    """(N, *input_shape) -> (N, *representation_shape), in batches."""
    return torch.cat([encoder(x[i : i + 512]) for i in range(0, len(x), 512)])


def _fit(model: nn.Module, z: Tensor, target: Tensor, loss, *, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(FIT_STEPS):
        idx = torch.randint(len(z), (min(BATCH, len(z)),), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss(model(z[idx]), target[idx]).backward()
        opt.step()
    return model.eval()


@dataclass
class Expert:
    """One domain's expert classifier and autoencoder, both over flat representations (N, D)."""

    domain: str
    classifier: nn.Module
    autoencoder: nn.Module
    n_classes: int

    @torch.no_grad()
    def error(self, z: Tensor) -> Tensor:
        """Reconstruction error per sample (N,): mean squared error over the D values."""
        return ((self.autoencoder(z) - z) ** 2).mean(1)


def fit_expert(domain: Dataset, encoder: nn.Module, *, seed: int, index: int) -> Expert:
    """Fit the expert and autoencoder of ``domain`` on its train split's representations."""
    z = encode(encoder, domain.train.x).flatten(1)
    d = z.shape[1]
    with seeded(seed, "expertmatcher.init", index):
        ae = nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, d))
        clf = nn.Sequential(nn.Linear(d, 64), nn.ReLU(), nn.Linear(64, domain.n_classes))
    ae = _fit(ae, z, z, F.mse_loss, seed=stream_seed(seed, "expertmatcher.ae", index))
    clf = _fit(
        clf, z, domain.train.y, F.cross_entropy, seed=stream_seed(seed, "expertmatcher.clf", index)
    )
    return Expert(domain.name, clf, ae, domain.n_classes)


@dataclass
class ExpertServer:
    """The server's experts (in ``--experts`` order), the agreed encoder and the domains' data."""

    experts: list[Expert]
    encoder: nn.Module
    domains: dict[str, Dataset]
    seed: int

    @property
    def names(self) -> list[str]:
        return [e.domain for e in self.experts]

    @torch.no_grad()
    def answer(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For representations (N, *shape): errors (N, E), chosen expert (N,), scores (N, C)
        of the chosen expert (softmax; C the most classes of any expert)."""
        flat = z.flatten(1)
        errors = torch.stack([e.error(flat) for e in self.experts], 1)
        choice = errors.argmin(1)
        width = max(e.n_classes for e in self.experts)
        scores = torch.zeros(len(z), width)
        for k, expert in enumerate(self.experts):
            rows = choice == k
            if bool(rows.any()):
                scores[rows, : expert.n_classes] = expert.classifier(flat[rows]).softmax(1)
        return errors, choice, scores


def _check_experts(experts: list[str]) -> None:
    if len(experts) < 2:
        raise ConfigError(
            f"--experts needs at least two domains to choose between, got {len(experts)} "
            f"({','.join(experts) or 'none'}); e.g. --experts digits,digits:inverted"
        )
    dupes = sorted({e for e in experts if experts.count(e) > 1})
    if dupes:
        raise ConfigError(f"--experts names {dupes[0]} twice; name each domain once")


def fit_server(experts: list[str], *, seed: int = 0) -> ExpertServer:
    """Load the domains, agree on the encoder, fit every domain's expert and autoencoder."""
    _check_experts(list(experts))
    check_seed(seed, what="--seed")
    domains = {name: load_domain(name, seed=seed) for name in experts}
    shapes = {name: tuple(d.input_shape) for name, d in domains.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{n} {s}" for n, s in shapes.items())
        raise DataError(
            f"the domains' samples differ in shape ({listed}); one client encoder needs one "
            "input shape: pick domains of the same shape"
        )
    encoder = agreed_encoder(next(iter(shapes.values())), seed=seed)
    fitted = [fit_expert(domains[n], encoder, seed=seed, index=i) for i, n in enumerate(experts)]
    return ExpertServer(fitted, encoder, domains, seed)


def _serve(server: ExpertServer, x: Tensor, ids: Tensor) -> tuple[WireLog, dict[str, Tensor]]:
    """Client and server over one channel: the client sends representations, batch by batch;
    the server answers with scores. Returns the wire log and what the server decided."""
    wire = WireLog(capture=lambda record: True)
    wire.at(phase="inference", epoch=0, step=0)
    channel = InProcessChannel(wire)
    got: dict[str, list[Tensor]] = {"errors": [], "choice": [], "z": [], "ids": []}
    answers = []
    for step, start in enumerate(range(0, len(x), BATCH)):
        wire.at(step=step)
        sl = slice(start, start + BATCH)
        z = encode(server.encoder, x[sl])  # the client's side: raw inputs stay here
        channel.post(Message(ACTIVATION, CUT, "client", "server", step, z, ids[sl]))
        msg = channel.recv(sender="client", receiver="server", kind=ACTIVATION, cut=CUT, step=step)
        errors, choice, scores = server.answer(msg.tensor)
        channel.post(Message(ACTIVATION, ANSWER, "server", "client", step, scores, msg.ids))
        answers.append(
            channel.recv(sender="server", receiver="client", kind=ACTIVATION, cut=ANSWER, step=step)
        )
        for key, value in (
            ("errors", errors),
            ("choice", choice),
            ("z", msg.tensor),
            ("ids", msg.ids),
        ):
            got[key].append(value)
    out = {k: torch.cat(v) for k, v in got.items()}
    out["scores"] = torch.cat([a.tensor for a in answers])
    return wire, out


def _attack(
    server: ExpertServer, domain: Dataset, z: Tensor, x: Tensor, *, steps: int
) -> dict[str, Any]:
    """An inverse network the server trains on aux data of the client's domain (encoded with
    the agreed encoder), applied to the representations it received; SSIM etc. vs baseline."""
    aux = domain.aux
    z_aux = encode(server.encoder, aux.x)
    with seeded(server.seed, "expertmatcher.attack"):
        decoder = build_decoder(
            tuple(z.shape[1:]), tuple(domain.input_shape), data_range=domain.data_range, width=32
        )
    fit_decoder(
        decoder,
        z_aux,
        aux.x,
        steps=steps,
        lr=3e-3,
        batch_size=64,
        seed=stream_seed(server.seed, "expertmatcher.attack-batches"),
    )
    with torch.no_grad():
        x_hat = decoder(z)
    report = reconstruction_report(
        x, x_hat, baseline_reconstruction(aux.x, len(x)), data_range=domain.data_range
    )
    return {f"attack_{k}": v for k, v in report.items() if k != "data_range"} | {
        "attack": "inverse-network",
        "attack_aux_size": len(aux),
    }


def match(
    server: ExpertServer, client_data: str, *, attack_steps: int = ATTACK_STEPS
) -> tuple[dict[str, Any], WireLog]:
    """The client holding the held-out (test) samples of domain ``client_data`` asks ``server``;
    returns the ``match.json`` record (see the README) and the wire log. ``attack_steps``: the
    inverse network's training steps (0: no attack)."""
    if client_data not in server.names:
        raise ConfigError(
            f"--client-data {client_data} is not one of the --experts ({','.join(server.names)}); "
            "add it to --experts to score the match"
        )
    domain = server.domains[client_data]
    held = domain.test
    wire, got = _serve(server, held.x, held.ids)
    truth = server.names.index(client_data)
    mean_err = got["errors"].mean(0)
    batch_choice = int(mean_err.argmin())
    with torch.no_grad():
        flat = got["z"].flatten(1)
        oracle = server.experts[truth].classifier(flat).argmax(1)
    sent = [r for r in wire.records if r.sender == "client"]
    back = [r for r in wire.records if r.receiver == "client"]
    counts = torch.bincount(got["choice"], minlength=len(server.experts))
    out: dict[str, Any] = {
        "experts": server.names,
        "client_data": client_data,
        "seed": server.seed,
        "n_samples": len(held),
        "assignment_accuracy": float((got["choice"] == truth).float().mean()),
        "assigned": {n: int(c) for n, c in zip(server.names, counts, strict=True)},
        "batch_expert": server.names[batch_choice],
        "batch_assignment_correct": batch_choice == truth,
        "mean_reconstruction_error": {
            n: float(e) for n, e in zip(server.names, mean_err, strict=True)
        },
        "accuracy": float((got["scores"].argmax(1) == held.y).float().mean()),
        "oracle_accuracy": float((oracle == held.y).float().mean()),
        "representation_shape": list(got["z"].shape[1:]),
        "input_shape": list(domain.input_shape),
        "messages": len(wire.records),
        "bytes_sent": sum(r.nbytes for r in sent),
        "bytes_received": sum(r.nbytes for r in back),
        "raw_inputs_sent": any(tuple(r.shape[1:]) == tuple(domain.input_shape) for r in sent),
    }
    if attack_steps > 0:
        out |= _attack(server, domain, got["z"], held.x, steps=attack_steps)
    return out, wire


def run_match(
    experts: list[str],
    client_data: str,
    *,
    seed: int = 0,
    out: str | Path | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """``nopeek match``: fit the server, serve the client, write ``out/match.json``."""
    _check_experts(list(experts))
    target = RunDir(out, "match") if out is not None else None
    if target is not None:
        target.plan(overwrite=overwrite)
    if client_data not in experts:
        raise ConfigError(
            f"--client-data {client_data} is not one of the --experts ({','.join(experts)}); "
            "add it to --experts to score the match"
        )
    server = fit_server(list(experts), seed=seed)
    record, _ = match(server, client_data, attack_steps=ATTACK_STEPS)
    if target is not None:
        with target.writing(overwrite=overwrite) as where:
            atomic_write_json(where / "match.json", record)
    return record


__all__ = [
    "BUILTIN",
    "Expert",
    "ExpertServer",
    "agreed_encoder",
    "fit_server",
    "load_domain",
    "match",
    "run_match",
]
