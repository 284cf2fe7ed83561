"""ExpertMatcher (``nopeek match``): held-out samples go to their domain's expert, and only
hidden representations cross the wire."""

import json

import pytest
import torch

from nopeek.cli.main import main
from nopeek.errors import ConfigError
from nopeek.eval.expertmatcher import agreed_encoder, fit_server, load_domain, match

DOMAINS = ["digits", "digits:inverted", "digits:rotated"]


@pytest.fixture(scope="module")
def server():
    return fit_server(DOMAINS, seed=0)


@pytest.mark.parametrize("domain", DOMAINS)
def test_held_out_samples_go_to_their_domains_expert(server, domain):
    record, _ = match(server, domain, attack_steps=0)
    assert record["n_samples"] == 360
    assert record["assignment_accuracy"] >= 0.9
    assert record["batch_expert"] == domain and record["batch_assignment_correct"] is True
    assert sum(record["assigned"].values()) == 360
    # the chosen expert answers about as well as the domain's own expert would
    assert record["oracle_accuracy"] > 0.8
    assert record["accuracy"] >= record["oracle_accuracy"] - 0.05


def test_the_wire_holds_only_hidden_representations(server):
    record, wire = match(server, "digits:inverted", attack_steps=150)
    encoder = agreed_encoder((1, 8, 8), seed=0)
    held = load_domain("digits:inverted", seed=0).test
    to_server = [c for c in wire.captures if c.record.receiver == "server"]
    assert to_server and all(c.record.sender == "client" for c in to_server)
    z = torch.cat([c.tensor for c in to_server])
    # exactly the agreed encoder's output of the client's held-out samples, never the samples
    assert torch.equal(z, encoder(held.x))
    assert tuple(z.shape[1:]) == (16, 4, 4) and record["representation_shape"] == [16, 4, 4]
    assert record["raw_inputs_sent"] is False
    assert record["bytes_sent"] == z.numel() * 4 == sum(c.record.nbytes for c in to_server)
    back = [c.tensor for c in wire.captures if c.record.receiver == "client"]
    assert tuple(torch.cat(back).shape) == (360, 10)  # class scores only
    # the representations are invertible by a server that knows the encoder
    assert record["attack_ssim"] > record["attack_baseline_ssim"]


def test_noisy_digits_is_a_domain(server):
    clean, noisy = load_domain("digits", seed=0), load_domain("digits:noisy", seed=0)
    assert torch.equal(clean.test.ids, noisy.test.ids)
    assert float((noisy.test.x - clean.test.x).abs().max()) > 0.1
    assert float(noisy.test.x.min()) >= 0 and float(noisy.test.x.max()) <= 1
    assert torch.equal(noisy.test.x, load_domain("digits:noisy", seed=0).test.x)


def _err(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--experts", "digits,digits:upside", "--client-data", "digits"], "unknown domain"),
        (["--experts", "digits", "--client-data", "digits"], "at least two domains"),
        (["--experts", "digits,digits", "--client-data", "digits"], "twice"),
        (["--experts", "digits,digits:rotated", "--client-data", "digits:noisy"], "not one of"),
    ],
)
def test_bad_input_is_one_line(argv, message, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["match", *argv, "--out", str(out)]) == 2
    assert message in _err(capsys)
    assert not out.exists()


def test_errors_name_the_fix():
    with pytest.raises(ConfigError, match=r"unknown domain 'mnist:inverted'; use digits, "):
        fit_server(["digits", "mnist:inverted"])
    with pytest.raises(ConfigError, match=r"e\.g\. --experts digits,digits:inverted"):
        fit_server(["digits"])


def test_cli_writes_match_json(tmp_path, capsys, monkeypatch):
    import nopeek.eval.expertmatcher as em

    monkeypatch.setattr(em, "FIT_STEPS", 60)
    monkeypatch.setattr(em, "ATTACK_STEPS", 20)
    out = tmp_path / "m"
    argv = ["match", "--experts", "digits,digits:inverted", "--client-data", "digits:inverted"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "assignment accuracy" in capsys.readouterr().out
    record = json.loads((out / "match.json").read_text())
    assert record["client_data"] == "digits:inverted" and record["raw_inputs_sent"] is False
    assert json.loads((out / ".nopeek.json").read_text())["kind"] == "match"
