"""``nopeek models``: list the reference models and their cut names."""

from __future__ import annotations

from nopeek.models import MODELS


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list models and their cut names")
    p.set_defaults(handler=run)


def run(args) -> int:
    for name in MODELS.names():
        spec = MODELS.get(name)
        cuts = ", ".join(f"{c}*" if c == spec.default_cut else c for c in spec.cuts)
        shapes = " or ".join("x".join(map(str, s)) for s in spec.input_shapes) or "any (flat)"
        print(f"{name:12s} input {shapes:10s} cuts: {cuts}   ({spec.description})")
    print("* = default cut")
    return 0
