"""Error messages: the right file kind, advice that works, no mid-word quotes, one stderr line."""

import json
import re
import shutil
import subprocess
import sys

import pytest
import torch

from nopeek.cli.main import main
from nopeek.schema import brief

TINY = ["--epochs", "1", "--max-train", "100", "--dcor-samples", "50", "--quiet"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("messages") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def _torch_reason(path) -> str:
    """torch's own first message line for loading ``path`` (the independent reference)."""
    with pytest.raises(Exception) as exc:  # noqa: B017 - whatever torch raises
        torch.load(path, weights_only=True)
    return str(exc.value).strip().splitlines()[0]


def _quoted_cleanly(err: str, reason: str) -> None:
    """The parenthesised reason in ``err`` is torch's ``reason``, or a prefix of it that ends at
    a word or sentence boundary (marked ``...`` unless it ends a sentence)."""
    quoted = re.search(r"\((.*)\); ", err).group(1)
    text = quoted.removesuffix("...")
    assert reason.startswith(text), (quoted, reason)
    assert text == reason or reason[len(text)] in " .", (quoted, reason)


def test_a_truncated_observations_file_is_not_called_a_checkpoint(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = (copy / "observations.pt").read_bytes()
    (copy / "observations.pt").write_bytes(data[: len(data) // 3])
    assert main(["attack", "--run", str(copy), "--attack", "white-box", "--steps", "1"]) == 2
    err = _one_line(capsys)
    assert f"observations file {copy / 'observations.pt'} is corrupt, truncated" in err
    assert "checkpoint" not in err and "nopeek train --overwrite" in err
    _quoted_cleanly(err, _torch_reason(copy / "observations.pt"))


def test_a_truncated_checkpoint_quotes_torch_at_a_word_boundary(run, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    data = (copy / "checkpoint.pt").read_bytes()
    (copy / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    assert main(["train", "--resume", "--out", str(copy)]) == 2
    err = _one_line(capsys)
    assert f"checkpoint {copy / 'checkpoint.pt'} is corrupt" in err
    _quoted_cleanly(err, _torch_reason(copy / "checkpoint.pt"))


@pytest.mark.parametrize(
    "text, limit, expected",
    [
        ("short", 10, "short"),
        ("", 10, "RuntimeError"),
        ("first line\nsecond line", 20, "first line"),
        ("one two three four", 12, "one two..."),
        ("A sentence. And more text after it", 20, "A sentence"),
        ("averyveryverylongword and more", 12, "RuntimeError"),
    ],
)
def test_brief_cuts_at_word_boundaries(text, limit, expected):
    got = brief(RuntimeError(text), limit)
    assert got == expected and len(got) <= max(limit, len("RuntimeError"))


def test_the_advice_for_a_corrupt_sweep_run_works(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", *TINY, "--attack", "none", "--out", str(out)]
    assert main(argv) == 0
    (run_dir,) = (out / "runs").iterdir()
    (run_dir / "metrics.json").write_text(json.dumps({"test_accuracy": "high"}))
    capsys.readouterr()
    assert main(argv) == 2  # rerunning alone reuses the corrupt file ...
    err = _one_line(capsys)
    assert f"delete {run_dir} and rerun the sweep" in err and "'test_accuracy'" in err
    shutil.rmtree(run_dir)  # ... following the advice redoes that run
    assert main(argv) == 0
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 1 and isinstance(rows[0]["test_accuracy"], float)


# A handler that warns like a dependency (opacus, torch) and then fails with a user error. With
# "count", the script first counts the "ignore" filters that importing nopeek's packages adds
# (after the dependencies' own).
_SCRIPT = """
import sys, warnings
added = []
if sys.argv[1] == "count":
    import dcor, matplotlib.pyplot, numpy, opacus, scipy, sklearn, torch, torchmetrics
    before = list(warnings.filters)
    import nopeek, nopeek.attacks, nopeek.defenses, nopeek.eval
    added = [f for f in warnings.filters if f not in before and f[0] == "ignore"]
import nopeek.cli.main as cli, nopeek.cli.train as train_cli
from nopeek.errors import ConfigError

def run(args):
    warnings.warn("a dependency complains", UserWarning)
    raise ConfigError("something is wrong; fix it")

train_cli.run = run
print(len(added))
sys.exit(cli.main(sys.argv[2:] + ["train", "--out", "unused"]))
"""


def test_a_warning_adds_no_stderr_line_to_an_error():
    quiet = subprocess.run([sys.executable, "-c", _SCRIPT, "count"], capture_output=True, text=True)
    assert quiet.returncode == 2 and quiet.stdout.strip() == "0"  # no global warning filter
    assert quiet.stderr == "error: something is wrong; fix it\n"
    argv = [sys.executable, "-c", _SCRIPT, "show", "--verbose"]
    loud = subprocess.run(argv, capture_output=True, text=True)
    assert loud.returncode == 2
    logged = r"(py\.warnings|WARNING).*UserWarning: a dependency complains"  # a log record
    assert re.search(logged, loud.stderr), loud.stderr
    assert loud.stderr.rstrip().endswith("error: something is wrong; fix it")


def test_main_leaves_the_warning_machinery_as_it_found_it(tmp_path, capsys):
    import logging
    import warnings

    before = warnings.showwarning, logging.getLogger("py.warnings").level
    assert main(["train", *TINY, "--seed", "-1", "--out", str(tmp_path / "r")]) == 2
    _one_line(capsys)
    assert (warnings.showwarning, logging.getLogger("py.warnings").level) == before
