"""What is particular to the image transforms (the shared property loop over every transform,
vector and image, is tests/test_transforms.py): actnorm's data-dependent initialization, the
multi-scale layout, dequantization, bad input."""

import pytest
import torch

from mflow_sbi.transforms import ImageFlow, ImageFlowConfig, dequantize, quantize
from mflow_sbi.transforms.image import ActNorm, ImageCoupling, multiscale_shapes

TINY = dict(hidden=8, blocks=1, bins=4)


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
