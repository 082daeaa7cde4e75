"""Diagnostics collected into pandas tables: one row per evaluation, medians and spreads per group."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch


def _plain(value: object, row: int, column: str) -> str | bool | int | float | None:
    """A plain Python label or number; 0-d tensors and numpy scalars are unwrapped."""
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        if np.ndim(value) != 0:
            raise ValueError(f"rows[{row}][{column!r}] must be a single number, got shape {tuple(np.shape(value))}")
        value = value.item()
    if value is None or isinstance(value, (str, bool, numbers.Number)):
        return value
    raise ValueError(f"rows[{row}][{column!r}] must be a number or a label, got {type(value).__name__}")


def diagnostics_table(rows: Iterable[Mapping[str, object]]) -> pd.DataFrame:
    """Rows such as `{"model": "mflow", "seed": 0, **calibration, "mmd": 0.02}` (labels and the
    plain numbers the diagnostics return) as a DataFrame; columns in order of first
    appearance, missing entries NaN."""
    records = []
    for index, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"rows[{index}] must be a mapping of column names to values, got {type(row).__name__}")
        records.append({str(column): _plain(value, index, str(column)) for column, value in row.items()})
    if not records:
        raise ValueError("rows is empty")
    return pd.DataFrame.from_records(records)


def summarize_table(table: pd.DataFrame, by: str | Sequence[str], quantiles: tuple[float, float] = (0.16, 0.84)) -> pd.DataFrame:
    """Median and spread (the `quantiles`, by default the central 68%) of every numeric
    column per group of `by`, with the group size as `runs`; columns (metric, statistic)."""
    by = [by] if isinstance(by, str) else list(by)
    missing = [column for column in by if column not in table.columns]
    if missing:
        raise ValueError(f"by names columns that the table lacks: {missing}")
    low, high = quantiles
    if not 0 <= low < high <= 1:
        raise ValueError(f"quantiles must satisfy 0 ≤ low < high ≤ 1, got {quantiles}")
    numeric = table.drop(columns=by).select_dtypes("number").columns.tolist()
    groups = table.groupby(by, sort=False)[numeric]
    summary = pd.concat(
        {"median": groups.median(), f"q{low:g}": groups.quantile(low), f"q{high:g}": groups.quantile(high)}, axis=1
    )
    summary = summary.swaplevel(axis=1)[[(metric, stat) for metric in numeric for stat in ("median", f"q{low:g}", f"q{high:g}")]]
    summary[("runs", "")] = table.groupby(by, sort=False).size()
    return summary
