"""Cost of the M-flow's exact log det(J_gᵀJ_g) relative to n forward passes of the chart g
(issue 17's target: ≤ 1.5×), for the demo M-flow (D = 3, n = 2) and an LHC-like-sized one
(D = 40, n = 14), side by side in one run:

- `library`: `ManifoldFlow.log_det_metric` as shipped (one `jvp` of the batched chart per basis
  direction, the n directions fused by `vmap` so the primal is computed once);
- `baseline (before issue 17)`: the same algorithm, copied here unchanged, as the reference;
- candidates measured and not adopted: the n directions stacked in the batch (primal computed
  n times), `torch.func.linearize` (primal traced once, then `vmap` over the linear map), and a
  tangent-only forward rule for `F.linear` (PyTorch's `addmm` forward-mode formula also
  multiplies the primal input by the weights' zero tangent, one extra matmul per layer).

Times are the thread's CPU time (robust to other processes on the machine), the minimum over
interleaved repeats, on one thread; weights are perturbed from the identity initialization
(seeded) so the splines are not trivial.

    python benchmarks/exact_density_cost.py [--batches 1000 10000] [--lhc-batches 1000] [--repeats 7] [--output docs/exact_density_cost.md]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jvp, linearize, vmap
from torch.overrides import TorchFunctionMode

from mflow_sbi.models import MFlow


def baseline_log_det(chart: Callable[[Tensor], Tensor], u: Tensor) -> Tensor:
    """Before issue 17 (unchunked here): vmap over the n basis tangents of jvp(g)."""
    n = u.shape[1]
    basis = torch.eye(n, dtype=u.dtype).unsqueeze(1).expand(n, len(u), n)
    j = vmap(lambda tangent: jvp(chart, (u,), (tangent,))[1])(basis).permute(1, 2, 0).double()
    return torch.linalg.slogdet(j.mT @ j).logabsdet.to(u.dtype)


def stacked_log_det(chart: Callable[[Tensor], Tensor], u: Tensor) -> Tensor:
    """Candidate: one jvp with the n directions stacked in the batch (the primal n times)."""
    n, batch = u.shape[1], len(u)
    tangents = torch.eye(n, dtype=u.dtype).repeat_interleave(batch, 0)
    j = jvp(chart, (u.repeat(n, 1),), (tangents,))[1].unflatten(0, (n, batch)).permute(1, 2, 0).double()
    return torch.linalg.slogdet(j.mT @ j).logabsdet.to(u.dtype)


def linearize_log_det(chart: Callable[[Tensor], Tensor], u: Tensor) -> Tensor:
    """Candidate: `linearize` (primal once, traced linear map), then vmap over the n directions."""
    n = u.shape[1]
    _, linear = linearize(chart, u)
    j = vmap(linear)(torch.eye(n, dtype=u.dtype).unsqueeze(1).expand(n, len(u), n)).permute(1, 2, 0).double()
    return torch.linalg.slogdet(j.mT @ j).logabsdet.to(u.dtype)


class _TangentOnlyLinear(torch.autograd.Function):
    """y = x Wᵀ + b with the forward-mode rule ẏ = ẋ Wᵀ (the weights carry no tangent)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
        return F.linear(x, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001
        ctx.save_for_forward(inputs[1])

    @staticmethod
    def jvp(ctx, x_tangent: Tensor, *_: Tensor | None) -> Tensor:  # noqa: ANN001
        (weight,) = ctx.saved_tensors
        return F.linear(x_tangent, weight)


class _TangentOnlyLinearMode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        return (_TangentOnlyLinear.apply if func is F.linear else func)(*args, **(kwargs or {}))


def linear_rule_log_det(chart: Callable[[Tensor], Tensor], u: Tensor) -> Tensor:
    """Candidate: the baseline with the tangent-only rule for every `F.linear` in g."""
    with _TangentOnlyLinearMode():
        return baseline_log_det(chart, u)


def perturbed_mflow(data_dim: int, theta_dim: int, latent_dim: int) -> MFlow:
    """The reference architecture with every weight moved off its (identity) initialization."""
    model = MFlow(data_dim=data_dim, theta_dim=theta_dim, latent_dim=latent_dim, seed=0).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    return model


def measure(model: MFlow, batch: int, repeats: int) -> dict[str, float]:
    """Best thread CPU time of each method, the methods interleaved in every repeat."""
    n = model.latent_dim
    u = torch.randn(batch, n, generator=torch.Generator().manual_seed(1))
    chart = lambda v: model.standardization.x_inverse(model._decode(v, None)).flatten(1)  # noqa: E731
    methods: dict[str, Callable[[], Tensor]] = {
        "one chart pass g(u)": lambda: chart(u),
        "library: vmap over jvp": lambda: model.log_det_metric(u),
        "baseline (before issue 17): vmap over jvp": lambda: baseline_log_det(chart, u),
        "candidate: directions stacked in the batch": lambda: stacked_log_det(chart, u),
        "candidate: linearize, then vmap": lambda: linearize_log_det(chart, u),
        "candidate: tangent-only rule for F.linear": lambda: linear_rule_log_det(chart, u),
    }
    with torch.no_grad():
        reference = baseline_log_det(chart, u)
        for name, method in methods.items():
            value = method()
            if name != "one chart pass g(u)":
                torch.testing.assert_close(value, reference, atol=1e-3, rtol=1e-3, msg=lambda m, name=name: f"{name}: {m}")
        best = dict.fromkeys(methods, float("inf"))
        for _ in range(repeats):
            for name, method in methods.items():
                start = time.thread_time()
                method()
                best[name] = min(best[name], time.thread_time() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batches", type=int, nargs="+", default=[1000, 10000], help="batches for the demo M-flow")
    parser.add_argument("--lhc-batches", type=int, nargs="+", default=[1000], help="batches for the D = 40 M-flow")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", type=Path, default=Path("docs/exact_density_cost.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {
        "demo M-flow (D = 3, n = 2)": (perturbed_mflow(3, 1, 2), args.batches),
        "LHC-like-sized M-flow (D = 40, n = 14)": (perturbed_mflow(40, 3, 14), args.lhc_batches),
    }
    lines = [
        "# Cost of the exact M-flow log det(J_gᵀJ_g)",
        "",
        f"Command: `python benchmarks/exact_density_cost.py --batches {' '.join(map(str, args.batches))} "
        f"--lhc-batches {' '.join(map(str, args.lhc_batches))} --repeats {args.repeats}`  ",
        f"Machine: {platform.machine()}, 1 thread, torch {torch.__version__}; thread CPU time, best of {args.repeats} "
        "interleaved repeats; reference architecture with weights perturbed off the identity (seeded). "
        "Ratio = time / (n × one chart pass); issue 17's target is ≤ 1.5.",
        "",
    ]
    for label, (model, batches) in models.items():
        for batch in batches:
            times = measure(model, batch, args.repeats)
            passes = model.latent_dim * times["one chart pass g(u)"]
            lines += [
                f"## {label}, batch {batch}",
                "",
                "| method | seconds per batch | ratio to n chart passes |",
                "|---|---|---|",
                *[f"| {name} | {seconds:.4f} | {seconds / passes:.2f} |" for name, seconds in times.items()],
                "",
            ]
            print("\n".join(lines[-len(times) - 5 :]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
