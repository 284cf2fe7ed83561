"""Run the ``>>>`` examples in every module of the installed package, every subpackage level
included (by its import name)."""

import doctest
import importlib
import pkgutil

import pytest

import nopeek


def _modules() -> list[str]:
    names = []
    for pkg in ("nopeek", "nopeek.attacks", "nopeek.defenses", "nopeek.eval"):
        mod = importlib.import_module(pkg)
        names.append(pkg)
        # every level: nopeek.runtime.*, nopeek.topology.*, nopeek.models.*, ...
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, prefix=f"{pkg}.")]
    return sorted(set(names) - {"nopeek.cli.main"})


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def test_public_api_names_resolve():
    for name in nopeek.__all__:
        assert hasattr(nopeek, name), name
