"""Tests for restore.models.vae (ConvVAE, ConditionalVAE)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from restore.models.vae import ConditionalVAE, ConvVAE


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_convvae_shapes_and_outputs() -> None:
    torch.manual_seed(0)
    m = ConvVAE(latent_dim=16)
    x = torch.rand(3, 1, 28, 28)
    out = m(x)
    assert set(out) == {"recon", "logits", "z_mean", "z_log_var", "z"}
    assert out["recon"].shape == out["logits"].shape == x.shape
    assert out["z_mean"].shape == out["z_log_var"].shape == out["z"].shape == (3, 16)
    assert torch.allclose(out["recon"], torch.sigmoid(out["logits"]))
    assert out["recon"].min() >= 0 and out["recon"].max() <= 1
    mu, logvar = m.encode(x)
    assert torch.equal(mu, out["z_mean"]) and torch.equal(logvar, out["z_log_var"])
    assert torch.allclose(m.decode(out["z"], logits=True), out["logits"])
    n_params = sum(p.numel() for p in m.parameters())
    assert 100_000 <= n_params <= 350_000, n_params


@pytest.mark.parametrize("size,channels,in_ch", [(32, (8, 16), 3), ((16, 24), (8, 16, 16), 1), (12, (8, 8), 1)])
def test_convvae_other_sizes(size, channels, in_ch) -> None:
    m = ConvVAE(in_channels=in_ch, image_size=size, latent_dim=4, channels=channels, hidden=16)
    h, w = (size, size) if isinstance(size, int) else size
    out = m(torch.rand(2, in_ch, h, w))
    assert out["recon"].shape == (2, in_ch, h, w)


def test_convvae_bad_arguments() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ConvVAE(image_size=30)
    with pytest.raises(ValueError, match="latent_dim"):
        ConvVAE(latent_dim=0)
    m = ConvVAE(latent_dim=4, hidden=16)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        m(torch.rand(2, 3, 28, 28))
    with pytest.raises(ValueError, match="z must be"):
        m.decode(torch.rand(2, 5))


def test_config_rebuilds_identical_architecture() -> None:
    for cls, kw in [
        (ConvVAE, {"latent_dim": 8, "image_size": [16, 20], "channels": (8, 16), "hidden": 16}),
        (ConditionalVAE, {"latent_dim": 2, "conditioning": "embedding", "embed_dim": 4, "hidden": 16}),
    ]:
        m = cls(**kw)
        cfg = json.loads(json.dumps(m.config))  # JSON-serialisable, survives a round trip
        m2 = cls(**cfg)
        assert m2.config == m.config
        s1, s2 = m.state_dict(), m2.state_dict()
        assert {k: v.shape for k, v in s1.items()} == {k: v.shape for k, v in s2.items()}
        m2.load_state_dict(s1)


def test_sampling_is_deterministic_with_a_generator() -> None:
    torch.manual_seed(0)
    m = ConvVAE(latent_dim=4, hidden=16, channels=(8, 16))
    x = torch.rand(2, 1, 28, 28)
    m.train()
    a, b, c = m(x, generator=_gen(1)), m(x, generator=_gen(1)), m(x, generator=_gen(2))
    assert torch.equal(a["z"], b["z"]) and not torch.equal(a["z"], c["z"])
    eps = torch.randn(2, 4, generator=_gen(1))
    assert torch.allclose(a["z"], a["z_mean"] + torch.exp(0.5 * a["z_log_var"]) * eps)
    # Eval mode uses the posterior mean unless sampling is requested.
    m.eval()
    e = m(x)
    assert torch.equal(e["z"], e["z_mean"])
    assert not torch.equal(m(x, sample=True)["z"], e["z_mean"])
    s1, s2 = m.sample(5, generator=_gen(3)), m.sample(5, generator=_gen(3))
    assert s1.shape == (5, 1, 28, 28) and torch.equal(s1, s2)
    assert not torch.equal(s1, m.sample(5, generator=_gen(4)))


@pytest.mark.parametrize("conditioning", ["onehot", "embedding"])
def test_conditional_vae(conditioning: str) -> None:
    torch.manual_seed(0)
    m = ConditionalVAE(latent_dim=2, num_classes=10, conditioning=conditioning, hidden=16, channels=(8, 16))
    x = torch.rand(4, 1, 28, 28)
    y = torch.tensor([0, 3, 9, 3])
    out = m(x, y)
    assert out["recon"].shape == x.shape and out["z"].shape == (4, 2)
    assert m.config["conditioning"] == conditioning
    # The label really conditions both halves.
    z = torch.zeros(1, 2)
    assert not torch.allclose(m.decode(z, torch.tensor([0])), m.decode(z, torch.tensor([5])))
    mu_a, _ = m.encode(x[:1], torch.tensor([0]))
    mu_b, _ = m.encode(x[:1], torch.tensor([5]))
    assert not torch.allclose(mu_a, mu_b)
    s = m.sample(torch.tensor([1, 1, 7]), generator=_gen(0))
    assert s.shape == (3, 1, 28, 28) and torch.equal(s, m.sample(torch.tensor([1, 1, 7]), generator=_gen(0)))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        m(x, torch.tensor([0, 1, 2, 10]))
    with pytest.raises(ValueError, match="integer tensor of 4"):
        m(x, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    (out["recon"].sum() + out["z_mean"].sum()).backward()
    if conditioning == "embedding":
        assert m.embedding is not None and m.embedding.weight.grad.abs().sum() > 0


def test_conditional_bad_arguments() -> None:
    with pytest.raises(ValueError, match="conditioning"):
        ConditionalVAE(conditioning="film")
    with pytest.raises(ValueError, match="embed_dim"):
        ConditionalVAE(conditioning="onehot", embed_dim=4)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    m = ConvVAE(latent_dim=4, hidden=16, channels=(8, 16))
    x = torch.rand(4, 1, 28, 28)
    out = m(x, generator=_gen(0))
    kl = -0.5 * (1 + out["z_log_var"] - out["z_mean"] ** 2 - out["z_log_var"].exp()).sum(1).mean()
    (F.binary_cross_entropy_with_logits(out["logits"], x) + kl).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def _blobs(n: int, g: torch.Generator) -> torch.Tensor:
    """Random Gaussian blobs on 16x16: simple structure a VAE can learn fast."""
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    cy, cx = torch.rand(n, 1, 1, generator=g) * 10 + 3, torch.rand(n, 1, 1, generator=g) * 10 + 3
    r = torch.rand(n, 1, 1, generator=g) * 2 + 1.5
    return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2)).unsqueeze(1)


@pytest.fixture
def one_thread():
    """Tiny models train far faster single-threaded on a busy shared CPU."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_tiny_vae_loss_falls_on_blobs(one_thread) -> None:
    from restore.losses import kl_divergence

    torch.manual_seed(0)
    g = _gen(0)
    data = _blobs(256, g)
    m = ConvVAE(image_size=16, latent_dim=4, channels=(8, 16), hidden=32)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    losses = []
    for step in range(40):
        x = data[torch.randint(0, 256, (32,), generator=g)]
        out = m(x, generator=g)
        rec = F.binary_cross_entropy_with_logits(out["logits"], x, reduction="sum") / x.shape[0]
        loss = rec + kl_divergence(out["z_mean"], out["z_log_var"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.85 * first, (first, last)
