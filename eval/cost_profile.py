"""The model side of ``nopeek cost``: the models, their cuts, and what the formulas need of them.

:func:`build_cost_model` builds torchvision's VGG-16/19 and ResNet-50 (no weights, on the
``meta`` device by default, so nothing is allocated) or a reference model; :func:`profile_split`
measures at a cut ``q`` (values per sample), ``N``, ``eta*N`` and the forward+backward FLOPs per
sample of the client part and of the whole model with ``FlopCounterMode``. A cut is a module
path (``features.4``, ``layer1``): the client part is everything that runs before that module's
output, in execution order, found with forward hooks, so any model can be cut without rewriting
it. The formulas themselves are in :mod:`nopeek.eval.cost`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from nopeek.errors import ConfigError, CutError, NopeekError
from nopeek.schema import brief

#: The papers' data sets need no download here: only their size and shape enter the formulas.
#: ``p`` is the full training set (the papers' setting; nopeek's own cifar10 loader keeps 10%
#: of it aside as the attacker's auxiliary data).
PAPER_DATASETS = {"cifar10": (50_000, (3, 32, 32), 10), "cifar100": (50_000, (3, 32, 32), 100)}
#: torchvision architectures (no weights, no download) and their default cuts.
TORCHVISION_MODELS = {"vgg16": "features.4", "vgg19": "features.4", "resnet50": "layer1"}


@dataclass(frozen=True)
class SplitProfile:
    """What the formulas need of a model cut at ``cut``, measured on the model itself.

    ``cut_shape``: one sample's activation at the cut (no batch dim), ``q`` its size;
    ``params`` = N, ``client_params`` = eta*N (parameters the client part uses);
    ``flops_client`` / ``flops_model``: forward+backward FLOPs per sample of the client part
    (backward from the gradient arriving at the cut) and of the whole model (cross-entropy
    loss), as ``FlopCounterMode`` counts them.
    """

    model: str
    cut: str
    input_shape: tuple[int, ...]
    cut_shape: tuple[int, ...]
    q: int
    params: int
    client_params: int
    flops_client: float
    flops_model: float

    @property
    def eta(self) -> float:
        return self.client_params / self.params


def dataset_setting(
    name: str, *, image_size: int | None = None, data_root: str | None = None
) -> tuple[int, tuple[int, ...], int]:
    """``(p, input_shape, n_classes)`` of data set ``name``: the papers' CIFAR sets from
    :data:`PAPER_DATASETS` (no download), any other from :func:`nopeek.data.load_dataset`
    (``p`` = its training split). ``image_size`` resizes images to that side (the models then
    see ``(C, image_size, image_size)``), e.g. 224 for the ImageNet-size models of the papers.

    >>> dataset_setting("cifar100", image_size=224)
    (50000, (3, 224, 224), 100)
    """
    if name in PAPER_DATASETS:
        p, shape, n_classes = PAPER_DATASETS[name]
    else:
        from nopeek.data import load_dataset

        ds = load_dataset(name, data_root=data_root)
        p, shape, n_classes = len(ds.train), tuple(ds.input_shape), ds.n_classes
    if image_size is not None:
        if image_size < 1:
            raise ConfigError(f"--image-size must be >= 1, got {image_size}")
        if len(shape) != 3:
            raise ConfigError(f"--image-size applies to images; {name} has shape {shape}: drop it")
        shape = (shape[0], image_size, image_size)
    return p, shape, n_classes


def _vgg(name: str, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    import torchvision

    net = getattr(torchvision.models, name)(num_classes=n_classes)
    if input_shape[0] != 3:
        net.features[0] = nn.Conv2d(input_shape[0], 64, 3, padding=1)
    if min(input_shape[1:]) < 64:
        # 32x32 leaves a 1x1 map after the five pools; torchvision's 7x7 adaptive pool would
        # copy it 49 times into a 25088-wide classifier: average it instead, 512 wide
        net.avgpool = nn.AdaptiveAvgPool2d(1)
        net.classifier[0] = nn.Linear(512, 4096)
    return net


def _resnet50(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    from torchvision.models import resnet50

    net = resnet50(num_classes=n_classes)
    channels = input_shape[0]
    if min(input_shape[1:]) < 64:  # the CIFAR adaptation: 3x3 stride-1 stem, no max-pool
        net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif channels != 3:
        net.conv1 = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
    return net


def build_cost_model(
    name: str, *, input_shape: Sequence[int], n_classes: int, device: str | torch.device = "meta"
) -> tuple[nn.Module, str]:
    """``(model, default cut)``: a torchvision model of :data:`TORCHVISION_MODELS` (no weights)
    or any model spec ``nopeek train --model`` takes (a reference model, ``torchvision:NAME``,
    ``module:PKG.MOD:FACTORY``, resolved by :data:`nopeek.models.MODELS`), built on ``device``;
    the default cut is "" for a spec without one.

    torchvision models on images smaller than 64x64 get the usual CIFAR adaptation: VGG averages
    its last 1x1 feature map into a 512-wide classifier input (not torchvision's 7x7 copy);
    ResNet-50 takes a 3x3 stride-1 stem and no max-pool. From 64x64 on they are torchvision's
    ImageNet architectures unchanged. The default ``meta`` device allocates nothing: only
    shapes and FLOPs are needed.

    >>> model, cut = build_cost_model("vgg16", input_shape=(3, 32, 32), n_classes=10)
    >>> cut, sum(p.numel() for p in model.parameters())
    ('features.4', 33638218)
    """
    from nopeek.models import MODELS, build_model

    shape = tuple(int(s) for s in input_shape)
    if name not in TORCHVISION_MODELS and ":" not in name and name not in MODELS.names():
        valid = ", ".join([*TORCHVISION_MODELS, *MODELS.names()])
        raise ConfigError(
            f"unknown model {name!r}; choose one of: {valid}, torchvision:<name> or "
            "module:<package.module:factory>"
        )
    if name in TORCHVISION_MODELS and len(shape) != 3:
        raise ConfigError(
            f"model {name} takes images (C, H, W), the data have shape {shape}; pick a model "
            "for this data set (e.g. mlp)"
        )
    with torch.device(device):
        if name == "resnet50":
            return _resnet50(shape, n_classes), TORCHVISION_MODELS[name]
        if name in TORCHVISION_MODELS:
            return _vgg(name, shape, n_classes), TORCHVISION_MODELS[name]
        model = build_model(name, input_shape=shape, n_classes=n_classes)
    return model, MODELS.get(name).default_cut


# ------------------------------------------------------------------------- the measurement


class _StopAtCutError(Exception):
    """Raised by the cut's hook: the client part ends there."""


def cut_candidates(model: nn.Module) -> list[str]:
    """Every module path of ``model`` (a cut is placed after the module's output)."""
    return [name for name, _ in model.named_modules() if name]


def _find_cut(model: nn.Module, cut: str, model_name: str, default: str = "") -> nn.Module:
    modules = dict(model.named_modules())
    if cut and cut in modules:
        return modules[cut]
    names = cut_candidates(model)
    shown = list(dict.fromkeys([default, *(n for n in names if "." not in n)]))
    examples = ", ".join([n for n in shown if n][:6])
    raise CutError(
        f"unknown cut {cut!r} for {model_name}; a cut is a module path such as {examples} "
        f"(`nopeek cost --model {model_name} --list-cuts` lists all {len(names)})"
    )


def _hook(module: nn.Module, fn):
    def hook(mod, inputs, output):
        if not isinstance(output, Tensor):
            raise CutError(
                f"module {mod.__class__.__name__} at the cut returns {type(output).__name__}, "
                "not one tensor; cut after a module that returns a tensor"
            )
        return fn(output)

    return module.register_forward_hook(hook)


def _sample(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    """Two samples (train-mode batch norm needs more than one value per channel); FLOPs are
    linear in the batch, so per-sample counts are exact halves."""
    device = next((t.device for t in model.parameters()), torch.device("cpu"))
    x = torch.rand(2, *input_shape, device=device)
    return x, torch.zeros(2, dtype=torch.long, device=device)


def _run(model: nn.Module, x: Tensor, what: str) -> Tensor:
    try:
        return model(x)
    except NopeekError:
        raise
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"{what} does not run on inputs of shape {tuple(x.shape[1:])} ({brief(exc)}); pick "
            "a model that fits the data set, or another --image-size"
        ) from None


def profile_split(
    model: nn.Module,
    *,
    input_shape: Sequence[int],
    cut: str,
    name: str = "model",
    default: str = "",
) -> SplitProfile:
    """Measure q, N, eta*N, F_c and F of ``model`` cut after module path ``cut``.

    The client part is everything that runs before the cut's output, in execution order (a
    forward hook stops the pass there); its FLOPs include its backward pass from a gradient
    of the cut's shape, and its parameters are those that gradient reaches. A cut is refused if
    anything besides its output crosses it (a skip connection around it, a later use of the
    input), checked by running the server part on a detached copy of the cut activation: then
    no client parameter may receive a gradient. ``default`` (the model's default cut) is
    suggested when ``cut`` is unknown. The model's state (batch-norm statistics, gradients,
    train/eval mode) is left as it was.

    >>> from nopeek.models import build_model
    >>> m = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    >>> prof = profile_split(m, input_shape=(1, 8, 8), cut="conv2")
    >>> prof.cut_shape, prof.q, prof.client_params, prof.params
    ((32, 4, 4), 512, 4800, 38282)
    """
    shape = tuple(int(s) for s in input_shape)
    target = _find_cut(model, cut, name, default)
    was_training = model.training
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    model.train()
    try:
        x, y = _sample(model, shape)
        z, flops_client, client = _client_pass(model, target, x, cut, name)
        flops_model = _model_flops(model, target, x, y, cut, name)
        _check_single_crossing(model, target, x, y, client, cut, name)
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        model.train(was_training)
    return SplitProfile(
        model=name,
        cut=cut,
        input_shape=shape,
        cut_shape=tuple(z.shape[1:]),
        q=int(z[0].numel()),
        params=sum(p.numel() for p in model.parameters()),
        client_params=sum(p.numel() for p in client),
        flops_client=flops_client,
        flops_model=flops_model,
    )


def _client_pass(model, target, x, cut: str, name: str):
    """The client part alone: ``(activation at the cut, FLOPs per sample, its parameters)``."""
    seen: dict[str, Tensor] = {}

    def stop(z: Tensor):
        seen["z"] = z
        raise _StopAtCutError

    model.zero_grad(set_to_none=True)
    handle = _hook(target, stop)
    try:
        with FlopCounterMode(display=False) as counter:
            with contextlib.suppress(_StopAtCutError):
                _run(model, x, name)
            z = seen.get("z")
            if z is None:
                raise CutError(f"cut {cut!r} never runs in {name}'s forward pass; pick another")
            if z.requires_grad:
                z.backward(torch.ones_like(z))  # the gradient the server sends back
    finally:
        handle.remove()
    client = [p for p in model.parameters() if p.grad is not None]
    return z.detach(), counter.get_total_flops() / len(x), client


def _model_flops(model, target, x, y, cut: str, name: str) -> float:
    """FLOPs per sample of the whole model: forward, cross-entropy, backward. Also refuses a
    cut at a module that runs more than once (a shared module: which call would be the cut?)."""
    calls = []
    handle = _hook(target, lambda z: calls.append(1))
    model.zero_grad(set_to_none=True)
    try:
        with FlopCounterMode(display=False) as counter:
            nn.functional.cross_entropy(_run(model, x, name), y).backward()
    finally:
        handle.remove()
    if len(calls) > 1:
        raise CutError(
            f"module {cut!r} runs {len(calls)} times in {name}'s forward pass (a shared "
            "module); cut after a module that runs once (its block, e.g. layer1.0)"
        )
    return counter.get_total_flops() / len(x)


def _check_single_crossing(model, target, x, y, client, cut: str, name: str) -> None:
    """Refuse ``cut`` unless the server part depends on the client side only through it."""
    held: dict[str, Tensor] = {}

    def detach(z: Tensor) -> Tensor:
        held["z"] = z.detach().requires_grad_()
        return held["z"]

    x = x.clone().requires_grad_()
    handle = _hook(target, detach)
    try:
        out = _run(model, x, name)
    finally:
        handle.remove()
    if out is held["z"]:
        raise CutError(
            f"cut {cut!r} is {name}'s output: nothing is left for the server; cut earlier"
        )
    loss = nn.functional.cross_entropy(out, y)
    grads = torch.autograd.grad(loss, [held["z"], x, *client], allow_unused=True)
    if grads[0] is None:
        raise CutError(
            f"the rest of {name} does not use cut {cut!r}'s output; cut on the main path"
        )
    if any(g is not None for g in grads[1:]):
        raise CutError(
            f"more than cut {cut!r}'s output crosses to the server in {name} (a skip connection "
            "around it); cut at a block boundary (e.g. layer1, not layer1.0.conv1)"
        )
