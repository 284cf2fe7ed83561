"""The known-pairs attack on a nopeek run: pairs from traffic served for the attacker's samples.

Independent reference: the inverse network, whose query answers on the aux inputs are exactly
the messages the client sent for them when served without noise, so both decoders see the same
pairs, start from the same seed and must give the same reconstructions.
"""

from __future__ import annotations

import json

import pytest
import torch

from nopeek.attacks.known_pairs import split_known
from nopeek.cli.main import main
from nopeek.data import load_dataset
from nopeek.observe import Observed

FAST = ["--dataset", "digits", "--epochs", "2", "--max-train", "200", "--quiet"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("known-pairs")
    run, inf = root / "run", root / "inf"
    assert main(["train", *FAST, "--out", str(run)]) == 0
    assert main(["infer", "--run", str(run), "--split", "test,aux", "--out", str(inf)]) == 0
    return run, inf / "observations.pt"


def test_known_pairs_equals_the_inverse_network_on_the_same_pairs(served, capsys):
    run, observations = served
    common = ["attack", "--run", str(run), "--observations", str(observations), "--steps", "50"]
    assert main([*common, "--attack", "known-pairs"]) == 0
    assert main([*common, "--attack", "inverse-network"]) == 0
    capsys.readouterr()
    pairs = json.loads((run / "attacks" / "known-pairs.json").read_text())
    inverse = json.loads((run / "attacks" / "inverse-network.json").read_text())
    assert pairs["threat_model"] == "activations+aux_data+aux_activations"
    assert pairs["settings"]["aux_size"] == inverse["settings"]["aux_size"] > 0
    # the victims are the served test rows only, for both: the attacker's own aux samples
    # are the known pairs (or the queries), never victims
    served = torch.load(observations, weights_only=True)
    ids = next(v["ids"] for k, v in served.items() if "forward" in k)
    test = load_dataset("digits", seed=0).test.ids
    assert pairs["n_samples"] == inverse["n_samples"] == int(torch.isin(ids, test).sum())
    # the same pairs in the same order from the same seed: the same decoder
    for key in ("ssim", "psnr", "mse", "dcor_reconstruction"):
        assert pairs[key] == pytest.approx(inverse[key], rel=1e-6), key
    assert pairs["ssim"] > pairs["baseline_ssim"]


def test_known_pairs_without_the_attackers_traffic_is_one_line(served, capsys):
    run, _ = served
    assert main(["attack", "--run", str(run), "--attack", "known-pairs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "found 0; record what the client sends for the aux" in err
    assert "nopeek infer --split test,aux" in err


def test_split_known_partitions_by_id():
    seen = Observed(torch.arange(10.0).reshape(5, 2), torch.tensor([4, 9, 2, 7, 0]),
                    torch.zeros(5), torch.arange(5.0))  # fmt: skip
    victims, known = split_known(seen, torch.tensor([9, 0, 100]))
    assert victims.ids.tolist() == [4, 2, 7] and known.ids.tolist() == [9, 0]
    assert torch.equal(known.tensor, seen.tensor[[1, 4]])
    assert torch.equal(victims.step, torch.tensor([0.0, 2.0, 3.0]))


def test_infer_takes_several_splits_once_each(served, tmp_path, capsys):
    run, _ = served
    assert main(["infer", "--run", str(run), "--split", "test,test", "--out", str(tmp_path)]) == 2
    assert "--split must be one or more of test, aux, train" in capsys.readouterr().err
