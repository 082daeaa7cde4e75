"""The StyleGAN image-manifold simulator: seeded generator, safe g_ema loader, and its ground
truth (latents, exact posterior, manifold density, projection, injectivity) at 16×16."""

import argparse

import pytest
import torch

from simulators import ImageManifold
from simulators.image_manifold import GeneratorConfig, StyleGAN2Generator, load_g_ema

CONFIG = GeneratorConfig(resolution=16, style_dim=16, mapping_layers=2, channels=(16, 8, 8))


class NotAWeight:  # any class: pickling it needs the unsafe unpickler
    pass


@pytest.fixture(scope="module")
def sim2():
    return ImageManifold(manifold_dim=2, generator=StyleGAN2Generator(CONFIG))


@pytest.fixture(scope="module")
def sim8():
    return ImageManifold(manifold_dim=8, generator=StyleGAN2Generator(CONFIG))


def test_generator_is_determined_by_its_seed():
    z = torch.randn(3, 16, generator=torch.Generator().manual_seed(0))
    a, b, c = (StyleGAN2Generator(GeneratorConfig(**{**CONFIG.__dict__, "seed": s})) for s in (4, 4, 5))
    assert a(z).shape == (3, 3, 16, 16)
    assert torch.equal(a(z), b(z)) and not torch.equal(a(z), c(z))
    assert StyleGAN2Generator(GeneratorConfig(resolution=16)).config.channels == (64, 64, 64)


def test_simulation_is_seeded_and_gold_latents_render_the_images(sim2):
    theta = sim2.sample_prior(6, seed=0)
    x, gold = sim2.simulate(theta, seed=1, return_gold=True)
    assert x.shape == (6, 3, 16, 16) and float(x.abs().max()) < 0.5
    assert torch.equal(x, sim2.simulate(theta, seed=1)) and not torch.equal(x, sim2.simulate(theta, seed=2))
    torch.testing.assert_close(sim2.render(gold.latent), x)
    # joint score = ∂θ log p(u|θ), by autograd
    t = theta.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(sim2.log_prob_latent(gold.latent, t).sum(), t)
    torch.testing.assert_close(gold.joint_score, score)


def test_loader_round_trips_a_g_ema_checkpoint(tmp_path):
    generator = StyleGAN2Generator(CONFIG)
    state = generator.state_dict()
    state["noises.noise_0"] = torch.randn(1, 1, 4, 4)  # entries of the PyTorch port this one skips
    state["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    state["conv1.noise.weight"] = torch.zeros(1)
    torch.save({"g_ema": state, "args": argparse.Namespace(size=16)}, tmp_path / "ckpt.pt")
    loaded = load_g_ema(tmp_path / "ckpt.pt")
    assert loaded.config == GeneratorConfig(**{**CONFIG.__dict__, "seed": 0})
    z = torch.randn(2, 16)
    torch.testing.assert_close(loaded(z), generator(z))


def test_loader_refuses_pickles_without_opt_in(tmp_path):
    path = tmp_path / "pickled.pt"
    torch.save({"g_ema": StyleGAN2Generator(CONFIG).state_dict(), "extra": NotAWeight()}, path)
    with pytest.raises(ValueError, match="allow_pickle"):
        load_g_ema(path)
    assert isinstance(load_g_ema(path, allow_pickle=True), StyleGAN2Generator)
    torch.save({"g_ema": {"style.1.weight": torch.zeros(2, 2)}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="g_ema"):
        load_g_ema(tmp_path / "bad.pt")
    torch.save({"generator": {}}, tmp_path / "none.pt")
    with pytest.raises(ValueError, match="no 'g_ema'"):
        load_g_ema(tmp_path / "none.pt")
    with pytest.raises(ValueError, match="not a file"):
        load_g_ema(tmp_path / "missing.pt")


def test_exact_posterior_matches_a_brute_force_grid(sim8):
    theta = torch.full((20, 1), 0.7)
    _, gold = sim8.simulate(theta, seed=3, return_gold=True)
    posterior = sim8.exact_posterior(latents=gold.latent, resolution=401)
    grid = posterior.grid.double()
    brute = torch.stack([sim8.log_prob_latent(gold.latent.double(), t.expand(20, 1)).sum() for t in grid])
    brute = brute + torch.distributions.Normal(0.0, 1.0).log_prob(grid[:, 0]).double()
    expected = brute - torch.logsumexp(brute + torch.log(posterior.spacing.double()), 0)
    torch.testing.assert_close(posterior.log_density, expected)
    assert abs(float(posterior.mean()) - 0.7) < 3 * float(posterior.std())


def test_exact_posterior_from_images_recovers_it_from_latents(sim2):
    x, gold = sim2.simulate(torch.full((3, 1), -0.5), seed=6, return_gold=True)
    from_images = sim2.exact_posterior(x, resolution=201, starts=3, steps=150, learning_rate=0.1)
    from_latents = sim2.exact_posterior(latents=gold.latent, resolution=201)
    assert abs(float(from_images.mean() - from_latents.mean())) < 0.01 * float(from_latents.std())
    assert float(from_images.std()) == pytest.approx(float(from_latents.std()), rel=0.01)


def test_config_lists_the_constructor_arguments():
    simulator = ImageManifold(manifold_dim=3, resolution=16, latent_seed=4, quantize=True)
    assert simulator.config == {
        "manifold_dim": 3, "resolution": 16, "latent_seed": 4, "scale_slope": 0.25, "output_gain": 0.5, "quantize": True,
    }  # fmt: skip
    assert simulator.theta_names == ("theta",) and simulator.name == "image_manifold"


def test_manifold_density_and_injectivity(sim2):
    u = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for ui, value in zip(u, sim2.log_det_metric(u)):
        jacobian = torch.autograd.functional.jacobian(lambda v: sim2.render(v.unsqueeze(0)).flatten(), ui)
        torch.testing.assert_close(value, torch.logdet(jacobian.T @ jacobian))
    theta = torch.zeros(3, 1, dtype=torch.float64)
    torch.testing.assert_close(sim2.log_manifold_density(u, theta), sim2.log_prob_latent(u, theta) - 0.5 * sim2.log_det_metric(u))
    assert float(sim2.injectivity(u).min()) > 1e-3


def test_projection_recovers_latents_on_the_manifold(sim2):
    theta = torch.zeros(2, 1)
    x, gold = sim2.simulate(theta, seed=5, return_gold=True)
    u, distance = sim2.project(x, starts=3, steps=150, learning_rate=0.1)
    assert float(distance.max()) < 1e-2
    torch.testing.assert_close(u.float(), gold.latent, atol=2e-2, rtol=0)
    off = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    assert float(sim2.distance_to_manifold(off, starts=3, steps=150, learning_rate=0.1).min()) > 0.5 * 0.05 * (3 * 256) ** 0.5


def test_quantized_images_stay_within_one_level_of_the_manifold():
    sim = ImageManifold(manifold_dim=2, generator=StyleGAN2Generator(CONFIG), quantize=True)
    x, gold = sim.simulate(torch.zeros(4, 1), seed=0, return_gold=True)
    assert float((x - sim.render(gold.latent)).abs().max()) <= 1 / 256 + 1e-6
    assert float(x.abs().max()) <= 0.5


def test_bad_input_raises(sim2):
    with pytest.raises(ValueError, match="manifold_dim"):
        ImageManifold(manifold_dim=17, generator=StyleGAN2Generator(CONFIG))
    with pytest.raises(ValueError, match="resolution"):
        GeneratorConfig(resolution=24)
    with pytest.raises(ValueError, match="x must have shape"):
        sim2.check_x(torch.zeros(2, 768))
    with pytest.raises(ValueError, match="theta"):
        sim2.simulate(torch.zeros(2))
    with pytest.raises(ValueError, match="exactly one"):
        sim2.exact_posterior()
    with pytest.raises(ValueError, match="given generator"):
        sim2.config  # its generator's weights are no constructor option
    with pytest.raises(ValueError, match="u must have"):
        sim2.render(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="z must have"):
        StyleGAN2Generator(CONFIG)(torch.zeros(2, 3))
