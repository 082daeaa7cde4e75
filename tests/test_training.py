"""The trainer on tiny budgets: losses fall, errors are loud, checkpoints survive."""

import math

import pandas as pd
import pytest
import torch

from mflow_sbi.models import AmbientFlow, MFlow, PIE, build_model
from mflow_sbi.training import NonFiniteLossError, TrainingConfig, load_model, schedule, train
from mflow_sbi.transforms import FlowConfig
from simulators import PolynomialSurface

SMALL = FlowConfig(layers=2, bins=6, hidden=32, blocks=1)
QUICK = TrainingConfig(epochs=3, batch_size=50, learning_rate=3e-3, patience=None, progress=False)


@pytest.fixture(scope="module")
def dataset():
    theta, x = PolynomialSurface().simulate_joint(800, seed=0)
    return x, theta


@pytest.mark.parametrize(
    "make, schedule_name, column",
    [
        (lambda: AmbientFlow(3, 1, inner=SMALL), "likelihood", "validation_likelihood"),
        (lambda: PIE(3, 1, 2, outer=SMALL, inner=SMALL), "likelihood", "validation_likelihood"),
        (lambda: MFlow(3, 1, 2, outer=SMALL, inner=SMALL), "sequential", "validation_manifold"),
        (lambda: MFlow(3, 1, 2, outer=SMALL, inner=SMALL), "alternating", "validation_density"),
        (lambda: build_model({"model": "meflow", "data_dim": 3, "theta_dim": 1, "latent_dim": 2, "outer": SMALL.__dict__, "inner": SMALL.__dict__}), "alternating", "validation_manifold"),
        (lambda: build_model({"model": "pae", "data_dim": 3, "theta_dim": 1, "latent_dim": 2, "inner": SMALL.__dict__}), "sequential", "validation_manifold"),
    ],
)
def test_training_reduces_the_loss(dataset, make, schedule_name, column):
    x, theta = dataset
    model = make()

    with torch.no_grad():
        phases = [p for stage in schedule(schedule_name) for p in stage if f"validation_{p.name}" == column]
        before = float(phases[0].loss(model, x, theta).mean() * phases[0].weight)
    history = train(model, x, theta, schedule_name, QUICK)
    assert isinstance(history, pd.DataFrame)
    after = history[column].dropna().min()
    assert after < before, f"{column}: {before} -> {after}"


@pytest.mark.parametrize("phase_name, trained, frozen", [("manifold", "outer", "inner"), ("density", "inner", "outer")])
def test_each_phase_updates_only_its_parameters(dataset, phase_name, trained, frozen):
    x, theta = dataset
    model = MFlow(3, 1, 2, outer=SMALL, inner=SMALL)
    (phase,) = [p for stage in schedule("alternating") for p in stage if p.name == phase_name]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(list(phase.parameters(model)), lr=1e-2)
    phase.loss(model, x, theta).mean().backward()
    optimizer.step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert trained in changed and frozen not in changed


def test_best_state_is_restored(dataset):
    x, theta = dataset
    model = AmbientFlow(3, 1, inner=SMALL)
    history = train(model, x, theta, config=TrainingConfig(epochs=4, learning_rate=3e-3, progress=False))
    with torch.no_grad():
        # re-evaluate on the same validation split the trainer drew
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:80]
        restored = float(-model.log_prob(x[order], theta[order]).mean())
    assert restored == pytest.approx(history["validation_loss"].min(), rel=1e-4)


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
    torch.testing.assert_close(loaded.log_prob(x[:5], theta[:5]), model.log_prob(x[:5], theta[:5]))
    assert [p.name for p in tmp_path.joinpath("run").iterdir()] == ["model.pt"]  # no temporary left


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule_name": "sequential"}, "trains with"),
        ({"schedule_name": "nope"}, "trains with"),
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
    ],
)
def test_bad_training_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainingConfig(**kwargs)


def test_non_finite_gradients_raise_and_restore_the_best_state(dataset):
    x, theta = dataset
    model = AmbientFlow(3, 1, inner=SMALL)
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
    with pytest.raises(ValueError, match="format 99; this version reads format 1"):
        load_model(path)
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not an mflow-sbi checkpoint"):
        load_model(path)
