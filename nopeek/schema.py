"""Field checks for files nopeek reads back (configs, results, checkpoints, sweep specs).

The public home of :mod:`nopeek._schema` (its implementation), for the packages above the core.

>>> take({"n": 3}, "n", is_int, "an integer", where="spec.json", fix="give an integer")
3
"""

from nopeek._schema import (
    brief,
    dict_of,
    is_dict,
    is_int,
    is_number,
    is_str,
    is_tensor,
    list_of,
    optional,
    shown,
    take,
)

__all__ = [
    "brief",
    "dict_of",
    "is_dict",
    "is_int",
    "is_number",
    "is_str",
    "is_tensor",
    "list_of",
    "optional",
    "shown",
    "take",
]
