"""``nopeek train``: train a split model, optionally with NoPeek, defenses or a malicious server."""

from __future__ import annotations

import argparse
from typing import Any

from nopeek.cli.commands import summary
from nopeek.config import TrainConfig
from nopeek.errors import CheckpointError

S = argparse.SUPPRESS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "train",
        help=summary("train"),
        description="Train a split model; writes config.json, metrics.json, checkpoint.pt and "
        "observations.pt (what crossed the cut, for attacks) to --out.",
        argument_default=S,
    )
    p.add_argument(
        "--config",
        help="start from the fields of a TOML file (keys: the config.json fields) or of a run's "
        "config.json (replays that run); flags given here override it",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        default=None,
        help="also write each epoch's train_loss and test_accuracy as TensorBoard scalars to DIR "
        "(needs pip install 'nopeek[tensorboard]'; --out/metrics.csv has them either way)",
    )
    add_train_args(p)
    p.set_defaults(handler=run)


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Every ``nopeek train`` flag (also taken by ``nopeek party`` and ``nopeek.cli.party``)."""
    d = TrainConfig()
    p.add_argument(
        "--dataset",
        help="digits | breast-cancer | mnist | fashion-mnist | cifar10, or your own file: "
        f"npz:PATH | csv:PATH | imagefolder:PATH (default {d.dataset}; see README)",
    )
    p.add_argument("--target", help="csv:PATH data: the label column (every other is a feature)")
    p.add_argument(
        "--id-column",
        dest="id_column",
        help="csv:PATH data: the column of sample ids; rows are keyed by it (split by id order "
        "and seed; in nopeek party each party reads only its own file, aligned by private set "
        "intersection)",
    )
    p.add_argument(
        "--columns",
        help="with --id-column: the feature columns of --dataset, comma-separated (default: all "
        "but the id and --target)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        dest="image_size",
        help="imagefolder:PATH data: resize every image to NxN (needed for mixed sizes or modes)",
    )
    p.add_argument(
        "--model",
        help="reference model (see `nopeek models`; default: per data set), torchvision:<name> "
        "or module:<package.module:factory> (these need --cut)",
    )
    p.add_argument(
        "--cut", help="cut name(s), comma-separated for several cuts (default: the model's)"
    )
    add_topology_args(p)
    p.add_argument(
        "--alpha",
        type=float,
        help=f"NoPeek weight: loss = CE + alpha * dCor(x, cut) (default {d.alpha})",
    )
    p.add_argument("--epochs", type=int, help=f"training epochs (default {d.epochs})")
    p.add_argument(
        "--batch-size", type=int, dest="batch_size", help=f"batch size (default {d.batch_size})"
    )
    p.add_argument("--lr", type=float, help=f"Adam learning rate for every party (default {d.lr})")
    p.add_argument(
        "--seed",
        type=int,
        help=f"seed for splits, weights and shuffling, 0 to 2**31 - 1 (default {d.seed})",
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="default auto (CUDA if available)"
    )
    p.add_argument(
        "--one-vs-rest",
        type=int,
        dest="one_vs_rest",
        help="turn the task into 'class K vs the rest'",
    )
    p.add_argument(
        "--shuffle-labels",
        action="store_true",
        dest="shuffle_labels",
        help="permute training labels (a control)",
    )
    p.add_argument(
        "--data-root", dest="data_root", help="folder holding MNIST/Fashion-MNIST/CIFAR-10"
    )
    p.add_argument("--download", action="store_true", help="download the data set into --data-root")
    p.add_argument(
        "--max-train",
        type=int,
        dest="max_train",
        help="keep a stratified subset of the training split",
    )
    p.add_argument(
        "--record-samples",
        type=int,
        dest="record_samples",
        help="samples per epoch whose cut messages are kept for attacks "
        f"(default {d.record_samples})",
    )
    p.add_argument(
        "--dcor-samples",
        type=int,
        dest="dcor_samples",
        help=f"test samples for dcor_test (default {d.dcor_samples})",
    )
    p.add_argument(
        "--defense",
        action="append",
        dest="defenses",
        help="defense spec, repeatable, e.g. cut-noise:gaussian,sigma=0.5,clip=1",
    )
    p.add_argument(
        "--compress",
        help="compress what crosses the cut, per direction: forward=SPEC,backward=SPEC (or one "
        "SPEC for both); SPEC: topk:RATIO[,feedback=false] | randk:RATIO | int8 | int4 | fp16 | "
        "bf16, e.g. forward=topk:0.1,backward=int8 (default: uncompressed)",
    )
    p.add_argument(
        "--delta", type=float, help=f"delta for (epsilon, delta)-DP accounting (default {d.delta})"
    )
    p.add_argument(
        "--malicious-server",
        dest="malicious_server",
        help="run an active attack during training: fsha (a malicious server), "
        "active-completion (a malicious data party's optimizer)",
    )
    p.add_argument("--out", default="runs/latest", help="run directory (default runs/latest)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=False,
        help="replace an existing run directory (only one nopeek wrote; the old run stays until "
        "the new one has finished)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue the run in --out from its last checkpoint",
    )
    p.add_argument("--quiet", action="store_true", default=False, help="no progress bar")


def add_topology_args(p: argparse.ArgumentParser) -> None:
    """``--topology`` and the multi-party options (shared by train, sweep and tune)."""
    from nopeek.topology import TASKS, TOPOLOGIES

    d = TrainConfig()
    p.add_argument(
        "--topology",
        help=f"{' | '.join(TOPOLOGIES.names())} (default {d.topology}; see README)",
    )
    p.add_argument(
        "--clients",
        type=int,
        help=f"vertical / many-clients / splitfed: number of clients (default {d.clients})",
    )
    p.add_argument(
        "--merge",
        help=f"vertical: how the server merges the clients' cuts, concat | sum | mean "
        f"(default {d.merge})",
    )
    p.add_argument(
        "--label-party",
        dest="label_party",
        help="vertical: who holds the labels, server or a client such as client0 (default server)",
    )
    p.add_argument(
        "--tasks",
        help=f"multi-task: comma-separated tasks from {', '.join(TASKS.names())} "
        f"(default {d.tasks})",
    )
    p.add_argument(
        "--relay",
        help="many-clients: hand the client segment on peer-to-peer or via the server "
        "(peer | server, default peer)",
    )
    p.add_argument(
        "--non-iid",
        type=float,
        dest="non_iid",
        help="many-clients / splitfed: Dirichlet concentration of the label shards "
        "(default: IID shards)",
    )
    p.add_argument(
        "--splitfed",
        help="splitfed: v1 (one server copy per client, averaged) | v2 (one server segment, "
        "default)",
    )
    p.add_argument(
        "--local-epochs",
        type=int,
        dest="local_epochs",
        help="splitfed: passes over its shard each client makes per round before the "
        "averaging (default 1)",
    )


_RUN_FLAGS = {"out", "overwrite", "resume", "quiet", "handler", "command", "verbose", "tensorboard"}


def given_fields(args: argparse.Namespace, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The config fields the user set: those of ``--config FILE`` overridden by the flags given
    (the parser leaves out every flag not given; ``exclude``: other flags that are no field);
    each ``--defense`` value may join specs with ``+`` as in ``nopeek sweep`` (``none``: no
    defense)."""
    from nopeek.config import read_config_file, with_flags

    flags = {k: v for k, v in vars(args).items() if k not in _RUN_FLAGS | {"config"} | exclude}
    config = getattr(args, "config", None)
    given = with_flags(read_config_file(config), flags) if config else flags
    if given.get("defenses"):
        from nopeek.defenses import parse_defense_option

        given["defenses"] = [s for value in given["defenses"] for s in parse_defense_option(value)]
    return given


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The config for a new run, or the saved one (checked against given flags) on --resume."""
    given = given_fields(args)
    if not args.resume:
        return TrainConfig(**given)
    from nopeek.rundir import RunDir

    saved = RunDir(args.out, "run", fix="train anew with --overwrite").config()
    for key, value in given.items():
        if getattr(saved, key) != value:
            raise CheckpointError(
                f"run {args.out} was trained with {key}={getattr(saved, key)!r}, not {value!r}; "
                "drop the option to resume, or train anew with --overwrite"
            )
    return saved


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    config.validate()  # a bad value is refused before the data sets and the runtime are imported

    from nopeek.training.trainer import train

    result = train(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
        tensorboard=args.tensorboard,
    )
    assert result.metrics is not None  # in-process: no other party holds the metrics
    print(_result_line(result.metrics) + f"  -> {args.out}")
    return 0


def _result_line(m: dict[str, Any]) -> str:
    """The run's headline metrics, each after its name; ``epsilon_dpsgd`` only where its
    guarantee holds (``dpsgd_guarantee_holds``), else why it does not.

    >>> _result_line({"test_accuracy": 0.98765, "epsilon_dpsgd": 2.0,
    ...               "dpsgd_guarantee_holds": False, "dpsgd_guarantee_voided_by": "BN"})
    'test_accuracy 0.988  epsilon_dpsgd n/a: no DP guarantee, BN couples the samples of a batch'
    """
    from nopeek.cli._fmt import metric

    keys = ["test_accuracy", "test_auc", "dcor_test", "dcor_test_unbiased", "train_seconds"]
    keys += ["epsilon_cut", "label_dp_epsilon"]
    parts = [metric(k, m[k]) for k in keys if k in m]
    if "epsilon_dpsgd" in m and m.get("dpsgd_guarantee_holds", True):
        parts.append(metric("epsilon_dpsgd", m["epsilon_dpsgd"]))
    elif "epsilon_dpsgd" in m:
        why = m.get("dpsgd_guarantee_voided_by") or "the run"
        parts.append(f"epsilon_dpsgd n/a: no DP guarantee, {why} couples the samples of a batch")
    return "  ".join(parts)
