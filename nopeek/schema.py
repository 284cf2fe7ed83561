"""One-line checks that a file which parsed holds what its reader expects.

A reader takes each field through :func:`take`, which names the file and the field when the
field is missing or has the wrong type, so a hand-edited or foreign ``results.json`` is a
one-line error with a fix instead of a ``KeyError`` traceback deep inside a report.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from nopeek.errors import ConfigError, NopeekError

Check = Callable[[Any], bool]


def shown(value: Any) -> str:
    """``repr(value)`` if short, else its type name (messages stay one short line)."""
    text = repr(value)
    return text if len(text) <= 40 and "\n" not in text else type(value).__name__


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def is_dict(value: Any) -> bool:
    return isinstance(value, dict)


def is_tensor(value: Any) -> bool:
    return isinstance(value, torch.Tensor)


def optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def list_of(check: Check) -> Check:
    """A list (or tuple: torch checkpoints keep tuples) whose items all pass ``check``."""
    return lambda value: isinstance(value, (list, tuple)) and all(check(v) for v in value)


def dict_of(check: Check) -> Check:
    """A dict with string keys whose values all pass ``check``."""
    return lambda value: (
        isinstance(value, dict) and all(isinstance(k, str) and check(v) for k, v in value.items())
    )


def take(
    data: Any,
    key: str,
    check: Check,
    want: str,
    *,
    where: str,
    fix: str,
    error: type[NopeekError] = ConfigError,
) -> Any:
    """``data[key]`` after checking it passes ``check`` (described as ``want``).

    >>> take({"seeds": [0, 1]}, "seeds", list_of(is_int), "a list of integers", where="s", fix="x")
    [0, 1]
    >>> take({"seeds": "0"}, "seeds", list_of(is_int), "a list of integers",
    ...      where="out/sweep.json", fix="redo the sweep with --overwrite")
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: out/sweep.json field 'seeds' must be a list of integers, got '0'; redo the sweep with --overwrite
    """  # noqa: E501
    if not isinstance(data, dict):
        raise error(f"{where} must hold a mapping of fields, got {shown(data)}; {fix}")
    if key not in data:
        raise error(f"{where} has no field {key!r}; {fix}")
    value = data[key]
    if not check(value):
        raise error(f"{where} field {key!r} must be {want}, got {shown(value)}; {fix}")
    return value


def brief(exc: BaseException, limit: int = 100) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters: cut after its first
    sentence if that is short enough, else at a word boundary (``...`` marks the cut); its type
    name if it has no message or no word boundary to cut at.

    >>> brief(RuntimeError("failed finding central directory. This is an internal detail"), 50)
    'failed finding central directory'
    >>> brief(RuntimeError("PytorchStreamReader failed reading zip archive: failed finding"), 40)
    'PytorchStreamReader failed reading...'
    """
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if not text:
        return type(exc).__name__
    if len(text) <= limit:
        return text
    sentence = text.split(". ", 1)[0]
    if len(sentence) <= limit:
        return sentence.rstrip(".")
    head = text[: limit - 3]
    cut = head.rsplit(" ", 1)[0].rstrip(" ,;:(") if " " in head else ""
    return f"{cut}..." if cut else type(exc).__name__
