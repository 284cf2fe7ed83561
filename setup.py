"""Package discovery for nopeek's mapped layout (everything else is in pyproject.toml).

`nopeek/` is the core; the top-level folders `attacks/`, `defenses/` and `eval/` install as
`nopeek.attacks`, `nopeek.defenses` and `nopeek.eval`. Every package under each folder is found
with setuptools' own discovery, so a new subpackage can never be left out of the wheel.
"""

from setuptools import find_packages, setup

# installed package name -> folder in the repository
ROOTS = {
    "nopeek": "nopeek",
    "nopeek.attacks": "attacks",
    "nopeek.defenses": "defenses",
    "nopeek.eval": "eval",
}


def _packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        found.append(name)
        found += [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return found


setup(packages=_packages(), package_dir=ROOTS)
