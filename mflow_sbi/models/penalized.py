"""Split flows trained by a penalized likelihood: pixel rejection and hierarchical training
(Razavi et al. 2022, paper 003) and their baseline, the denoising normalizing flow (DNF, Horvat &
Pfister 2021). Like PIE, a chart f splits x into manifold coordinates u and off-manifold v; unlike
PIE, a reconstruction penalty trains the manifold {g(u) = f⁻¹(u, 0)}, so the density reported is
the M-flow's density on it and sampling (v = 0) follows that density. The chart never sees θ: the
fast likelihood path of the M-flow applies unchanged."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn

from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.parts import Chart, as_dict, build_chart, chart_config, compose_manifold, event_shape_of, flow_config, log_normal, shape_config
from mflow_sbi.random import seeded
from mflow_sbi.registry import register
from mflow_sbi.training.losses import huber
from mflow_sbi.transforms import FlowConfig, ImageFlowConfig, pad
from mflow_sbi.validation import check_positive_number, is_integer


def reconstruction_penalty(error: Tensor, delta: float | None) -> Tensor:
    """Paper 003, Eq. 4: r = (1/D) Σ_i H_δ(e_i) per sample over every entry of the event -> (batch,);
    δ = None: the quadratic limit (1/D) Σ_i ½ e_i² (the paper's "MSE" variants, PR-M and H-MM)."""
    error = error.flatten(1)
    per_entry = 0.5 * error**2 if delta is None else huber(error, delta)
    return per_entry.mean(-1)


class StackedChart(Chart):
    """The hierarchical chart of paper 003 (§4.2): levels f_1 on the event (R^D), f_m on R^(d_{m-1})
    for m ≥ 2, with D > d_1 > … > d_M. Level m reads the first d_{m-1} outputs of level m - 1:

        z = f(x) = (u_M, v_M, v_{M-1}, …, v_1),   (u_m, v_m) = f_m(u_{m-1}),  u_0 = x,

    a bijection of R^D with log|det J_f| = Σ_m log|det J_fm|, and g(u) = f⁻¹(u, 0) =
    g_1(g_2(… g_M(u))) with g_m(u) = f_m⁻¹(u, 0) (Alg. 2, "generation")."""

    def __init__(self, levels: Sequence[Chart], dims: Sequence[int]) -> None:
        super().__init__(levels[0].event_shape)
        self.levels = nn.ModuleList(levels)
        self.dims = tuple(dims)  # (d_1, …, d_M)
        self.data_dim = math.prod(self.event_shape)

    def coordinates(self, x: Tensor, level: int) -> Tensor:
        """u_level (u_0 = x itself): the input of chart level `level` + 1 -> (batch, d_level)."""
        for m in range(level):
            x = self.levels[m](x)[:, : self.dims[m]]
        return x

    def forward(self, x: Tensor, theta: Tensor | None = None) -> Tensor:
        return self.call_and_ladj(x)[0]

    def call_and_ladj(self, x: Tensor, theta: Tensor | None = None) -> tuple[Tensor, Tensor]:
        off_manifold, ladj = [], x.new_zeros(len(x))
        for chart, dim in zip(self.levels, self.dims):
            z, level_ladj = chart.call_and_ladj(x)
            x, ladj = z[:, :dim], ladj + level_ladj
            off_manifold.insert(0, z[:, dim:])
        return torch.cat([x, *off_manifold], dim=1), ladj

    def inverse(self, z: Tensor, theta: Tensor | None = None) -> Tensor:
        widths = (self.data_dim, *self.dims)
        x = z[:, : widths[-1]]
        for m in reversed(range(len(self.levels))):
            x = self.levels[m].inverse(torch.cat([x, z[:, widths[m + 1] : widths[m]]], dim=1))
        return x


class SplitFlow(ManifoldFlow):
    """A θ-independent chart f (one level or a stack), off-manifold coordinates v with base
    N(0, ε² I), the inner flow h(·|θ) on u; its density is the M-flow's (Eq. 2 of paper 000):
    log p(x|θ) = log p_h(u|θ) - ½ log det(J_gᵀ J_g)(u), u = the first n entries of f(x)."""

    density_kind = "manifold"

    def _split_log_prob(self, x_s: Tensor, theta_s: Tensor) -> tuple[Tensor, Tensor]:
        """The split flow's likelihood of standardized x in raw units, log p_h(u|θ) + log N(v; 0, ε²I)
        + log|det J_f| - Σ log s_x (paper 003, Eq. 5; PIE's density), and u -> ((batch,), (batch, n))."""
        z, ladj = self.chart.call_and_ladj(x_s)
        u = z[:, : self.latent_dim]
        return self.density.log_prob(u, theta_s) + self._off_manifold(z, ladj), u

    def split_log_prob(self, x: Tensor, theta: Tensor) -> Tensor:
        """The likelihood the penalized objectives train, in raw units -> (batch,): a density on all
        of R^D (the "ambient" density of PIE), not the density on the manifold that `log_prob` gives."""
        x = self.check_x(x)
        theta = self.check_theta(theta, x)
        return self._split_log_prob(*self._standardized(x, theta))[0]


@register
class PixelRejectionFlow(SplitFlow):
    """Pixel rejection and hierarchical training (paper 003). `latent_dims` = (d_1, …, d_M) with
    D > d_1 > … > d_M: the chart stacks M levels (`StackedChart`; level 1 a vector flow `outer` or
    an image flow, levels ≥ 2 vector flows `stacked`), and h(·|θ) models u_M (`inner`). One entry
    is the single-step method.

    Schedules (`mflow_sbi.training.schedule`):
    - "hierarchical" (default; paper 003 Alg. 2, "hierarchy in training"): level m alone on the
      penalized likelihood of u_{m-1}, -log N(u_m; 0, I) - log N(v_m; 0, ε² I) - log|det J_fm|
      + λ r(u_{m-1}, g_m(u_m)), the levels below frozen; then h(·|θ) on u_M by maximum likelihood
      (the density phase of M/D training: the manifold stays θ-independent);
    - "penalized" (§4.1, and "hierarchy in structure" for M > 1): every parameter at once on
      -log p_split(x|θ) + λ r(x, g(u_M)) (`split_log_prob`).
    r is the mean per-dimension Huber penalty (`reconstruction_penalty`), with δ and λ from the
    `TrainingConfig` (`huber_delta`, `penalty_weight`). ε = 1: the paper's P_v = N(0, I).
    """

    name = "pr"
    schedules = ("hierarchical", "penalized")
    loss_schedule = "penalized"

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        latent_dims: int | Sequence[int] = 1,
        epsilon: float = 1.0,
        outer: FlowConfig | ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        stacked: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        event_shape = event_shape_of(data_dim, image_shape)
        check_positive_number("epsilon", epsilon)
        dims = [latent_dims] if is_integer(latent_dims) else list(latent_dims) if isinstance(latent_dims, (list, tuple)) else []
        if not dims or not all(is_integer(d) and d >= 1 for d in dims) or any(b >= a for a, b in zip(dims, dims[1:])):
            raise ValueError(f"latent_dims must be a positive integer or a strictly decreasing list of them, got {latent_dims!r}")
        outer_config = chart_config(event_shape, outer)
        if dims[0] >= math.prod(event_shape):
            raise ValueError(f"latent_dims must start below the data dimension {math.prod(event_shape)}, got {dims}")
        if isinstance(outer_config, ImageFlowConfig) and dims[0] > outer_config.head_features:
            raise ValueError(f"latent_dims must start at or below the outer head_features ({outer_config.head_features}), got {dims}")
        parts = compose_manifold(event_shape, theta_dim, dims[0], outer_config, inner, seed, None, density_dim=dims[-1])
        config = parts.pop("config")
        stacked_config = flow_config(stacked if stacked is not None or len(event_shape) == 3 else config["outer"])
        levels = [parts["chart"]]
        with seeded(seed + 1):
            for previous in dims[:-1]:
                levels.append(build_chart((previous,), stacked_config))
        parts |= {"chart": StackedChart(levels, dims), "latent_dim": dims[-1]}
        ManifoldFlow.__init__(self, **parts, epsilon=epsilon, jacobian_chunk_size=jacobian_chunk_size, standardize=standardize)
        self._config = {
            **shape_config(data_dim, image_shape, event_shape), "theta_dim": self.theta_dim, "latent_dims": dims,
            "epsilon": epsilon, **config, "stacked": as_dict(stacked_config), "jacobian_chunk_size": jacobian_chunk_size,
            "standardize": standardize, "seed": seed,
        }  # fmt: skip

    @property
    def levels(self) -> int:
        return len(self.chart.levels)

    # ---- training: per-sample losses on raw data, computed in standardized units ----------------
    def penalized_likelihood_loss(self, x: Tensor, theta: Tensor, *, penalty_weight: float, delta: float | None) -> Tensor:
        """Paper 003, Eq. 5: -log p_split(x|θ) + λ r(x', g(u)) with u the innermost coordinates of x'."""
        x_s, theta_s = self._standardized(x, theta)
        log_p, u = self._split_log_prob(x_s, theta_s)
        return -log_p + penalty_weight * reconstruction_penalty(x_s - self._decode(u, None), delta)

    def level_inputs(self, x: Tensor, level: int) -> Tensor:
        """u_{level-1} of raw x (x' itself for level 1): what chart level `level` reads."""
        return self.chart.coordinates(self.standardization.x(x), level - 1)

    def level_loss(
        self, x: Tensor, theta: Tensor, inputs: Tensor | None = None, *, level: int, penalty_weight: float, delta: float | None
    ) -> Tensor:
        """One level of Alg. 2 on its input a = u_{level-1} (`inputs`: precomputed by `level_inputs`):
        -log N(u; 0, I) - log N(v; 0, ε² I) - log|det J_f(a)| + λ r(a, f⁻¹(u, 0)), (u, v) = f(a)."""
        if inputs is None:
            with torch.no_grad():
                inputs = self.level_inputs(x, level)
        chart, dim = self.chart.levels[level - 1], self.chart.dims[level - 1]
        z, ladj = chart.call_and_ladj(inputs)
        u = z[:, :dim]
        log_p = log_normal(u) + log_normal(z[:, dim:], self.epsilon) + ladj
        return -log_p + penalty_weight * reconstruction_penalty(inputs - chart.inverse(pad(u, z.shape[1])), delta)

    def level_parameters(self, level: int) -> Iterator[nn.Parameter]:
        """The parameters of chart level `level` (1-based): all that its stage updates."""
        return self.chart.levels[level - 1].parameters()

    def lower_level_parameters(self, level: int) -> Iterator[nn.Parameter]:
        """The parameters of the chart levels below `level`: what its inputs depend on."""
        return (p for chart in self.chart.levels[: level - 1] for p in chart.parameters())


@register
class DenoisingFlow(SplitFlow):
    """The denoising normalizing flow (DNF; Horvat & Pfister 2021, the baseline of paper 003):
    one chart level and h(·|θ), trained on noise-inflated data x̃' = x' + σ ε, ε ~ N(0, I)
    (standardized units), with the off-manifold base N(0, σ² I) matched to the noise:

        loss = -log p_split(x̃|θ) + β ‖x' - g(u(x̃'))‖²,

    β = `TrainingConfig.reconstruction_weight` on the summed squared error, as in the M-flow's
    manifold phase. The noise is drawn in training mode only (from torch's default generator, as
    dropout draws; the trainer seeds it), so validation scores clean data. σ² = 0.01
    (`noise_scale` = 0.1), the published configurations' value. The density is that of the
    manifold, log p_h(u|θ) - ½ log det(J_gᵀ J_g)(u), and samples are g(h(ũ|θ)), ũ ~ N(0, I)."""

    name = "dnf"
    schedules = ("denoising",)
    loss_schedule = "denoising"

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        latent_dim: int = 1,
        noise_scale: float = 0.1,
        outer: FlowConfig | ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
    ) -> None:
        check_positive_number("noise_scale", noise_scale)
        event_shape = event_shape_of(data_dim, image_shape)
        parts = compose_manifold(event_shape, theta_dim, latent_dim, outer, inner, seed, None)
        config = parts.pop("config")
        super().__init__(**parts, epsilon=noise_scale, jacobian_chunk_size=jacobian_chunk_size, standardize=standardize)
        self._config = {
            **shape_config(data_dim, image_shape, event_shape), "theta_dim": self.theta_dim, "latent_dim": self.latent_dim,
            "noise_scale": noise_scale, **config, "jacobian_chunk_size": jacobian_chunk_size,
            "standardize": standardize, "seed": seed,
        }  # fmt: skip

    def denoising_loss(self, x: Tensor, theta: Tensor, *, reconstruction_weight: float) -> Tensor:
        """-log p_split(x̃|θ) + β ‖x' - g(u(x̃'))‖² (noise only in training mode) -> (batch,)."""
        x_s, theta_s = self._standardized(x, theta)
        noisy = x_s + self.epsilon * torch.randn_like(x_s) if self.training else x_s
        log_p, u = self._split_log_prob(noisy, theta_s)
        return -log_p + reconstruction_weight * ((x_s - self._decode(u, None)) ** 2).flatten(1).sum(-1)

