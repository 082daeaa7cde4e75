"""The notebooks run top to bottom in their quick setting, draw their figures and report sane
numbers (each notebook's last cell prints `RESULTS {json}`)."""

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, tmp_path: Path, monkeypatch) -> tuple[dict, int]:
    """Run the notebook in `tmp_path` (its files land there) -> (RESULTS, number of figures)."""
    monkeypatch.setenv("MFLOW_SBI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("MFLOW_SBI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    figures = sum("image/png" in output.get("data", {}) for output in outputs)
    lines = [line for output in outputs for line in output.get("text", "").splitlines() if line.startswith("RESULTS ")]
    assert len(lines) == 1, "the notebook's last cell prints one RESULTS line"
    return json.loads(lines[0].removeprefix("RESULTS ")), figures


def contains(results: dict, name: str, truth: float, width: float = 3.0) -> bool:
    return abs(results[f"{name}_mean"] - truth) < width * results[f"{name}_std"]


def test_01_polynomial_surface(tmp_path, monkeypatch):
    results, figures = execute("01_polynomial_surface.ipynb", tmp_path, monkeypatch)
    assert figures >= 4  # manifold, samples, reconstruction, posteriors
    truth = results["true_theta"]
    assert contains(results, "exact", truth) and contains(results, "M-flow", truth) and contains(results, "AF", truth)
    assert results["distances"]["simulator"] < 1e-4 < results["distances"]["M-flow"]
    assert 0 <= results["M-flow_mmd"] < 1 and results["mflow_reconstruction_median"] < 1


def test_03_sbi_workflow(tmp_path, monkeypatch):
    results, figures = execute("03_sbi_workflow.ipynb", tmp_path, monkeypatch)
    assert figures >= 2  # posteriors, SBC ranks
    truth = results["true_theta"]
    assert contains(results, "exact", truth) and contains(results, "M-flow", truth)
    assert results["sbc_ks_pvalue"] > 1e-3  # ranks not grossly non-uniform


@pytest.mark.slow
def test_02_particle_physics(tmp_path, monkeypatch):
    results, figures = execute("02_particle_physics.ipynb", tmp_path, monkeypatch)
    assert figures >= 3  # distributions, corner plot, ratio scans
    for name in ("exact", "M-flow", "M-flow (SCANDAL)", "ALICES"):
        means, stds, truth = results[f"{name}_mean"], results[f"{name}_std"], results["true_theta"]
        assert all(abs(m - t) < 4 * s for m, s, t in zip(means, stds, truth)), name


@pytest.mark.slow
def test_04_image_manifold(tmp_path, monkeypatch):
    results, figures = execute("04_image_manifold.ipynb", tmp_path, monkeypatch)
    assert figures >= 3  # simulator images, samples and projections, posterior
    assert contains(results, "exact", results["true_theta"])
    assert results["M-flow_std"] > 0 and results["reconstruction"] > 0


def test_05_intrinsic_dimension(tmp_path, monkeypatch):
    results, figures = execute("05_intrinsic_dimension.ipynb", tmp_path, monkeypatch)
    assert figures >= 2  # spectrum, posteriors
    assert results["default_dimension"] == results["auto_latent_dim"] == 2
    assert all(abs(value - 2) < 0.3 for value in results["estimates"].values())
    assert 1 <= results["learned_dimension"] <= 3 and len(results["spectrum"]) == 3
    assert contains(results, "exact", results["true_theta"]) and contains(results, "auto", results["true_theta"])
    auto, wrong = results["reconstruction"].values()
    assert auto < wrong  # n = 1 cannot hold the surface
