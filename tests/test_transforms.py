"""One property loop over every transform, vector and image: inverse round-trip, log-det against a
brute-force Jacobian, the inverse's log-det, batch independence, shapes, and torch.func.vmap
compatibility."""

import pytest
import torch
from torch.func import vmap
from zuko.lazy import LazyComposedTransform

from conftest import perturb
from mflow_sbi.transforms import (
    FlowConfig,
    ImageFlow,
    ImageFlowConfig,
    RQSCoupling,
    VolumePreservingCoupling,
    build_flow,
    log_det_metric,
    lu_linear,
    pad,
    permutation,
    project,
)
from mflow_sbi.transforms.image import ActNorm, ImageCoupling, InvertibleConv1x1, Squeeze

BATCH = 4
SMALL = FlowConfig(layers=2, bins=4, hidden=16, blocks=1)
VOLUME_PRESERVING = FlowConfig(layers=3, hidden=16, blocks=1, mixing="permutation", coupling="volume_preserving")
TINY = dict(hidden=8, blocks=1, bins=4)
#: name: (constructor, shape of one input, context features) — vector and image transforms alike
TRANSFORMS = {
    "coupling": (lambda: RQSCoupling(3, bins=5, hidden=16, blocks=1), (3,), 0),
    "coupling-context": (lambda: RQSCoupling(4, context=2, mask=[True, False, False, True], hidden=16, blocks=1), (4,), 2),
    "coupling-volume-preserving": (lambda: VolumePreservingCoupling(5, context=1, hidden=16, blocks=1), (5,), 1),
    "flow-volume-preserving": (lambda: build_flow(4, 0, VOLUME_PRESERVING), (4,), 0),
    "lu-linear": (lambda: lu_linear(3), (3,), 0),
    "permutation": (lambda: permutation(torch.tensor([2, 0, 1])), (3,), 0),
    "flow": (lambda: build_flow(3, 0, SMALL), (3,), 0),
    "flow-lu-context": (lambda: build_flow(2, 1, FlowConfig(layers=3, bins=4, hidden=16, blocks=1, mixing="lu")), (2,), 1),
    "image-squeeze": (lambda: Squeeze(), (1, 4, 4), 0),
    "image-actnorm": (lambda: ActNorm(2), (2, 4, 4), 0),
    "image-conv1x1": (lambda: InvertibleConv1x1(3, seed=1), (3, 4, 4), 0),
    "image-coupling-affine": (lambda: ImageCoupling(3, kind="affine", **TINY), (3, 4, 4), 0),
    "image-coupling-rqs": (lambda: ImageCoupling(2, kind="rqs", **TINY), (2, 4, 4), 0),
    "image-coupling-context": (lambda: ImageCoupling(4, context=2, kind="rqs", **TINY), (4, 2, 2), 2),
    "image-level": (lambda: LazyComposedTransform(Squeeze(), ActNorm(8), InvertibleConv1x1(8), ImageCoupling(8, **TINY)), (2, 4, 4), 0),
    "image-flow-multiscale": (lambda: ImageFlow((1, 4, 4), ImageFlowConfig(levels=2, steps=1, head_features=6, **TINY)), (1, 4, 4), 0),
    "image-flow-affine": (lambda: ImageFlow((3, 4, 4), ImageFlowConfig(levels=1, coupling="affine", head_features=8, **TINY)), (3, 4, 4), 0),
    "image-flow-context": (lambda: ImageFlow((2, 4, 4), ImageFlowConfig(levels=2, steps=1, **TINY), context=1), (2, 4, 4), 1),
}


@pytest.fixture(params=sorted(TRANSFORMS))
def case(request):
    make, shape, context = TRANSFORMS[request.param]
    lazy = make().double()
    for module in lazy.modules():  # data-dependent initialization first, then move every parameter
        if isinstance(module, ActNorm):
            module.initialized.fill_(True)
    x = 2 * torch.randn(BATCH, *shape, dtype=torch.float64)  # some points fall in the spline tails
    c = torch.randn(BATCH, context, dtype=torch.float64) if context else None
    return perturb(lazy, scale=0.2), x, c


def test_shapes_and_round_trip(case):
    lazy, x, c = case
    t = lazy(c)
    y, ladj = t.call_and_ladj(x)
    assert y.shape[0] == BATCH and y[0].numel() == x[0].numel() and ladj.shape == (BATCH,)
    torch.testing.assert_close(t.inv(y), x, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(t(x), y)


def test_log_det_matches_brute_force_jacobian(case):
    lazy, x, c = case
    _, ladj = lazy(c).call_and_ladj(x)
    for i in range(BATCH):
        ci = None if c is None else c[i : i + 1]
        jacobian = torch.autograd.functional.jacobian(lambda xi: lazy(ci)(xi.unsqueeze(0)).flatten(), x[i])
        jacobian = jacobian.reshape(x[i].numel(), x[i].numel())
        torch.testing.assert_close(ladj[i], torch.linalg.slogdet(jacobian).logabsdet, atol=1e-8, rtol=1e-6)


def test_inverse_log_det_is_the_negative(case):
    lazy, x, c = case
    y, ladj = lazy(c).call_and_ladj(x)
    _, inverse_ladj = lazy(c).inv.call_and_ladj(y)
    torch.testing.assert_close(inverse_ladj, -ladj)


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


def test_log_det_metric_of_every_transform_matches_brute_force(case):
    """log det(J_gᵀ J_g) for the chart g(u) = t⁻¹((u, 0)) of every transform t, forward mode in
    chunks (of 3 rows, so a partial chunk too), against a reverse-mode Jacobian per point."""
    lazy, x, c = case
    c = None if c is None else c[:1]  # one context for every row, whatever the chunking
    y = lazy(c)(x)  # images (batch, C, H, W) or vectors (batch, D)
    features = y[0].numel()
    n = max(1, features // 2)
    chart = lambda v: lazy(c).inv(pad(v, features).unflatten(1, y.shape[1:])).flatten(1)  # noqa: E731
    u = y.flatten(1)[:, :n]
    values = log_det_metric(chart, u, chunk_size=3)
    for i in range(BATCH):
        jacobian = torch.autograd.functional.jacobian(lambda v: chart(v.unsqueeze(0)).squeeze(0), u[i])
        torch.testing.assert_close(values[i], torch.linalg.slogdet(jacobian.T @ jacobian).logabsdet, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("name", ["coupling-volume-preserving", "flow-volume-preserving"])
def test_volume_preserving_transforms_have_unit_jacobian_determinant(name):
    """|det J| = 1 by a brute-force Jacobian, away from the identity initialization."""
    make, shape, context = TRANSFORMS[name]
    transform = perturb(make().double(), scale=0.5)
    c = torch.randn(context, dtype=torch.float64) if context else None
    f = lambda v: transform(c)(v)  # noqa: E731
    for x in torch.randn(3, *shape, dtype=torch.float64):
        jacobian = torch.autograd.functional.jacobian(f, x)
        assert not torch.allclose(jacobian, torch.eye(len(x), dtype=torch.float64))
        torch.testing.assert_close(torch.linalg.det(jacobian), torch.tensor(1.0, dtype=torch.float64))


def test_a_volume_preserving_flow_needs_permutation_mixing():
    with pytest.raises(ValueError, match="needs mixing = 'permutation'"):
        build_flow(3, 0, FlowConfig(coupling="volume_preserving", mixing="lu"))
