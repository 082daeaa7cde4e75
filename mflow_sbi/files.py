"""Atomic writes of data files: a crash mid-write leaves the previous file (or none) in place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np


def write_npz_atomically(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """np.savez to a temporary file in `path`'s folder, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.chmod(temporary, 0o644)  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path
