"""What the study scripts share: resumable JSON-lines results and the summary table's cells."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd


class ResultsFile:
    """One JSON line {"settings", "row"} per finished (model, seed): an interrupted run resumes,
    processes that run different seeds may append to the same file, and a run with more seeds
    keeps the rows of the seeds done before (the number of seeds is not part of a row's identity)."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, json.loads(json.dumps(settings))  # tuples as lists, as read back

    def finished(self) -> dict[tuple[str, int], dict]:
        """(model, seed) -> row, for the rows computed with these settings (any number of seeds)."""
        identity = lambda settings: {k: v for k, v in settings.items() if k != "seeds"}  # noqa: E731
        rows = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                record = json.loads(line)
                if identity(record["settings"]) == identity(self.settings):
                    rows[(record["row"]["model"], record["row"]["seed"])] = record["row"]
        return rows

    def append(self, row: dict) -> None:
        with self.path.open("a") as handle:  # one line per finished row: nothing lost on a crash
            handle.write(json.dumps({"settings": self.settings, "row": row}) + "\n")
        print(json.dumps(row), flush=True)


def summary_cell(summary: pd.DataFrame, label: str, metric: str, paper: float | None = None, paper_format: str = ".3f") -> str:
    """'median [16%, 84%]' over seeds (the median alone for one seed), the paper's value in
    brackets; '–' where the metric is not defined for the model."""
    if metric not in summary.columns.get_level_values(0):
        return "–"
    median = summary.loc[label, (metric, "median")]
    if math.isnan(median):
        return "–"
    low, high = summary.loc[label, (metric, "q0.16")], summary.loc[label, (metric, "q0.84")]
    text = f"{median:.3g}" if low == high == median else f"{median:.3g} [{low:.3g}, {high:.3g}]"
    return text if paper is None else text + f" (paper {paper:{paper_format}})"


def overrides(args: Any) -> str:
    """The command-line options that override a study's profile, as they were given."""
    given = {"--simulations": getattr(args, "simulations", None), "--epochs": getattr(args, "epochs", None), "--seeds": getattr(args, "seeds", None)}
    return "".join(f" {option} {value}" for option, value in given.items() if value is not None)
