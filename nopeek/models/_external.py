"""Models from outside nopeek: ``torchvision:<name>`` and ``module:<package.module:factory>``.

- ``torchvision:resnet18`` builds any torchvision classification model with ``num_classes``
  set to the data's classes and its first convolution fitted to the data's channels;
  ``torchvision:resnet18:weights=/path/file.pth`` then loads a local state dict (with
  ``torch.load(weights_only=True)``; nothing is downloaded). Tensors whose shape the fitting
  changed (the first convolution, the classifier) keep their fresh initialisation.
- ``module:mypkg.nets:make`` imports ``mypkg.nets`` (from the installed packages or the current
  folder, like ``python -m``) and calls ``make(input_shape, n_classes) -> nn.Module``.

Both are cut with torch.fx at module paths (see :mod:`nopeek.models.fx_split`) and have no
default cut: ``--cut`` is required. Every build runs two zero inputs through the model (eval
mode, no gradients) so that a model that does not fit the data fails in one line.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import pickle
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from nopeek.errors import ConfigError, NopeekError
from nopeek.models._fx_trace import first_line
from nopeek.models._registry import MODELS, ModelSpec

log = logging.getLogger(__name__)

# builders whose train-only auxiliary heads would change the output in train mode
_AUX_LOGITS = ("googlenet", "inception_v3")


def _probe(model: nn.Module, shape: tuple[int, ...], n_classes: int, what: str) -> None:
    """Run (2, *shape) zeros through ``model`` in eval mode; it must give (2, n_classes)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape))
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ConfigError(
            f"{what} cannot run on inputs of shape {shape} ({first_line(exc)}); use inputs that "
            "fit it (e.g. larger images) or another model"
        ) from None
    finally:
        for m, mode in modes:
            m.training = mode
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if got != (2, n_classes):
        raise ConfigError(
            f"{what} gives {got} for 2 inputs of shape {shape}, not (2, {n_classes}) class "
            "scores; make it return one logit per class"
        )


# --- torchvision ------------------------------------------------------------------------------
def _first_conv(model: nn.Module) -> str | None:
    return next((p for p, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def _fit_channels(model: nn.Module, channels: int, name: str) -> str | None:
    """Replace the first convolution when the data's channels differ; returns its path."""
    path = _first_conv(model)
    if path is None:
        return None
    conv = model.get_submodule(path)
    assert isinstance(conv, nn.Conv2d)  # what _first_conv looks for
    if conv.in_channels == channels:
        return None
    if conv.groups != 1:
        raise ConfigError(
            f"torchvision:{name}'s first convolution is grouped and cannot take {channels} "
            "channels; use another model or images with its channels"
        )
    # torch types these attributes tuple[int, ...]: for a Conv2d they are the pairs it was made with
    fresh = nn.Conv2d(
        channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, fresh)
    return path


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local file, never unpickling arbitrary objects."""
    if not path.is_file():
        raise ConfigError(
            f"weights file {path} does not exist; pass the path of a saved state dict"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        why = first_line(exc)
        if "Weights only load failed" in str(exc):
            why = "it holds Python objects besides tensors, which nopeek never unpickles"
        raise ConfigError(
            f"cannot read weights {path} with torch.load(weights_only=True) ({why}); "
            "save the model's state_dict() with torch.save"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        keys = ", ".join(list(map(str, state))[:4]) if isinstance(state, dict) else ""
        raise ConfigError(
            f"weights {path} hold a {type(state).__name__} ({keys}), not a state dict of "
            "name -> tensor; save model.state_dict() itself"
        )
    return state


def _load_weights(
    model: nn.Module, path: Path, *, refit: set[str], n_classes: int, what: str
) -> None:
    """Load ``path`` into ``model``; tensors whose shape the fitting changed (prefixes in
    ``refit``, or a classifier for another number of classes) keep their initialisation."""
    state = _read_state(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        key, kind = (missing[0], "lacks") if missing else (extra[0], "has the unknown")
        raise ConfigError(
            f"weights {path} {kind} tensor {key!r} ({len(missing)} missing, {len(extra)} "
            f"unknown) for {what}; save the state_dict() of the same architecture"
        )
    kept = []
    for key, tensor in own.items():
        if state[key].shape == tensor.shape:
            continue
        refitted = any(key.startswith(p + ".") for p in refit)
        head = tensor.dim() >= 1 and tensor.shape[0] == n_classes
        if not (refitted or (head and state[key].shape[1:] == tensor.shape[1:])):
            raise ConfigError(
                f"weights {path} give {key!r} the shape {tuple(state[key].shape)}, {what} has "
                f"{tuple(tensor.shape)}; save the state_dict() of the same architecture"
            )
        state[key] = tensor
        kept.append(key)
    model.load_state_dict(state)
    if kept:
        log.info("%s: kept the fresh initialisation of %s (shape differs)", what, ", ".join(kept))


def torchvision_model(
    name: str, input_shape: tuple[int, ...], n_classes: int, *, weights: Path | None = None
) -> nn.Module:
    """torchvision's ``name`` for images of ``input_shape`` (C, H, W) and ``n_classes``."""
    what = f"torchvision:{name}"
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ConfigError(
            f"{what} takes images (C, H, W), the data have shape {shape}; use --model mlp or a "
            "module: factory for flat features"
        )
    kwargs: dict[str, Any] = {"num_classes": n_classes, "weights": None}
    if name in _AUX_LOGITS:
        kwargs.update(aux_logits=False, init_weights=True)
    if name.startswith("vit_"):
        if shape[1] != shape[2]:
            raise ConfigError(
                f"{what} takes square images, the data are {shape[1]}x{shape[2]}; resize them "
                "(e.g. --image-size)"
            )
        kwargs["image_size"] = shape[1]
    try:
        import torchvision  # on use: importing it costs about a second

        model: nn.Module = torchvision.models.get_model(name, **kwargs)
    except (ValueError, TypeError, AssertionError) as exc:
        raise ConfigError(f"cannot build {what} for {shape} ({first_line(exc)})") from None
    refit = _fit_channels(model, shape[0], name)
    if weights is not None:
        _load_weights(
            model, weights, refit={refit} if refit else set(), n_classes=n_classes, what=what
        )
    _probe(model, shape, n_classes, what)
    return model


def _torchvision_spec(rest: str) -> ModelSpec:
    name, _, options = rest.partition(":")
    weights = None
    if options:
        if not options.startswith("weights=") or options == "weights=":
            raise ConfigError(
                f"unknown option {options!r} in --model torchvision:{rest}; the one option is "
                "weights=/path/file.pth (a local state dict)"
            )
        weights = Path(options[len("weights=") :]).expanduser()
        if not weights.is_file():
            raise ConfigError(
                f"weights file {weights} does not exist; pass the path of a saved state dict"
            )
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)
    if name not in names:
        close = difflib.get_close_matches(name, names, n=4) or ["resnet18", "vgg11", "densenet121"]
        raise ConfigError(
            f"unknown torchvision classification model {name!r}; choose e.g. "
            f"{', '.join(close)} (all: torchvision.models.list_models(module=torchvision.models))"
        )

    def build(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        return torchvision_model(name, input_shape, n_classes, weights=weights)

    return ModelSpec(
        f"torchvision:{rest}",
        f"torchvision {name}" + (f" with weights {weights}" if weights else ""),
        build,
        "image",
        "",
        (),
        example_shape=(3, 224, 224),
    )


# --- the user's own factory -------------------------------------------------------------------
def _import(module_name: str, spec: str) -> ModuleType:
    """Import ``module_name`` like ``python -m`` would: installed packages or the current
    folder (added to ``sys.path`` only when the module is found nowhere else)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        own = exc.name is not None and (module_name + ".").startswith(exc.name + ".")
        cwd = os.getcwd()
        if own and cwd not in sys.path and "" not in sys.path:
            sys.path.insert(0, cwd)
            return _import(module_name, spec)
        raise ConfigError(
            f"cannot import {module_name!r} for --model {spec} ({first_line(exc)}); run nopeek "
            "from the folder that holds it, or install it"
        ) from None


def _module_spec(rest: str) -> ModelSpec:
    spec = f"module:{rest}"
    module_name, sep, attr = rest.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(
            f"--model {spec} must read module:<package.module:factory>, e.g. module:mynets:make"
        )
    factory = getattr(_import(module_name, spec), attr, None)
    if not callable(factory):
        raise ConfigError(
            f"module {module_name!r} has no function {attr!r} for --model {spec}; define "
            f"{attr}(input_shape, n_classes) -> nn.Module there"
        )

    def build(input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        shape = tuple(int(s) for s in input_shape)
        model = _call(factory, f"{module_name}.{attr}", shape, n_classes)
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"{module_name}.{attr}{shape, n_classes} returned a {type(model).__name__}, not "
                "an nn.Module; return the model"
            )
        _probe(model, shape, n_classes, f"{module_name}.{attr}")
        return model

    return ModelSpec(spec, f"{module_name}.{attr}(input_shape, n_classes)", build, "any", "", ())


def _call(
    factory: Callable[..., object], what: str, shape: tuple[int, ...], n_classes: int
) -> object:
    """``factory(shape, n_classes)``; an exception inside the user's code is one line naming
    the factory and where it raised (the whole traceback is logged: ``nopeek -v``)."""
    try:
        return factory(shape, n_classes)
    except NopeekError:
        raise
    except Exception as exc:
        log.info("%s%s raised:", what, (shape, n_classes), exc_info=exc)
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        raise ConfigError(
            f"{what}{shape, n_classes} raised {type(exc).__name__} at "
            f"{Path(frame.filename).name}:{frame.lineno} ({first_line(exc)}); fix the factory "
            "(nopeek -v shows the traceback)"
        ) from None


RESOLVERS: dict[str, tuple[Callable[[str], ModelSpec], str]] = {
    "torchvision": (_torchvision_spec, "torchvision:<name>"),
    "module": (_module_spec, "module:<package.module:factory>"),
}
for _prefix, (_resolve, _usage) in RESOLVERS.items():
    MODELS.resolver(_prefix, _resolve, _usage)
