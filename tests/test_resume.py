"""Crash-safe runs: a training run killed at any point and resumed from its checkpoint ends with
the parameters and history of an uninterrupted run (bit-identical on the CPU), in the library and
at the command line (a real `kill -9`); damaged or foreign checkpoints give one-line errors that
name the file; interrupted atomic writes leave nothing behind."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import mflow_sbi.training.trainer as trainer
from mflow_sbi.baselines import RatioEstimator, RatioTrainingData, train_ratio_estimator
from mflow_sbi.cli import main
from mflow_sbi.files import leftover_temporaries, write_npz_atomically
from mflow_sbi.models import MFlow
from mflow_sbi.training import CheckpointError, TrainingConfig, load_model, save_model, train
from mflow_sbi.training.checkpoints import read_checkpoint
from simulators import PolynomialSurface

SMALL = {"layers": 1, "bins": 4, "hidden": 8, "blocks": 1}
#: two stages (sequential M/D) of up to 4 epochs of 9 batches; patience 2 stops a stage early
CONFIG = TrainingConfig(epochs=4, batch_size=100, patience=2, progress=False)


@pytest.fixture(scope="module")
def data():
    theta, x = PolynomialSurface().simulate_joint(1000, seed=0)
    return x, theta


def mflow(latent_dim: int | str = 2) -> MFlow:
    return MFlow(data_dim=3, theta_dim=1, latent_dim=latent_dim, outer=SMALL, inner=SMALL, seed=0)


class Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing in the trainer catches it."""


def killed_after(monkeypatch, losses: int) -> None:
    """The trainer dies when it evaluates its loss for the (losses + 1)-th time."""
    original, calls = trainer.phase_loss, [0]

    def phase_loss(*args, **kwargs):
        calls[0] += 1
        if calls[0] > losses:
            raise Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer, "phase_loss", phase_loss)


def assert_same_parameters(a: torch.nn.Module, b: torch.nn.Module) -> None:
    assert a.state_dict().keys() == b.state_dict().keys()
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    x, theta = data
    model = mflow()
    history = train(model, x, theta, "sequential", CONFIG, checkpoint=tmp_path_factory.mktemp("ref") / "run.pt")
    assert history["stage"].nunique() == 2 and len(history) >= 5  # both stages ran, the kill points below fall in them
    return model, history


# 10 loss evaluations per epoch of the manifold stage (9 batches + validation); the density stage
# has 4 batches of 250 events per epoch: 0 is before the first checkpoint (a fresh start), 15 is
# mid-epoch, 20 an epoch boundary, 45 in the density stage
@pytest.mark.parametrize("losses", [0, 15, 20, 45])
def test_a_killed_run_resumes_to_the_parameters_of_an_uninterrupted_run(data, uninterrupted, tmp_path, monkeypatch, losses):
    x, theta = data
    checkpoint = tmp_path / "run.pt"
    killed_after(monkeypatch, losses)
    with pytest.raises(Killed):
        train(mflow(), x, theta, "sequential", CONFIG, checkpoint=checkpoint)
    monkeypatch.undo()
    model = mflow()
    history = train(model, x, theta, "sequential", CONFIG, checkpoint=checkpoint, resume=True)
    reference, reference_history = uninterrupted
    assert_same_parameters(model, reference)
    assert history.equals(reference_history)
    assert read_checkpoint(checkpoint)["training_state"]["stage_done"]


def test_resuming_a_finished_run_returns_its_history_and_model(data, uninterrupted, tmp_path):
    x, theta = data
    checkpoint = tmp_path / "run.pt"
    train(mflow(), x, theta, "sequential", CONFIG, checkpoint=checkpoint)
    model = mflow()
    history = train(model, x, theta, "sequential", CONFIG, checkpoint=checkpoint, resume=True)
    assert_same_parameters(model, uninterrupted[0])
    assert history.equals(uninterrupted[1])


def test_an_estimated_latent_dimension_is_taken_from_the_checkpoint_on_resume(data, tmp_path, monkeypatch):
    x, theta = data
    config = TrainingConfig(epochs=2, batch_size=100, progress=False)
    reference = mflow("auto")
    train(reference, x, theta, "sequential", config)
    killed_after(monkeypatch, 25)
    with pytest.raises(Killed):
        train(mflow("auto"), x, theta, "sequential", config, checkpoint=tmp_path / "run.pt")
    monkeypatch.undo()

    def no_estimate(*args, **kwargs):
        raise AssertionError("a resumed run must not estimate n again")

    monkeypatch.setattr("mflow_sbi.intrinsic_dimension.estimate_intrinsic_dimension", no_estimate)
    model = mflow("auto")
    history = train(model, x, theta, "sequential", config, checkpoint=tmp_path / "run.pt", resume=True)
    assert model.latent_dim == 2 and history.attrs["intrinsic_dimension"]["dimension"] == 2
    assert_same_parameters(model, reference)


def test_a_ratio_estimator_resumes_too(tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(300, 2, generator=generator), torch.randn(300, 2, generator=generator) + 0.5
    theta = torch.rand(300, 1, generator=generator)
    data = RatioTrainingData.from_samples((x0, theta, torch.zeros(300), torch.zeros(300, 1)), (x1, theta, torch.zeros(300)))
    config = TrainingConfig(epochs=3, batch_size=100, progress=False)

    def estimator() -> RatioEstimator:
        return RatioEstimator(data_dim=2, theta_dim=1, theta_ref=[0.0], hidden=8, layers=1)

    reference = estimator()
    train_ratio_estimator(reference, data, config)
    killed_after(monkeypatch, 9)
    with pytest.raises(Killed):
        train_ratio_estimator(estimator(), data, config, checkpoint=tmp_path / "run.pt")
    monkeypatch.undo()
    model = estimator()
    train_ratio_estimator(model, data, config, checkpoint=tmp_path / "run.pt", resume=True)
    assert_same_parameters(model, reference)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("data", "different data"),
        ("config", "different training config"),
        ("schedule", "different schedule"),
        ("model", "differently configured mflow"),
        ("finished model", "holds no trainer state"),
    ],
)
def test_resuming_from_another_run_is_refused(data, tmp_path, monkeypatch, change, message):
    x, theta = data
    checkpoint = tmp_path / "run.pt"
    killed_after(monkeypatch, 15)
    with pytest.raises(Killed):
        train(mflow(), x, theta, "sequential", CONFIG, checkpoint=checkpoint)
    monkeypatch.undo()
    model, schedule, config = mflow(), "sequential", CONFIG
    if change == "data":
        x = x.clone()
        x[0, 0] += 1e-3
    elif change == "config":
        config = TrainingConfig(epochs=5, batch_size=100, patience=2, progress=False)
    elif change == "schedule":
        schedule = "alternating"
    elif change == "model":
        model = MFlow(data_dim=3, theta_dim=1, latent_dim=2, outer=SMALL, inner=SMALL, seed=1)
    else:
        save_model(checkpoint, mflow())
    with pytest.raises(CheckpointError, match=message) as error:
        train(model, x, theta, schedule, config, checkpoint=checkpoint, resume=True)
    assert str(checkpoint) in str(error.value)


def test_resume_needs_a_checkpoint(data):
    with pytest.raises(ValueError, match="pass `checkpoint`"):
        train(mflow(), *data, config=CONFIG, resume=True)


# ---- damaged and foreign files --------------------------------------------------------------------
class Payload:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def damaged_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name: (file, what the error says)."""
    good = save_model(folder / "good.pt", mflow())
    raw = good.read_bytes()
    files = {
        "truncated": (raw[: len(raw) // 2], "truncated or not a torch file"),
        "empty": (b"", "truncated or not a torch file"),
        "text": (b"model: mflow\n", "truncated or not a torch file"),
        "pickle payload": (pickle.dumps(Payload()), "refused (loading them could run arbitrary code)"),
    }
    paths = {}
    for name, (content, message) in files.items():
        path = folder / f"{name.replace(' ', '_')}.pt"
        path.write_bytes(content)
        paths[name] = (path, message)
    write_npz_atomically(folder / "npz.npz", {"x": np.zeros(3)})
    os.replace(folder / "npz.npz", folder / "npz.pt")
    paths["an .npz data set"] = (folder / "npz.pt", "truncated or not a torch file")
    torch.save({"a": Payload()}, folder / "torch_payload.pt")
    paths["a torch file with a pickle payload"] = (folder / "torch_payload.pt", "refused")
    torch.save([1, 2], folder / "list.pt")
    paths["a torch file of a list"] = (folder / "list.pt", "holds list without a format_version")
    payload = torch.load(good, weights_only=True)
    for name, edit, message in [
        ("wrong format", {"format_version": 1}, "has checkpoint format 1"),
        ("bad JSON config", {"config": "{model"}, "not JSON"),
        ("unknown model", {"config": '{"name": "nflow"}'}, "does not build an estimator"),
        ("weights of another model", {"config": json.dumps(mflow(1).config)}, "weights do not match its config"),
        ("no state dict", {"state_dict": None}, "'state_dict' is missing"),
    ]:
        path = folder / f"{name.replace(' ', '_')}.pt"
        torch.save(payload | edit, path)
        paths[name] = (path, message)
    return paths


def test_damaged_or_foreign_checkpoints_give_errors_naming_the_file(tmp_path, capsys):
    for name, (path, message) in damaged_files(tmp_path).items():
        with pytest.raises(CheckpointError) as error:
            load_model(path)
        text = str(error.value)
        assert str(path) in text and message in text and "weights_only" not in text, (name, text)
        assert main(["infer", "--checkpoint", str(path), "--observed", str(path), "--output", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("mflow-sbi: error:") and "\n" not in err and str(path) in err, (name, err)
    assert not (tmp_path / "out").exists()


def test_an_interrupted_atomic_write_leaves_nothing_behind(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    leftover = tmp_path / ".model.pt.abc123.tmp"  # what a kill -9 during torch.save leaves
    leftover.write_bytes(b"\0" * 1000)
    save_model(path, mflow())
    assert not leftover.exists() and leftover_temporaries(path) == []

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_model(path, mflow(1))
    assert leftover_temporaries(path) == [] and load_model(path)[0].latent_dim == 2  # the previous file is intact


# ---- the command line ---------------------------------------------------------------------------
TRAIN_YAML = """\
data: data.npz
model: {model: mflow, latent_dim: 2, outer: {layers: 1, bins: 4, hidden: 8, blocks: 1}, inner: {layers: 1, bins: 4, hidden: 8, blocks: 1}}
schedule: sequential
training: {epochs: 8, batch_size: 50, patience: null}
"""


def cli(*arguments: str, cwd: Path) -> subprocess.Popen:
    environment = os.environ | {"OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "mflow_sbi.cli", "--threads", "1", *arguments]
    return subprocess.Popen(command, cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_training_killed_with_sigkill_resumes_to_the_uninterrupted_model(tmp_path):
    assert main(["simulate", "polynomial_surface", "--n", "600", "--output", str(tmp_path)]) == 0
    (tmp_path / "train.yaml").write_text(TRAIN_YAML)
    arguments = ["train", "--config", "train.yaml", "--quiet", "--output"]
    reference = cli(*arguments, "reference", cwd=tmp_path)
    interrupted = cli(*arguments, "run", cwd=tmp_path)
    state = tmp_path / "run" / "training.pt"
    deadline = time.monotonic() + 120
    while not (state.exists() and read_checkpoint(state)["training_state"].get("epoch", -1) >= 2):
        assert interrupted.poll() is None, interrupted.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.05)
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait()
    assert reference.wait(timeout=600) == 0, reference.communicate()
    assert not (tmp_path / "run" / "model.pt").exists() and state.exists()

    refused = cli(*arguments, "run", cwd=tmp_path)
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2 and "holds an interrupted run: pass --resume" in err, err
    resumed = cli(*arguments, "run", "--resume", cwd=tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert not state.exists() and leftover_temporaries(tmp_path / "run" / "model.pt") == []
    assert_same_parameters(load_model(tmp_path / "run" / "model.pt")[0], load_model(tmp_path / "reference" / "model.pt")[0])
    assert (tmp_path / "run" / "history.csv").read_text() == (tmp_path / "reference" / "history.csv").read_text()

    finished = cli(*arguments, "run", "--resume", cwd=tmp_path)
    _, err = finished.communicate(timeout=120)
    assert finished.returncode == 2 and "nothing to resume" in err, err
