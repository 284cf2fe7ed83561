"""What a client pays per epoch: split learning vs federated learning vs large-batch SGD.

The formulas are those of Singh et al. 2019 ("Detailed comparison of communication efficiency
of split learning and federated learning", Table 1); the FLOP counts and sizes that go into
them are measured on the real models (:mod:`nopeek.eval.cost_profile`:
``torch.utils.flop_counter.FlopCounterMode`` on a forward and backward pass), and
:func:`nopeek.eval.cost_measure.measure` checks the byte formulas against the wire log of real
training runs (``nopeek cost --measure``).

Notation: ``p`` training samples spread over ``K`` clients (``p/K`` each), ``q`` values per
sample at the cut (the activation; the gradient at the cut has the same shape), ``N``
parameters of the whole model, ``eta`` the client part's share of them (``eta*N`` values),
``B`` the global batch of large-batch SGD, ``F`` and ``F_c`` the forward+backward FLOPs per
sample of the whole model and of the client part. One epoch = every sample trains once.
Messages carry float32: bytes = 4 x values; GB = 1e9 bytes.

Communication per epoch, in values (each message counted once, at its sender)::

    method                               per client          total (all clients)
    split learning, no weight sharing    2pq/K               2pq
    split learning, client weight        2pq/K + eta*N       2pq + eta*N*K
      sharing (Singh et al. 2019)        (x2 for eta*N when the hand-off goes via the server)
    federated learning (FedAvg)          2N                  2NK
    large-batch synchronous SGD          2N*ceil(p/B)        2NK*ceil(p/B)

Derivation, from first principles:

- *Split learning.* Each of a client's ``p/K`` samples crosses the cut once forward (its
  activation, ``q`` values) and once backward (the gradient of the loss with respect to that
  activation, again ``q`` values): ``2q * p/K`` per client, ``2pq`` over the ``K`` clients.
  Nothing else moves: the server never sends weights and the labels stay where they are.
- *Client weight sharing.* The clients train in turns; the client whose turn ends hands the
  client part (``eta*N`` values) to the next one. Round robin makes ``K`` hand-offs per epoch
  (the last client of an epoch hands on to the first of the next), each one message of
  ``eta*N`` values: ``eta*N*K`` in total, ``eta*N`` per client (each client sends the part once
  and receives it once, and a message is counted once). A hand-off relayed through the server
  is two messages (``2*eta*N`` per client). The very first epoch has ``K - 1`` hand-offs: the
  first client starts with the initial weights.
- *FedAvg* with one local epoch per round: each round the server sends the global model (``N``
  values) to every client, and every client sends its locally trained model (``N``) back: ``2N``
  per client, ``2NK`` in total, whatever ``p`` is.
- *Large-batch synchronous SGD* with a global batch ``B`` split over the clients: in each of
  the ``ceil(p/B)`` steps of an epoch every client sends its gradient (``N`` values) and
  receives the updated weights (``N``): ``2N*ceil(p/B)`` per client.

Computation per client per epoch: ``F_c * p/K`` for split learning (with or without weight
sharing: handing weights on costs no FLOPs), ``F * p/K`` for FedAvg and large-batch SGD (every
client runs the whole model on its samples). The server of split learning does
``(F - F_c) * p``. ``FlopCounterMode`` counts 2 FLOPs per multiply-add, and only what autograd
runs: the first layer computes no gradient for the input (which does not require one), so the
backward pass is slightly less than twice the forward pass. The papers count multiply-adds
(halve the FLOPs to compare).

Per client is total / K everywhere: the mean client (shards differ by at most one sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from nopeek.errors import ConfigError
from nopeek.eval.cost_profile import (
    PAPER_DATASETS,
    TORCHVISION_MODELS,
    SplitProfile,
    build_cost_model,
    cut_candidates,
    dataset_setting,
    profile_split,
)

__all__ = [
    "BYTES_PER_VALUE",
    "METHODS",
    "PAPER_DATASETS",
    "TORCHVISION_MODELS",
    "CostTable",
    "MethodCost",
    "SplitProfile",
    "build_cost_model",
    "check_clients",
    "cost_table",
    "cut_candidates",
    "dataset_setting",
    "fedavg_values",
    "format_table",
    "method_costs",
    "profile_split",
    "sgd_values",
    "sl_values",
    "splitfed_values",
]

BYTES_PER_VALUE = 4  # float32 activations, gradients and weights
GB = 1e9
METHODS = (
    ("sgd", "large-batch synchronous SGD"),
    ("fedavg", "federated learning (FedAvg)"),
    ("sl-sharing", "split learning, client weight sharing"),
    ("sl", "split learning, no weight sharing"),
)

# ------------------------------------------------------------------------------ the formulas


def sl_values(*, p: int, q: int, clients: int, shared: int = 0, hops: int = 1) -> float:
    """Values a split-learning epoch moves in total: ``2pq + hops * shared * K``.

    ``shared`` is ``eta*N`` with client weight sharing (0 without); ``hops`` is 1 for a
    peer-to-peer hand-off, 2 through the server. Per client: divide by ``clients``.

    >>> sl_values(p=10, q=3, clients=2), sl_values(p=10, q=3, clients=2, shared=15)
    (60.0, 90.0)
    """
    return float(2 * p * q + hops * shared * clients)


def fedavg_values(*, params: int, clients: int) -> float:
    """Values a FedAvg round moves in total: ``2NK``, whatever its local epochs.

    >>> fedavg_values(params=23, clients=2)
    92.0
    """
    return float(2 * params * clients)


def splitfed_values(*, p: int, q: int, clients: int, shared: int, local_epochs: int = 1) -> float:
    """Values a SplitFed round (Thapa et al. 2022, v1 or v2) moves in total:
    ``2pq * E + 2 * shared * K``: the cut both ways for every sample in each of the ``E`` local
    passes, and each client's segment (``shared`` = ``eta*N``) up to the fed server and the
    average back once per round. v1's averaging of the server copies happens inside the server:
    nothing crosses for it.

    >>> splitfed_values(p=10, q=3, clients=2, shared=15)
    120.0
    >>> splitfed_values(p=10, q=3, clients=2, shared=15, local_epochs=2)
    180.0
    """
    return float(2 * p * q * local_epochs + 2 * shared * clients)


def sgd_values(*, params: int, clients: int, p: int, batch: int) -> float:
    """Values an epoch of large-batch synchronous SGD (global batch ``B``) moves: ``2NK ceil(p/B)``.

    >>> sgd_values(params=23, clients=2, p=10, batch=4)
    276.0
    """
    return float(2 * params * clients * math.ceil(p / batch))


@dataclass(frozen=True)
class MethodCost:
    """One method at ``clients`` clients, per epoch: per-client FLOPs and bytes, total bytes."""

    method: str
    clients: int
    flops_per_client: float
    bytes_per_client: float
    bytes_total: float


def method_costs(
    prof: SplitProfile, *, p: int, clients: int, sgd_batch: int, hops: int = 1
) -> list[MethodCost]:
    """Every method of :data:`METHODS` for ``clients`` clients and ``p`` samples, per epoch."""
    K, N, b = clients, prof.params, BYTES_PER_VALUE
    totals = {
        "sgd": sgd_values(params=N, clients=K, p=p, batch=sgd_batch),
        "fedavg": fedavg_values(params=N, clients=K),
        "sl-sharing": sl_values(p=p, q=prof.q, clients=K, shared=prof.client_params, hops=hops),
        "sl": sl_values(p=p, q=prof.q, clients=K),
    }
    flops = {"sgd": prof.flops_model, "fedavg": prof.flops_model}
    flops |= {"sl-sharing": prof.flops_client, "sl": prof.flops_client}
    return [
        MethodCost(m, K, flops[m] * p / K, totals[m] * b / K, totals[m] * b) for m, _ in METHODS
    ]


# ------------------------------------------------------------------------------ the table


@dataclass(frozen=True)
class CostTable:
    """The computed table: the setting, the profile and one :class:`MethodCost` per method and
    client count."""

    dataset: str
    p: int
    profile: SplitProfile
    sgd_batch: int
    rows: list[MethodCost]

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset,
            "p": self.p,
            "sgd_batch": self.sgd_batch,
            "bytes_per_value": BYTES_PER_VALUE,
            "profile": asdict(self.profile) | {"eta": self.profile.eta},
            "rows": [asdict(r) for r in self.rows],
        }


def check_clients(clients: Sequence[int]) -> list[int]:
    """Refuse an empty list or a client count below 1."""
    clients = list(clients)
    bad = [k for k in clients if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if not clients or bad:
        raise ConfigError(
            f"--clients must be integers >= 1 separated by commas (e.g. 100,500), got "
            f"{','.join(map(str, clients)) or 'nothing'}"
        )
    return clients


def cost_table(
    prof: SplitProfile, *, dataset: str, p: int, clients: Sequence[int], sgd_batch: int = 1024
) -> CostTable:
    """The per-epoch costs of every method for each client count in ``clients``."""
    clients = sorted(set(check_clients(clients)))
    if sgd_batch < 1:
        raise ConfigError(f"--sgd-batch must be >= 1, got {sgd_batch}")
    if max(clients) > p:
        raise ConfigError(f"--clients {max(clients)} exceeds the {p} training samples; use fewer")
    rows = [r for k in clients for r in method_costs(prof, p=p, clients=k, sgd_batch=sgd_batch)]
    return CostTable(dataset, p, prof, sgd_batch, rows)


def format_table(table: CostTable) -> str:
    """The table shaped like the split-learning papers': methods x client counts, TFLOPs and
    GB per client per epoch."""
    prof, counts = table.profile, sorted({r.clients for r in table.rows})
    cut = "x".join(map(str, prof.cut_shape))
    lines = [
        f"{prof.model} on {table.dataset} ({'x'.join(map(str, prof.input_shape))}, p = "
        f"{table.p}), cut {prof.cut} ({cut}: q = {prof.q} values/sample); N = {prof.params:,} "
        f"parameters, client eta*N = {prof.client_params:,} (eta = {prof.eta:.4g})",
        f"FLOPs per sample, forward+backward: client part {prof.flops_client:.4g}, whole model "
        f"{prof.flops_model:.4g} (FlopCounterMode: 2 FLOPs per multiply-add)",
    ]
    width = max(len(label) for _, label in METHODS)
    head = f"{'':{width}s}" + "".join(f"{f'{k} clients':>14s}" for k in counts)
    for title, key, scale in (
        ("Computation per client per epoch (TFLOPs)", "flops_per_client", 1e12),
        ("Communication per client per epoch (GB, float32)", "bytes_per_client", GB),
    ):
        lines += ["", title, head]
        for method, label in METHODS:
            cells = [
                getattr(r, key) / scale
                for k in counts
                for r in table.rows
                if (r.method, r.clients) == (method, k)
            ]
            lines.append(f"{label:{width}s}" + "".join(f"{c:14.4g}" for c in cells))
    lines.append(
        f"(large-batch SGD: global batch {table.sgd_batch}, {math.ceil(table.p / table.sgd_batch)} "
        "steps per epoch; FedAvg: one local epoch per round; weight sharing: peer-to-peer)"
    )
    return "\n".join(lines)
