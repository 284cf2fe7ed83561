"""The adversarial defense: a min-max game with a decoder that only sees the client's own batch."""

import pytest
import torch
from sklearn.metrics import r2_score

from nopeek import TrainConfig, train
from nopeek.defenses import Adversarial, parse_defenses, parse_spec
from nopeek.defenses.adversarial import r_squared
from nopeek.errors import ConfigError
from nopeek.hooks import bind_hooks


def test_spec_and_bad_values():
    assert parse_spec("adversarial:2,decoder=mlp,steps=3") == (
        "adversarial",
        {"weight": 2.0, "decoder": "mlp", "steps": 3.0},
    )
    hook = parse_defenses(["adversarial:weight=0.5"])[0]
    assert hook.spec() == "adversarial:weight=0.5,decoder=auto,steps=1,lr=0.001"
    for spec, match in [
        ("adversarial:weight=-1", "weight must be a finite number > 0"),
        ("adversarial:decoder=unet", "decoder must be one of auto, mlp, conv"),
        ("adversarial:steps=1.5", "steps must be a whole number"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_defenses([spec])


def test_r_squared_equals_sklearn_variance_weighted():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(30, 1, 4, 4, generator=gen, dtype=torch.float64)
    x_hat = x + 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    ref = r2_score(x.flatten(1).numpy(), x_hat.flatten(1).numpy(), multioutput="variance_weighted")
    assert float(r_squared(x_hat, x)) == pytest.approx(ref, rel=1e-10)


def _hook(bare_ctx, **kwargs):
    hook = Adversarial(**kwargs)
    hook.setup(bare_ctx())
    return hook


def test_decoder_learns_and_the_client_term_moves_only_the_message(bare_ctx):
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 8, 8, generator=gen)
    encoder = torch.nn.Conv2d(1, 8, 3, stride=2, padding=1)
    hook = _hook(bare_ctx, weight=2.0, decoder="conv", steps=4, width=16, lr=3e-3)
    for _ in range(30):
        term = hook.penalty("conv2", x, encoder(x))
    r2 = list(hook._r2)  # the decoder's R^2 at each call, after its update
    assert r2[0] < 0 < r2[-1] and r2[-1] == max(r2)  # it learns to invert the client's batch
    assert float(term.detach()) == pytest.approx(2.0 * r2[-1]) and float(term.detach()) <= 2.0
    for p in hook.decoder.parameters():
        p.grad = None
    term.backward()
    assert all(p.grad is None for p in hook.decoder.parameters())  # decoder frozen in the term
    assert encoder.weight.grad is not None and float(encoder.weight.grad.abs().sum()) > 0
    assert hook.metrics()["adversarial_decoder_r2"] > 0


def test_penalty_is_zero_once_the_decoder_is_no_better_than_the_mean(bare_ctx):
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    hook = _hook(bare_ctx, decoder="mlp")
    z = torch.zeros(16, 4, requires_grad=True)  # a message that carries nothing about x
    term = hook.penalty("fc1", x, z)
    assert float(term) == 0.0  # R^2 <= 0 is clipped: nothing to gain from a worse decoder
    with pytest.raises(ConfigError, match="decoder=conv needs a spatial cut"):
        _hook(bare_ctx, decoder="conv").penalty("fc1", x, z)


class _Spy(Adversarial):
    """Records every input the decoder is trained on, per client instance (class-level store)."""

    seen: dict[int, list[torch.Tensor]] = {}

    def penalty(self, cut, x, z):
        _Spy.seen.setdefault(self.party_index, []).append(x.detach().clone())
        return super().penalty(cut, x, z)


def _rows(t):
    return {tuple(r.tolist()) for r in t.flatten(1)}


@pytest.mark.parametrize("topology", ["vanilla", "vertical"])
def test_decoder_sees_only_the_clients_own_training_batch(topology, tmp_path):
    _Spy.seen = {}
    extra = {"clients": 2} if topology == "vertical" else {}
    cfg = TrainConfig(dataset="digits", epochs=1, seed=0, max_train=128, dcor_samples=64,
                      topology=topology, **extra)  # fmt: skip
    train(cfg, tmp_path / "run", quiet=True, hooks=[_Spy(weight=1.0)])
    data = cfg.load_data()
    n_clients = 2 if topology == "vertical" else 1
    assert sorted(_Spy.seen) == list(range(n_clients))  # one decoder per client, none elsewhere
    others = _rows(data.test.x) | _rows(data.aux.x)
    for k, batches in _Spy.seen.items():
        seen = torch.cat(batches)
        assert len(seen) == len(data.train)  # one epoch: every training sample once
        if topology == "vanilla":
            assert _rows(seen) == _rows(data.train.x) and not _rows(seen) & others
        else:  # client k holds its half of every image (columns 4k..4k+3), never the rest
            lo = 4 * k
            assert seen.shape[1:] == (1, 8, 4)
            assert _rows(seen) == _rows(data.train.x[..., lo : lo + 4])


def test_bound_to_data_parties_only():
    from nopeek.models import build_model
    from nopeek.topology import vanilla

    topo = vanilla(build_model("digits-cnn", input_shape=(1, 8, 8), n_classes=10), ["conv2"])
    bound = bind_hooks([Adversarial()], topo)
    assert [type(h) for h in bound["client"]] == [Adversarial] and bound["server"] == []


def test_resume_gives_the_uninterrupted_run(interrupt, tiny_config, tmp_path):
    specs = ["cut-noise:sigma=0.1,clip=1", "adversarial:1"]
    cfg = tiny_config(epochs=2, max_train=256, dcor_samples=64, defenses=specs)  # 4 steps/epoch
    full = train(cfg, tmp_path / "full", quiet=True, hooks=[interrupt(None)]).metrics
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", quiet=True, hooks=[interrupt(1, steps=4)])
    resumed = train(cfg, tmp_path / "cut", resume=True, quiet=True, hooks=[interrupt(None)])
    for key in ("test_accuracy", "adversarial_decoder_r2", "train_loss_per_epoch"):
        assert resumed.metrics[key] == full[key]
