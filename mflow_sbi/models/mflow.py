"""M-flow and Me-flow (Brehmer & Cranmer 2020, §2): a learned manifold that does not depend on
θ and a θ-conditional density on it, for vectors (`data_dim`) and images (`image_shape`)."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor

from mflow_sbi.models.flow import ManifoldFlow
from mflow_sbi.models.parts import check_positive_int, compose_manifold, event_shape_of, shape_config
from mflow_sbi.registry import register
from mflow_sbi.transforms import FlowConfig, ImageFlowConfig


@register
class MFlow(ManifoldFlow):
    """Manifold {g(u)} with g(u) = f⁻¹(u, 0) and u = g⁻¹(x) = first n components of f(x);

        log p(x|θ) = log N(h⁻¹(u|θ)) + log|det J_h⁻¹(u|θ)| - ½ log det(J_gᵀ J_g)(u)

    (Eq. 2 of the paper; the density of the projection of x onto the manifold). Only the last
    term is expensive and it does not depend on θ: `exact=False` drops it. f is a vector flow
    (`outer`: `FlowConfig`) for `data_dim`, a multi-scale image flow (`ImageFlowConfig`) for
    `image_shape`; h is a vector flow (`inner`). Weights are initialized from `seed`.

    `latent_dim="auto"` (vectors): n is estimated from the training data when training starts
    (`prepare`: `estimate_intrinsic_dimension` on x with its default method, the manifold being
    θ-independent), and the model is rebuilt as `latent_dim=n` with the same seed; the record
    (n, method, every estimate) is kept in `intrinsic_dimension` (and so in the config and the
    checkpoint) and in the training history's `attrs`.
    """

    name = "mflow"
    schedules = ("sequential", "alternating")
    loss_schedule = "alternating"
    density_kind = "manifold"

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        latent_dim: int | Literal["auto"] = 1,
        outer: FlowConfig | ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
        intrinsic_dimension: dict[str, Any] | None = None,
    ) -> None:
        self._compose(data_dim, theta_dim, latent_dim, outer, inner, jacobian_chunk_size, image_shape, standardize, seed, None)
        self._record(intrinsic_dimension)

    def _compose(
        self, data_dim: Any, theta_dim: Any, latent_dim: Any, outer: Any, inner: Any, jacobian_chunk_size: int | None,
        image_shape: Any, standardize: bool, seed: int, encoder: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        event_shape = event_shape_of(data_dim, image_shape)
        automatic = latent_dim == "auto"
        if automatic and len(event_shape) != 1:
            raise ValueError("latent_dim='auto' works on vector data; for images estimate n with classical_dimensions(x.flatten(1))")
        parts = compose_manifold(event_shape, theta_dim, 1 if automatic else latent_dim, outer, inner, seed, encoder)  # 1: until trained
        config = parts.pop("config")
        ManifoldFlow.__init__(self, **parts, jacobian_chunk_size=jacobian_chunk_size, standardize=standardize)
        self._config = {
            **shape_config(data_dim, image_shape, event_shape), "theta_dim": self.theta_dim,
            "latent_dim": "auto" if automatic else self.latent_dim, **config,
            "jacobian_chunk_size": jacobian_chunk_size, "standardize": standardize, "seed": seed,
        }  # fmt: skip

    def _record(self, intrinsic_dimension: dict[str, Any] | None) -> None:
        """Keep the record of the estimate behind n (written by `prepare`; n must be its dimension)."""
        if intrinsic_dimension is None:
            return
        if not isinstance(intrinsic_dimension, dict) or intrinsic_dimension.get("dimension") != self.latent_dim:
            raise ValueError(
                f"intrinsic_dimension must be the record of an estimate of n = latent_dim = {self.latent_dim} "
                f"(a dict with 'dimension', as `prepare` writes it), got {intrinsic_dimension!r}"
            )
        self._config["intrinsic_dimension"] = dict(intrinsic_dimension)

    @property
    def intrinsic_dimension(self) -> dict[str, Any] | None:
        """The record of the estimate behind `latent_dim="auto"` (None for a given n)."""
        return self._config.get("intrinsic_dimension")

    def prepare(self, x: Tensor, theta: Tensor, records: dict[str, Any] | None = None) -> dict[str, Any]:
        """With `latent_dim="auto"`: estimate n on the training x (or take it from `records` of
        a resumed run), rebuild with `latent_dim=n` (same seed, dtype and device) and return
        {"intrinsic_dimension": the estimate's record}; otherwise nothing."""
        if self._config["latent_dim"] != "auto":
            return {}
        from mflow_sbi.intrinsic_dimension import estimate_intrinsic_dimension  # it imports the models

        if records is not None and "intrinsic_dimension" in records:
            record = records["intrinsic_dimension"]
        else:
            record = estimate_intrinsic_dimension(self.check_x(x).float(), seed=self._config["seed"]).as_dict()
        if record["dimension"] >= self.data_dim:
            raise ValueError(
                f"the estimated intrinsic dimension is {record['dimension']}: the data fill R^{self.data_dim} "
                f"(estimates {record['estimates']}); train an AmbientFlow, or pass latent_dim"
            )
        dtype, device = self.dtype, self.device
        arguments = {k: v for k, v in self._config.items() if k != "intrinsic_dimension"}
        self.__init__(**{**arguments, "latent_dim": record["dimension"], "intrinsic_dimension": record})
        self.to(device=device, dtype=dtype)
        return {"intrinsic_dimension": record}


@register
class MeFlow(MFlow):
    """M-flow with a separate learned encoder e(x) in place of g⁻¹ (paper §2, "Me-flow"): a
    residual MLP for vectors (`encoder_hidden` units, default 100, `encoder_blocks` blocks), a
    convolutional network for images (`encoder_channels`, `encoder_hidden` default 256); the
    density is that of u = e(x) on the manifold, log p_h(u|θ) - ½ log det(J_gᵀ J_g)(u)."""

    name = "meflow"

    def __init__(
        self,
        data_dim: int | None = None,
        theta_dim: int = 1,
        latent_dim: int = 1,
        outer: FlowConfig | ImageFlowConfig | dict | None = None,
        inner: FlowConfig | dict | None = None,
        jacobian_chunk_size: int | None = None,
        *,
        image_shape: tuple[int, int, int] | list[int] | None = None,
        standardize: bool = True,
        seed: int = 0,
        encoder_hidden: int | None = None,
        encoder_blocks: int = 2,
        encoder_channels: int = 32,
        intrinsic_dimension: dict[str, Any] | None = None,
    ) -> None:
        if encoder_hidden is not None:
            check_positive_int("encoder_hidden", encoder_hidden)
        check_positive_int("encoder_blocks", encoder_blocks, minimum=0)
        check_positive_int("encoder_channels", encoder_channels)
        encoder = {"hidden": encoder_hidden, "blocks": encoder_blocks, "channels": encoder_channels}
        self._compose(data_dim, theta_dim, latent_dim, outer, inner, jacobian_chunk_size, image_shape, standardize, seed, encoder)
        self._config.update(encoder_hidden=encoder_hidden, encoder_blocks=encoder_blocks, encoder_channels=encoder_channels)
        self._record(intrinsic_dimension)
