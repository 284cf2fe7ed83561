"""The command line imports only what the chosen command needs (issue 17: start-up).

Each case runs the CLI in a fresh interpreter and lists the modules it imported; timing goals
live in ``benchmarks/bench_startup.py`` (tests never assert on wall-clock time).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

_PROBE = """
import json, sys
from nopeek.cli.main import main
try:
    status = main(sys.argv[1:])
except SystemExit as exc:
    status = exc.code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def _imported(*argv: str, cwd) -> tuple[int, set[str]]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *argv], capture_output=True, text=True, cwd=cwd, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["status"], set(result["modules"])


def test_top_level_help_and_version_import_no_torch(tmp_path):
    for argv in (["--help"], ["--version"]):
        status, modules = _imported(*argv, cwd=tmp_path)
        assert status == 0
        assert "torch" not in modules, argv
        assert "numpy" not in modules, argv


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--epochs", "0"],  # refused by the config check before any work
        ["train", "--help"],
    ],
)
def test_noop_paths_import_no_data_sets_runtime_or_torchvision(tmp_path, argv):
    status, modules = _imported(*argv, cwd=tmp_path)
    assert status in (0, 2)
    heavy = {"torchvision", "sklearn", "nopeek.training.trainer", "nopeek.runtime", "matplotlib"}
    assert not heavy & modules, sorted(heavy & modules)


def test_version_matches_the_package_metadata(capsys):
    from importlib.metadata import version

    from nopeek.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"nopeek {version('nopeek')}"


def test_only_the_command_freezes_the_collector_before_it_ends(monkeypatch):
    """`nopeek ...` (argv None) freezes gc before returning, to skip the interpreter's last
    collection pass at exit; main([...]) called from Python (tests, notebooks) leaves gc alone."""
    import gc

    from nopeek.cli.main import main

    frozen = []
    monkeypatch.setattr(gc, "freeze", lambda: frozen.append(True))
    monkeypatch.setattr(sys, "argv", ["nopeek", "models"])
    assert main() == 0 and frozen == [True]
    assert main(["models"]) == 0 and frozen == [True]
