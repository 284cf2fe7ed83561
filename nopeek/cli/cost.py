"""``nopeek cost``: per-client computation and communication of split vs federated learning.

Without ``--measure``: the Singh et al. 2019 formulas on FLOP counts and sizes measured on the
model (no training, no download). With ``--measure``: split learning (many-clients relay) and
FedAvg trained to the same test accuracy, their wire logs and FLOP counts next to the
formulas' predictions. See :mod:`nopeek.eval.cost`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from nopeek.cli.commands import summary

if TYPE_CHECKING:
    from nopeek.rundir import RunDir


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cost",
        help=summary("cost"),
        description="Per-client computation (TFLOPs) and communication (GB) per epoch of "
        "large-batch synchronous SGD, FedAvg and split learning with and without client weight "
        "sharing, from the formulas of Singh et al. 2019 on FLOPs measured on the model "
        "(FlopCounterMode, 2 FLOPs per multiply-add). --measure trains split learning and "
        "FedAvg on a small data set to the same test accuracy and reports what they used.",
    )
    p.add_argument(
        "--model",
        help="vgg16 | vgg19 | resnet50 (the papers' torchvision models, no weights) or any "
        "`nopeek train --model`: a reference model (`nopeek models`), torchvision:<name> or "
        "module:<package.module:factory> (these need --cut; default vgg16, with --measure "
        "digits-cnn)",
    )
    p.add_argument(
        "--dataset",
        help="cifar10 | cifar100 (sizes only, no download) or a nopeek data set "
        "(default cifar10, with --measure digits)",
    )
    p.add_argument(
        "--clients", help="client counts, comma-separated (default 100,500; with --measure 10)"
    )
    p.add_argument("--cut", help="module path the client part ends at (default: the model's)")
    p.add_argument(
        "--image-size", type=int, help="resize images to NxN, e.g. 224 as the VGG papers did"
    )
    p.add_argument(
        "--sgd-batch",
        type=int,
        default=1024,
        help="large-batch SGD: global batch, split over the clients (default 1024)",
    )
    p.add_argument("--data-root", help="folder of the torchvision data sets (mnist, ...)")
    p.add_argument("--list-cuts", action="store_true", help="print the model's cut names and exit")
    p.add_argument("--out", help="also write OUT/cost.json")
    m = p.add_argument_group("--measure")
    m.add_argument(
        "--measure", action="store_true", help="train split learning and FedAvg and measure"
    )
    m.add_argument("--target", type=float, default=0.9, help="test accuracy to reach (0.9)")
    m.add_argument("--max-epochs", type=int, default=100, help="at most this many epochs (100)")
    m.add_argument("--batch-size", type=int, default=64, help="batch size of every client (64)")
    m.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (1e-3)")
    m.add_argument("--seed", type=int, default=0, help="seed of data, shards, weights (0)")
    m.add_argument(
        "--relay", choices=["peer", "server"], default="peer", help="weight hand-off (peer)"
    )
    m.add_argument("--max-train", type=int, help="keep this many training samples")
    m.add_argument(
        "--splitfed",
        default=None,
        help="SplitFed versions to train as well, comma-separated, or none (default v1,v2)",
    )
    m.add_argument(
        "--knobs",
        action="append",
        default=[],
        metavar="METHOD:lr=X,E=N,max=M",
        help="one method's own learning rate, local epochs per round (SplitFed, FedAvg) and "
        "epoch budget; METHOD: split | splitfed-v1 | splitfed-v2 | fedavg (repeatable; "
        "default --lr, E=1, --max-epochs)",
    )
    p.set_defaults(handler=run)


def _clients(text: str) -> list[int]:
    from nopeek.errors import ConfigError
    from nopeek.eval.cost import check_clients

    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"--clients must be integers >= 1 separated by commas (e.g. 100,500), got {text!r}"
        ) from None
    clients: list[int] = check_clients(values)
    return clients


def run(args: argparse.Namespace) -> int:
    from nopeek.errors import ConfigError

    if args.measure:
        for k in _clients(args.clients or "10"):
            _measure(args, k, _versions(args.splitfed or "v1,v2"))
        return 0
    for flag, given in (("--max-train", args.max_train), ("--splitfed", args.splitfed),
                        ("--knobs", args.knobs)):  # fmt: skip
        if given not in (None, []):
            raise ConfigError(f"{flag} applies to --measure only; drop it")
    return _compute(args, _clients(args.clients or "100,500"))


def _compute(args: argparse.Namespace, clients: list[int]) -> int:
    from nopeek.eval.cost import (
        build_cost_model,
        cost_table,
        cut_candidates,
        dataset_setting,
        format_table,
        profile_split,
    )

    dataset, name = args.dataset or "cifar10", args.model or "vgg16"
    p, shape, n_classes = dataset_setting(
        dataset, image_size=args.image_size, data_root=args.data_root
    )
    model, default = build_cost_model(name, input_shape=shape, n_classes=n_classes)
    if args.list_cuts:
        print("\n".join(f"{c}*" if c == default else c for c in cut_candidates(model)))
        print("* = default cut")
        return 0
    folder = _plan(args.out)
    cut = args.cut or default
    if not cut:  # torchvision:, module: models have no default cut
        from nopeek.models import missing_cut

        raise missing_cut(name)
    prof = profile_split(model, input_shape=shape, cut=cut, name=name, default=default)
    table = cost_table(prof, dataset=dataset, p=p, clients=clients, sgd_batch=args.sgd_batch)
    print(format_table(table))
    _write(folder, {"computed": table.to_json()})
    return 0


def _versions(text: str) -> tuple[str, ...]:
    from nopeek.errors import ConfigError

    versions = () if text == "none" else tuple(v.strip() for v in text.split(","))
    bad = [v for v in versions if v not in ("v1", "v2")]
    if bad:
        raise ConfigError(f"--splitfed takes v1, v2 (comma-separated) or none, got {text!r}")
    return versions


def _measure(args: argparse.Namespace, clients: int, splitfed: tuple[str, ...]) -> int:
    from nopeek.eval.cost_measure import format_measured, measure

    folder = _plan(args.out)
    out = measure(
        dataset=args.dataset or "digits",
        model=args.model or "",
        cut=args.cut or "",
        clients=clients,
        target=args.target,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        relay=args.relay,
        max_train=args.max_train,
        splitfed=splitfed,
        knobs=_knobs(args),
    )
    print(format_measured(out))
    record = {k: v if k == "setting" else v.to_json() for k, v in out.items()}
    name = "cost.json" if args.clients in (None, str(clients)) else f"cost-k{clients}.json"
    _write(folder, {"measured": record}, name)
    return 0


def _knobs(args: argparse.Namespace) -> dict[str, Any]:
    """``--knobs METHOD:lr=X,E=N,max=M`` as {method: Knobs}, over --lr and --max-epochs."""
    from nopeek.errors import ConfigError
    from nopeek.eval.cost_measure import Knobs

    base = Knobs(args.lr, 1, args.max_epochs)
    out: dict[str, Any] = {}
    for text in args.knobs:
        method, sep, rest = text.partition(":")
        if not sep:
            raise ConfigError(f"--knobs {text!r} needs METHOD:..., e.g. fedavg:lr=3e-3,E=5,max=12")
        out[method.strip()] = Knobs.parse(rest, base)
    return out


def _plan(out: str | None) -> RunDir | None:
    """The output folder, checked before any work (a file, a link, a foreign folder: refused)."""
    if out is None:
        return None
    from nopeek.rundir import RunDir

    folder = RunDir(out, "report")
    folder.plan(reuse=True)
    return folder


def _write(folder: RunDir | None, record: dict[str, Any], name: str = "cost.json") -> None:
    if folder is None:
        return
    from nopeek.io import atomic_write_json

    with folder.writing(reuse=True) as where:
        atomic_write_json(where / name, record)
    print(f"-> {folder.path / name}")
