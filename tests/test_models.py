"""Every model behind the one interface: shapes, consistency, exact densities, bad input."""

import pytest
import torch
from torch.distributions import constraints
from zuko.lazy import UnconditionalTransform
from zuko.transforms import Transform

from conftest import perturb
from mflow_sbi.models import IMAGE_MODELS, MODELS, VECTOR_MODELS, MFlow, build_model
from mflow_sbi.training import load_model, save_model
from mflow_sbi.transforms import FlowConfig
from simulators import PolynomialSurface

SMALL = {"layers": 2, "bins": 4, "hidden": 16, "blocks": 1}
CONFIGS = {
    "af": {"model": "af", "data_dim": 3, "theta_dim": 2, "inner": SMALL},
    "pie-original": {"model": "pie", "data_dim": 3, "theta_dim": 2, "latent_dim": 2, "conditional_manifold": True, "outer": SMALL, "inner": SMALL},
    "pie-unconditional": {"model": "pie", "data_dim": 3, "theta_dim": 2, "latent_dim": 2, "outer": SMALL, "inner": SMALL},
    "mflow": {"model": "mflow", "data_dim": 3, "theta_dim": 2, "latent_dim": 2, "outer": SMALL, "inner": SMALL},
    "meflow": {"model": "meflow", "data_dim": 3, "theta_dim": 2, "latent_dim": 2, "outer": SMALL, "inner": SMALL, "encoder_hidden": 16},
    "pae": {"model": "pae", "data_dim": 3, "theta_dim": 2, "latent_dim": 2, "inner": SMALL, "hidden": 16},
}


@pytest.fixture(params=sorted(CONFIGS))
def model(request):
    return perturb(build_model(CONFIGS[request.param]), scale=0.2).eval()


def data(n=6):
    return torch.randn(n, 3, dtype=torch.float64), torch.randn(n, 2, dtype=torch.float64)


def manifold_theta(model, theta):
    return theta if model.encoder_depends_on_theta else None


def test_registry_covers_every_model():
    assert {c["model"] for c in CONFIGS.values()} == {cls.name for cls in VECTOR_MODELS}  # images: test_image_models.py
    assert set(MODELS) == {cls.name for cls in VECTOR_MODELS + IMAGE_MODELS}


def test_shapes(model):
    x, theta = data()
    t = manifold_theta(model, theta)
    u = model.encode(x, t)
    assert u.shape == (6, model.latent_dim)
    assert model.decode(u, t).shape == (6, 3)
    assert model.reconstruction_error(x, t).shape == (6,)
    assert model.log_prob(x, theta, exact=model.has_exact_density).shape == (6,)
    assert model.log_prob(x, theta, exact=False).shape == (6,)
    assert model.sample(theta).shape == (6, 3)


def test_sample_is_reproducible(model):
    _, theta = data()
    a = model.sample(theta, torch.Generator().manual_seed(3))
    b = model.sample(theta, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)


def test_log_prob_is_batch_independent(model):
    x, theta = data()
    exact = model.has_exact_density
    full = model.log_prob(x, theta, exact=exact)
    torch.testing.assert_close(model.log_prob(x[:1], theta[:1], exact=exact), full[:1])


def test_fast_part_differs_from_exact_by_a_theta_independent_term(model):
    if not model.has_exact_density or model.encoder_depends_on_theta:
        pytest.skip("no exact density, or no θ-independent split")
    x, theta1 = data()
    theta2 = torch.randn_like(theta1)
    difference1 = model.log_prob(x, theta1) - model.log_prob(x, theta1, exact=False)
    difference2 = model.log_prob(x, theta2) - model.log_prob(x, theta2, exact=False)
    torch.testing.assert_close(difference1, difference2)


def test_encode_inverts_decode_for_flow_charts(model):
    if model.name not in ("mflow", "pie", "af"):
        pytest.skip("a learned encoder is only an approximate inverse")
    x, theta = data()
    t = manifold_theta(model, theta)
    u = torch.randn(6, model.latent_dim, dtype=torch.float64)
    torch.testing.assert_close(model.encode(model.decode(u, t), t), u)


def test_projection_is_idempotent_for_flow_charts(model):
    if model.name not in ("mflow", "pie"):
        pytest.skip("only flow charts project exactly")
    x, theta = data()
    t = manifold_theta(model, theta)
    once = model.project(x, t)
    torch.testing.assert_close(model.project(once, t), once)


def test_checkpoint_round_trip(model, tmp_path):
    x, theta = data()
    path = save_model(tmp_path / "m.pt", model, {"note": "test"})
    loaded, metadata = load_model(path)
    loaded.double().eval()
    assert metadata == {"note": "test"} and loaded.config == model.config
    exact = model.has_exact_density
    torch.testing.assert_close(loaded.log_prob(x, theta, exact=exact), model.log_prob(x, theta, exact=exact))


@pytest.mark.parametrize(
    "x, theta, match",
    [
        (torch.randn(4, 2), torch.randn(4, 2), "x must have 3 columns"),
        (torch.randn(4), torch.randn(4, 2), "x must be 2-D"),
        (torch.randn(4, 3), torch.randn(5, 2), "batch sizes differ"),
        (torch.full((4, 3), float("nan")), torch.randn(4, 2), "NaN"),
        (torch.randn(4, 3), torch.randn(4, 1), "theta must have 2 columns"),
        (torch.randint(0, 3, (4, 3)), torch.randn(4, 2), "floating-point"),
    ],
)
def test_bad_inputs_raise_clear_errors(x, theta, match):
    model = build_model(CONFIGS["mflow"])
    with pytest.raises(ValueError, match=match):
        model.log_prob(x, theta)


def test_pae_has_no_exact_density():
    model = build_model(CONFIGS["pae"])
    with pytest.raises(ValueError, match="no tractable density"):
        model.log_prob(torch.randn(2, 3), torch.randn(2, 2))


def test_load_rejects_unknown_model_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        build_model({"model": "nope"})
    with pytest.raises(ValueError, match="bad configuration"):
        build_model({"model": "mflow", "data_dim": 3})
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pt")


def test_exact_mflow_density_matches_brute_force():
    model = perturb(MFlow(3, 2, 2, outer=FlowConfig(**SMALL), inner=FlowConfig(**SMALL)), scale=0.3)
    x, theta = data(5)
    u = model.encode(x)
    expected = []
    for i in range(5):  # one reverse-mode Jacobian per sample: the slow, obvious way
        J = torch.autograd.functional.jacobian(lambda v: model.decode(v.unsqueeze(0)).squeeze(0), u[i])
        expected.append(model.log_prob_latent(u[i : i + 1], theta[i : i + 1])[0] - 0.5 * torch.logdet(J.T @ J))
    torch.testing.assert_close(model.log_prob(x, theta), torch.stack(expected).detach())


class SurfaceChart(Transform):
    """The polynomial surface's true chart as an outer bijection:
    f(x) = (z, h - f_poly(z)) with (z, h) = Rᵀx; so g(u) = f⁻¹(u, 0) = R (u, f_poly(u))."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, simulator):
        super().__init__()
        self.simulator = simulator

    def _call(self, x):
        rotated = x @ self.simulator.rotation
        return torch.cat([rotated[:, :2], (rotated[:, 2] - self.simulator.height(rotated[:, :2])).unsqueeze(-1)], -1)

    def _inverse(self, y):
        z = y[:, :2]
        return torch.cat([z, (y[:, 2] + self.simulator.height(z)).unsqueeze(-1)], -1) @ self.simulator.rotation.T

    def log_abs_det_jacobian(self, x, y):
        return torch.zeros_like(x[:, 0])


def test_mflow_on_the_true_manifold_recovers_the_exact_likelihood_up_to_the_learned_density():
    simulator = PolynomialSurface()
    model = perturb(MFlow(3, 1, 2, outer=FlowConfig(**SMALL), inner=FlowConfig(**SMALL)), scale=0.2)
    model.outer = UnconditionalTransform(SurfaceChart, simulator)  # manifold set by hand
    theta = torch.rand(50, 1, dtype=torch.float64) * 2 - 1
    x = simulator.simulate(theta, seed=0).double()
    z = simulator.coordinates(x)
    torch.testing.assert_close(model.encode(x), z)
    learned_minus_true_density = model.log_prob_latent(z, theta) - simulator.log_prob_coordinates(z, theta)
    torch.testing.assert_close(
        model.log_prob(x, theta) - simulator.log_likelihood(x, theta, measure="surface"),
        learned_minus_true_density.detach(),
    )
    # and the Jacobian term is not trivially zero on this surface
    assert simulator.log_area_factor(z).abs().max() > 0.1


def test_decoder_jacobian_under_vmap_matches_brute_force(model):
    """The chart is a pure function usable under torch.func (what the exact density relies on)."""
    from torch.func import jacfwd, vmap

    _, theta = data(4)
    t = manifold_theta(model, theta)
    u = torch.randn(4, model.latent_dim, dtype=torch.float64)
    if t is None:
        mapped = vmap(jacfwd(lambda v: model._decode(v.unsqueeze(0), None).squeeze(0)))(u)
    else:
        mapped = vmap(jacfwd(lambda v, c: model._decode(v.unsqueeze(0), c.unsqueeze(0)).squeeze(0)))(u, t)
    for i in range(4):
        ti = None if t is None else t[i : i + 1]
        brute = torch.autograd.functional.jacobian(lambda v: model.decode(v.unsqueeze(0), ti).squeeze(0), u[i])
        torch.testing.assert_close(mapped[i], brute)


@pytest.mark.parametrize("conditional", [False, True])
def test_pie_density_matches_brute_force(conditional):
    from mflow_sbi.models import PIE

    model = perturb(PIE(3, 2, 2, conditional_manifold=conditional, epsilon=0.5, outer=FlowConfig(**SMALL), inner=FlowConfig(**SMALL)))
    x, theta = data(4)
    for i in range(4):
        ci = theta[i : i + 1] if conditional else None
        f = lambda v: model._outer(ci)(v.unsqueeze(0)).squeeze(0)  # noqa: E731
        z = f(x[i])
        J = torch.autograd.functional.jacobian(f, x[i])
        v_part = torch.distributions.Normal(0.0, 0.5).log_prob(z[2:]).sum()
        expected = model.log_prob_latent(z[:2].unsqueeze(0), theta[i : i + 1])[0] + v_part + torch.linalg.slogdet(J).logabsdet
        torch.testing.assert_close(model.log_prob(x[i : i + 1], theta[i : i + 1])[0], expected.detach())


@pytest.mark.parametrize("latent_dim", [1, 2])
def test_density_depends_on_theta(latent_dim):
    from mflow_sbi.models import PIE

    for model in (
        MFlow(3, 1, latent_dim, outer=FlowConfig(**SMALL), inner=FlowConfig(**SMALL)),
        PIE(3, 1, latent_dim, outer=FlowConfig(**SMALL), inner=FlowConfig(**SMALL)),
    ):
        perturb(model, scale=0.3)
        x = torch.randn(5, 3, dtype=torch.float64)
        low, high = torch.full((5, 1), -1.0, dtype=torch.float64), torch.full((5, 1), 1.0, dtype=torch.float64)
        assert (model.log_prob(x, low) - model.log_prob(x, high)).abs().min() > 1e-4
