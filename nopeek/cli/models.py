"""``nopeek models``: list the reference models and their cut names; ``--model M``: the valid
cuts of any model (torchvision:, module:) with the shape of what crosses each."""

from __future__ import annotations

import argparse

import torch

from nopeek.cli.commands import summary
from nopeek.errors import ConfigError
from nopeek.models import MODELS, ModelSpec, build_model, cut_info


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help=summary("models"))
    p.add_argument(
        "--model",
        help="list the valid cuts of this model (a built-in name, torchvision:<name> or "
        "module:<package.module:factory>) with what crosses each",
    )
    p.add_argument(
        "--input-shape",
        help="input shape without the batch, e.g. 3x32x32 or 30 (default: the model's own; "
        "torchvision: 3x224x224)",
    )
    p.add_argument("--classes", type=int, default=10, help="number of classes (default 10)")
    p.add_argument("--all", action="store_true", help="every valid cut, not only the outer modules")
    p.set_defaults(handler=run)


def _shape(text: str | None, spec: ModelSpec, name: str) -> tuple[int, ...]:
    if text is None:
        shape = spec.input_shapes[0] if spec.input_shapes else spec.example_shape
        if not shape:
            raise ConfigError(
                f"model {name!r} takes any input shape; pass --input-shape, e.g. 3x32x32"
            )
        return tuple(shape)
    try:
        shape = tuple(int(s) for s in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise ConfigError(f"--input-shape must read like 3x32x32 or 30, got {text!r}")
    return shape


def _list_cuts(args: argparse.Namespace) -> int:
    """The valid cuts of ``args.model`` with the shape of what crosses each."""
    spec = MODELS.get(args.model)
    shape = _shape(args.input_shape, spec, args.model)
    with torch.random.fork_rng(devices=[]):
        model = build_model(args.model, input_shape=shape, n_classes=args.classes)
    infos = cut_info(model, torch.zeros(2, *shape))
    shown = infos if args.all else [c for c in infos if c.name.count(".") <= 1]
    dims = "x".join(map(str, shape))
    more = "" if len(shown) == len(infos) else f", {len(shown)} outer ones shown (--all: every one)"
    print(f"{args.model} on inputs {dims}: {len(infos)} valid cuts{more}")
    width = max((len(c.name) for c in shown), default=0)
    for c in shown:
        sizes = ["x".join(map(str, s)) for s in c.shapes] or ["?"] * len(c.carries)
        if len(c.carries) == 1:
            print(f"  {c.name:{width}s}  sends {sizes[0]}")
        else:
            parts = ", ".join(f"{w} {s}" for w, s in zip(c.carries, sizes))
            what = f"sends {len(c.carries)} tensors ({parts}): a skip crosses, sent packed"
            print(f"  {c.name:{width}s}  {what}")
    if args.model in MODELS and MODELS.get(args.model).default_cut:
        print(f"default cut: {MODELS.get(args.model).default_cut}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.model:
        return _list_cuts(args)
    for name in MODELS.names():
        spec = MODELS.get(name)
        cuts = ", ".join(f"{c}*" if c == spec.default_cut else c for c in spec.cuts)
        anything = "any CxHxW" if spec.input_kind == "image" else "any (flat)"
        shapes = " or ".join("x".join(map(str, s)) for s in spec.input_shapes) or anything
        print(f"{name:12s} input {shapes:10s} cuts: {cuts}   ({spec.description})")
    print("* = default cut")
    print("also any torchvision:<name> or module:<package.module:factory> model, cut at module")
    print("paths (no default cut): `nopeek models --model M` lists its valid cuts")
    return 0
