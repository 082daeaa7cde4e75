"""The simulator protocol's defaults and the registry: built-in simulators by name, a user's by
module:Class, clear errors, θ names, and `config` rebuilding an identical simulator."""

import json

import pytest
import torch

from mflow_sbi.simulator import Simulator, build_simulator, simulator_class, simulator_names

# small settings of every registered simulator (a new one must add its own here)
SMALL = {
    "polynomial_surface": {},
    "lhc_like": {"tier": "parton", "n_params": 2, "pool_draws": 2000},
    "image_manifold": {"manifold_dim": 2, "resolution": 16},
}


class Line(Simulator):
    """x = (θ + ε, 2(θ + ε)): the protocol's minimum, with every default."""

    theta_dim, data_dim = 1, 2

    @property
    def prior(self) -> torch.distributions.Distribution:
        return torch.distributions.Independent(torch.distributions.Normal(torch.zeros(1), torch.ones(1)), 1)

    def _simulate(self, theta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = theta + torch.randn(theta.shape, generator=generator, dtype=theta.dtype)
        return torch.cat([u, 2 * u], -1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The LHC-like normalization cache (not part of its config) in a temporary folder."""
    monkeypatch.setenv("MFLOW_SBI_CACHE", str(tmp_path))
    return tmp_path


def test_built_in_simulators_are_registered():
    assert sorted(SMALL) == simulator_names()
    for name in simulator_names():
        assert simulator_class(name).name == name


@pytest.mark.parametrize("name", sorted(SMALL))
def test_config_rebuilds_an_identical_simulator(name, cache):
    simulator = build_simulator(name, **SMALL[name])
    config = json.loads(json.dumps(simulator.config))  # JSON-serializable
    again = build_simulator(name, **config)
    assert again.config == simulator.config and type(again) is type(simulator)
    theta = simulator.sample_prior(4, seed=0)
    assert torch.equal(simulator.simulate(theta, seed=1), again.simulate(theta, seed=1))
    for key, value in SMALL[name].items():
        assert config[key] == value


@pytest.mark.parametrize("name", sorted(SMALL))
def test_theta_names_and_data_set_arrays(name, cache):
    simulator = build_simulator(name, **SMALL[name])
    assert len(simulator.theta_names) == simulator.theta_dim
    arrays = simulator.simulate_arrays(6, seed=2)
    assert arrays["x"].shape[0] == 6 and arrays["theta"].shape == (6, simulator.theta_dim)
    fixed = simulator.simulate_arrays(3, seed=2, theta=simulator.sample_prior(1, seed=3))
    assert (fixed["theta"] == fixed["theta"][0]).all()


def test_theta_names_of_the_built_in_simulators(cache):
    assert build_simulator("polynomial_surface").theta_names == ("theta",)
    assert build_simulator("image_manifold", **SMALL["image_manifold"]).theta_names == ("theta",)
    assert build_simulator("lhc_like", **SMALL["lhc_like"]).theta_names == ("theta_1", "theta_2")
    assert build_simulator("lhc_like", pool_draws=2000).theta_names == ("theta_1", "theta_2", "theta_3")


def test_a_simulator_outside_the_registry_has_the_protocol_defaults():
    assert Line.name == f"{__name__}:Line" and isinstance(build_simulator(Line.name), Line)
    line = Line()
    assert line.theta_names == ("theta_0",) and line.config == {}
    arrays = line.simulate_arrays(5, seed=0)
    assert sorted(arrays) == ["theta", "x"]  # no gold data
    theta, x = line.simulate_joint(5, seed=0)
    assert torch.equal(torch.from_numpy(arrays["x"]), x) and torch.equal(torch.from_numpy(arrays["theta"]), theta)
    with pytest.raises(NotImplementedError, match="provides no exact posterior"):
        line.exact_posterior_samples(x, 10)
    with pytest.raises(NotImplementedError, match="provides no reference events"):
        line.simulate_reference_events(5, seed=0)


def test_gold_data_joins_the_data_set_arrays():
    arrays = build_simulator("image_manifold", **SMALL["image_manifold"]).simulate_arrays(4, seed=0)
    assert sorted(arrays) == ["joint_log_ratio", "joint_score", "latent", "theta", "theta_ref", "x"]
    assert arrays["x"].shape == (4, 3, 16, 16) and arrays["latent"].shape == (4, 2)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("nope", {}, "unknown simulator 'nope': not a registered name"),
        ("no_such_module_xyz:Sim", {}, "cannot import module 'no_such_module_xyz'"),
        ("mflow_sbi.simulator:Missing", {}, "has no class 'Missing'"),
        ("mflow_sbi.simulator:as_generator", {}, "not a subclass of mflow_sbi.simulator.Simulator"),
        ("mflow_sbi.simulator:Simulator", {}, "cannot build simulator 'mflow_sbi.simulator:Simulator'"),  # abstract
        ("polynomial_surface", {"tier": "parton"}, "cannot build simulator 'polynomial_surface' with options"),
        ("lhc_like", {"tier": "reco"}, "tier must be one of"),
    ],
)
def test_registry_errors_name_the_problem(name, options, match):
    with pytest.raises(ValueError, match=match):
        build_simulator(name, **options)
