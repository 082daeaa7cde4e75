"""Hostile inputs, tried as a user would: a fixed list of bad calls to the public API and the
command line (configurations, shapes and dtypes, degenerate posteriors, damaged files, output
paths), each classified as a correct result, a clear error, a silent wrong result or a crash.

A clear error is a `ValueError` / `TypeError` (exit code 2 with one line at the command line)
that never advises unsafe loading; a crash is any other exception, a traceback, or advice to
load with `weights_only=False` / `allow_pickle`. It uses only API that older revisions have
too, so the same script measures a revision before and after a change:

    python benchmarks/hostile_inputs.py                          # docs/hostile_inputs.{md,json}
    git worktree add /tmp/before REV && (cd /tmp/before && python /path/to/benchmarks/hostile_inputs.py --label before --output /tmp/h)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import pickle
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

UNSAFE_ADVICE = ("weights_only", "allow_pickle", "pickle.load(")
SMALL = {"layers": 1, "bins": 4, "hidden": 8, "blocks": 1}


def mflow(**overrides: Any):
    from mflow_sbi.models import MFlow

    return MFlow(**{"data_dim": 3, "theta_dim": 1, "latent_dim": 2, "outer": SMALL, "inner": SMALL} | overrides)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def cli(*arguments: str) -> tuple[int, str]:
    """Exit code and stderr of `mflow-sbi ARGUMENTS` run in this process (a traceback is a crash)."""
    from mflow_sbi.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(arguments))
    return code, err.getvalue().strip()


def cases(folder: Path) -> dict[str, dict[str, Callable[[], Any]]]:
    """area: {case: a call that returns a check of its result (True: correct) or raises}."""
    from mflow_sbi.inference import grid_posterior, mcmc_posterior
    from mflow_sbi.training import TrainingConfig, load_model, save_model
    from simulators import PolynomialSurface

    simulator = PolynomialSurface()
    model = mflow()
    good = save_model(folder / "good.pt", model)
    raw = good.read_bytes()
    files = {
        "truncated": raw[: len(raw) // 2], "empty": b"", "text": b"model: mflow\n", "bare pickle payload": pickle.dumps(Payload()),
    }  # fmt: skip
    for name, content in files.items():
        (folder / f"{name.replace(' ', '_')}.pt").write_bytes(content)
    torch.save({"a": Payload()}, folder / "torch_payload.pt")
    payload = torch.load(good, weights_only=True)
    torch.save(payload | {"config": json.dumps(mflow(latent_dim=1).config)}, folder / "other_weights.pt")
    torch.save(payload | {"state_dict": None}, folder / "no_weights.pt")
    np.savez(folder / "data.npz", x=simulator.simulate_joint(300, seed=0)[1].numpy(), theta=np.zeros((300, 1), dtype=np.float32))
    (folder / "truncated.npz").write_bytes((folder / "data.npz").read_bytes()[:200])
    (folder / "text.npz").write_text("x,theta\n1,2\n")
    np.save(folder / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(folder / "observed.npz", x=simulator.simulate(torch.zeros(10, 1), seed=1).numpy())
    torch.save(payload | {"metadata": "{}"}, folder / "model.pt")

    def error() -> bool:  # the call must have raised
        return False

    def minus_inf(theta: torch.Tensor) -> torch.Tensor:
        return torch.full((len(theta),), -math.inf)

    def half_minus_inf(theta: torch.Tensor) -> torch.Tensor:
        return torch.where(theta[:, 0] < 0, -math.inf, -(theta**2).sum(-1))

    def raises_on_load(name: str) -> Callable[[], bool]:
        return lambda: load_model(folder / name) and error()

    def cli_refuses(*arguments: str, output: str) -> Callable[[], bool]:
        def run() -> bool:
            code, err = cli(*arguments, "--output", str(folder / output))
            written = (folder / output).exists() or any(folder.glob("escape*"))
            if code == 2 and not written and "\n" not in err:
                raise ValueError(err)
            return False

        return run

    return {
        "configurations": {
            "outer bound = -1": lambda: mflow(outer=SMALL | {"bound": -1.0}) and error(),
            "outer layers = 0": lambda: mflow(outer=SMALL | {"layers": 0}) and error(),
            "inner layers = 0": lambda: mflow(inner=SMALL | {"layers": 0}) and error(),
            "bins = -1": lambda: mflow(inner=SMALL | {"bins": -1}) and error(),
            "hidden = 2.5": lambda: mflow(inner=SMALL | {"hidden": 2.5}) and error(),
            "jacobian_chunk_size = 0": lambda: mflow(jacobian_chunk_size=0) and error(),
            "reconstruction_weight = -1000": lambda: TrainingConfig(reconstruction_weight=-1000) and error(),
            "weight_decay = NaN": lambda: TrainingConfig(weight_decay=math.nan) and error(),
            "learning_rate = inf": lambda: TrainingConfig(learning_rate=math.inf) and error(),
            "epochs = 2.5": lambda: TrainingConfig(epochs=2.5) and error(),
            "epochs = 0": lambda: TrainingConfig(epochs=0) and error(),
        },
        "shapes and dtypes": {
            "empty batch to log_prob": lambda: model.log_prob(torch.empty(0, 3), torch.empty(0, 1)).shape == (0,),
            "empty θ to the likelihood": lambda: model.likelihood(torch.randn(4, 3))(torch.empty(0, 1)).shape == (0,),
            "empty θ to sample": lambda: model.sample(torch.empty(0, 1)).shape == (0, 3),
            "float64 into a float32 model": lambda: bool(torch.isfinite(model.log_prob(torch.randn(4, 3).double(), torch.zeros(4, 1).double())).all()),
            "float16 into a float32 model": lambda: bool(torch.isfinite(model.log_prob(torch.randn(4, 3).half(), torch.zeros(4, 1).half())).all()),
            "integer x": lambda: model.log_prob(torch.ones(4, 3, dtype=torch.int64), torch.zeros(4, 1)) is None,
            "NaN in x": lambda: model.log_prob(torch.full((2, 3), math.nan), torch.zeros(2, 1)) is None,
            "θ with a wrong column count": lambda: model.log_prob(torch.randn(2, 3), torch.zeros(2, 2)) is None,
            "θ outside the prior": lambda: model.likelihood(torch.randn(4, 3), prior=simulator.prior)(torch.full((1, 1), 5.0)) is None,
            "no events observed": lambda: model.likelihood(torch.empty(0, 3)) is None,
        },
        "posteriors": {
            "MCMC, likelihood -inf everywhere": lambda: mcmc_posterior(minus_inf, simulator.prior, num_samples=64, walkers=32, progress=False) and error(),
            "MCMC, likelihood NaN": lambda: mcmc_posterior(lambda t: torch.full((len(t),), math.nan), simulator.prior, num_samples=64, walkers=32, progress=False) and error(),
            "MCMC, likelihood -inf on half the prior": lambda: bool((mcmc_posterior(half_minus_inf, simulator.prior, num_samples=64, walkers=32, burn_in=30, progress=False).samples[:, 0] >= 0).all()),
            "grid, likelihood -inf everywhere": lambda: grid_posterior(minus_inf, simulator.prior) and error(),
        },
        "damaged and foreign files": {
            "truncated checkpoint": raises_on_load("truncated.pt"),
            "empty checkpoint": raises_on_load("empty.pt"),
            "text file as checkpoint": raises_on_load("text.pt"),
            "bare pickle payload": raises_on_load("bare_pickle_payload.pt"),
            "torch file with a pickle payload": raises_on_load("torch_payload.pt"),
            "weights of another model": raises_on_load("other_weights.pt"),
            "checkpoint without weights": raises_on_load("no_weights.pt"),
            "truncated data set (train)": cli_refuses("train", "--config", str(folder / "train.yaml"), "--data", str(folder / "truncated.npz"), output="t1"),
            "text file as data set (train)": cli_refuses("train", "--config", str(folder / "train.yaml"), "--data", str(folder / "text.npz"), output="t2"),
            "object array as observed (infer)": cli_refuses("infer", "--checkpoint", str(folder / "model.pt"), "--observed", str(folder / "objects.npy"), "--simulator", "polynomial_surface", output="i1"),
            "damaged checkpoint (infer)": cli_refuses("infer", "--checkpoint", str(folder / "truncated.pt"), "--observed", str(folder / "observed.npz"), output="i2"),
        },
        "command line: paths and options": {
            "simulate --name ../../escape": cli_refuses("simulate", "polynomial_surface", "--n", "5", "--name", "../../escape", output="s/o"),
            "simulate --name .hidden": cli_refuses("simulate", "polynomial_surface", "--n", "5", "--name", ".hidden", output="s2"),
            "infer --grid --resolution -3": cli_refuses("infer", "--checkpoint", str(folder / "model.pt"), "--observed", str(folder / "observed.npz"), "--simulator", "polynomial_surface", "--grid", "--resolution", "-3", "--num-samples", "64", "--walkers", "32", "--quiet", output="i3"),
            "infer --grid-bounds 1 0": cli_refuses("infer", "--checkpoint", str(folder / "model.pt"), "--observed", str(folder / "observed.npz"), "--simulator", "polynomial_surface", "--grid", "--grid-bounds", "1", "0", "--num-samples", "64", "--walkers", "32", "--quiet", output="i4"),
        },
    }  # fmt: skip


def classify(call: Callable[[], Any]) -> tuple[str, str]:
    """(outcome, detail) of one case."""
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            correct = call()
    except (ValueError, TypeError) as exception:
        message = " ".join(str(exception).split())
        if any(advice in message for advice in UNSAFE_ADVICE):
            return "crash", f"unsafe advice: {message[:160]}"
        return "clear error", message[:160]
    except Exception as exception:  # noqa: BLE001 - what the table counts
        return "crash", f"{type(exception).__name__}: {' '.join(str(exception).split())[:160]}"
    return ("correct", "") if correct else ("silent wrong result", "returned a result where an error was due")


def table(before: list[dict], after: list[dict], command: str) -> str:
    """Markdown: per area, the cases and their outcomes before and after, then every case."""
    outcomes = ("correct", "clear error", "silent wrong result", "crash")
    lines = [
        "# Hostile inputs: outcomes before and after", "", f"Command: `{command}` (the same script on both revisions; "
        "`--label before` on the old one, see its docstring). A clear error is a `ValueError`/`TypeError` "
        "(at the command line: exit code 2, one line) that never advises unsafe loading.", "",
        "| area | cases | " + " | ".join(f"{o} (before → after)" for o in outcomes) + " |", "|---|---|" + "---|" * len(outcomes),
    ]  # fmt: skip
    areas = list(dict.fromkeys(row["area"] for row in after))
    for area in [*areas, "all"]:
        counts = [Counter(r["outcome"] for r in rows if area in ("all", r["area"])) for rows in (before, after)]
        total = sum(counts[1].values())
        lines.append(f"| {area} | {total} | " + " | ".join(f"{counts[0][o]} → {counts[1][o]}" for o in outcomes) + " |")
    lines += ["", "| area | case | before | after | after: what the user sees |", "|---|---|---|---|---|"]
    old = {(r["area"], r["case"]): r for r in before}
    for row in after:
        was = old.get((row["area"], row["case"]), {"outcome": "—", "detail": ""})
        detail = row["detail"].replace("|", "\\|")
        lines.append(f"| {row['area']} | {row['case']} | {was['outcome']} | {row['outcome']} | {detail} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after")
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent.parent / "docs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import warnings

    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory) / "work"
        folder.mkdir()
        (folder / "train.yaml").write_text(
            "model: {model: mflow, latent_dim: 2, outer: {layers: 1, bins: 4, hidden: 8, blocks: 1}, "
            "inner: {layers: 1, bins: 4, hidden: 8, blocks: 1}}\ntraining: {epochs: 1}\n"
        )
        cwd = os.getcwd()
        os.chdir(folder)
        try:
            rows = [{"area": area, "case": case, **dict(zip(("outcome", "detail"), classify(call)))}
                    for area, calls in cases(folder).items() for case, call in calls.items()]  # fmt: skip
        finally:
            os.chdir(cwd)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / f"hostile_inputs_{args.label}.json").write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    for row in rows:
        print(f"{row['outcome']:>20}  {row['area']}: {row['case']}  {row['detail']}")
    print(dict(Counter(row["outcome"] for row in rows)), file=sys.stderr)
    before, after = (args.output / "hostile_inputs_before.json", args.output / "hostile_inputs_after.json")
    if before.exists() and after.exists():
        tmp = Path(tempfile.gettempdir())
        rows_before, rows_after = (json.loads(f.read_text().replace(str(tmp), "$TMP")) for f in (before, after))
        (args.output / "hostile_inputs.md").write_text(table(rows_before, rows_after, "python benchmarks/hostile_inputs.py"))


if __name__ == "__main__":
    main()
