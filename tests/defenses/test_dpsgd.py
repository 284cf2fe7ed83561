"""DP-SGD on the client segment: Opacus' per-sample gradients through the split engine,
clipping, epsilon against Opacus' accountant, and a clear refusal for BatchNorm."""

import copy
from collections import OrderedDict

import pytest
import torch
from opacus.accountants import RDPAccountant
from torch import nn

from nopeek import InProcessChannel, TrainConfig, build_model, train
from nopeek.defenses import DPSGD
from nopeek.errors import ConfigError
from nopeek.hooks import CutHook, PartyState, TrainContext, bind_hooks
from nopeek.runtime import InProcessRuntime
from nopeek.topology import many_clients, splitfed, u_shaped, vanilla


def _setup(build, cuts, *, clip, n=16):
    torch.manual_seed(0)
    model = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    reference = copy.deepcopy(model)
    topo = build(model, cuts)
    parties = {}
    for party in topo.parties:
        params = [p for m in topo.modules_of(party) for p in m.parameters()]
        parties[party] = PartyState(party, topo.modules_of(party), torch.optim.SGD(params, lr=1.0))
    ctx = TrainContext(n_train=4 * n, batch_size=n, epochs=1, seed=0, delta=1e-5,
                       parties=parties, data_party="client", label_party=topo.owners["y"],
                       device="cpu")  # fmt: skip
    hook = DPSGD(sigma=1e-9, clip=clip)  # negligible noise: the update is the clipped mean
    hook.setup(ctx)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(n, 1, 8, 8, generator=gen), torch.randint(0, 10, (n,), generator=gen)
    batch = {"x": x, "y": y, "ids": torch.arange(n)}
    return model, reference, topo, parties, hook, batch


def _client_params(model, cuts):
    """The client's parameters in ``model`` (blocks up to the first cut, and after the second)."""
    names = [n for n, _ in model.named_children()]
    blocks = names[: names.index(cuts[0]) + 1]
    if len(cuts) == 2:
        blocks += names[names.index(cuts[1]) + 1 :]
    return [p for name in blocks for p in getattr(model, name).parameters()]


@pytest.mark.parametrize("build,cuts", [(vanilla, ["conv2"]), (u_shaped, ["conv2", "fc1"])])
def test_opacus_records_each_samples_own_gradient_through_the_cut(build, cuts):
    model, reference, topo, parties, _, batch = _setup(build, cuts, clip=1e9)
    InProcessRuntime(topo, InProcessChannel()).step(batch, train=True)
    ours = _client_params(model, cuts)
    theirs = _client_params(reference, cuts)
    for i in range(len(batch["y"])):
        loss = nn.functional.cross_entropy(reference(batch["x"][i : i + 1]), batch["y"][i : i + 1])
        grads = torch.autograd.grad(loss, theirs)
        for p, g in zip(ours, grads):
            torch.testing.assert_close(p.grad_sample[i], g, rtol=1e-4, atol=1e-6)


def test_the_client_update_is_the_clipped_mean_of_per_sample_gradients():
    clip = 0.05
    model, reference, topo, parties, _, batch = _setup(vanilla, ["conv2"], clip=clip)
    before = [p.detach().clone() for p in _client_params(model, ["conv2"])]
    theirs = _client_params(reference, ["conv2"])
    per_sample = []
    for i in range(len(batch["y"])):
        loss = nn.functional.cross_entropy(reference(batch["x"][i : i + 1]), batch["y"][i : i + 1])
        per_sample.append(torch.cat([g.flatten() for g in torch.autograd.grad(loss, theirs)]))
    g = torch.stack(per_sample)
    factor = (clip / (g.norm(dim=1) + 1e-6)).clamp(max=1.0)
    assert bool((factor < 1).all())  # every sample is clipped at this bound
    expected = (g * factor[:, None]).sum(0) / len(g)  # Opacus divides by the expected batch size
    InProcessRuntime(topo, InProcessChannel()).step(batch, train=True)
    parties["client"].optimizer.step()
    after = _client_params(model, ["conv2"])
    step = torch.cat([(b - a).flatten() for a, b in zip(after, before)])  # lr = 1
    torch.testing.assert_close(step, expected, rtol=1e-4, atol=1e-6)
    assert float(step.norm()) <= clip * (1 + 1e-4)


@pytest.mark.parametrize("spec", [dict(epsilon=3.0), dict(sigma=1.3, clip=0.5)])
def test_reported_epsilon_equals_opacus_rdp_accountant(tiny_config, spec):
    cfg = tiny_config(epochs=2, max_train=300, batch_size=32)
    hook = DPSGD(**spec)
    m = train(cfg, quiet=True, hooks=[hook]).metrics
    steps_per_epoch = -(-300 // 32)
    reference = RDPAccountant()
    reference.history = [(m["dpsgd_noise_multiplier"], 1 / steps_per_epoch, 2 * steps_per_epoch)]
    assert m["epsilon_dpsgd"] == pytest.approx(reference.get_epsilon(1e-5), rel=1e-12)
    assert m["dpsgd_steps"] == 2 * steps_per_epoch and m["delta"] == 1e-5
    assert m["dpsgd_guarantee_holds"] is True
    if "epsilon" in spec:
        assert 2.9 < m["epsilon_dpsgd"] <= 3.0
    else:
        assert m["dpsgd_noise_multiplier"] == 1.3 and m["dpsgd_max_grad_norm"] == 0.5


def _bn_model():
    """digits-cnn's block names, with BatchNorm in conv2 (a model Opacus refuses to train)."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU()),
        conv2=nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU()),
        fc1=nn.Sequential(nn.Flatten(), nn.Linear(4 * 8 * 8, 16), nn.ReLU()),
        fc2=nn.Linear(16, 10),
    ))  # fmt: skip


def test_batchnorm_in_the_client_segment_is_refused_with_the_fix(tiny_config):
    with pytest.raises(ConfigError, match=r"ModuleValidator\.fix.*GroupNorm") as err:
        train(tiny_config(cut="conv2"), model=_bn_model(), hooks=[DPSGD(epsilon=8)], quiet=True)
    assert "\n" not in str(err.value)


def test_batchnorm_after_the_cut_voids_the_guarantee_and_says_so(tiny_config):
    cfg = tiny_config(cut="conv1", epochs=1, max_train=200)
    m = train(cfg, model=_bn_model(), hooks=[DPSGD(sigma=1.0)], quiet=True).metrics
    assert m["dpsgd_guarantee_holds"] is False
    assert "BatchNorm2d after the cut" in m["dpsgd_guarantee_voided_by"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(), "exactly one of epsilon"),
        (dict(epsilon=8, sigma=1.0), "exactly one of epsilon"),
        (dict(epsilon=-1.0), "epsilon must be a finite number > 0"),
        (dict(sigma=1.0, clip=0.0), "clip must be"),
        (dict(sigma=1.0, delta=2.0), r"delta must be in \(0, 1\)"),
    ],
)
def test_bad_values(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DPSGD(**kwargs)


def test_a_spec_delta_must_agree_with_the_run_delta(tiny_config):
    with pytest.raises(ConfigError, match="differs from --delta"):
        train(TrainConfig(epochs=1, delta=1e-5), hooks=[DPSGD(epsilon=8, delta=1e-6)], quiet=True)
    with pytest.raises(ConfigError, match="out of reach"):
        train(tiny_config(epochs=1), hooks=[DPSGD(epsilon=1e-6)], quiet=True)


def test_target_epsilon_is_calibrated_for_the_exact_number_of_steps():
    # 75 steps per epoch for 3 epochs: int(3 / (1 / 75)) == 224 in floating point, one short
    segment = nn.Linear(3, 2)
    party = PartyState("client", [segment], torch.optim.SGD(segment.parameters(), lr=0.1))
    ctx = TrainContext(n_train=300, batch_size=4, epochs=3, seed=0, delta=1e-5,
                       parties={"client": party}, data_party="client", label_party="server",
                       device="cpu")  # fmt: skip
    hook = DPSGD(epsilon=2.0)
    hook.setup(ctx)
    reference = RDPAccountant()
    reference.history = [(hook.noise_multiplier, 1 / 75, 225)]
    assert 1.95 < reference.get_epsilon(1e-5) <= 2.0


class _WrapsTheOptimizer(CutHook):
    """A hook of the user's that, like DP-SGD, cannot follow a segment through a relay."""

    name = "my-optimizer-hook"
    acts_at = "data"
    follows_relay = False


@pytest.mark.parametrize("hook", [DPSGD(epsilon=8), _WrapsTheOptimizer()], ids=["dp-sgd", "own"])
def test_a_hook_that_cannot_follow_a_relay_is_refused_there_by_name(hook):
    model = build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10)
    relay = many_clients(model, ["conv2"], clients=2)
    with pytest.raises(ConfigError) as err:
        bind_hooks([hook], relay)
    assert str(err.value) == (
        f"{hook.name} cannot follow the client segment through a many-clients relay (each "
        "turn starts a fresh optimizer); use --topology splitfed or cut-noise instead"
    )
    bound = bind_hooks([hook], splitfed(model, ["conv2"], clients=2))  # averaging: no relay
    assert [type(h) for h in bound["client1"]] == [type(hook)]
