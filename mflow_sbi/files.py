"""Atomic writes: a crash mid-write leaves the previous file (or none) in place, and the
temporary file a killed write left behind is removed by the next write to the same path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np


PICKLE_PROTOCOL_MARK = b"\x80"  # how a bare pickle of protocol ≥ 2 starts (torch and numpy archives are zip files)


def looks_like_pickle(path: Path) -> bool:
    """Whether the file at `path` starts like a bare pickle (protocol ≥ 2)."""
    with path.open("rb") as stream:
        return stream.read(len(PICKLE_PROTOCOL_MARK)) == PICKLE_PROTOCOL_MARK


def leftover_temporaries(path: Path) -> list[Path]:
    """The temporary files of interrupted atomic writes to `path` (`.{name}.*.tmp` beside it)."""
    return sorted(path.parent.glob(f".{path.name}.*.tmp")) if path.parent.is_dir() else []


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """`write(stream)` to a temporary file in `path`'s folder, then rename it over `path`
    (readable by all, like a plain write); leftovers of earlier killed writes are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in leftover_temporaries(path):
        leftover.unlink(missing_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.chmod(temporary, 0o644)  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_npz_atomically(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """np.savez to `path` with `write_atomically`."""
    return write_atomically(path, lambda stream: np.savez(stream, **arrays))
