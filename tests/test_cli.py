"""The command line: the demo on a tiny budget, and one-line errors for user mistakes."""

import json

from mflow_sbi.cli import main


def test_demo_runs_end_to_end_on_a_tiny_budget(tmp_path, capsys):
    assert main(["demo", "--simulations", "600", "--epochs", "1", "--output", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "posterior MMD²" in out and "reconstruction error" in out and "distance of generated samples" in out
    assert {p.name for p in tmp_path.iterdir()} == {"demo.png", "results.json", "mflow.pt"}
    results = json.loads((tmp_path / "results.json").read_text())
    assert abs(results["exact_posterior_mean"]) < 0.6  # the exact posterior is centred near θ = 0
    assert 0 < results["manifold_distance_of_samples"] < 2.0 and results["reconstruction_error"] < 5.0


def test_user_mistakes_give_one_line_errors(capsys):
    assert main(["demo", "--true-theta", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mflow-sbi: error:") and "prior support" in err and "\n" not in err
