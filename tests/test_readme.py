"""The README's Python examples run as written, on budgets shrunk by the substitutions below."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SMALLER_BUDGETS = {
    "10_000": "1_000",
    "TrainingConfig(epochs=20)": "TrainingConfig(epochs=1, progress=False)",
    "TrainingConfig(epochs=20, score_weight=1.0)": "TrainingConfig(epochs=1, progress=False, score_weight=1.0)",
    "observed=events)": "observed=events, num_samples=960, walkers=32, burn_in=10, progress=False)",
    "lhc.exact_posterior(events)": "lhc.exact_posterior(events, num_samples=960, walkers=32, burn_in=10)",
    "observed=observed)": "observed=observed, num_samples=1600, walkers=32, burn_in=20, progress=False)",
    ".train()": ".train(max_num_epochs=1)",
    "NLE(simulator.prior, ": "NLE(simulator.prior, show_progress_bars=False, ",
    "simulation_batch_size=None, seed=0)": "simulation_batch_size=None, seed=0, show_progress_bar=False)",
    "posterior.sample((1000,), x=observed)": "posterior.sample((20,), x=observed, warmup_steps=5, num_chains=4, init_strategy='proposal', show_progress_bars=False)",
}


def test_readme_examples_run(tmp_path, monkeypatch):
    code = "\n".join(re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL))
    for original, smaller in SMALLER_BUDGETS.items():
        assert original in code, f"the README no longer contains {original!r}; update this test"
        code = code.replace(original, smaller)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MFLOW_SBI_CACHE", str(tmp_path / "cache"))  # the LHC-like simulator's σ cache
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "posterior.nc").is_file()
    assert namespace["samples"].shape == (20, 1)
    assert ((namespace["samples"] > -1) & (namespace["samples"] < 1)).all()
    assert -1 < float(namespace["grid"].mean()) < 1
