"""One conformance loop over every registry entry, vector and image: declared shapes enforced,
`loss` finite and differentiable, `likelihood(x_o)` equal to `log_prob` up to a θ-independent
constant, standardization in raw units (and invariant to rescaling the data), pickle, deepcopy
and checkpoint round-trips, sampling; then the flow family's densities against brute force."""

import copy
import pickle

import pytest
import torch
from torch.distributions import constraints
from zuko.lazy import UnconditionalTransform
from zuko.transforms import Transform

from conftest import perturb
from mflow_sbi.estimator import Estimator
from mflow_sbi.models import PIE, MFlow
from mflow_sbi.registry import ESTIMATORS, build_estimator
from mflow_sbi.training import TrainingConfig, load_model, save_model, train
from mflow_sbi.baselines import RatioTrainingData, train_ratio_estimator
from simulators import PolynomialSurface

SMALL = {"layers": 2, "bins": 4, "hidden": 16, "blocks": 1}
IMAGE = (3, 8, 8)
OUTER = {"levels": 2, "steps": 1, "hidden": 8, "bins": 4, "head_features": 16}
VECTOR = {"data_dim": 3, "theta_dim": 2}
PICTURE = {"image_shape": list(IMAGE), "theta_dim": 1}
CASES = {
    "af": {"model": "af", **VECTOR, "inner": SMALL},
    "pie": {"model": "pie", **VECTOR, "latent_dim": 2, "outer": SMALL, "inner": SMALL},
    "pie-original": {"model": "pie", **VECTOR, "latent_dim": 2, "conditional_manifold": True, "outer": SMALL, "inner": SMALL},
    "mflow": {"model": "mflow", **VECTOR, "latent_dim": 2, "outer": SMALL, "inner": SMALL},
    "meflow": {"model": "meflow", **VECTOR, "latent_dim": 2, "outer": SMALL, "inner": SMALL, "encoder_hidden": 16},
    "pae": {"model": "pae", **VECTOR, "latent_dim": 2, "inner": SMALL, "hidden": 16},
    "alices": {"model": "alices", **VECTOR, "hidden": 16, "layers": 2},
    "learnable_prior": {"model": "learnable_prior", **VECTOR, "flow": {"layers": 2, "hidden": 16, "blocks": 1}},
    "pr": {"model": "pr", **VECTOR, "latent_dims": 2, "outer": SMALL, "inner": SMALL},
    "pr-hierarchical": {"model": "pr", **VECTOR, "latent_dims": [2, 1], "outer": SMALL, "inner": SMALL},
    "dnf": {"model": "dnf", **VECTOR, "latent_dim": 2, "outer": SMALL, "inner": SMALL},
    "af-image": {"model": "af", **PICTURE, "outer": OUTER},
    "pie-image": {"model": "pie", **PICTURE, "latent_dim": 3, "outer": OUTER, "inner": SMALL},
    "mflow-image": {"model": "mflow", **PICTURE, "latent_dim": 3, "outer": OUTER, "inner": SMALL},
    "meflow-image": {"model": "meflow", **PICTURE, "latent_dim": 3, "outer": OUTER, "inner": SMALL, "encoder_channels": 4, "encoder_hidden": 16},
    "pae-image": {"model": "pae", **PICTURE, "latent_dim": 3, "inner": SMALL, "hidden": 16},
    "pr-image": {"model": "pr", **PICTURE, "latent_dims": [3, 2], "outer": OUTER, "inner": SMALL, "stacked": SMALL},
    "dnf-image": {"model": "dnf", **PICTURE, "latent_dim": 3, "outer": OUTER, "inner": SMALL},
}


def make(case: str, **overrides) -> Estimator:
    return build_estimator({**CASES[case], **overrides})


def events(estimator: Estimator, n: int, seed: int = 0, scale: float = 1.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, *estimator.event_shape, generator=generator, dtype=estimator.dtype)


def thetas(estimator: Estimator, n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, estimator.theta_dim, generator=torch.Generator().manual_seed(seed), dtype=estimator.dtype)


def augmented(estimator: Estimator, n: int) -> dict[str, torch.Tensor]:
    """The extra training fields a ratio estimator's loss reads."""
    if estimator.loss_schedule != "ratio":
        return {}
    generator = torch.Generator().manual_seed(5)
    return {
        "joint_log_ratio": torch.randn(n, generator=generator, dtype=estimator.dtype),
        "joint_score": torch.randn(n, estimator.theta_dim, generator=generator, dtype=estimator.dtype),
        "reference_class": (torch.arange(n) % 2).to(estimator.dtype),
    }


def fitted(estimator: Estimator) -> Estimator:
    """A float64 estimator away from its initialization with a non-trivial standardization."""
    perturb(estimator, scale=0.05 if len(estimator.event_shape) == 3 else 0.2).eval()
    x = events(estimator, 64, seed=7) * 3.0 + 2.0
    estimator.fit_standardization(x, thetas(estimator, 64, seed=8) * 0.5 - 1.0)
    return estimator


@pytest.fixture(params=sorted(CASES))
def estimator(request) -> Estimator:
    return fitted(make(request.param))


def exact(estimator: Estimator) -> bool:
    return estimator.has_exact_density


def test_every_registry_entry_is_covered():
    assert {case["model"] for case in CASES.values()} == set(ESTIMATORS)
    images = {case["model"] for case in CASES.values() if "image_shape" in case}
    assert images == set(ESTIMATORS) - {"alices", "learnable_prior"}  # every other flow works on images too


def test_declared_shapes_are_enforced(estimator):
    x, theta = events(estimator, 4), thetas(estimator, 4)
    assert estimator.log_prob(x, theta, exact=exact(estimator)).shape == (4,)
    wrong_event = torch.zeros(4, *(s + 1 for s in estimator.event_shape), dtype=x.dtype)
    with pytest.raises(ValueError, match="x must"):
        estimator.log_prob(wrong_event, theta, exact=exact(estimator))
    with pytest.raises(ValueError, match="theta must have"):
        estimator.log_prob(x, torch.zeros(4, estimator.theta_dim + 1), exact=exact(estimator))
    with pytest.raises(ValueError, match="batch sizes differ"):
        estimator.log_prob(x, theta[:3], exact=exact(estimator))
    with pytest.raises(ValueError, match="NaN"):
        estimator.log_prob(torch.full_like(x, float("nan")), theta, exact=exact(estimator))
    with pytest.raises(ValueError, match="x_observed must"):
        estimator.likelihood(wrong_event)


def test_inputs_are_cast_to_the_estimator_precision(estimator):
    x, theta = events(estimator, 3), thetas(estimator, 3)
    torch.testing.assert_close(
        estimator.log_prob(x.float(), theta.float(), exact=False), estimator.log_prob(x.float().double(), theta.float().double(), exact=False)
    )


def test_loss_is_finite_and_differentiable(estimator):
    estimator.train()
    x, theta = events(estimator, 6), thetas(estimator, 6)
    loss = estimator.loss(x, theta, **augmented(estimator, 6))
    assert loss.shape == (6,) and torch.isfinite(loss).all()
    loss.mean().backward()
    gradients = [p.grad for p in estimator.parameters() if p.grad is not None]
    assert gradients and all(torch.isfinite(g).all() for g in gradients)
    assert any(g.abs().sum() > 0 for g in gradients)


def test_likelihood_equals_log_prob_up_to_a_theta_independent_constant(estimator):
    x, grid = events(estimator, 3, seed=2), thetas(estimator, 3, seed=3)
    direct = torch.stack([estimator.log_prob(x, t.expand(3, -1), exact=False) for t in grid])  # (θ, events)
    fast = estimator.likelihood(x).table(grid)
    torch.testing.assert_close(fast - fast[:1], direct - direct[:1])
    if exact(estimator):
        exact_direct = torch.stack([estimator.log_prob(x, t.expand(3, -1)) for t in grid])
        torch.testing.assert_close(estimator.likelihood(x, exact=True).table(grid), exact_direct)
        gap = exact_direct - direct  # the cached constant c(x): the same for every θ
        torch.testing.assert_close(gap, gap[:1].expand_as(gap))
    else:
        with pytest.raises(ValueError, match="no tractable density"):
            estimator.likelihood(x, exact=True)


def test_log_prob_is_batch_independent(estimator):
    x, theta = events(estimator, 5), thetas(estimator, 5)
    full = estimator.log_prob(x, theta, exact=exact(estimator))
    torch.testing.assert_close(estimator.log_prob(x[2:3], theta[2:3], exact=exact(estimator)), full[2:3])


def test_density_depends_on_theta(estimator):
    x = events(estimator, 4)
    low, high = torch.full((4, estimator.theta_dim), -1.0, dtype=x.dtype), torch.full((4, estimator.theta_dim), 1.0, dtype=x.dtype)
    assert (estimator.log_prob(x, low, exact=False) - estimator.log_prob(x, high, exact=False)).abs().min() > 1e-6


def test_pickle_deepcopy_and_checkpoint_round_trips(estimator, tmp_path):
    x, theta = events(estimator, 3), thetas(estimator, 3)
    expected = estimator.log_prob(x, theta, exact=False)
    for clone in (pickle.loads(pickle.dumps(estimator)), copy.deepcopy(estimator)):  # torch.save(estimator) pickles too
        torch.testing.assert_close(clone.log_prob(x, theta, exact=False), expected)
    path = save_model(tmp_path / "estimator.pt", estimator, {"note": "test"})
    loaded, metadata = load_model(path)
    assert metadata == {"note": "test"} and type(loaded) is type(estimator) and loaded.config == estimator.config
    assert bool(loaded.standardization.fitted)
    torch.testing.assert_close(loaded.eval().log_prob(x, theta, exact=False), expected)
    rebuilt = build_estimator(estimator.config).double()
    rebuilt.load_state_dict(estimator.state_dict())
    torch.testing.assert_close(rebuilt.eval().log_prob(x, theta, exact=False), expected)


def test_sample_shape_and_reproducibility(estimator):
    theta = thetas(estimator, 4)
    if estimator.loss_schedule == "ratio":
        with pytest.raises(NotImplementedError, match="cannot generate"):
            estimator.sample(theta)
        return
    a = estimator.sample(theta, torch.Generator().manual_seed(3))
    assert a.shape == (4, *estimator.event_shape) and torch.isfinite(a).all()
    torch.testing.assert_close(estimator.sample(theta, torch.Generator().manual_seed(3)), a)


def test_weights_come_from_the_config_seed_not_the_global_rng():
    for case in ("mflow", "alices", "meflow-image"):
        torch.manual_seed(1)
        a = make(case)
        torch.manual_seed(2)
        b, c = make(case), make(case, seed=1)
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
        assert not all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), c.state_dict().values()))


def _train(estimator: Estimator, x: torch.Tensor, theta: torch.Tensor) -> None:
    config = TrainingConfig(epochs=2, batch_size=64, progress=False, patience=None)
    if estimator.loss_schedule == "ratio":
        fields = augmented(estimator, len(x))
        half = len(x) // 2
        data = RatioTrainingData.from_samples(
            (x[:half], theta[:half], fields["joint_log_ratio"][:half], fields["joint_score"][:half]),
            (x[half:], theta[half:], fields["joint_log_ratio"][half:]),
        )
        train_ratio_estimator(estimator, data, config)
    else:
        train(estimator, x, theta, config=config)


@pytest.mark.parametrize("case", sorted(CASES))
def test_standardization_makes_training_invariant_to_the_data_units(case):
    """Trained on x and on 100 x (θ on a shifted scale), the posterior on a θ grid is the same (in
    float64, so that the rounding of the rescaled data does not grow over the training steps)."""
    reference, scaled = make(case).double(), make(case).double()
    n = 16 if "image" in case else 128
    x, theta = events(reference, n, seed=11), thetas(reference, n, seed=12)
    _train(reference, x, theta)
    _train(scaled, 100 * x, 10 * theta + 3)
    observed, grid = x[:5], thetas(reference, 7, seed=13)
    posterior = reference.eval().likelihood(observed)(grid)
    scaled_posterior = scaled.eval().likelihood(100 * observed)(10 * grid + 3)
    torch.testing.assert_close(scaled_posterior - scaled_posterior.logsumexp(0), posterior - posterior.logsumexp(0), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(scaled.standardization.x_scale, 100 * reference.standardization.x_scale)
    if reference.has_exact_density:  # densities in raw units: 100 x has density 100^-D times that of x
        shift = reference.log_prob(observed, grid[:5]) - scaled.log_prob(100 * observed, 10 * grid[:5] + 3)
        dimension = reference.latent_dim if reference.density_kind == "manifold" else x[0].numel()
        torch.testing.assert_close(shift, torch.full_like(shift, dimension * torch.log(torch.tensor(100.0)).item()), atol=1e-6, rtol=1e-6)


def test_training_fits_the_standardization_once():
    model = make("mflow")
    x, theta = 30 * events(model, 100) + 5, thetas(model, 100)
    train(model, x, theta, config=TrainingConfig(epochs=1, progress=False))
    scale = model.standardization.x_scale.clone()
    assert bool(model.standardization.fitted) and (scale > 15).all()
    train(model, x / 10, theta, config=TrainingConfig(epochs=1, progress=False))  # further training keeps the units
    torch.testing.assert_close(model.standardization.x_scale, scale)
    opted_out = make("mflow", standardize=False)
    train(opted_out, x / 30, theta, config=TrainingConfig(epochs=1, progress=False))
    assert not bool(opted_out.standardization.fitted) and (opted_out.standardization.x_scale == 1).all()


# ---- the flow family against brute force ------------------------------------------------------
FLOWS = [case for case in CASES if CASES[case]["model"] != "alices"]


@pytest.mark.parametrize("case", [c for c in FLOWS if CASES[c]["model"] in ("mflow", "meflow", "pr", "dnf")])
def test_manifold_density_in_raw_units_matches_brute_force(case):
    """log p(x|θ) = log p_h(u|θ) - ½ log det(J_gᵀ J_g) with g the chart into raw units (the
    standardization's scales enter the Jacobian), one reverse-mode Jacobian per event."""
    model = fitted(make(case))
    n = 1 if "image" in case else 3  # one reverse-mode Jacobian of an image chart takes seconds
    x, theta = events(model, n), thetas(model, n)
    u = model.encode(x)
    for i in range(n):
        jacobian = torch.autograd.functional.jacobian(lambda v: model.decode(v.unsqueeze(0)).flatten(), u[i], vectorize=True)
        fast = model.log_prob(x[i : i + 1], theta[i : i + 1], exact=False)[0]
        expected = fast - 0.5 * torch.logdet(jacobian.T @ jacobian)
        torch.testing.assert_close(model.log_prob(x[i : i + 1], theta[i : i + 1])[0], expected.detach())


@pytest.mark.parametrize("case", ["pie", "pie-original", "af"])
def test_ambient_density_in_raw_units_matches_brute_force(case):
    """log p(x|θ) = log p_h(u|θ) + log N(v; 0, ε²) + log|det ∂(u, v)/∂x| with (u, v) = f(x'(x))."""
    model = fitted(make(case, **({"epsilon": 0.5} if "pie" in case else {})))
    x, theta = events(model, 3), thetas(model, 3)
    n, epsilon = model.latent_dim, model.epsilon
    for i in range(3):
        theta_s = model.standardization.theta(theta[i : i + 1])
        c = theta_s if model.manifold_depends_on_theta else None
        f = lambda v: model.chart(model.standardization.x(v.unsqueeze(0)), c)[0].squeeze(0)  # noqa: E731
        z, jacobian = f(x[i]), torch.autograd.functional.jacobian(f, x[i])
        v_part = torch.distributions.Normal(0.0, epsilon).log_prob(z[n:]).sum() if n < 3 else 0.0
        expected = model.density.log_prob(z[:n].unsqueeze(0), theta_s)[0] + v_part + torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(model.log_prob(x[i : i + 1], theta[i : i + 1])[0], expected.detach())


@pytest.mark.parametrize("case", ["mflow", "pie", "pie-original", "mflow-image", "pr-hierarchical", "pr-image", "dnf"])
def test_flow_charts_invert_and_project_idempotently(case):
    model = fitted(make(case))
    theta = thetas(model, 4)
    t = theta if model.manifold_depends_on_theta else None
    u = torch.randn(4, model.latent_dim, dtype=torch.float64)
    torch.testing.assert_close(model.encode(model.decode(u, t), t), u)
    once = model.project(events(model, 4), t)
    torch.testing.assert_close(model.project(once, t), once)
    torch.testing.assert_close(model.squared_reconstruction_error(once, t), torch.zeros(4, dtype=torch.float64), atol=1e-10, rtol=0)


def test_a_theta_dependent_manifold_needs_theta():
    model = fitted(make("pie-original"))
    with pytest.raises(ValueError, match="depends on θ"):
        model.encode(events(model, 2))


class SurfaceChart(Transform):
    """The polynomial surface's true chart as an outer bijection: f(x) = (z, h - f_poly(z)) with
    (z, h) = Rᵀx; so g(u) = f⁻¹(u, 0) = R (u, f_poly(u))."""

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
    model = perturb(MFlow(3, 1, 2, outer=SMALL, inner=SMALL, standardize=False), scale=0.2)
    model.chart.transform = UnconditionalTransform(SurfaceChart, simulator)  # the manifold set by hand
    theta = torch.rand(50, 1, dtype=torch.float64) * 2 - 1
    x = simulator.simulate(theta, seed=0).double()
    z = simulator.coordinates(x)
    torch.testing.assert_close(model.encode(x), z)
    learned_minus_true = model.log_prob(x, theta, exact=False) - simulator.log_prob_coordinates(z, theta)
    torch.testing.assert_close(model.log_prob(x, theta) - simulator.log_likelihood(x, theta, measure="surface"), learned_minus_true.detach())
    assert simulator.log_area_factor(z).abs().max() > 0.1  # the Jacobian term is not trivially zero here


@pytest.mark.parametrize(("case", "schedule"), [("mflow-image", "sequential"), ("meflow-image", "alternating"), ("af-image", "likelihood"), ("pie-image", "likelihood")])
def test_image_flows_train_a_few_steps_at_16x16(case, schedule):
    shape = (3, 16, 16)
    model = make(case, image_shape=list(shape))
    x = torch.rand(24, *shape, generator=torch.Generator().manual_seed(1)) - 0.5
    theta = torch.randn(24, 1, generator=torch.Generator().manual_seed(2))
    history = train(model, x, theta, schedule, TrainingConfig(epochs=1, batch_size=8, progress=False, validation_fraction=0.2))
    assert len(history) >= 1 and history["validation_loss"].notna().all()
    assert model.chart.transform.initialized  # actnorm data init, also where f is only inverted


def test_bad_configurations_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown model"):
        build_estimator({"model": "nope"})
    with pytest.raises(ValueError, match="unknown arguments"):
        build_estimator({**CASES["mflow"], "latent": 2})
    with pytest.raises(ValueError, match="exactly one of data_dim"):
        build_estimator({"model": "mflow", "theta_dim": 1, "latent_dim": 2})
    with pytest.raises(ValueError, match="latent_dim must be <"):
        build_estimator({**CASES["mflow"], "latent_dim": 3})
    with pytest.raises(ValueError, match="head_features"):
        build_estimator({**CASES["mflow-image"], "latent_dim": 17})
    with pytest.raises(ValueError, match="image_shape"):
        build_estimator({**CASES["mflow-image"], "image_shape": [3, 8]})
    with pytest.raises(ValueError, match="bins"):
        build_estimator({**CASES["mflow"], "inner": {"bins": -1}})
    with pytest.raises(ValueError, match="epsilon"):
        PIE(3, 1, 2, epsilon=0.0)
    with pytest.raises(ValueError, match="no tractable density"):
        make("pae").log_prob(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(FileNotFoundError):
        load_model("missing.pt")
