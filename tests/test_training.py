"""The trainer on tiny budgets: losses fall, errors are loud, checkpoints survive, and the
estimator's built-in standardization is fitted on the training split when training starts."""

import math

import pandas as pd
import pytest
import torch

from mflow_sbi.models import PIE, AmbientFlow, MFlow
from mflow_sbi.registry import build_estimator
from mflow_sbi.training import NonFiniteLossError, TrainingConfig, load_model, phase_loss, schedule, train
from mflow_sbi.transforms import FlowConfig
from simulators import PolynomialSurface

SMALL = FlowConfig(layers=2, bins=6, hidden=32, blocks=1)
QUICK = TrainingConfig(epochs=3, batch_size=50, learning_rate=3e-3, patience=None, progress=False)


@pytest.fixture(scope="module")
def dataset():
    theta, x = PolynomialSurface().simulate_joint(800, seed=0)
    return x, theta


def validation_split(n: int, seed: int = 0, fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """The (validation, training) indices the trainer draws for `TrainingConfig(seed=seed)`."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_validation = max(1, int(round(fraction * n)))
    return order[:n_validation], order[n_validation:]


@pytest.mark.parametrize(
    "make, schedule_name, column",
    [
        (lambda: AmbientFlow(3, 1, inner=SMALL), "likelihood", "validation_likelihood"),
        (lambda: PIE(3, 1, 2, outer=SMALL, inner=SMALL), "likelihood", "validation_likelihood"),
        (lambda: MFlow(3, 1, 2, outer=SMALL, inner=SMALL), "sequential", "validation_manifold"),
        (lambda: MFlow(3, 1, 2, outer=SMALL, inner=SMALL), "alternating", "validation_density"),
        (lambda: build_estimator({"model": "meflow", "data_dim": 3, "theta_dim": 1, "latent_dim": 2, "outer": SMALL.__dict__, "inner": SMALL.__dict__}), "alternating", "validation_manifold"),
        (lambda: build_estimator({"model": "pae", "data_dim": 3, "theta_dim": 1, "latent_dim": 2, "inner": SMALL.__dict__}), "sequential", "validation_manifold"),
    ],
)
def test_training_reduces_the_loss(dataset, make, schedule_name, column):
    x, theta = dataset
    model = make()
    _, training = validation_split(len(x))
    model.fit_standardization(x[training], theta[training])  # what train does first: losses in the same units
    with torch.no_grad():
        phases = [p for stage in schedule(schedule_name) for p in stage if f"validation_{p.name}" == column]
        before = float(phase_loss(phases[0], model, {"x": x, "theta": theta}).mean())
    history = train(model, x, theta, schedule_name, QUICK)
    assert isinstance(history, pd.DataFrame)
    after = history[column].dropna().min()
    assert after < before, f"{column}: {before} -> {after}"


@pytest.mark.parametrize("phase_name, trained, frozen", [("manifold", "chart", "density"), ("density", "density", "chart")])
def test_each_phase_updates_only_its_parameters(dataset, phase_name, trained, frozen):
    x, theta = dataset
    model = MFlow(3, 1, 2, outer=SMALL, inner=SMALL)
    model.fit_standardization(x, theta)
    (phase,) = [p for stage in schedule("alternating") for p in stage if p.name == phase_name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(list(getattr(model, phase.parameters)()), lr=1e-2)
    phase_loss(phase, model, {"x": x, "theta": theta}).mean().backward()
    optimizer.step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert trained in changed and frozen not in changed and "standardization" not in changed


def test_best_state_is_restored(dataset):
    x, theta = dataset
    model = AmbientFlow(3, 1, inner=SMALL)
    history = train(model, x, theta, config=TrainingConfig(epochs=4, learning_rate=3e-3, progress=False))
    with torch.no_grad():
        # re-evaluate on the same validation split the trainer drew, in raw units
        validation, _ = validation_split(len(x))
        restored = float(-model.log_prob(x[validation], theta[validation]).mean())
    assert restored == pytest.approx(history["validation_loss"].min(), rel=1e-4)


def test_restore_best_false_keeps_the_last_epoch(dataset):
    x, theta = dataset
    model = AmbientFlow(3, 1, inner=SMALL)
    config = TrainingConfig(epochs=10, batch_size=50, learning_rate=0.1, patience=None, restore_best=False, progress=False)  # best: epoch 8
    history = train(model, x, theta, config=config)
    with torch.no_grad():
        validation, _ = validation_split(len(x))
        last = float(-model.log_prob(x[validation], theta[validation]).mean())
    assert last == pytest.approx(history["validation_loss"].iloc[-1], rel=1e-4)
    assert history["validation_loss"].iloc[-1] != history["validation_loss"].min()  # the best epoch was another one


def test_training_fits_the_standardization_on_the_training_split_once(dataset):
    x, theta = dataset
    model = AmbientFlow(3, 1, inner=SMALL)
    assert not bool(model.standardization.fitted)
    train(model, x, theta, config=TrainingConfig(epochs=1, progress=False, seed=3))
    validation, training = validation_split(len(x), seed=3)
    standardization = model.standardization
    assert bool(standardization.fitted)
    torch.testing.assert_close(standardization.x_shift, x[training].mean(0))
    torch.testing.assert_close(standardization.x_scale, x[training].std(0))
    torch.testing.assert_close(standardization.theta_shift, theta[training].mean(0))
    torch.testing.assert_close(standardization.theta_scale, theta[training].std(0))
    assert not torch.allclose(standardization.x_shift, x.mean(0), rtol=0, atol=1e-6)  # not fitted on the validation events
    fitted = {k: v.clone() for k, v in standardization.state_dict().items()}
    train(model, 10 * x + 5, theta, config=TrainingConfig(epochs=1, progress=False))  # further training keeps the units
    assert all(torch.equal(fitted[k], v) for k, v in standardization.state_dict().items())
    unstandardized = AmbientFlow(3, 1, inner=SMALL, standardize=False)
    train(unstandardized, x, theta, config=TrainingConfig(epochs=1, progress=False))
    assert not bool(unstandardized.standardization.fitted)
    assert torch.equal(unstandardized.standardization.x_shift, torch.zeros(3))


def test_training_on_raw_data_does_not_depend_on_its_units(dataset):
    """The standardized problem is the same in any affine units of x and θ: the same history, up
    to the Jacobian Σ log a of x̃ = b + a x, and densities that transform as densities."""
    x, theta = (v.double() for v in dataset)
    scale, shift, theta_scale, theta_shift = torch.tensor([10.0, 0.1, 3.0], dtype=torch.float64), torch.tensor([-50.0, 2.0, 7.0], dtype=torch.float64), 4.0, -3.0
    config = TrainingConfig(epochs=2, batch_size=100, learning_rate=3e-3, patience=None, progress=False)
    model, rescaled = (MFlow(3, 1, 2, outer=SMALL, inner=SMALL).double() for _ in range(2))
    history = train(model, x, theta, "alternating", config)
    history_other = train(rescaled, shift + scale * x, theta_shift + theta_scale * theta, "alternating", config)
    for column in ("validation_manifold", "validation_density"):  # standardized-unit losses: equal
        assert history[column].to_numpy() == pytest.approx(history_other[column].to_numpy(), rel=1e-6)
    with torch.no_grad():
        log_p = model.log_prob(x[:20], theta[:20])
        log_p_other = rescaled.log_prob(shift + scale * x[:20], theta_shift + theta_scale * theta[:20])
        # on a 2-D manifold the Jacobian of x ↦ b + a x is not Σ log a: compare ratios in θ instead
        ratio = model.log_prob(x[:20], theta[:20] + 0.2, exact=False) - model.log_prob(x[:20], theta[:20], exact=False)
        ratio_other = rescaled.log_prob(shift + scale * x[:20], theta_shift + theta_scale * (theta[:20] + 0.2), exact=False) - rescaled.log_prob(
            shift + scale * x[:20], theta_shift + theta_scale * theta[:20], exact=False
        )
        samples = rescaled.sample(theta_shift + theta_scale * theta[:5], torch.Generator().manual_seed(0))
        samples_raw = model.sample(theta[:5], torch.Generator().manual_seed(0))
    torch.testing.assert_close(ratio_other, ratio, atol=1e-6, rtol=1e-6)
    assert float(ratio.abs().mean()) > 1e-3
    assert torch.isfinite(log_p).all() and torch.isfinite(log_p_other).all()
    torch.testing.assert_close(samples, shift + scale * samples_raw, atol=1e-6, rtol=1e-6)  # samples in raw units
    af, af_other = (AmbientFlow(3, 1, inner=SMALL).double() for _ in range(2))
    history = train(af, x, theta, config=config)
    history_other = train(af_other, shift + scale * x, theta_shift + theta_scale * theta, config=config)
    jacobian = float(torch.log(scale).sum())
    assert history["validation_loss"].to_numpy() + jacobian == pytest.approx(history_other["validation_loss"].to_numpy(), rel=1e-6)
    with torch.no_grad():
        difference = af.log_prob(x[:20], theta[:20]) - af_other.log_prob(shift + scale * x[:20], theta_shift + theta_scale * theta[:20])
    torch.testing.assert_close(difference, torch.full((20,), jacobian, dtype=torch.float64), atol=1e-6, rtol=1e-6)


def test_early_stopping_stops(dataset):
    x, theta = dataset
    history = train(AmbientFlow(3, 1, inner=SMALL), x, theta, config=TrainingConfig(epochs=30, learning_rate=0.5, patience=1, progress=False))
    assert len(history) < 30


def test_non_finite_loss_raises(dataset):
    x, theta = dataset
    model = AmbientFlow(3, 1, inner=SMALL)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="likelihood loss is nan"):
        train(model, x, theta, config=QUICK)


def test_checkpoint_written_every_epoch_and_loadable(dataset, tmp_path):
    x, theta = dataset
    model = MFlow(3, 1, 2, outer=SMALL, inner=SMALL)
    path = tmp_path / "run" / "model.pt"
    train(model, x, theta, "alternating", TrainingConfig(epochs=1, progress=False), checkpoint=path)
    loaded, metadata = load_model(path)
    assert metadata["stage_done"] and math.isfinite(metadata["best_validation_loss"])
    assert isinstance(loaded, MFlow) and loaded.config == model.config
    assert bool(loaded.standardization.fitted)  # the fitted standardization is part of the checkpoint
    torch.testing.assert_close(loaded.standardization.x_scale, model.standardization.x_scale)
    torch.testing.assert_close(loaded.log_prob(x[:5], theta[:5]), model.log_prob(x[:5], theta[:5]))
    assert [p.name for p in tmp_path.joinpath("run").iterdir()] == ["model.pt"]  # no temporary left


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule_name": "sequential"}, "trains with"),
        ({"schedule_name": "nope"}, "trains with"),
        ({"schedule_name": "ratio"}, "trains with"),
    ],
)
def test_bad_training_requests_raise(dataset, kwargs, match):
    x, theta = dataset
    with pytest.raises(ValueError, match=match):
        train(AmbientFlow(3, 1, inner=SMALL), x, theta, **kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"validation_fraction": 1.5}, "validation_fraction"),
        ({"epochs": 0}, "epochs"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"patience": 0}, "patience"),
        ({"density_batch_size": 0}, "density_batch_size"),
    ],
)
def test_bad_training_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainingConfig(**kwargs)


def test_bad_schedules_raise():
    with pytest.raises(ValueError, match="unknown schedule 'nope'"):
        schedule("nope")
    with pytest.raises(ValueError, match="reconstruction_weight must be positive"):
        schedule("sequential", reconstruction_weight=0.0)


def test_non_finite_gradients_raise_and_restore_the_best_state(dataset):
    x, theta = dataset
    model = AmbientFlow(3, 1, inner=SMALL)
    model.fit_standardization(x, theta)  # fitted already, so train leaves it as it is
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hook = next(model.parameters()).register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteLossError, match="gradients are non-finite"):
        train(model, x, theta, config=QUICK)
    hook.remove()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_training_rejects_mismatched_data(dataset):
    x, theta = dataset
    with pytest.raises(ValueError, match="batch sizes differ"):
        train(AmbientFlow(3, 1, inner=SMALL), x, theta[:-1], config=QUICK)


def test_checkpoint_of_another_format_fails_clearly(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"format_version": 99, "config": "{}", "metadata": "{}", "state_dict": {}}, path)
    with pytest.raises(ValueError, match="format 99; this version reads format 2"):
        load_model(path)
    torch.save({"format_version": 1, "config": "{}", "metadata": "{}", "state_dict": {}}, path)
    with pytest.raises(ValueError, match="format 1 predates estimators with built-in standardization"):
        load_model(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not an mflow-sbi checkpoint"):
        load_model(path)


@pytest.mark.parametrize("model_name", ["mflow", "meflow", "pae"])
def test_sequential_density_stage_trains_on_coordinates_encoded_once(dataset, model_name):
    """The density phase of sequential M/D reads u = g⁻¹(x) cached for its stage (the chart is
    frozen there) and gets the loss of encoding each batch; alternating M/D cannot cache."""
    from mflow_sbi.training.trainer import _with_stage_cache

    x, theta = dataset
    config = {"model": model_name, "data_dim": 3, "theta_dim": 1, "latent_dim": 2, "inner": SMALL.__dict__}
    model = build_estimator(config | ({} if model_name == "pae" else {"outer": SMALL.__dict__}))
    train(model, x, theta, "sequential", TrainingConfig(epochs=1, batch_size=100, patience=None, progress=False))
    data = {"x": x, "theta": theta}
    (manifold,), (density,) = schedule("sequential")
    cached = _with_stage_cache(model, (density,), [list(model.density_parameters())], data, chunk_size=64)
    assert set(cached) == {"x", "theta", "coordinates"}
    torch.testing.assert_close(cached["coordinates"], model.manifold_coordinates(x))
    torch.testing.assert_close(phase_loss(density, model, cached), phase_loss(density, model, data))
    stage = (manifold, density)  # alternating: the manifold phase moves the chart every step
    groups = [list(model.manifold_parameters()), list(model.density_parameters())]
    assert set(_with_stage_cache(model, stage, groups, data, chunk_size=64)) == {"x", "theta"}


def test_density_stage_takes_its_own_batch_size_and_scaled_rate(dataset, monkeypatch):
    """The cached density stage of sequential M/D steps with min(density_batch_size, batch_size)
    events at learning rate × √(that / batch_size); the manifold stage with batch_size."""
    import mflow_sbi.training.trainer as trainer

    seen = []
    batches = trainer._batches
    monkeypatch.setattr(trainer, "_batches", lambda data, size, generator: seen.append(size) or batches(data, size, generator))
    rates = []
    adamw = torch.optim.AdamW
    monkeypatch.setattr(torch.optim, "AdamW", lambda group, lr, **kwargs: rates.append(lr) or adamw(group, lr=lr, **kwargs))
    x, theta = dataset
    config = TrainingConfig(epochs=1, batch_size=400, learning_rate=4e-3, density_batch_size=100, patience=None, progress=False)
    train(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), x, theta, "sequential", config)
    assert seen == [400, 100] and rates == pytest.approx([4e-3, 2e-3])
    seen.clear(), rates.clear()
    train(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), x, theta, "alternating", config)  # one stage, no cache
    assert seen == [400] and rates == pytest.approx([4e-3, 4e-3])
    seen.clear(), rates.clear()
    train(MFlow(3, 1, 2, outer=SMALL, inner=SMALL), x, theta, "sequential", TrainingConfig(epochs=1, batch_size=50, progress=False))
    assert seen == [50, 50]  # never larger than batch_size


def test_default_learning_rate_follows_the_batch():
    """None: 3e-3 · √(b/1000), the paper's ≈ 1e-3 at its batch of 100; an explicit rate holds at
    `batch_size` and scales by the square root of the batch ratio elsewhere."""
    assert TrainingConfig().learning_rate_at(1000) == pytest.approx(3e-3)
    assert TrainingConfig(batch_size=100).learning_rate_at(100) == pytest.approx(3e-3 / math.sqrt(10))
    assert TrainingConfig(batch_size=64, learning_rate=2e-3).learning_rate_at(64) == 2e-3
    assert TrainingConfig(batch_size=400, learning_rate=2e-3).learning_rate_at(100) == pytest.approx(1e-3)
