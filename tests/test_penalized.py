"""Paper 003 (pixel rejection, hierarchical training) and the DNF baseline: the Huber penalty,
which parameters each stage trains, frozen levels, the stacked chart's density against its
levels, and DNF's densities integrating to one."""

import math

import pytest
import torch

from conftest import perturb
from mflow_sbi.models import DenoisingFlow, PixelRejectionFlow
from mflow_sbi.models.penalized import reconstruction_penalty
from mflow_sbi.training import TrainingConfig, fit, schedule, train
from mflow_sbi.training.losses import huber, phase_loss

SMALL = {"layers": 2, "bins": 4, "hidden": 16, "blocks": 1}


def surface(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x on a curved 2-D surface in R^4 whose position along it depends on θ."""
    generator = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, 1, generator=generator) * 2 - 1
    a = theta[:, 0] + 0.5 * torch.randn(n, generator=generator)
    b = torch.randn(n, generator=generator)
    x = torch.stack([a, b, a**2 - 0.5 * b, torch.sin(a) + 0.1 * b], dim=1)
    return x, theta


def test_huber_is_the_half_squared_error_below_delta_and_linear_above():
    delta = 0.7
    small = torch.linspace(-0.69, 0.69, 101)
    torch.testing.assert_close(huber(small, delta), 0.5 * small**2)
    large = torch.cat([torch.linspace(-5.0, -0.71, 50), torch.linspace(0.71, 5.0, 50)])
    torch.testing.assert_close(huber(large, delta), delta * (large.abs() - 0.5 * delta))
    # linear: slope ±δ beyond δ, and value and slope continuous at |e| = δ
    e = large.clone().requires_grad_(True)
    huber(e, delta).sum().backward()
    torch.testing.assert_close(e.grad, delta * large.sign())
    edge = torch.tensor([delta - 1e-6, delta + 1e-6], dtype=torch.float64)
    assert abs(huber(edge, delta)[0] - huber(edge, delta)[1]) < 1e-5


def test_the_huber_manifold_phase_is_the_squared_error_for_small_errors_and_linear_for_large():
    model = perturb(PixelRejectionFlow(4, 1, 2, outer=SMALL, inner=SMALL), scale=0.2)  # any chart will do
    x, theta = surface(64)
    x, theta = x.double(), theta.double()
    model.fit_standardization(x, theta)
    squared = model.manifold_loss(x, theta)
    torch.testing.assert_close(model.manifold_loss(x, theta, delta=1e6), squared)
    error = (model.standardization.x(x) - model.standardization.x(model.project(x))).flatten(1)
    delta = error.abs().median().item()  # half the entries on each branch
    linear = torch.where(error.abs() < delta, error**2, 2 * delta * error.abs() - delta**2).sum(-1)
    torch.testing.assert_close(model.manifold_loss(x, theta, delta=delta), linear)
    assert (model.manifold_loss(x, theta, delta=delta) <= squared).all() and (model.manifold_loss(x, theta, delta=delta) < squared).any()


def test_the_penalty_is_the_mean_over_entries():
    error = torch.tensor([[0.1, -2.0, 0.5], [3.0, 0.0, -0.2]])
    torch.testing.assert_close(reconstruction_penalty(error, 1.0), huber(error, 1.0).mean(-1))
    torch.testing.assert_close(reconstruction_penalty(error, None), 0.5 * (error**2).mean(-1))
    images = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(reconstruction_penalty(images, 0.5), huber(images.flatten(1), 0.5).mean(-1))


def hierarchical() -> PixelRejectionFlow:
    model = perturb(PixelRejectionFlow(4, 1, [3, 2], outer=SMALL, inner=SMALL, stacked=SMALL), scale=0.1)
    x, theta = surface(32)
    model.fit_standardization(x.double(), theta.double())
    return model


def test_each_stage_of_the_hierarchical_schedule_reaches_only_its_own_parameters():
    model = hierarchical()
    x, theta = surface(32, seed=1)
    x, theta = x.double(), theta.double()
    stages = schedule("hierarchical", huber_delta=0.5, levels=model.levels)
    assert [phases[0].name for phases in stages] == ["level 1", "level 2", "density"]
    owners = {
        "level 1": set(map(id, model.chart.levels[0].parameters())),
        "level 2": set(map(id, model.chart.levels[1].parameters())),
        "density": set(map(id, model.density.parameters())),
    }
    for (phase,) in stages:
        trained = set(map(id, getattr(model, phase.parameters)(**dict(phase.scope))))
        assert trained == owners[phase.name]
        model.zero_grad(set_to_none=True)
        phase_loss(phase, model, {"x": x, "theta": theta}).mean().backward()
        reached = {id(p) for p in model.parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert reached == owners[phase.name], phase.name
    penalized = schedule("penalized", levels=model.levels)[0][0]  # end to end: every parameter
    model.zero_grad(set_to_none=True)
    phase_loss(penalized, model, {"x": x, "theta": theta}).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_a_frozen_level_does_not_change_in_the_later_stages():
    x, theta = surface(600, seed=2)
    config = TrainingConfig(epochs=2, batch_size=100, patience=None, huber_delta=0.5, progress=False)
    stages = schedule("hierarchical", huber_delta=0.5, levels=2)

    def trained(n_stages: int) -> PixelRejectionFlow:
        model = PixelRejectionFlow(4, 1, [3, 2], outer=SMALL, inner=SMALL, stacked=SMALL, seed=3)
        fit(model, {"x": x, "theta": theta}, stages[:n_stages], config)
        return model

    after = [trained(k) for k in (1, 2, 3)]
    first, second = after[0].chart.levels[0].state_dict(), after[1].chart.levels[1].state_dict()
    initial = PixelRejectionFlow(4, 1, [3, 2], outer=SMALL, inner=SMALL, stacked=SMALL, seed=3)
    assert any(not torch.equal(v, initial.chart.levels[0].state_dict()[k]) for k, v in first.items())  # level 1 did train
    for model in after[1:]:
        for key, value in first.items():
            assert torch.equal(model.chart.levels[0].state_dict()[key], value), key
    for key, value in second.items():
        assert torch.equal(after[2].chart.levels[1].state_dict()[key], value), key
    for key, value in after[1].density.state_dict().items():  # the density waits for its own stage
        assert torch.equal(value, initial.density.state_dict()[key]), key


def test_the_stacked_densities_are_the_compositions_of_the_levels():
    model = hierarchical()
    x, theta = surface(3, seed=4)
    x, theta = x.double(), theta.double()
    x_s, theta_s = model.standardization.x(x), model.standardization.theta(theta)
    # the split likelihood: Σ over levels of log N(v_m; 0, ε²) + log|det J_fm|, plus log p_h(u_M|θ)
    a, expected = x_s, model.standardization.log_abs_det_x().expand(3).clone()
    for chart, dim in zip(model.chart.levels, model.chart.dims):
        z, ladj = chart.call_and_ladj(a)
        expected += torch.distributions.Normal(0.0, model.epsilon).log_prob(z[:, dim:]).sum(-1) + ladj
        a = z[:, :dim]
    expected += model.density.log_prob(a, theta_s)
    torch.testing.assert_close(model.split_log_prob(x, theta), expected)
    torch.testing.assert_close(model.encode(x), a)
    # the density on the manifold: the chain rule J_g = J_s J_g1 J_g2 through each level's chart
    for i in range(3):
        u = a[i]
        u1 = model.chart.levels[1].inverse(torch.nn.functional.pad(u, (0, 1)).unsqueeze(0))[0]
        j2 = torch.autograd.functional.jacobian(lambda v: model.chart.levels[1].inverse(torch.nn.functional.pad(v, (0, 1)).unsqueeze(0))[0], u)
        j1 = torch.autograd.functional.jacobian(lambda v: model.chart.levels[0].inverse(torch.nn.functional.pad(v, (0, 1)).unsqueeze(0))[0], u1)
        jacobian = torch.diag(model.standardization.x_scale.flatten()) @ j1 @ j2
        log_p = model.density.log_prob(u.unsqueeze(0), theta_s[i : i + 1])[0] - 0.5 * torch.logdet(jacobian.T @ jacobian)
        torch.testing.assert_close(model.log_prob(x[i : i + 1], theta[i : i + 1])[0], log_p.detach())


def test_dnf_densities_integrate_to_one_on_a_curve_in_the_plane():
    """D = 2, n = 1: the split (inflated) density integrates to one over R², and the density on
    the learned curve {g(u)} integrates to one against its arc length ∫ p(g(u)) ‖g'(u)‖ du."""
    model = perturb(DenoisingFlow(2, 1, 1, noise_scale=0.5, outer=SMALL, inner=SMALL, standardize=False), scale=0.2).eval()
    theta = torch.tensor([[0.3]], dtype=torch.float64)
    side = torch.linspace(-12, 12, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    with torch.no_grad():
        ambient = model.split_log_prob(grid, theta.expand(len(grid), 1)).exp().sum() * (side[1] - side[0]) ** 2
    assert abs(ambient.item() - 1) < 2e-3
    u = torch.linspace(-9, 9, 20_001, dtype=torch.float64).unsqueeze(1)
    points = model.decode(u)
    with torch.no_grad():
        density = model.log_prob(points, theta.expand(len(u), 1)).exp()
    speed = torch.linalg.vector_norm(torch.diff(points, dim=0), dim=1) / (u[1, 0] - u[0, 0])
    on_curve = (0.5 * (density[1:] + density[:-1]) * speed).sum() * (u[1, 0] - u[0, 0])
    assert abs(on_curve.item() - 1) < 2e-3


def test_dnf_trains_on_inflated_data_and_validates_on_clean_data():
    x, theta = surface(400, seed=5)
    model = DenoisingFlow(4, 1, 2, outer=SMALL, inner=SMALL)
    history = train(model, x, theta, config=TrainingConfig(epochs=2, batch_size=100, progress=False))
    assert history["validation_loss"].notna().all() and list(history["phases"].unique()) == ["denoising"]
    model.eval()
    torch.testing.assert_close(model.loss(x[:8], theta[:8]), model.loss(x[:8], theta[:8]))  # eval mode: no noise
    model.train()
    assert not torch.equal(model.loss(x[:8], theta[:8]), model.loss(x[:8], theta[:8]))  # training mode: fresh noise


@pytest.mark.parametrize("schedule_name", ["hierarchical", "penalized"])
def test_pixel_rejection_learns_the_manifold(schedule_name):
    """A few epochs bring the reconstruction error of held-out events well below the untrained chart's."""
    x, theta = surface(3000, seed=6)
    test_x, _ = surface(500, seed=7)
    model = PixelRejectionFlow(4, 1, [3, 2], outer=SMALL, inner=SMALL, stacked=SMALL)
    model.fit_standardization(x, theta)
    before = model.squared_reconstruction_error(test_x).mean().item()
    config = TrainingConfig(epochs=6, batch_size=100, huber_delta=1.0, penalty_weight=100.0, progress=False)
    history = train(model, x, theta, schedule_name, config)
    after = model.squared_reconstruction_error(test_x).mean().item()
    assert after < 0.3 * before, (before, after)
    assert history.attrs == {} and math.isfinite(history["validation_loss"].iloc[-1])


def test_bad_pixel_rejection_configurations_raise_clear_errors():
    for bad in ([2, 3], [], [2, 2], [2, 0], 0, "auto", [1.5]):
        with pytest.raises(ValueError, match="latent_dims must be a positive integer or a strictly decreasing list"):
            PixelRejectionFlow(4, 1, bad)
    with pytest.raises(ValueError, match="latent_dims must start below the data dimension"):
        PixelRejectionFlow(4, 1, [4, 2])
    with pytest.raises(ValueError, match="latent_dims must start at or below the outer head_features"):
        PixelRejectionFlow(image_shape=(1, 8, 8), latent_dims=[20, 2], outer={"head_features": 16})
    with pytest.raises(ValueError, match="epsilon must be positive"):
        PixelRejectionFlow(4, 1, 2, epsilon=None)
    with pytest.raises(ValueError, match="noise_scale must be positive"):
        DenoisingFlow(4, 1, 2, noise_scale=0.0)
    with pytest.raises(ValueError, match="huber_delta must be positive"):
        TrainingConfig(huber_delta=-1.0)
    with pytest.raises(ValueError, match="penalty_weight must be positive"):
        TrainingConfig(penalty_weight=0.0)
