"""``--compress`` specs: which compressor each direction of the cut uses, parsed in one place.

Grammar of one ``--compress`` value (the :class:`~nopeek.config.TrainConfig` field
``compress``)::

    option := "none" | "" | spec | direction "=" spec ("," direction "=" spec)*
    direction := "forward" | "backward"     (activations / the gradients sent back)
    spec   := name [":" item ("," item)*]   item := value (the first only) | key "=" value

A bare spec compresses both directions. Examples::

    forward=topk:0.1                 forward=topk:0.05,feedback=false,backward=int8
    forward=randk:0.25,backward=fp16 int4

Names: ``topk``, ``randk`` (:mod:`.sparse`), ``int8``, ``int4``, ``fp16``, ``bf16``
(:mod:`.quantize`). Every mistake is one :class:`~nopeek.errors.ConfigError` line naming the
fix.
"""

from __future__ import annotations

import math
import re

from nopeek.compress.base import Compressor
from nopeek.compress.quantize import BFloat16, Float16, Int4, Int8
from nopeek.compress.sparse import RandomK, TopK
from nopeek.errors import ConfigError
from nopeek.registry import Registry
from nopeek.runtime.channel import ACTIVATION, BACKWARD, FORWARD, GRADIENT

COMPRESSORS: Registry[type[Compressor]] = Registry("compressor")
for _cls in (TopK, RandomK, Int8, Int4, Float16, BFloat16):
    COMPRESSORS.register(_cls.name, _cls)

KIND_OF = {FORWARD: ACTIVATION, BACKWARD: GRADIENT}
_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}
_DIRECTION = re.compile(r",\s*(?=(?:forward|backward)\s*=)")


def _convert(name: str, key: str, raw: str, kind: str) -> float | bool:
    if kind == "bool":
        if raw.lower() not in _TRUE | _FALSE:
            raise ConfigError(f"{name} {key} must be true or false, got {raw!r}")
        return raw.lower() in _TRUE
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ConfigError(f"{name} {key} must be a finite number, got {raw!r}; e.g. {name}:0.1")
    return value


def parse_compressor(spec: str) -> Compressor:
    """One compressor spec -> the compressor (unbound: no party's state yet).

    >>> parse_compressor("topk:0.1,feedback=false").spec()
    'topk:0.1,feedback=false'
    >>> parse_compressor("int8:0.5")
    Traceback (most recent call last):
    ...
    nopeek.errors.ConfigError: int8 takes no options; write just int8
    """
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if not name:
        raise ConfigError(f"empty compressor in {spec!r}; e.g. --compress forward=topk:0.1")
    cls = COMPRESSORS.get(name)
    items = [item.strip() for item in rest.split(",")] if rest.strip() else []
    if items and not cls.options:
        raise ConfigError(f"{name} takes no options; write just {name}")
    options: dict[str, float | bool] = {}
    for position, item in enumerate(items):
        key, eq, raw = item.partition("=")
        key, raw = key.strip().replace("-", "_"), raw.strip()
        if not eq:
            if position > 0 or cls.positional is None or not key:
                raise ConfigError(f"{name}: write key=value, not {item!r}, in {spec!r}")
            key, raw = cls.positional, item
        if key not in cls.options:
            raise ConfigError(
                f"unknown option {key!r} for {name}; valid options: {', '.join(cls.options)}"
            )
        if key in options:
            raise ConfigError(f"{name} option {key!r} is given twice in {spec!r}; give it once")
        options[key] = _convert(name, key, raw, cls.options[key])
    if cls.positional is not None and cls.positional not in options:
        raise ConfigError(f"{name} needs its {cls.positional}, e.g. {name}:0.1")
    return cls(**options)


def parse_compress(text: str | None) -> dict[str, Compressor]:
    """One ``--compress`` value -> {direction: compressor} (empty for ``none`` or "").

    >>> {d: c.spec() for d, c in parse_compress("forward=topk:0.1,backward=int8").items()}
    {'forward': 'topk:0.1', 'backward': 'int8'}
    >>> {d: c.spec() for d, c in parse_compress("fp16").items()}
    {'forward': 'fp16', 'backward': 'fp16'}
    """
    text = (text or "").strip()
    if text.lower() in ("", "none"):
        return {}
    if "=" not in text.partition(":")[0]:  # a bare spec: both directions
        return {d: parse_compressor(text) for d in (FORWARD, BACKWARD)}
    out: dict[str, Compressor] = {}
    for part in _DIRECTION.split(text):
        direction, _, spec = part.partition("=")
        direction = direction.strip()
        if direction not in KIND_OF:
            raise ConfigError(
                f"--compress part {part!r} names no direction; write forward=SPEC and/or "
                "backward=SPEC, e.g. forward=topk:0.1,backward=int8"
            )
        if direction in out:
            raise ConfigError(f"--compress gives {direction} twice in {text!r}; give it once")
        out[direction] = parse_compressor(spec)
    return {d: out[d] for d in (FORWARD, BACKWARD) if d in out}


def canonical(text: str) -> str:
    """The canonical form of a ``--compress`` value (what config.json records).

    >>> canonical("backward = int8, forward=topk:ratio=0.10")
    'forward=topk:0.1,backward=int8'
    >>> canonical("none")
    ''
    """
    return ",".join(f"{d}={c.spec()}" for d, c in parse_compress(text).items())


def by_kind(text: str | None) -> dict[str, Compressor]:
    """{message kind: compressor} of a ``--compress`` value: what a receiver decodes with."""
    return {KIND_OF[d]: c for d, c in parse_compress(text).items()}


def for_party(text: str | None, *, seed: int, party: str) -> dict[str, Compressor]:
    """{message kind: compressor} that ``party`` sends with: its own instances, seeded."""
    return {k: c.bind(seed=seed, party=party, kind=k) for k, c in by_kind(text).items()}


def family(tag: int) -> str:
    """The compressor family a header's tag names ('none' for 0, 'unknown' otherwise).

    >>> family(0), family(parse_compressor("int4").tag), family(99 << 32)
    ('none', 'int4', 'unknown')
    """
    if tag == 0:
        return "none"
    code = tag >> 32
    return next((c.name for c in map(COMPRESSORS.get, COMPRESSORS.names()) if c.code == code),
                "unknown")  # fmt: skip
