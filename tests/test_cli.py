"""The command line on tiny budgets: the demo, the simulate → train → infer → evaluate chain on
both simulators (SCANDAL and ALICES on lhc_like) and on a user's own simulator found by
module:Class, benchmark --list, and one-line errors."""

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mflow_sbi.cli import main
from mflow_sbi.cli_commands.train import load_config, model_config, training_config
from mflow_sbi.models import MFlow
from mflow_sbi.training import save_model

TINY_FLOW = {"layers": 1, "bins": 4, "hidden": 8, "blocks": 1}
TINY_MCMC = ["--walkers", "8", "--num-samples", "160", "--burn-in", "10", "--quiet"]

MFLOW_YAML = """\
data: data/data.npz
model:
  model: mflow
  latent_dim: 2
  outer: {layers: 1, bins: 4, hidden: 8, blocks: 1}
  inner: {layers: 1, bins: 4, hidden: 8, blocks: 1}
schedule: alternating
training:
  epochs: 1
  learning_rate: 1e-3   # YAML reads this as a string; the CLI reads it as a number
"""

MFLOW_TOML = """\
data = "data/data.npz"
schedule = "alternating"

[model]
model = "mflow"
latent_dim = 2
outer = {layers = 1, bins = 4, hidden = 8, blocks = 1}
inner = {layers = 1, bins = 4, hidden = 8, blocks = 1}

[training]
epochs = 1
learning_rate = 1e-3
"""


def written(out: str) -> set[str]:
    return {Path(line.removeprefix("wrote ")).name for line in out.splitlines() if line.startswith("wrote ")}


def test_demo_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    assert main(["demo", "--simulations", "600", "--epochs", "1", "--output", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "posterior MMD²" in out and "reconstruction error" in out and "distance of generated samples" in out
    assert {p.name for p in tmp_path.iterdir()} == {"demo.png", "results.json", "mflow.pt"}
    results = json.loads((tmp_path / "results.json").read_text())
    assert abs(results["exact_posterior_mean"]) < 0.6  # the exact posterior is centred near θ = 0
    assert 0 < results["manifold_distance_of_samples"] < 2.0 and results["mean_reconstruction_distance"] < 2.0


def test_user_mistakes_give_one_line_errors(capsys):
    assert main(["demo", "--true-theta", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mflow-sbi: error:") and "prior support" in err and "\n" not in err


def test_yaml_and_toml_configs_read_the_same(tmp_path):
    (tmp_path / "a.yaml").write_text(MFLOW_YAML)
    (tmp_path / "a.toml").write_text(MFLOW_TOML)
    yaml_config, toml_config = load_config(tmp_path / "a.yaml"), load_config(tmp_path / "a.toml")
    yaml_config["training"]["learning_rate"] = float(yaml_config["training"]["learning_rate"])
    assert yaml_config == toml_config


def test_polynomial_surface_chain(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "polynomial_surface", "--n", "300", "--output", "data"]) == 0
    assert main(["simulate", "polynomial_surface", "--n", "10", "--theta", "0.3", "--seed", "1", "--name", "observed", "--output", "data"]) == 0
    assert written(capsys.readouterr().out) == {"data.npz", "data.json", "observed.npz", "observed.json"}
    description = json.loads(Path("data/observed.json").read_text())
    assert description["arrays"] == {"x": [10, 3], "theta": [10, 1]} and description["simulator_spec"]["name"] == "polynomial_surface"

    Path("mflow.yaml").write_text(MFLOW_YAML)
    assert main(["train", "--config", "mflow.yaml", "--output", "train", "--quiet"]) == 0
    assert written(capsys.readouterr().out) == {"model.pt", "history.csv"}  # the standardization is inside model.pt
    assert len(pd.read_csv("train/history.csv")) == 1  # alternating: one stage of one epoch

    infer = ["infer", "--checkpoint", "train/model.pt", "--observed", "data/observed.npz", "--grid", "--resolution", "50"]
    assert main([*infer, *TINY_MCMC, "--output", "infer"]) == 0
    assert written(capsys.readouterr().out) == {"posterior.nc", "summary.csv", "grid_posterior.npz", "posterior.png"}
    summary = pd.read_csv("infer/summary.csv", index_col=0)
    assert -1 <= summary.loc["theta[theta]", "mean"] <= 1  # named after the simulator's theta_names

    assert main(["evaluate", "--samples", "infer/posterior.nc", "--output", "evaluate"]) == 0  # simulator, x, θ from the file
    assert written(capsys.readouterr().out) == {"evaluation.csv", "evaluation.md"}
    table = pd.read_csv("evaluate/evaluation.csv")
    assert list(table["posterior"]) == ["posterior.nc", "reference (exact)"]
    assert 0 <= table.loc[0, "c2st"] <= 1 and np.isfinite(table.loc[0, "mmd_squared"])
    assert np.isfinite(table["log_posterior_at_true_theta"]).all()  # θ_true = 0.3, recorded by infer


def test_lhc_like_scandal_and_alices(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MFLOW_SBI_CACHE", str(tmp_path / "cache"))
    lhc = ["--option", "n_params=2", "--option", "pool_draws=1000"]
    assert main(["simulate", "lhc_like", "--n", "100", *lhc, "--alices-reference", "--output", "data"]) == 0  # warns: tiny pool
    assert main(["simulate", "lhc_like", "--n", "5", "--theta", "0.2", "0", "--seed", "1", "--name", "observed", *lhc, "--output", "data"]) == 0
    capsys.readouterr()
    with np.load("data/data.npz") as stored:
        assert stored["joint_score"].shape == (100, 2) and stored["x_reference"].shape == (100, 40)
        assert json.loads(str(stored["metadata"]))["observable_names"][0] == "a1_E"  # the simulator's own metadata too
    spec = json.loads(Path("data/observed.json").read_text())["simulator_spec"]
    assert spec == {"name": "lhc_like", "options": {"tier": "hadron", "n_params": 2, "pool_draws": 1000, "pool_seed": 0}}

    tiny = "{layers = 1, bins = 4, hidden = 8, blocks = 1}"
    Path("scandal.toml").write_text(
        f'data = "data/data.npz"\n[model]\nmodel = "mflow"\nlatent_dim = 14\nouter = {tiny}\ninner = {tiny}\n'
        "[training]\nepochs = 1\nscore_weight = 1.0\n"
    )
    Path("alices.yaml").write_text("data: data/data.npz\nmodel: {model: alices, hidden: 8, layers: 1}\ntraining: {epochs: 1, score_weight: 1}\n")
    assert main(["train", "--config", "scandal.toml", "--output", "scandal", "--quiet"]) == 0
    assert main(["train", "--config", "alices.yaml", "--output", "alices", "--quiet"]) == 0
    assert written(capsys.readouterr().out) == {"model.pt", "history.csv"}  # the standardization is inside model.pt
    assert main(["infer", "--checkpoint", "alices/model.pt", "--observed", "data/observed.npz", *TINY_MCMC, "--output", "infer"]) == 0
    assert written(capsys.readouterr().out) == {"posterior.nc", "summary.csv", "posterior.png"}


USER_SIMULATOR = textwrap.dedent('''\
    """A simulator outside the package: x = (u1, u2, u1 u2) with u ~ N(θ (1, 1), noise² I)."""

    import torch

    from mflow_sbi.simulator import Simulator, as_generator


    class Saddle(Simulator):
        theta_dim, data_dim, manifold_dim = 1, 3, 2

        def __init__(self, noise: float = 0.5) -> None:
            self.noise = noise

        @property
        def prior(self):
            return torch.distributions.Independent(torch.distributions.Uniform(torch.tensor([-1.0]), torch.tensor([1.0])), 1)

        @property
        def config(self):
            return {"noise": self.noise}

        def _simulate(self, theta, generator):
            u = theta + self.noise * torch.randn(len(theta), 2, generator=generator, dtype=theta.dtype)
            return torch.cat([u, u.prod(-1, keepdim=True)], -1)

        def exact_posterior_samples(self, x_observed, n, seed=0):
            """The prior U(-1, 1) times N(θ; mean of all u, noise² / 2m), by its inverse CDF."""
            u = x_observed[:, :2].double()
            mean, sd = u.mean(), self.noise / u.numel() ** 0.5
            low, high = torch.special.ndtr((torch.tensor([-1.0, 1.0], dtype=torch.float64) - mean) / sd)
            uniform = torch.rand(n, 1, generator=as_generator(seed), dtype=torch.float64)
            return mean + sd * torch.special.ndtri(low + uniform * (high - low))
''')

USER_YAML = MFLOW_YAML


def test_a_users_own_simulator_runs_the_whole_chain(tmp_path, capsys, monkeypatch):
    (tmp_path / "user_saddle_simulator.py").write_text(USER_SIMULATOR)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    name, options = "user_saddle_simulator:Saddle", ["--option", "noise=0.3"]
    assert main(["simulate", name, *options, "--n", "300", "--output", "data"]) == 0
    assert main(["simulate", name, *options, "--n", "10", "--theta", "0.4", "--seed", "1", "--name", "observed", "--output", "data"]) == 0
    description = json.loads(Path("data/observed.json").read_text())
    assert description["simulator_spec"] == {"name": name, "options": {"noise": 0.3}} and description["theta_names"] == ["theta_0"]
    assert description["arrays"] == {"x": [10, 3], "theta": [10, 1]}

    Path("mflow.yaml").write_text(USER_YAML)
    assert main(["train", "--config", "mflow.yaml", "--output", "train", "--quiet"]) == 0
    infer = ["infer", "--checkpoint", "train/model.pt", "--observed", "data/observed.npz", *TINY_MCMC, "--output", "infer"]
    assert main(infer) == 0
    assert main(["evaluate", "--samples", "infer/posterior.nc", "--max-samples", "200", "--output", "evaluate"]) == 0
    capsys.readouterr()
    table = pd.read_csv("evaluate/evaluation.csv")
    assert list(table["posterior"]) == ["posterior.nc", "reference (exact)"] and table.loc[1, "samples"] == 200
    assert 0 <= table.loc[0, "c2st"] <= 1 and np.isfinite(table["log_posterior_at_true_theta"]).all()

    # the recorded spec rebuilt the simulator with its option: a wrong one changes the reference
    assert main(["evaluate", "--samples", "infer/posterior.nc", "--option", "noise=3", "--max-samples", "200", "--output", "wide"]) == 0
    assert pd.read_csv("wide/evaluation.csv").loc[0, "mmd_squared"] != table.loc[0, "mmd_squared"]


def test_threads_option_sets_torch_threads_once(tmp_path, capsys):
    threads = torch.get_num_threads()
    assert main(["--threads", str(threads), "simulate", "polynomial_surface", "--n", "5", "--output", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads
    assert main(["--threads", "0", "simulate", "polynomial_surface", "--output", str(tmp_path)]) == 2
    assert "--threads must be ≥ 1" in capsys.readouterr().err


def test_benchmark_list(capsys):
    assert main(["benchmark", "--list"]) == 0
    names = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert "polynomial_surface_study" in names and "lhc_study" in names


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """Data, an (untrained) checkpoint and config files for the error cases."""
    folder = tmp_path_factory.mktemp("errors")
    assert main(["simulate", "polynomial_surface", "--n", "50", "--output", str(folder)]) == 0
    save_model(folder / "model.pt", MFlow(3, 1, 2, outer=TINY_FLOW, inner=TINY_FLOW), {"simulator_spec": {"name": "polynomial_surface"}})
    np.save(folder / "four_columns.npy", np.zeros((5, 4), dtype=np.float32))
    np.save(folder / "samples.npy", np.zeros((20, 1)))
    configs = {
        "bad_key.yaml": "data: data.npz\nmodel: {model: mflow, latent_dim: 2}\ntrainin: {epochs: 1}\n",
        "bad_flow_key.yaml": "data: data.npz\nmodel: {model: mflow, latent_dim: 2, inner: {layer: 2}}\n",
        "unknown_model.toml": 'data = "data.npz"\n[model]\nmodel = "nflow"\n',
        "wrong_dim.yaml": "data: data.npz\nmodel: {model: mflow, latent_dim: 2, data_dim: 4}\n",
        "scandal.yaml": "data: data.npz\nmodel: {model: af}\ntraining: {epochs: 1, score_weight: 1}\n",
        "bad_type.yaml": "data: data.npz\nmodel: {model: af}\ntraining: {epochs: one}\n",
        "config.json": "{}",
    }
    for name, text in configs.items():
        (folder / name).write_text(text)
    return folder


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["train", "--config", "{w}/missing.yaml"], "does not exist"),
        (["train", "--config", "{w}/config.json"], "must end in one of .yaml, .yml, .toml"),
        (["train", "--config", "{w}/bad_key.yaml"], "unknown config key 'trainin'; allowed: data, model"),
        (["train", "--config", "{w}/bad_flow_key.yaml"], "unknown config key 'model.inner.layer'; allowed: layers"),
        (["train", "--config", "{w}/unknown_model.toml"], "unknown model 'nflow'"),
        (["train", "--config", "{w}/wrong_dim.yaml"], "shape mismatch: model.data_dim = 4 but the data have 3"),
        (["train", "--config", "{w}/scandal.yaml"], "has no array 'joint_score'"),
        (["train", "--config", "{w}/bad_type.yaml"], "training.epochs must be of type int"),
        (["train", "--config", "{w}/scandal.yaml", "--data", "{w}/missing.npz"], "data file"),
        (["simulate", "polynomial_surface", "--theta", "3"], "outside the prior support"),
        (["simulate", "polynomial_surfac"], "unknown simulator 'polynomial_surfac': not a registered name"),
        (["simulate", "no_such_module_xyz:Sim"], "cannot import module 'no_such_module_xyz'"),
        (["simulate", "mflow_sbi.simulator:Nope"], "has no class 'Nope'"),
        (["simulate", "mflow_sbi.simulator:as_generator"], "not a subclass of mflow_sbi.simulator.Simulator"),
        (["simulate", "polynomial_surface", "--option", "tier"], "--option needs KEY=VALUE"),
        (["simulate", "polynomial_surface", "--option", "tier=parton"], "cannot build simulator 'polynomial_surface'"),
        (["simulate", "lhc_like", "--option", "tier=reco"], "tier must be one of"),
        (["simulate", "polynomial_surface", "--alices-reference"], "--alices-reference: polynomial_surface provides no reference events"),
        (["evaluate", "--samples", "{w}/samples.npy", "--simulator", "polynomial_surface", "--observed", "{w}/four_columns.npy"], "shape mismatch"),
        (["infer", "--checkpoint", "{w}/model.pt", "--observed", "{w}/four_columns.npy"], "shape mismatch"),
        (["infer", "--checkpoint", "{w}/model.pt", "--observed", "{w}/data.json"], "must end in one of .npz, .npy"),
        (["infer", "--checkpoint", "{w}/missing.pt", "--observed", "{w}/data.npz"], "does not exist"),
        (["evaluate", "--samples", "{w}/data.json"], "must end in one of .nc, .npy"),
        (["benchmark", "no_such_benchmark"], "unknown benchmark"),
    ],
)
def test_user_mistakes_in_subcommands_give_one_line_errors(workspace, tmp_path, capsys, arguments, message):
    arguments = [a.format(w=workspace) for a in arguments]
    if arguments[0] != "benchmark":
        arguments += ["--output", str(tmp_path / "out")]
    assert main(arguments) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mflow-sbi: error:") and "\n" not in err and message in err, err


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "examples" / "configs").iterdir()), ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    config = load_config(path)
    data_dim, theta_dim = (40, 3) if "lhc" in path.name else (3, 1)
    model_config(config["model"], data_dim, theta_dim)
    training_config(config.get("training", {}), progress=False)
