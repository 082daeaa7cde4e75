"""The learnable-manifold-prior flow of paper 002 ("On the latent space of flow-based models"):
a volume-preserving conditional flow h on R^D with the degenerate Gaussian prior N(0, AAᵀ),
trained with the spread KL divergence; rank(AAᵀ) is the data's intrinsic dimension."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mflow_sbi.models.ambient import AmbientFlow
from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.parts import Chart, DegenerateGaussian, Density, as_dict, check_positive_int, flow_config
from mflow_sbi.random import seeded
from mflow_sbi.registry import register
from mflow_sbi.transforms import FlowConfig

#: Volume-preserving affine couplings with permutations; the paper's toy and S-curve flows use
#: 2-6 couplings of 3 × 24 units, trained for 10⁴-2·10⁵ steps.
DEFAULT_FLOW = FlowConfig(layers=6, hidden=64, blocks=1, mixing="permutation", coupling="volume_preserving")


@register
class LearnablePriorFlow(AmbientFlow):
    """log p(x|θ) = log N(h(x'|θ); 0, AAᵀ + σ²I) + log|det ∂x'/∂x| with h volume preserving
    (log|det J_h| = 0) and x' the standardized x (paper 002, Eqs. 5 and 14).

    Conditional on θ through h only: A, and with it the intrinsic dimension rank(AAᵀ), is one
    for the whole model family, as for the θ-independent manifold of an M-flow (the support of
    p(x|θ) has one dimension for every θ on all our simulators). Trained by the spread KL
    divergence (Eqs. 12-15): the likelihood loss adds σ ε, ε ~ N(0, I), to z = h(x'|θ) while
    the model is in training mode (noise from torch's default generator, as dropout draws);
    term 1 (the entropy) is dropped, as the paper does for volume-preserving h and small σ².
    `spectrum()` gives the eigenvalues of AAᵀ; `mflow_sbi.intrinsic_dimension` reads the
    dimension off them. Vectors only.
    """

    name = "learnable_prior"

    def __init__(
        self,
        data_dim: int,
        theta_dim: int = 1,
        flow: FlowConfig | dict | None = None,
        noise_variance: float = 1e-4,
        *,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        data_dim = check_positive_int("data_dim", data_dim, minimum=2)
        theta_dim = check_positive_int("theta_dim", theta_dim)
        config = flow_config({**as_dict(DEFAULT_FLOW), **flow} if isinstance(flow, dict) else flow or DEFAULT_FLOW)
        if config.coupling != "volume_preserving" or config.mixing != "permutation":
            raise ValueError("the learnable-prior flow needs flow.coupling = 'volume_preserving' and flow.mixing = 'permutation'")
        with seeded(seed):
            density = Density(data_dim, theta_dim, config, base=DegenerateGaussian(data_dim, noise_variance))
        ManifoldFlow.__init__(self, (data_dim,), theta_dim, data_dim, density, Chart((data_dim,)), standardize=standardize)
        self._config = {
            "data_dim": data_dim, "theta_dim": theta_dim, "flow": as_dict(config),
            "noise_variance": noise_variance, "standardize": standardize, "seed": seed,
        }  # fmt: skip

    def spectrum(self) -> Tensor:
        """The eigenvalues of AAᵀ (standardized units), largest first, float64 -> (D,)."""
        return self.density.base.spectrum()

    def likelihood_loss(self, x: Tensor, theta: Tensor) -> Tensor:
        """The spread KL's Monte Carlo term (Eq. 15): -log N(h(x'|θ) + σε; 0, AAᵀ + σ²I) - log|det ∂x'/∂x|,
        with the noise σε only in training mode."""
        x_s, theta_s = self._standardized(x, theta)
        z = self.density.flow(theta_s)(x_s)
        if self.training:
            z = z + math.sqrt(self.density.base.noise_variance) * torch.randn_like(z)
        return -(self.density.base.log_prob(z) + self.standardization.log_abs_det_x())
