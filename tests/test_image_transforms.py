"""The image transforms through the same property loop as the vector ones (tests/test_transforms.py):
inverse round-trip, log-det against a brute-force Jacobian, batch independence, vmap; on tiny
images."""

import pytest
import torch
from torch.func import vmap
from zuko.lazy import LazyComposedTransform

from conftest import perturb
from mflow_sbi.transforms import ImageFlow, ImageFlowConfig, dequantize, quantize
from mflow_sbi.transforms.image import ActNorm, ImageCoupling, InvertibleConv1x1, Squeeze, multiscale_shapes

BATCH = 4
TINY = dict(hidden=8, blocks=1, bins=4)
TRANSFORMS = {  # name: (constructor, image shape, context features)
    "squeeze": (lambda: Squeeze(), (1, 4, 4), 0),
    "actnorm": (lambda: ActNorm(2), (2, 4, 4), 0),
    "conv1x1": (lambda: InvertibleConv1x1(3, seed=1), (3, 4, 4), 0),
    "coupling-affine": (lambda: ImageCoupling(3, kind="affine", **TINY), (3, 4, 4), 0),
    "coupling-rqs": (lambda: ImageCoupling(2, kind="rqs", **TINY), (2, 4, 4), 0),
    "coupling-context": (lambda: ImageCoupling(4, context=2, kind="rqs", **TINY), (4, 2, 2), 2),
    "level": (lambda: LazyComposedTransform(Squeeze(), ActNorm(8), InvertibleConv1x1(8), ImageCoupling(8, **TINY)), (2, 4, 4), 0),
    "flow-multiscale": (lambda: ImageFlow((1, 4, 4), ImageFlowConfig(levels=2, steps=1, head_features=6, **TINY)), (1, 4, 4), 0),
    "flow-affine": (lambda: ImageFlow((3, 4, 4), ImageFlowConfig(levels=1, coupling="affine", head_features=8, **TINY)), (3, 4, 4), 0),
    "flow-context": (lambda: ImageFlow((2, 4, 4), ImageFlowConfig(levels=2, steps=1, **TINY), context=1), (2, 4, 4), 1),
}


@pytest.fixture(params=sorted(TRANSFORMS))
def case(request):
    make, shape, context = TRANSFORMS[request.param]
    x = torch.randn(BATCH, *shape, dtype=torch.float64)
    c = torch.randn(BATCH, context, dtype=torch.float64) if context else None
    lazy = make().double()
    for module in lazy.modules():  # data-dependent init first, then move every parameter
        if isinstance(module, ActNorm):
            module.initialized.fill_(True)
    return perturb(lazy, scale=0.2), x, c


def test_shapes_and_round_trip(case):
    lazy, x, c = case
    t = lazy(c)
    y, ladj = t.call_and_ladj(x)
    assert y.shape[0] == BATCH and y[0].numel() == x[0].numel() and ladj.shape == (BATCH,)
    torch.testing.assert_close(t.inv(y), x, atol=1e-9, rtol=1e-9)
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


def test_actnorm_initializes_from_the_first_training_batch():
    actnorm = ActNorm(3)
    x = 2 + 3 * torch.randn(16, 3, 4, 4)
    y = actnorm()(x)
    assert bool(actnorm.initialized)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    frozen = ActNorm(3).eval()
    torch.testing.assert_close(frozen()(x), x)  # no initialization outside training
    assert not bool(frozen.initialized)


def test_flow_puts_the_coarsest_level_first():
    assert multiscale_shapes((3, 16, 16), 2) == [(12, 8, 8), (24, 4, 4)]
    flow = ImageFlow((3, 16, 16), ImageFlowConfig(levels=2, steps=1, **TINY))
    z = flow()(torch.randn(2, 3, 16, 16))
    assert z.shape == (2, 768) and flow.head_features == 256


def test_quantize_and_dequantize():
    x = torch.rand(3, 3, 4, 4) - 0.5
    k = quantize(x)
    assert k.dtype == torch.int64 and int(k.min()) >= 0 and int(k.max()) <= 255
    x_tilde = dequantize(k, torch.Generator().manual_seed(0))
    assert float((x_tilde - x).abs().max()) <= 1 / 256 and float(x_tilde.abs().max()) <= 0.5
    torch.testing.assert_close(x_tilde, dequantize(k, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="k must hold integer"):
        dequantize(x)


def test_bad_configurations_raise():
    with pytest.raises(ValueError, match="kind"):
        ImageCoupling(4, kind="spline")
    with pytest.raises(ValueError, match="squeezed"):
        ImageFlow((3, 6, 6), ImageFlowConfig(levels=2))
    with pytest.raises(ValueError, match="context"):
        ImageFlow((2, 4, 4), ImageFlowConfig(levels=1), context=1)()
    with pytest.raises(ValueError, match="context"):
        ImageCoupling(4)(torch.zeros(1, 2))
