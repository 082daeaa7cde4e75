"""One property loop over every transform: inverse round-trip, log-det against a brute-force
Jacobian, batch independence, shapes, and torch.func.vmap compatibility."""

import pytest
import torch
from torch.func import vmap

from conftest import perturb
from mflow_sbi.transforms import FlowConfig, RQSCoupling, build_flow, log_det_metric, lu_linear, pad, permutation, project

BATCH = 7
SMALL = FlowConfig(layers=2, bins=4, hidden=16, blocks=1)
TRANSFORMS = {
    "coupling": (lambda: RQSCoupling(3, bins=5, hidden=16, blocks=1), 3, 0),
    "coupling-context": (lambda: RQSCoupling(4, context=2, mask=[True, False, False, True], hidden=16, blocks=1), 4, 2),
    "lu-linear": (lambda: lu_linear(3), 3, 0),
    "permutation": (lambda: permutation(torch.tensor([2, 0, 1])), 3, 0),
    "flow": (lambda: build_flow(3, 0, SMALL), 3, 0),
    "flow-lu-context": (lambda: build_flow(2, 1, FlowConfig(layers=3, bins=4, hidden=16, blocks=1, mixing="lu")), 2, 1),
}


@pytest.fixture(params=sorted(TRANSFORMS))
def case(request):
    make, features, context = TRANSFORMS[request.param]
    lazy = perturb(make())
    x = 2 * torch.randn(BATCH, features, dtype=torch.float64)  # some points fall in the spline tails
    c = torch.randn(BATCH, context, dtype=torch.float64) if context else None
    return lazy, x, c


def test_shapes_and_round_trip(case):
    lazy, x, c = case
    t = lazy(c)
    y, ladj = t.call_and_ladj(x)
    assert y.shape == x.shape and ladj.shape == (BATCH,)
    torch.testing.assert_close(t.inv(y), x, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(t(x), y)


def test_log_det_matches_brute_force_jacobian(case):
    lazy, x, c = case
    _, ladj = lazy(c).call_and_ladj(x)
    for i in range(BATCH):
        ci = None if c is None else c[i : i + 1]
        jacobian = torch.autograd.functional.jacobian(lambda xi: lazy(ci)(xi.unsqueeze(0)).squeeze(0), x[i])
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jacobian).logabsdet, atol=1e-8, rtol=1e-6)


def test_batch_independence(case):
    lazy, x, c = case
    y = lazy(c)(x)
    x2 = x.clone()
    x2[1:] = torch.randn_like(x2[1:])
    torch.testing.assert_close(lazy(c)(x2)[0], y[0])


def test_vmap_matches_batched_call(case):
    lazy, x, c = case
    if c is None:
        mapped = vmap(lambda xi: lazy()(xi))(x)
    else:
        mapped = vmap(lambda xi, ci: lazy(ci)(xi))(x, c)
    torch.testing.assert_close(mapped, lazy(c)(x))


def test_permutation_rejects_non_permutation():
    with pytest.raises(ValueError, match="permutation"):
        permutation(torch.tensor([0, 0, 1]))


def test_coupling_rejects_bad_mask_and_missing_context():
    with pytest.raises(ValueError, match="mask"):
        RQSCoupling(3, mask=[True, True, True])
    with pytest.raises(ValueError, match="context"):
        RQSCoupling(3, context=2)()


def test_pad_project_and_metric_of_a_linear_chart():
    u = torch.randn(5, 2, dtype=torch.float64)
    assert torch.equal(project(pad(u, 4), 2), u)
    A = torch.randn(4, 2, dtype=torch.float64)
    expected = torch.linalg.slogdet(A.T @ A).logabsdet.expand(5)
    torch.testing.assert_close(log_det_metric(lambda v: v @ A.T, u, chunk_size=2), expected)
