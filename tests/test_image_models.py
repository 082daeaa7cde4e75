"""Image AF, PIE, M-flow and Me-flow behind the `ConditionalModel` interface: shapes, exact vs
fast density, the chart's Jacobian term, training at 16×16 with the shared trainer, and the
posterior APIs unchanged."""

import pytest
import torch

from conftest import perturb
from mflow_sbi.inference import ObservedLikelihood, grid_posterior
from mflow_sbi.models import MODELS, build_model
from mflow_sbi.training import TrainingConfig, load_model, save_model, train

SHAPE = (3, 8, 8)
OUTER = {"levels": 2, "steps": 1, "hidden": 8, "bins": 4, "head_features": 16}
INNER = {"layers": 2, "bins": 4, "hidden": 16, "blocks": 1}
CONFIGS = {
    "image_af": {"outer": OUTER},
    "image_pie": {"latent_dim": 3, "outer": OUTER, "inner": INNER},
    "image_mflow": {"latent_dim": 3, "outer": OUTER, "inner": INNER},
    "image_meflow": {"latent_dim": 3, "outer": OUTER, "inner": INNER, "encoder_channels": 4, "encoder_hidden": 16},
}


def make(name: str, shape=SHAPE, **overrides):
    return build_model({"model": name, "image_shape": list(shape), "theta_dim": 1, **CONFIGS[name], **overrides})


@pytest.fixture(params=sorted(CONFIGS))
def model(request):
    return perturb(make(request.param), scale=0.05).eval()


def images(n: int, seed: int = 0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(seed), dtype=dtype) - 0.5


def test_interface_shapes_and_config_round_trip(model):
    x, theta = images(5), torch.randn(5, 1, dtype=torch.float64)
    u = model.encode(x)
    assert u.shape == (5, model.latent_dim) and model.decode(u).shape == x.shape
    assert model.sample(theta, torch.Generator().manual_seed(0)).shape == x.shape
    assert model.reconstruction_error(x).shape == (5,)
    log_p = model.log_prob(x, theta)
    assert log_p.shape == (5,) and torch.isfinite(log_p).all()
    clone = build_model(model.config).double()
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.eval().log_prob(x, theta), log_p)
    assert MODELS[model.name] is type(model)


def test_checkpoint_round_trip(model, tmp_path):
    x, theta = images(3), torch.randn(3, 1, dtype=torch.float64)
    save_model(tmp_path / "image.pt", model)
    loaded, _ = load_model(tmp_path / "image.pt")
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded.eval().log_prob(x, theta), model.log_prob(x, theta))


def test_fast_density_differs_from_exact_by_a_theta_independent_term(model):
    x = images(4)
    gaps = [model.log_prob(x, t.expand(4, 1), exact=True) - model.log_prob(x, t.expand(4, 1), exact=False)
            for t in torch.tensor([[-1.0], [0.5]], dtype=torch.float64)]  # fmt: skip
    torch.testing.assert_close(gaps[0], gaps[1])


@pytest.mark.parametrize("name", ["image_mflow", "image_meflow"])
def test_mflow_chart_and_its_jacobian_term(name):
    model = perturb(make(name), scale=0.05).eval()
    u = torch.randn(2, 3, dtype=torch.float64)
    x = model.decode(u)
    if name == "image_mflow":  # g⁻¹(g(u)) = u: the chart is inverted exactly
        torch.testing.assert_close(model.encode(x), u)
    for ui, value in zip(u, model.log_det_metric(u)):
        jacobian = torch.autograd.functional.jacobian(lambda v: model.decode(v.unsqueeze(0)).flatten(), ui)
        torch.testing.assert_close(value, torch.logdet(jacobian.T @ jacobian))
    theta = torch.zeros(2, 1, dtype=torch.float64)
    expected = model.log_prob_latent(model.encode(x), theta) - 0.5 * model.log_det_metric(model.encode(x))
    torch.testing.assert_close(model.log_prob(x, theta, exact=True), expected)


@pytest.mark.parametrize(("name", "schedule"), [("image_mflow", "sequential"), ("image_meflow", "alternating"), ("image_af", "likelihood"), ("image_pie", "likelihood")])
def test_trains_a_few_steps_at_16x16(name, schedule):
    torch.manual_seed(0)
    shape = (3, 16, 16)
    model = make(name, shape=shape)
    x = torch.rand(24, *shape, generator=torch.Generator().manual_seed(1)) - 0.5
    theta = torch.randn(24, 1, generator=torch.Generator().manual_seed(2))
    history = train(model, x, theta, schedule, TrainingConfig(epochs=1, batch_size=8, progress=False, validation_fraction=0.2))
    assert len(history) >= 1 and history["validation_loss"].notna().all()
    assert model.outer.initialized  # actnorm data init


@pytest.mark.parametrize("exact", [False, True])
def test_posterior_apis_run_unchanged(model, exact):
    x_obs = images(3, seed=4)
    prior = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(1), torch.ones(1)), 1)
    likelihood = ObservedLikelihood(model, x_obs, exact=exact, chunk_size=64)
    posterior = grid_posterior(likelihood, prior, resolution=21, bounds=([-3.0], [3.0]), dtype=torch.float64)
    assert torch.isfinite(posterior.log_density).all()
    theta = torch.tensor([[0.3]], dtype=torch.float64)
    torch.testing.assert_close(likelihood(theta), model.log_prob(x_obs, theta.expand(3, 1), exact=exact).sum().reshape(1))
    assert likelihood.log_ratio(theta, -theta).total.shape == (1,)


def test_bad_input_raises():
    model = make("image_mflow")
    with pytest.raises(ValueError, match="x must have shape"):
        model.encode(torch.zeros(2, 192))
    with pytest.raises(ValueError, match="x must have shape"):
        model.log_prob(torch.zeros(2, 3, 4, 4), torch.zeros(2, 1))
    with pytest.raises(ValueError, match="NaN"):
        model.encode(torch.full((1, *SHAPE), float("nan")))
    with pytest.raises(ValueError, match="image_shape"):
        make("image_mflow", shape=(3, 8))
    with pytest.raises(ValueError, match="latent_dim"):
        make("image_mflow", latent_dim=17)
    with pytest.raises(ValueError, match="batch sizes differ"):
        model.log_prob(torch.zeros(2, *SHAPE), torch.zeros(3, 1))
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"model": "image_nope"})
    with pytest.raises(ValueError, match="bad configuration"):
        build_model({"model": "image_af", "image_shape": [3, 8, 8], "theta_dim": 1, "latent_dim": 2})
