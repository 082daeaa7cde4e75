"""Diagnostic plots: model posteriors against the exact posterior and the true θ; rows of images."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: no global state, any (headless) backend
from torch import Tensor

from mflow_sbi.diagnostics.posterior import Posterior, posterior_samples
from mflow_sbi.inference.grid import GridPosterior

SCATTER_POINTS = 1000
EXACT_LABEL = "exact"


def _dimension(posterior: Posterior, name: str) -> int:
    if isinstance(posterior, GridPosterior):
        return posterior.grid.shape[1]
    return posterior_samples(posterior, f"posteriors[{name!r}]").shape[1]


def _grid_marginal(posterior: GridPosterior, axis: int) -> tuple[Tensor, Tensor]:
    """Cell centres along `axis` and the marginal density there, p(θ_k) = Σ_other p ΔV / Δθ_k."""
    centres, cell = torch.unique(posterior.grid[:, axis], return_inverse=True)
    mass = torch.zeros(len(centres), dtype=torch.float64).index_add_(0, cell, posterior.probabilities)
    return centres, mass / posterior.spacing[axis]


def _draw_marginal(ax: Axes, posterior: Posterior, axis: int, label: str, color: str, bins: int) -> None:
    if isinstance(posterior, GridPosterior):
        centres, density = _grid_marginal(posterior, axis)
        ax.plot(centres.double().numpy(), density.numpy(), color=color, label=label)
    else:
        values = posterior_samples(posterior)[:, axis].double().numpy()
        ax.hist(values, bins=bins, density=True, histtype="step", color=color, label=label)


def _draw_joint(ax: Axes, posterior: Posterior, label: str, color: str, dims: tuple[int, int] = (0, 1)) -> None:
    if isinstance(posterior, GridPosterior):  # grids are 2-D at most: dims = (0, 1)
        first, cell_first = torch.unique(posterior.grid[:, 0], return_inverse=True)
        second, cell_second = torch.unique(posterior.grid[:, 1], return_inverse=True)
        density = torch.zeros(len(second), len(first), dtype=torch.float64)
        density[cell_second, cell_first] = posterior.log_density.exp()
        ax.contour(first.double().numpy(), second.double().numpy(), density.numpy(), levels=5, colors=color)
        ax.plot([], [], color=color, label=label)  # contour sets carry no legend entry
    else:
        samples = posterior_samples(posterior)
        keep = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))[:SCATTER_POINTS]
        points = samples[keep].double().numpy()
        ax.scatter(points[:, dims[0]], points[:, dims[1]], s=3, alpha=0.4, color=color, label=label)


def plot_posteriors(
    path: str | Path,
    posteriors: Mapping[str, Posterior],
    exact: Posterior | None = None,
    true_theta: Tensor | Sequence[float] | None = None,
    parameter_names: Sequence[str] | None = None,
    bins: int = 50,
    title: str | None = None,
) -> Path:
    """Draw model posteriors (name -> `GridPosterior`, samples (n, p) or `MCMCResult`) beside
    the `exact` one (black) and the true θ (red), and save the figure to `path` (format from
    its suffix). Grids are drawn as density curves (contours in 2-D), samples as histograms
    (scatter in 2-D); 2-D θ gets both marginals and the joint, θ of dimension ≥ 3 a corner plot
    (marginals on the diagonal, pairwise scatter below it)."""
    drawn = dict(posteriors)
    if exact is not None:
        if EXACT_LABEL in drawn:
            raise ValueError(f"posteriors must not use the name {EXACT_LABEL!r} when exact is given")
        drawn[EXACT_LABEL] = exact
    if not drawn:
        raise ValueError("posteriors is empty and no exact posterior is given")
    dimensions = {name: _dimension(posterior, name) for name, posterior in drawn.items()}
    if len(set(dimensions.values())) > 1:
        raise ValueError(f"posteriors differ in the dimension of θ: {dimensions}")
    p = next(iter(dimensions.values()))
    if true_theta is not None:
        true_theta = torch.as_tensor(true_theta, dtype=torch.float64).flatten()
        if len(true_theta) != p or not torch.isfinite(true_theta).all():
            raise ValueError(f"true_theta must hold {p} finite numbers, got {true_theta.tolist()}")
    names = list(parameter_names) if parameter_names is not None else [f"θ{k}" if p > 1 else "θ" for k in range(p)]
    if len(names) != p:
        raise ValueError(f"parameter_names must hold {p} names, got {len(names)}")
    if bins < 1:
        raise ValueError(f"bins must be ≥ 1, got {bins}")

    colors = {name: "black" if name == EXACT_LABEL else f"C{i}" for i, name in enumerate(drawn)}
    if p >= 3:
        figure = _corner(drawn, colors, true_theta, names, bins)
        return _save(figure, path, title)
    figure = Figure(figsize=(5 * (1 if p == 1 else 3), 4), layout="constrained")
    axes = figure.subplots(1, 1 if p == 1 else 3, squeeze=False)[0]
    for axis in range(p):
        ax = axes[axis]
        for name, posterior in drawn.items():
            _draw_marginal(ax, posterior, axis, name, colors[name], bins)
        if true_theta is not None:
            ax.axvline(float(true_theta[axis]), color="crimson", linestyle="--", label="true θ", zorder=5)
        ax.set_xlabel(names[axis])
        ax.set_ylabel("posterior density")
    if p == 2:
        ax = axes[2]
        for name, posterior in drawn.items():
            _draw_joint(ax, posterior, name, colors[name])
        if true_theta is not None:
            ax.plot(*true_theta.tolist(), marker="x", color="crimson", markersize=12, markeredgewidth=2.5, linestyle="none", label="true θ", zorder=5)
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
    axes[0].legend()
    return _save(figure, path, title)


def _corner(drawn: dict[str, Posterior], colors: dict[str, str], true_theta: Tensor | None, names: list[str], bins: int) -> Figure:
    p = len(names)
    figure = Figure(figsize=(2.6 * p, 2.6 * p), layout="constrained")
    axes = figure.subplots(p, p, squeeze=False)
    for row in range(p):
        for column in range(p):
            ax = axes[row][column]
            if column > row:
                ax.set_axis_off()
                continue
            for name, posterior in drawn.items():
                if row == column:
                    _draw_marginal(ax, posterior, row, name, colors[name], bins)
                else:
                    _draw_joint(ax, posterior, name, colors[name], dims=(column, row))
            if true_theta is not None:
                ax.axvline(float(true_theta[column]), color="crimson", linestyle="--", zorder=5)
                if row != column:
                    ax.axhline(float(true_theta[row]), color="crimson", linestyle="--", zorder=5)
            if row == p - 1:
                ax.set_xlabel(names[column])
            if column == 0 and row > 0:
                ax.set_ylabel(names[row])
    axes[0][-1].legend(*axes[0][0].get_legend_handles_labels(), loc="upper right")  # in the empty corner
    return figure


def plot_images(path: str | Path, rows: Mapping[str, Tensor], title: str | None = None) -> Path:
    """Draw one row of images per entry (label -> (batch, 3, H, W), pixel values in [-0.5, 0.5]
    shown as [0, 1], e.g. generated images, test images, projections, residuals) and save the
    figure to `path`."""
    if not rows:
        raise ValueError("rows is empty")
    for label, images in rows.items():
        if images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
            raise ValueError(f"row {label!r} must be a non-empty batch of RGB images (batch, 3, H, W), got shape {tuple(images.shape)}")
    columns = max(len(images) for images in rows.values())
    figure = Figure(figsize=(1.2 * columns, 1.3 * len(rows)), layout="tight")
    axes = figure.subplots(len(rows), columns, squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        for c in range(columns):
            axes[r, c].axis("off")
            if c < len(images):
                axes[r, c].imshow((images[c].detach().float().cpu() + 0.5).clamp(0, 1).permute(1, 2, 0).numpy())
        axes[r, 0].set_title(label, fontsize=7, loc="left")
    return _save(figure, path, title)


def _save(figure: Figure, path: str | Path, title: str | None) -> Path:
    if title:
        figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
