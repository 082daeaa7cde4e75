"""The LHC-like simulator against its own exact structure: PSD matrix elements, gold data,
closure, the manifold's dimension, the exact likelihood and the exact posterior."""

import math

import numpy as np
import pytest
import torch

from simulators import LHCLike
from simulators.lhc_like import OBSERVABLE_NAMES, load_dataset, save_dataset, signed_delta_phi_jj
from simulators.lhc_like.dataset import dataset_arrays
from simulators.lhc_like import amplitudes, chart, kinematics, normalization, phase_space
from simulators.lhc_like.kinematics import from_pt_eta, from_pt_rapidity, observables, sort_by_pt

POOL = 400_000  # proposal draws for S in these tests (the default is 2·10⁶)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("lhc-cache")


@pytest.fixture(scope="module")
def hadron(cache):
    return LHCLike("hadron", cache_dir=cache, pool_draws=POOL)


@pytest.fixture(scope="module")
def parton(cache):
    return LHCLike("parton", cache_dir=cache, pool_draws=POOL)


@pytest.fixture(scope="module")
def detector(cache):
    return LHCLike("detector", cache_dir=cache, pool_draws=POOL)


@pytest.fixture(scope="module")
def hadron_sample(hadron):
    theta = hadron.sample_prior(3000, seed=11).double()
    x, gold = hadron.simulate(theta, seed=12, return_gold=True)
    return theta, x, gold


def test_observables_are_named_and_simulation_is_seeded(hadron):
    assert len(OBSERVABLE_NAMES) == len(set(OBSERVABLE_NAMES)) == 40
    assert OBSERVABLE_NAMES[:6] == ("a1_E", "a1_px", "a1_py", "a1_pz", "a1_pt", "a1_eta")
    assert OBSERVABLE_NAMES[-8:] == ("jj_E", "jj_px", "jj_py", "jj_pz", "jj_pt", "jj_m", "jj_eta", "jj_deta")
    theta = hadron.sample_prior(50, seed=0)
    a, b = hadron.simulate(theta, seed=3), hadron.simulate(theta, seed=3)
    assert a.shape == (50, 40) and a.dtype == theta.dtype and torch.equal(a, b)
    assert not torch.equal(a, hadron.simulate(theta, seed=4))
    assert len(torch.unique(a, dim=0)) == 50  # no duplicated events
    frame = hadron.to_dataframe(a)
    assert list(frame.columns) == list(OBSERVABLE_NAMES) and frame["a1_pt"].iloc[0] == pytest.approx(float(a[0, 4]))


def test_currents_are_conserved_and_normalized():
    generator = torch.Generator().manual_seed(0)
    z = phase_space.sample_proposal(100, phase_space.Cuts(), phase_space.Proposal(), generator)
    event = phase_space.hard_event(z)
    for incoming in event.incoming:
        for outgoing in event.jets:
            j = amplitudes.current(outgoing, incoming)
            scale = (outgoing[:, 0] * incoming[:, 0]).unsqueeze(-1)
            for p in (incoming, outgoing):  # ū(k) p̸ u(p) = 0 for massless on-shell spinors
                assert (kinematics.dot(p.to(j.dtype), j).abs() / scale.squeeze(-1)).max() < 1e-12
    jet = event.jets[0]
    torch.testing.assert_close(amplitudes.current(jet, jet), (2 * jet).to(torch.complex128))  # ξ†σ̄ξ = 2p


def test_matrix_element_matrix_is_psd_and_symmetric(hadron_sample):
    _, _, gold = hadron_sample
    h = gold.matrix
    torch.testing.assert_close(h, h.mT)
    eigenvalues = torch.linalg.eigvalsh(h)
    assert (eigenvalues[:, 0] >= -1e-12 * eigenvalues[:, -1]).all()
    # H is symmetric under exchanging the jets (both assignments to the incoming quarks)
    z = gold.latent[:200]
    swapped = z[:, [3, 4, 5, 0, 1, 2, 6, 7, 8]]
    for latent in (z, swapped):
        event = phase_space.hard_event(latent)
        torch.testing.assert_close(amplitudes.matrix_element_matrix(event.incoming, event.jets), h[:200])


def test_joint_score_is_the_derivative_of_the_joint_log_density(hadron, hadron_sample):
    theta, _, gold = hadron_sample
    theta, matrix = theta[:500], gold.matrix[:500]
    step = 1e-5
    for k in range(3):
        shift = torch.zeros(3, dtype=torch.float64)
        shift[k] = step
        difference = hadron.joint_log_density(matrix, theta + shift) - hadron.joint_log_density(matrix, theta - shift)
        torch.testing.assert_close(gold.joint_score[:500, k], difference / (2 * step), atol=1e-6, rtol=1e-6)


def test_joint_log_ratios_compose(hadron, hadron_sample):
    theta, _, gold = hadron_sample
    thetas = [hadron.sample_prior(len(theta), seed=s).double() for s in (1, 2, 3)]
    r01 = hadron.joint_log_ratio(gold.matrix, thetas[0], thetas[1])
    r12 = hadron.joint_log_ratio(gold.matrix, thetas[1], thetas[2])
    r02 = hadron.joint_log_ratio(gold.matrix, thetas[0], thetas[2])
    torch.testing.assert_close(r01 + r12, r02)  # r(θ0,θ1) · r(θ1,θ2) = r(θ0,θ2)
    torch.testing.assert_close(gold.joint_log_ratio, hadron.joint_log_ratio(gold.matrix, theta, torch.zeros_like(theta)))


def test_hadron_events_pass_every_closure_identity(hadron, hadron_sample):
    _, x, _ = hadron_sample
    residuals = kinematics.closure_residuals(x)
    assert residuals.shape == (len(x), 26) and len(kinematics.CLOSURE_NAMES) == 26
    assert residuals.abs().max() < 1e-12
    assert hadron.closure(x) < 1e-11
    shuffled = torch.stack([x[torch.randperm(len(x)), k] for k in range(40)], -1)
    assert 0.5 < hadron.closure(shuffled) < 2.0  # a product of marginals scores ≈ 1


def test_detector_events_stay_on_the_manifold(detector, hadron):
    theta = detector.sample_prior(2000, seed=5).double()
    smeared, clean = detector.simulate(theta, seed=6), hadron.simulate(theta, seed=6)
    assert kinematics.closure_residuals(smeared).abs().max() < 1e-12
    assert (smeared - clean).abs().max() > 0.1  # the smearing did something
    with pytest.raises(ValueError, match="detector"):
        detector.log_likelihood(smeared, theta)


def primary_to_observables(primary):
    """(pT, η, φ) of two photons and (pT, η, φ, m) of two jets (14) -> x (40)."""
    p = primary.unsqueeze(0)
    photons = [from_pt_eta(p[:, 3 * k], p[:, 3 * k + 1], p[:, 3 * k + 2], 0.0) for k in (0, 1)]
    jets = [from_pt_eta(p[:, 6 + 4 * k], p[:, 7 + 4 * k], p[:, 8 + 4 * k], p[:, 9 + 4 * k]) for k in (0, 1)]
    return observables(sort_by_pt(*photons), sort_by_pt(*jets)).squeeze(0)


def numerical_rank(jacobian):
    singular = torch.linalg.svdvals(jacobian)
    return int((singular > 1e-9 * singular[0]).sum())


def test_observables_have_rank_14_in_the_primary_variables(hadron_sample):
    _, x, _ = hadron_sample
    momenta = kinematics.momenta_from_observables(x[:20])
    for row, event in enumerate(momenta):
        pt, eta, phi = kinematics.transverse_momentum(event), kinematics.pseudorapidity(event), kinematics.azimuth(event)
        photons = torch.stack([pt[:2], eta[:2], phi[:2]], -1).flatten()
        jets = torch.stack([pt[2:], eta[2:], phi[2:], kinematics.mass(event[2:])], -1).flatten()
        primary = torch.cat([photons, jets])
        torch.testing.assert_close(primary_to_observables(primary), x[row])
        assert numerical_rank(torch.func.jacfwd(primary_to_observables)(primary)) == 14


def latent_to_observables(u):
    """(z) (9) at the parton level or (z, ν) (14) at the hadron level -> x (40)."""
    nuisance = u[None, 9:] if len(u) > 9 else None
    return chart.sorted_observables(chart.labelled_momenta(u[None, :9], nuisance)).squeeze(0)


@pytest.mark.parametrize("tier, dimension", [("parton", 9), ("hadron", 14)])
def test_chart_from_latent_variables_has_the_manifold_dimension(tier, dimension, hadron, parton, hadron_sample):
    _, _, gold = hadron_sample
    for z, nu in zip(gold.latent[:10], gold.nuisance[:10]):
        point = z if tier == "parton" else torch.cat([z, nu])
        assert numerical_rank(torch.func.jacfwd(latent_to_observables)(point)) == dimension
    assert {"parton": parton, "hadron": hadron}[tier].manifold_dim == dimension


def test_chart_spectrum_shows_why_nearest_neighbour_estimates_see_about_ten_of_the_fourteen_directions(
    hadron, parton, hadron_sample
):
    _, x, _ = hadron_sample
    spectrum = hadron.chart_spectrum(x, events=20)
    z, nu = hadron.latent(x)
    latent = torch.cat([z, nu], -1)
    x_scale, latent_scale = x.std(0).clamp_min(1e-12), latent.std(0)
    brute_force = torch.stack([
        torch.linalg.svdvals(torch.func.jacfwd(lambda w: latent_to_observables(w * latent_scale) / x_scale)(w))
        for w in latent[:20] / latent_scale
    ])  # fmt: skip
    torch.testing.assert_close(spectrum, brute_force.median(0).values)
    # the median nearest-neighbour distance of z-scored hadron data is ≈ 2.2: four directions are
    # at most a tenth of it (measured 0.12, 0.08, 5e-4, 5e-5), the other ten at least half of it
    assert spectrum.shape == (14,) and bool((spectrum[:10] > 0.9).all()) and bool((spectrum[10:] < 0.2).all())
    parton_x = parton.simulate(parton.sample_prior(3000, seed=11), seed=12)
    assert bool((parton.chart_spectrum(parton_x, events=20) > 0.9).all())


def test_inverting_the_chart_recovers_the_latent_variables(hadron, hadron_sample):
    _, x, gold = hadron_sample
    z, nu = hadron.latent(x)
    event = phase_space.hard_event(z)
    # H does not depend on the labelling, the nuisance only up to exchanging the jets
    torch.testing.assert_close(amplitudes.matrix_element_matrix(event.incoming, event.jets), gold.matrix)
    torch.testing.assert_close(nu[:, [0, 3, 4]], gold.nuisance[:, [0, 3, 4]])
    torch.testing.assert_close(nu[:, 1:3].sort(-1).values, gold.nuisance[:, 1:3].sort(-1).values)
    torch.testing.assert_close(z[:, 6], gold.latent[:, 6])  # the Higgs rapidity


def test_hadron_likelihood_ratio_equals_the_joint_ratio(hadron, hadron_sample):
    # at the hadron tier z is a function of x, so p(x|θ0)/p(x|θ1) = r(x, z|θ0, θ1) exactly
    theta, x, gold = hadron_sample
    reference = torch.zeros_like(theta)
    ratio = hadron.log_likelihood(x, theta) - hadron.log_likelihood(x, reference)
    torch.testing.assert_close(ratio, gold.joint_log_ratio)


@pytest.mark.parametrize("tier", ["parton", "hadron"])
def test_exact_likelihood_integrates_to_one(tier, parton, hadron):
    """E_q[p(z, ν|θ) / (q(z) p(ν))] = 1 over fresh proposal draws, with the density evaluated
    from x through the simulator's public log_likelihood."""
    simulator = {"parton": parton, "hadron": hadron}[tier]
    generator = torch.Generator().manual_seed(99)
    z = phase_space.sample_proposal(100_000, simulator.cuts, simulator.proposal, generator)
    nuisance = simulator.sample_nuisance(len(z), generator)
    x = simulator.observe(z, nuisance, generator)
    log_proposal = phase_space.log_proposal_density(z, simulator.cuts, simulator.proposal)
    if tier == "hadron":
        log_proposal = log_proposal + simulator.nuisance.log_prob(nuisance)
    theta = torch.tensor([[0.4, -0.8, 0.6]], dtype=torch.float64)
    sigma, sigma_error = simulator.cross_section(theta)
    ratios = torch.exp(simulator.log_likelihood(x, theta) - log_proposal)
    integral, error = float(ratios.mean()), float(ratios.std() / math.sqrt(len(ratios)))
    assert integral == pytest.approx(1.0, abs=4 * math.hypot(error, float(sigma_error / sigma)))
    assert error < 0.03


def test_sampled_events_follow_the_weighted_proposal(hadron):
    """An observable's mean over exact samples equals its importance-weighted mean E_q[w vᵀHv f]/σ
    (here the signed Δφ_jj asymmetry, which only the CP-odd θ2 creates, and the mean jet pT)."""
    theta = torch.tensor([[0.3, 1.2, -0.4]], dtype=torch.float64)
    x = hadron.simulate(theta.expand(4000, -1), seed=21)
    candidates = normalization.draw_candidates(200_000, hadron.cuts, hadron.proposal, torch.Generator().manual_seed(22))
    v = normalization.coupling_vector(theta)
    weights = candidates.weight * torch.einsum("k,nkl,l->n", v[0], candidates.matrix, v[0])
    parton_x = chart.sorted_observables(chart.labelled_momenta(candidates.latent, None))
    for name, value, expected_value in (
        ("asymmetry", torch.sign(signed_delta_phi_jj(x)), torch.sign(signed_delta_phi_jj(parton_x))),
        ("jet pT", x[:, 16] / 100, parton_x[:, 16] / 100),
    ):
        expected = float((weights * expected_value).sum() / weights.sum())
        ess = float(weights.sum() ** 2 / (weights**2).sum())
        sampled_error = float(value.std()) / math.sqrt(len(value))
        tolerance = 4 * math.hypot(sampled_error, float(expected_value.std()) / math.sqrt(ess))
        if name == "jet pT":  # the recoil and jet masses shift pT slightly at the hadron tier
            tolerance += 0.02
        assert float(value.mean()) == pytest.approx(expected, abs=tolerance), name


def test_each_parameter_changes_a_histogram(hadron):
    """θ_k = 1.2 against the SM, on the key distributions: a χ² per degree of freedom far above
    what two SM samples give."""
    n = 4000
    sm = hadron.simulate(torch.zeros(n, 3, dtype=torch.float64), seed=30)
    sm_again = hadron.simulate(torch.zeros(n, 3, dtype=torch.float64), seed=31)
    features = {
        "pT(j1)": lambda x: torch.log(x[:, 16]),
        "signed Δφ_jj": signed_delta_phi_jj,
        "m_jj": lambda x: torch.log(x[:, 37]),
        "Δη_jj": lambda x: x[:, 39].abs(),
    }

    def chi2_per_bin(a, b, feature):
        fa, fb = feature(a), feature(b)
        edges = torch.quantile(torch.cat([fa, fb]), torch.linspace(0, 1, 11, dtype=torch.float64))
        ha = torch.histogram(fa, edges).hist
        hb = torch.histogram(fb, edges).hist
        return float(((ha - hb) ** 2 / (ha + hb).clamp(min=1)).sum() / 10)

    baseline = max(chi2_per_bin(sm, sm_again, f) for f in features.values())
    assert baseline < 3.0
    for k in range(3):
        theta = torch.zeros(n, 3, dtype=torch.float64)
        theta[:, k] = 1.2
        shifted = hadron.simulate(theta, seed=40 + k)
        strongest = max(chi2_per_bin(sm, shifted, f) for f in features.values())
        assert strongest > 10.0, f"θ{k + 1} leaves every key distribution unchanged (χ²/bin {strongest:.1f})"


def test_cross_section_is_calibrated_and_cached(hadron, cache, monkeypatch, tmp_path):
    axes = torch.cat([torch.zeros(1, 3), torch.eye(3), -torch.eye(3)]).double()
    sigma, error = hadron.cross_section(axes)
    assert (error / sigma < 0.02).all() and (sigma > 0).all()
    for k in range(3):  # θ_k = ±1 changes the rate by O(1)
        change = torch.stack([sigma[1 + k], sigma[4 + k]]) / sigma[0]
        assert float((change - 1).abs().max()) > 0.2 and (change < 5).all()
    files = list(cache.glob("lhc_like-normalization-*.npz"))
    assert len(files) == 1 and hadron.settings_key in files[0].name
    again = LHCLike("hadron", cache_dir=cache, pool_draws=POOL)
    assert torch.equal(again.normalization.matrix, hadron.normalization.matrix)
    monkeypatch.setenv(normalization.CACHE_ENVIRONMENT_VARIABLE, str(tmp_path))
    LHCLike("parton", pool_draws=2000).cross_section(torch.zeros(1, 3))
    assert len(list(tmp_path.glob("lhc_like-normalization-*.npz"))) == 1
    assert 0 < hadron.normalization.unweighting_efficiency() < 1


def test_morphing_reproduces_the_matrix_element(hadron, hadron_sample):
    _, _, gold = hadron_sample
    morphing = hadron.morphing
    assert morphing.benchmarks.shape == (10, 3) and morphing.matrix.shape == (10, 10)
    values = morphing.benchmark_values(gold.matrix, normalization.coupling_vector)  # (n, 10)
    theta = hadron.sample_prior(len(values), seed=8).double()
    morphed = (morphing.weights(theta) * values).sum(-1)
    v = normalization.coupling_vector(theta)
    torch.testing.assert_close(morphed, torch.einsum("nk,nkl,nl->n", v, gold.matrix, v))
    identity = torch.eye(10, dtype=torch.float64)
    torch.testing.assert_close(morphing.weights(morphing.benchmarks), identity, atol=1e-12, rtol=0)


def test_two_parameters_freeze_the_third(cache):
    two = LHCLike("hadron", n_params=2, cache_dir=cache, pool_draws=POOL)
    three = LHCLike("hadron", n_params=3, cache_dir=cache, pool_draws=POOL)
    theta = two.sample_prior(200, seed=2).double()
    x2, gold2 = two.simulate(theta, seed=9, return_gold=True)
    x3, gold3 = three.simulate(torch.cat([theta, torch.zeros(200, 1, dtype=torch.float64)], -1), seed=9, return_gold=True)
    assert two.theta_dim == 2 and gold2.joint_score.shape == (200, 2)
    torch.testing.assert_close(x2, x3)
    torch.testing.assert_close(gold2.joint_score, gold3.joint_score[:, :2])
    assert two.morphing.matrix.shape == (6, 6)


def test_datasets_round_trip_with_metadata(hadron, tmp_path):
    dataset = hadron.simulate_dataset(300, seed=17)
    path = save_dataset(tmp_path / "train", dataset)
    loaded = load_dataset(path)
    assert path.suffix == ".npz" and not list(tmp_path.glob("*.tmp"))
    assert torch.equal(loaded.x, dataset.x) and torch.equal(loaded.theta, dataset.theta)
    for field in ("latent", "nuisance", "matrix", "joint_score", "joint_log_ratio", "theta_ref"):
        assert torch.equal(getattr(loaded.gold, field), getattr(dataset.gold, field)), field
    assert loaded.metadata["tier"] == "hadron" and loaded.metadata["seed"] == 17
    assert loaded.metadata["version"] == normalization.VERSION and len(loaded.metadata["observable_names"]) == 40
    frame = loaded.to_dataframe()
    assert frame.shape == (300, 40 + 3 + 3 + 1) and "jj_m" in frame and "score_2" in frame
    again = hadron.simulate_dataset(300, seed=17)
    assert torch.equal(again.x, dataset.x)  # same seed, same data set


def test_exact_posterior_runs_and_is_consistent(hadron):
    theta_true = torch.tensor([[0.5, 0.0, 0.0]], dtype=torch.float64)
    x = hadron.simulate(theta_true.expand(100, -1), seed=50)
    result = hadron.exact_posterior(x, num_samples=1000, walkers=64, burn_in=50, seed=1)
    assert result.samples.shape == (1000, 3)
    assert list(result.summary().index) == ["theta[theta_1]", "theta[theta_2]", "theta[theta_3]"]  # named parameters
    # the observed log-likelihood is the sum of the per-event log_likelihood
    log_likelihood = hadron.observed_log_likelihood(x)
    probe = torch.tensor([[0.2, -0.3, 0.1], [1.0, 0.5, -0.5]], dtype=torch.float64)
    brute = torch.stack([hadron.log_likelihood(x, t.unsqueeze(0)).sum() for t in probe])
    torch.testing.assert_close(log_likelihood(probe), brute)


def central_interval_holds(marginal_cdf_at_truth: float, level: float = 0.68) -> bool:
    return (1 - level) / 2 < marginal_cdf_at_truth < (1 + level) / 2


def test_exact_grid_posterior_covers_the_truth(cache):
    """θ ∈ R² (θ3 frozen): the grid posterior's central 68 % marginal intervals hold θ_true at
    the nominal rate over repeated observations of 20 events."""
    simulator = LHCLike("hadron", n_params=2, cache_dir=cache, pool_draws=POOL)
    resolution, inside = 121, []
    for trial in range(40):
        theta_true = simulator.sample_prior(1, seed=500 + trial).double()
        x = simulator.simulate(theta_true.expand(20, -1), seed=900 + trial)
        posterior = simulator.exact_grid_posterior(x, resolution=resolution)
        table = posterior.probabilities.view(resolution, resolution)  # axis 0: θ1, axis 1: θ2
        axis = posterior.grid[::resolution, 0]
        for k, marginal in enumerate((table.sum(1), table.sum(0))):
            inside.append(central_interval_holds(float(marginal[axis <= theta_true[0, k]].sum())))
    rate = float(np.mean(inside))
    assert abs(rate - 0.68) < 3.5 * math.sqrt(0.68 * 0.32 / len(inside)), rate


@pytest.mark.slow
def test_exact_mcmc_posterior_covers_the_truth(hadron):
    inside = []
    for trial in range(60):
        theta_true = hadron.sample_prior(1, seed=7000 + trial).double()
        x = hadron.simulate(theta_true.expand(20, -1), seed=8000 + trial)
        samples = hadron.exact_posterior(x, num_samples=3200, seed=trial).samples
        for k in range(3):
            inside.append(central_interval_holds(float((samples[:, k] <= theta_true[0, k]).double().mean())))
    rate = float(np.mean(inside))
    assert abs(rate - 0.68) < 3 * math.sqrt(0.68 * 0.32 / len(inside)), rate


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s: s.simulate(torch.zeros(3)), "2-D"),
        (lambda s: s.simulate(torch.zeros(3, 2)), "3 columns"),
        (lambda s: s.simulate(torch.tensor([[0.0, float("nan"), 0.0]])), "theta contains NaN"),
        (lambda s: s.log_likelihood(torch.zeros(4, 39), torch.zeros(4, 3)), "x must have 40 columns"),
        (lambda s: s.log_likelihood(torch.zeros(4, 40), torch.zeros(2, 3)), "theta must have 1 row"),
        (lambda s: LHCLike("reco"), "tier"),
        (lambda s: LHCLike(n_params=4), "n_params"),
        (lambda s: s.simulate_dataset(5, seed=0, theta=torch.zeros(4, 3)), "n = 5 rows"),
    ],
)
def test_bad_inputs_raise(call, match, hadron):
    with pytest.raises(ValueError, match=match):
        call(hadron)


def test_protocol_methods(hadron, detector, hadron_sample):
    assert hadron.name == "lhc_like" and hadron.theta_names == ("theta_1", "theta_2", "theta_3")
    assert hadron.config == {"tier": "hadron", "n_params": 3, "pool_draws": POOL, "pool_seed": 0}
    arrays = hadron.simulate_arrays(20, seed=5)  # the data-set file format, metadata included
    expected = dataset_arrays(hadron.simulate_dataset(20, seed=5))
    assert sorted(arrays) == sorted(expected) and all((arrays[k] == expected[k]).all() for k in expected)
    fixed = hadron.simulate_arrays(4, seed=5, theta=torch.tensor([[0.2, 0.0, -0.1]]))
    assert fixed["theta"].shape == (4, 3) and np.allclose(fixed["theta"], [0.2, 0.0, -0.1])
    reference = hadron.simulate_reference_events(30, seed=5)
    assert reference["x_reference"].shape == (30, 40) and reference["theta_reference"].shape == (30, 3)
    assert reference["joint_log_ratio_reference"].shape == (30,)
    _, x, _ = hadron_sample
    samples = hadron.exact_posterior_samples(x[:20], 40, seed=1)
    assert samples.shape == (40, 3) and torch.isfinite(samples).all()
    with pytest.raises(NotImplementedError, match="n_params = 2"):
        hadron.exact_grid_posterior(x[:20])
    with pytest.raises(ValueError, match="no tractable likelihood"):
        detector.exact_posterior_samples(x[:20], 40)


def test_events_outside_the_support_are_rejected_by_the_posterior(hadron, hadron_sample):
    _, x, _ = hadron_sample
    outside = x[:3].clone()
    outside[:, :24] *= 0.05  # soft objects fail the cuts; keep the other columns consistent
    outside = chart.sorted_observables(kinematics.momenta_from_observables(outside))
    with pytest.raises(ValueError, match="outside the fiducial region"):
        hadron.observed_log_likelihood(outside)
    assert torch.isinf(hadron.log_likelihood(outside, torch.zeros(1, 3))).all()
