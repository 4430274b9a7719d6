"""Writing result directories safely: all or nothing, and never over an existing result by surprise.

Every command that writes a directory (``unlearn``, ``demo``, ``compare``, ``export``) goes through
``output_directory``: files are written into a hidden sibling directory, which replaces the target
only when everything succeeded. A failed run leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import NeuMuterError


def check_writable(target: str | Path, overwrite: bool = False) -> Path:
    """Refuse an existing non-empty directory (or a file) unless ``overwrite``; call before long work."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise NeuMuterError(f"output {str(target)!r} exists and is not a directory")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise NeuMuterError(f"output directory {str(target)!r} exists and is not empty (pass --overwrite to replace it)")
    return target


@contextmanager
def output_directory(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory that becomes ``target`` when the block finishes without error."""
    target = check_writable(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        target.rename(retired / "old")
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(target)


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
