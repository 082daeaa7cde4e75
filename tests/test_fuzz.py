"""Property-based fuzzing of the public API (hypothesis), as a hostile user would call it: every
case ends in a correct result or a `ValueError` / `TypeError` naming the argument — never a
silent wrong result, a NaN, or a raw error from deep inside torch, numpy or zipfile.

Areas: the estimators of the registry (shapes, dtypes, NaN/Inf, empty batches), the likelihood
with a prior (out-of-support θ), configurations (`TrainingConfig`, flow settings), posteriors of
degenerate likelihoods, damaged checkpoint and data files, and output names at the command line.
Examples per test are few (`FUZZ`) so the default run stays bounded."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mflow_sbi.cli import main
from mflow_sbi.cli_commands.common import UsageError, file_stem, read_arrays
from mflow_sbi.inference import grid_posterior, mcmc_posterior
from mflow_sbi.registry import build_estimator, estimator_arguments
from mflow_sbi.training import CheckpointError, TrainingConfig, load_model, save_model
from mflow_sbi.transforms import FlowConfig
from test_estimators import CASES, fitted, make

FUZZ = settings(max_examples=30, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
ESTIMATORS = {case: fitted(make(case)) for case in sorted(CASES)}
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool, torch.complex64]


def names_the_argument(error: Exception, *names: str) -> bool:
    return any(name in str(error) for name in names)


@st.composite
def tensors(draw, shape: tuple[int, ...], batch: int):
    """A batch of `batch` rows of `shape`, right half the time and otherwise wrong in one way:
    another batch size, a wrong event shape or rank, another dtype (floating ones are cast,
    others refused), or a NaN/±Inf entry."""
    flaw = draw(st.sampled_from(["none", "none", "none", "batch", "shape", "dtype", "non-finite"]))
    event = list(shape)
    if flaw == "batch":
        batch = draw(st.sampled_from([b for b in range(5) if b != batch]))
    if flaw == "shape":
        event = draw(st.sampled_from([[], [*event, 1], [event[0] + 1, *event[1:]], [1] * len(event)]))
    values = torch.randn(batch, *event, generator=torch.Generator().manual_seed(draw(st.integers(0, 99))), dtype=torch.float64)
    if flaw == "non-finite" and values.numel():
        values.view(-1)[draw(st.integers(0, values.numel() - 1))] = draw(st.sampled_from([math.nan, math.inf, -math.inf]))
    return values.to(draw(st.sampled_from(DTYPES))) if flaw == "dtype" else values


def well_formed(value: torch.Tensor, shape: tuple[int, ...]) -> bool:
    return value.is_floating_point() and tuple(value.shape[1:]) == shape and bool(torch.isfinite(value).all())


@pytest.mark.parametrize("case", sorted(CASES))
@FUZZ
@given(data=st.data())
def test_log_prob_gives_a_result_of_the_right_shape_or_an_error_naming_the_argument(case, data):
    estimator = ESTIMATORS[case]
    batch = data.draw(st.integers(0, 4), "batch")
    x = data.draw(tensors(estimator.event_shape, batch), "x")
    theta = data.draw(tensors((estimator.theta_dim,), batch), "theta")
    valid = well_formed(x, estimator.event_shape) and well_formed(theta, (estimator.theta_dim,)) and len(x) == len(theta)
    try:
        with torch.no_grad():
            result = estimator.log_prob(x, theta, exact=False)
    except (ValueError, TypeError) as error:
        assert not valid, f"valid input refused: {error}"
        assert names_the_argument(error, "x", "theta", "batch"), error
        return
    assert valid, f"bad input accepted: x {x.dtype} {tuple(x.shape)}, theta {theta.dtype} {tuple(theta.shape)}"
    assert result.shape == (len(x),) and bool(torch.isfinite(result).all())
    cast = estimator.log_prob(x.to(estimator.dtype), theta.to(estimator.dtype), exact=False)  # inputs are cast as documented
    torch.testing.assert_close(result, cast.detach())


@pytest.mark.parametrize("case", sorted(CASES))
@FUZZ
@given(data=st.data())
def test_the_likelihood_of_observed_events_refuses_theta_outside_the_prior(case, data):
    estimator = ESTIMATORS[case]
    prior = torch.distributions.Independent(
        torch.distributions.Uniform(-torch.ones(estimator.theta_dim, dtype=torch.float64), torch.ones(estimator.theta_dim, dtype=torch.float64)), 1
    )
    x_observed = torch.randn(3, *estimator.event_shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    likelihood = estimator.likelihood(x_observed, prior=prior)
    theta = data.draw(tensors((estimator.theta_dim,), data.draw(st.integers(0, 4), "batch")), "theta")
    scale = data.draw(st.sampled_from([0.5, 3.0]), "scale")  # 3: most rows outside the prior
    theta = theta * scale if theta.is_floating_point() else theta
    try:
        result = likelihood(theta)
    except (ValueError, TypeError) as error:
        outside = well_formed(theta, (estimator.theta_dim,)) and bool((theta.abs() >= 1).any())
        assert outside or not well_formed(theta, (estimator.theta_dim,)), f"valid θ refused: {error}"
        assert names_the_argument(error, "theta"), error
        return
    assert well_formed(theta, (estimator.theta_dim,)) and bool((theta.abs() < 1).all())
    assert result.shape == (len(theta),) and bool(torch.isfinite(result).all())


@pytest.mark.parametrize("case", [c for c in sorted(CASES) if c not in ("alices", "pie-original")])
@FUZZ
@given(data=st.data())
def test_sampling_gives_events_of_the_declared_shape_or_an_error_naming_theta(case, data):
    estimator = ESTIMATORS[case]
    theta = data.draw(tensors((estimator.theta_dim,), data.draw(st.integers(0, 4), "batch")), "theta")
    try:
        with torch.no_grad():
            x = estimator.sample(theta, torch.Generator().manual_seed(0))
    except (ValueError, TypeError) as error:
        assert not well_formed(theta, (estimator.theta_dim,)), f"valid θ refused: {error}"
        assert names_the_argument(error, "theta"), error
        return
    assert x.shape == (len(theta), *estimator.event_shape) and bool(torch.isfinite(x).all())


# ---- configurations ----------------------------------------------------------------------------
ANY_VALUE = st.one_of(
    st.integers(-3, 3), st.floats(allow_nan=True, allow_infinity=True, width=32), st.none(), st.booleans(), st.text(max_size=3)
)
TRAINING_FIELDS = list(TrainingConfig.__dataclass_fields__)
SWITCHES = ("progress", "restore_best")  # the True/False settings
FLOW_FIELDS = ["layers", "bins", "bound", "hidden", "blocks", "mixing", "coupling"]


@FUZZ
@given(field=st.sampled_from(TRAINING_FIELDS), value=ANY_VALUE)
def test_every_training_setting_is_validated_at_construction(field, value):
    try:
        config = TrainingConfig(**{field: value})
    except (ValueError, TypeError) as error:
        assert f"TrainingConfig.{field}" in str(error), error
        return
    stored = getattr(config, field)
    if field in SWITCHES:
        assert isinstance(stored, bool), (field, value)
        return
    assert stored is None or (not isinstance(stored, bool) and math.isfinite(stored)), (field, value)
    if field in ("epochs", "batch_size", "density_batch_size", "patience"):
        assert stored is None or stored >= 1
    if field in ("learning_rate", "clip_norm", "reconstruction_weight", "score_weight"):
        assert stored is None or stored > 0
    if field == "validation_fraction":
        assert 0 < stored < 1


@FUZZ
@given(part=st.sampled_from(["inner", "outer"]), field=st.sampled_from(FLOW_FIELDS), value=ANY_VALUE)
def test_every_flow_setting_is_validated_at_construction(part, field, value):
    try:
        model = build_estimator({**CASES["mflow"], part: {**CASES["mflow"][part], field: value}})
    except (ValueError, TypeError) as error:
        assert field in str(error), error
        return
    config = FlowConfig(**model.config[part])
    assert config.layers >= 1 and config.bins >= 2 and 0 < config.bound < math.inf and config.hidden >= 1 and config.blocks >= 0
    x, theta = torch.randn(4, 3), torch.rand(4, 2)
    assert bool(torch.isfinite(model.log_prob(x, theta)).all())  # a config that is accepted works


# ---- posteriors of degenerate likelihoods -------------------------------------------------------
PRIOR = torch.distributions.Independent(torch.distributions.Uniform(-torch.ones(2), torch.ones(2)), 1)


@FUZZ
@given(kind=st.sampled_from(["-inf", "nan", "+inf"]), where=st.sampled_from(["everywhere", "left half", "a corner"]))
def test_posteriors_of_a_degenerate_likelihood_raise_or_stay_in_its_support(kind, where):
    value = {"-inf": -math.inf, "nan": math.nan, "+inf": math.inf}[kind]
    region = {"everywhere": lambda t: torch.ones(len(t), dtype=torch.bool), "left half": lambda t: t[:, 0] < 0,
              "a corner": lambda t: (t > 0.5).all(-1)}[where]  # fmt: skip

    def log_likelihood(theta: torch.Tensor) -> torch.Tensor:
        return torch.where(region(theta), torch.full((len(theta),), value, dtype=theta.dtype), -(theta**2).sum(-1))

    def mcmc_samples_in_region():
        return region(mcmc_posterior(log_likelihood, PRIOR, num_samples=256, walkers=32, burn_in=30, progress=False).samples).any()

    def grid_mass_in_region():  # a grid posterior is piecewise constant: its cells, not its jittered draws
        grid = grid_posterior(log_likelihood, PRIOR, resolution=21)
        return grid.probabilities[region(grid.grid)].sum() > 0

    for in_region in (mcmc_samples_in_region, grid_mass_in_region):
        try:
            with warnings.catch_warnings():  # low-ESS warnings are expected from these short chains
                warnings.simplefilter("ignore", RuntimeWarning)
                wrong = bool(in_region())
        except ValueError as error:
            assert "log_likelihood" in str(error) or "log_density" in str(error), error
            continue
        assert kind == "-inf" and where != "everywhere", "a likelihood with NaN/+inf, or -inf everywhere, gave a posterior"
        assert not wrong, f"{in_region.__name__}: posterior mass where the likelihood is -inf"


# ---- damaged files ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    checkpoint = save_model(folder / "model.pt", build_estimator({**CASES["mflow"]}))
    np.savez(folder / "data.npz", x=np.zeros((5, 3)), theta=np.zeros((5, 1)), metadata=np.array('{"n": 5}'))
    return checkpoint.read_bytes(), (folder / "data.npz").read_bytes()


def damage(draw, raw: bytes) -> bytes:
    """Truncate, flip bytes in, or prefix the file."""
    how = draw(st.sampled_from(["truncate", "flip", "prefix"]))
    if how == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if how == "prefix":
        return draw(st.binary(min_size=1, max_size=16)) + raw
    data = bytearray(raw)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
    return bytes(data)


def read_damaged(path: Path, raw: bytes, draw, read, error: type[Exception], unsafe_advice: str):
    """`read` of `raw` damaged and written to `path`: (its result, None), or (None, the message of
    the `error` it raised, checked to name the file and not to advise `unsafe_advice`)."""
    path.write_bytes(damage(draw, raw))
    try:
        return read(path), None
    except error as exception:
        message = str(exception)
        assert str(path) in message and unsafe_advice not in message, message
        return None, message


@FUZZ
@given(data=st.data())
def test_a_damaged_checkpoint_loads_intact_or_fails_naming_the_file(good_files, tmp_path, data):
    loaded, message = read_damaged(tmp_path / "damaged.pt", good_files[0], data.draw, load_model, CheckpointError, "weights_only")
    if loaded is None:
        assert "\n" not in message, message
        return
    # bytes in parts torch does not read (zip padding, comments) may change without harm; then
    # the model must be the one saved
    reference = build_estimator({**CASES["mflow"]})
    x, theta = torch.randn(4, 3), torch.rand(4, 2)
    torch.testing.assert_close(loaded[0].log_prob(x, theta), reference.log_prob(x, theta))


@FUZZ
@given(data=st.data())
def test_a_damaged_data_file_reads_intact_or_fails_naming_the_file(good_files, tmp_path, data):
    read, _ = read_damaged(tmp_path / "damaged.npz", good_files[1], data.draw, read_arrays, UsageError, "allow_pickle")
    if read is None:
        return
    arrays, metadata = read
    assert set(arrays) == {"x", "theta"} and metadata == {"n": 5}  # zip ignores bytes outside its records and CRC-checks the rest
    assert np.array_equal(arrays["x"], np.zeros((5, 3))) and np.array_equal(arrays["theta"], np.zeros((5, 1)))


@FUZZ
@given(name=st.text(alphabet="ab./\\~", min_size=0, max_size=6))
def test_output_names_stay_inside_the_output_folder(tmp_path, name):
    try:
        stem = file_stem(name, "--name")
    except UsageError as error:
        assert "--name" in str(error)
        return
    output = tmp_path / "out"
    assert (output / f"{stem}.npz").resolve().parent == output.resolve()


def test_simulate_refuses_a_name_outside_the_output_folder(tmp_path, capsys):
    assert main(["simulate", "polynomial_surface", "--n", "5", "--name", "../escape", "--output", str(tmp_path / "out")]) == 2
    assert "--name must be a plain file name" in capsys.readouterr().err
    assert not (tmp_path / "escape.npz").exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", sorted(CASES))
@FUZZ
@given(data=st.data())
def test_every_constructor_argument_is_validated_at_construction(case, data):
    arguments = [a for a in estimator_arguments(CASES[case]["model"]) if a not in ("data_dim", "image_shape", "inner", "outer", "stacked", "flow")]
    argument = data.draw(st.sampled_from(arguments), "argument")
    value = data.draw(st.one_of(ANY_VALUE, st.sampled_from(["auto", 1.5, 0, -1, math.nan])), "value")
    try:
        model = build_estimator({**CASES[case], argument: value})
    except (ValueError, TypeError) as error:
        assert argument in str(error), error
        return
    x = torch.randn(4, *model.event_shape, generator=torch.Generator().manual_seed(0))
    theta = torch.rand(4, model.theta_dim, generator=torch.Generator().manual_seed(1))
    assert bool(torch.isfinite(model.log_prob(x, theta, exact=False)).all()), (argument, value)  # an accepted value works
    assert build_estimator(model.config).config == model.config  # and survives the config round trip
