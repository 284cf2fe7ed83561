"""``nopeek cost``: the Singh et al. formulas by hand, FLOPs vs FlopCounterMode, formulas vs the
wire bytes of real split-learning and FedAvg runs, the CLI table and its one-line errors."""

import copy
import json
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from nopeek.cli.main import main
from nopeek.config import TrainConfig
from nopeek.errors import ConfigError
from nopeek.eval.cost import (
    BYTES_PER_VALUE,
    build_cost_model,
    method_costs,
    profile_split,
    sl_values,
)
from nopeek.eval.cost_measure import measure
from nopeek.eval.fedavg import fedavg
from nopeek.models import build_model, split
from nopeek.runtime import flatten_state
from nopeek.runtime.plans import batches, shard_indices


def _tiny() -> nn.Sequential:
    """fc1: 4 -> 3 (15 parameters), act, out: 3 -> 2 (8 parameters)."""
    return nn.Sequential(OrderedDict(fc1=nn.Linear(4, 3), act=nn.ReLU(), out=nn.Linear(3, 2)))


def test_formulas_by_hand_on_a_tiny_model():
    prof = profile_split(_tiny(), input_shape=(4,), cut="act")
    # q = 3 values at the cut; N = 23; the client uses fc1's 4*3 + 3 = 15
    assert (prof.q, prof.params, prof.client_params) == (3, 23, 15)
    # FlopCounterMode: 2 FLOPs per multiply-add. fc1 forward 2*4*3 = 24, its backward only the
    # weight gradient (the input needs none) = 24; out forward 2*3*2 = 12, backward weight 12 +
    # input 12
    assert prof.flops_client == 48
    assert prof.flops_model == 48 + 36
    rows = {r.method: r for r in method_costs(prof, p=10, clients=2, sgd_batch=4)}
    b = BYTES_PER_VALUE
    # 5 samples per client, each 3 values forward and 3 back: 30 values per client
    assert rows["sl"].bytes_per_client == 30 * b
    assert rows["sl"].bytes_total == 60 * b
    # + one hand-off of the client part (15 values) per client and epoch
    assert rows["sl-sharing"].bytes_per_client == (30 + 15) * b
    assert rows["sl-sharing"].bytes_total == (60 + 2 * 15) * b
    # FedAvg: the whole model down and up
    assert rows["fedavg"].bytes_per_client == 2 * 23 * b
    # synchronous SGD, global batch 4: ceil(10 / 4) = 3 steps, gradient up and weights down
    assert rows["sgd"].bytes_per_client == 3 * 2 * 23 * b
    assert rows["sl"].flops_per_client == rows["sl-sharing"].flops_per_client == 48 * 5
    assert rows["fedavg"].flops_per_client == rows["sgd"].flops_per_client == 84 * 5
    # a hand-off through the server is two messages
    assert sl_values(p=10, q=3, clients=2, shared=15, hops=2) == 60 + 2 * 2 * 15


def test_profiling_leaves_the_model_as_it_was():
    model = nn.Sequential(
        OrderedDict(fc1=nn.Linear(4, 3), bn=nn.BatchNorm1d(3), act=nn.ReLU(), out=nn.Linear(3, 2))
    ).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    prof = profile_split(model, input_shape=(4,), cut="act")
    assert prof.client_params == 15 + 6  # fc1 and the batch norm's weight and bias
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _reference_flops(client: nn.Module, model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """FlopCounterMode on one sample: client part forward + backward from the cut, and the whole
    model forward + cross-entropy + backward."""
    with FlopCounterMode(display=False) as counter:
        z = client(x)
        z.backward(torch.ones_like(z))
    f_client = counter.get_total_flops()
    model.zero_grad()
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(x), torch.zeros(1, dtype=torch.long)).backward()
    return f_client, counter.get_total_flops()


def test_flops_equal_flop_counter_mode_on_the_real_models():
    torch.manual_seed(0)
    net = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    client, _ = split(net, "conv2")
    want = _reference_flops(client, net, torch.rand(1, 1, 8, 8))
    for model in (net, build_cost_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)[0]):
        prof = profile_split(model, input_shape=(1, 8, 8), cut="conv2")
        assert (prof.flops_client, prof.flops_model) == want
    vgg, default = build_cost_model("vgg16", input_shape=(3, 32, 32), n_classes=10, device="cpu")
    assert default == "features.4"
    want = _reference_flops(vgg.features[:5], vgg, torch.rand(1, 3, 32, 32))
    prof = profile_split(vgg, input_shape=(3, 32, 32), cut="features.4")
    assert (prof.flops_client, prof.flops_model) == want
    assert prof.cut_shape == (64, 16, 16)
    assert prof.client_params == sum(p.numel() for p in vgg.features[:5].parameters())


def test_vgg19_at_224_gives_the_seed_papers_federated_figure_in_multiply_adds():
    """The split-learning paper's 29.4 TFLOPs per client (CIFAR-10, VGG, 100 clients) is VGG-19
    at 224x224 over 500 samples counted in multiply-adds (half of FlopCounterMode's FLOPs)."""
    model, _ = build_cost_model("vgg19", input_shape=(3, 224, 224), n_classes=10)
    prof = profile_split(model, input_shape=(3, 224, 224), cut="features.1")
    rows = {r.method: r for r in method_costs(prof, p=50_000, clients=100, sgd_batch=1024)}
    assert rows["fedavg"].flops_per_client / 2 / 1e12 == pytest.approx(29.4, rel=2e-3)


@pytest.mark.parametrize("relay", ["peer", "server"])
def test_byte_formulas_agree_with_the_wire_bytes_of_real_runs(relay):
    out = measure(clients=10, target=1.0, max_epochs=2, max_train=200, relay=relay)
    s, sl, fl = out["setting"], out["split"], out["fedavg"]
    assert (sl.epochs, fl.epochs) == (2, 2)
    assert abs(sl.bytes_error) < 0.05 and abs(fl.bytes_error) < 0.05
    # exactly: 2 epochs of 2pq + hops*K*eta*N, less the first epoch's missing hand-off
    hops = 2 if relay == "server" else 1
    shared = s["client_params"] * hops * BYTES_PER_VALUE
    assert sl.bytes_total == 2 * (2 * s["p"] * s["q"] * BYTES_PER_VALUE + 10 * shared) - shared
    assert fl.bytes_total == fl.bytes_predicted == 2 * 2 * 10 * s["params"] * BYTES_PER_VALUE
    assert sl.flops_clients == pytest.approx(sl.flops_predicted, rel=1e-9)
    assert fl.flops_clients == pytest.approx(fl.flops_predicted, rel=1e-9)


def test_fedavg_counts_every_weight_message_and_averages_by_shard_size():
    cfg = TrainConfig(dataset="digits", clients=2, epochs=1, max_train=61, device="cpu")
    res = fedavg(cfg)
    m, n = res.metrics, sum(p.numel() for p in res.model.parameters())
    assert m["weight_bytes_server"] == 2 * n * BYTES_PER_VALUE  # per round: one to each client
    for k in range(2):
        assert m[f"bytes_sent_client{k}"] == m[f"bytes_received_client{k}"] == n * 4
    assert [r.kind for r in res.wire.records] == ["weights"] * 4
    # an independent round by hand: same init, shards, batches; mean weighted by shard size
    ds = cfg.load_data()
    torch.manual_seed(0)
    init = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    shards = [ds.train.subset(s) for s in shard_indices(ds.train.y, 2, non_iid=None, seed=0)]
    assert sorted(len(s) for s in shards) == [30, 31]
    mean = {k: torch.zeros_like(v) for k, v in init.state_dict().items()}
    for k, shard in enumerate(shards):
        local = copy.deepcopy(init)
        opt = torch.optim.Adam(local.parameters(), lr=cfg.lr)
        for batch in batches(shard, cfg.batch_size, seed=0, epoch=0, client=k):
            opt.zero_grad()
            nn.functional.cross_entropy(local(batch["x"]), batch["y"]).backward()
            opt.step()
        for name, v in local.state_dict().items():
            mean[name] += v * len(shard) / len(ds.train)
    for name, v in res.model.state_dict().items():
        torch.testing.assert_close(v, mean[name], rtol=1e-5, atol=1e-6)
    # the target stops it early
    longer = TrainConfig(**(cfg.to_dict() | {"epochs": 5}))
    assert fedavg(longer, target=0.01).metrics["epochs"] == 1


def test_cli_prints_the_table_and_writes_cost_json(tmp_path, capsys):
    argv = ["cost", "--model", "vgg16", "--dataset", "cifar10", "--clients", "100,500"]
    assert main([*argv, "--cut", "features.4", "--out", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    for label in ("large-batch synchronous SGD", "federated learning (FedAvg)",
                  "split learning, client weight sharing", "split learning, no weight sharing",
                  "100 clients", "500 clients", "TFLOPs", "GB"):  # fmt: skip
        assert label in text
    record = json.loads((tmp_path / "c" / "cost.json").read_text())["computed"]
    assert record["profile"]["q"] == 64 * 16 * 16 and record["p"] == 50_000
    fl = next(r for r in record["rows"] if (r["method"], r["clients"]) == ("fedavg", 100))
    assert fl["bytes_per_client"] == 2 * record["profile"]["params"] * 4
    assert f"{fl['bytes_per_client'] / 1e9:.4g}" in text
    sl = next(r for r in record["rows"] if (r["method"], r["clients"]) == ("sl", 500))
    assert sl["bytes_per_client"] == 2 * 100 * 64 * 16 * 16 * 4
    assert math.isclose(sl["flops_per_client"], 100 * record["profile"]["flops_client"])


def test_cli_takes_every_model_spec_train_takes(capsys):
    """``--model`` reads as in ``nopeek train``: torchvision:NAME (and module:...) cut at a module
    path, profiled exactly like a reference model."""
    argv = ["cost", "--model", "torchvision:resnet18", "--cut", "layer1", "--clients", "10"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "torchvision:resnet18 on cifar10" in text and "cut layer1 (64x8x8" in text


def test_cli_measure_and_list_cuts(capsys):
    argv = ["cost", "--measure", "--clients", "3", "--max-epochs", "1", "--max-train", "60"]
    assert main([*argv, "--knobs", "fedavg:lr=3e-3,E=2", "--knobs", "splitfed-v1:E=3"]) == 0
    text = capsys.readouterr().out
    assert "split learning (relay, peer)" in text and "federated learning (FedAvg)" in text
    assert "SplitFed v2" in text
    fed, v1 = (
        next(x for x in text.splitlines() if x.startswith(m)) for m in ("fed", "SplitFed v1")
    )
    assert fed.split()[3:5] == ["3e-03", "2"] and v1.split()[2:4] == ["1e-03", "3"]
    assert main(["cost", "--model", "resnet50", "--list-cuts"]) == 0
    cuts = capsys.readouterr().out.split()
    assert "layer1*" in cuts and "layer2.0" in cuts


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["--model", "nope"], r"unknown model 'nope'; choose one of: vgg16, vgg19, resnet50"),
        (["--model", "torchvision:resnet18"], r"has no default cut; pass --cut, e.g. .*layer1"),
        (["--model", "torchvision:nonet", "--cut", "a"], r"unknown torchvision .* 'nonet'"),
        (["--cut", "features.99"], r"unknown cut 'features.99' for vgg16; .* --list-cuts"),
        (["--clients", "0"], r"--clients must be integers >= 1 .* got 0"),
        (["--clients", "100,-5"], r"--clients must be integers >= 1"),
        (["--clients", "a"], r"--clients must be integers >= 1 .* got 'a'"),
        (["--model", "resnet50", "--cut", "layer1.0.conv1"], r"skip connection"),
        (["--model", "resnet50", "--cut", "layer1.0.relu"], r"runs 3 times .* shared module"),
        (["--cut", "classifier.6"], r"is vgg16's output"),
        (["--dataset", "nope"], r"unknown dataset 'nope'"),
        (["--dataset", "digits"], r"vgg16 does not run on inputs of shape \(1, 8, 8\)"),
        (["--measure", "--splitfed", "v3"], r"--splitfed takes v1, v2 .* or none, got 'v3'"),
        (["--measure", "--target", "1.5"], r"--target must be an accuracy"),
        (["--measure", "--knobs", "fedavg"], r"--knobs 'fedavg' needs METHOD:\.\.\., e\.g\."),
        (["--measure", "--knobs", "fedavg:E=x"], r"knob 'E=x' needs a number, e\.g\. E=5"),
        (["--measure", "--knobs", "fedsgd:E=2"], r"knobs for unknown methods \['fedsgd'\]"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, match, capsys):
    import re

    assert main(["cost", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(match, err), err


def test_fedavg_local_epochs_cost_flops_not_bytes():
    cfg = TrainConfig(dataset="digits", clients=3, epochs=1, max_train=60, device="cpu")
    one, three = fedavg(cfg), fedavg(cfg, local_epochs=3)
    assert three.metrics["local_epochs"] == 3
    for k in range(3):  # E passes: E times the FLOPs, the same weight messages
        assert three.metrics[f"flops_client{k}"] == 3 * one.metrics[f"flops_client{k}"]
    assert sum(r.nbytes for r in three.wire.records) == sum(r.nbytes for r in one.wire.records)
    assert not torch.equal(flatten_state(three.model), flatten_state(one.model))
    with pytest.raises(ConfigError, match="--local-epochs must be >= 1"):
        fedavg(cfg, local_epochs=0)
