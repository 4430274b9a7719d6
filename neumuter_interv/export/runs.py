"""Reading NeuMuter run directories and composing their masks into one.

Composition semantics: every run's mask is a per-neuron scale (1 for unselected neurons); the
composed mask is their per-neuron PRODUCT over the union of the runs' layers. Applying it equals
applying every run's mask at once (scales on the same activation multiply), so the result does not
depend on the order of the runs (up to float rounding of the product).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from pathlib import Path

from ..data import read_json_file
from ..errors import NeuMuterError
from ..methods.neumuter.selection import Selection


@dataclass(frozen=True)
class Run:
    """One run directory as written by ``NeuMuterRun.save``: only its JSON files are read."""

    directory: Path
    selection: Selection
    config: dict
    metrics: dict

    @property
    def base_model(self) -> str | None:
        model = self.config.get("model")
        if model is not None and not (isinstance(model, str) and model):
            raise NeuMuterError(f"{self.directory}/config.json: 'model' must name the base model (a path or Hub id), "
                                f"got {model!r}; pass --model")
        return model


def read_run(directory: str | Path) -> Run:
    """Read ``selection.json``, ``config.json`` and (if present) ``metrics.json`` of a run directory."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NeuMuterError(f"run directory {str(directory)!r} does not exist")
    if not (directory / "selection.json").is_file():
        raise NeuMuterError(f"{directory} is not a NeuMuter run directory: it has no selection.json")
    return Run(directory, Selection.from_dict(_read_json(directory / "selection.json"), str(directory / "selection.json")),
               _read_json(directory / "config.json", default={}), _read_json(directory / "metrics.json", default={}))


def _read_json(path: Path, default: dict | None = None) -> dict:
    if not path.is_file() and default is not None:
        return default
    data = read_json_file(path, str(path))
    if not isinstance(data, dict):
        raise NeuMuterError(f"{path} does not hold a JSON object")
    return data


def compose(selections: Sequence[Selection]) -> Selection:
    """One mask equal to applying all ``selections`` (see the module docstring)."""
    if not selections:
        raise NeuMuterError("nothing to compose: no selection given")
    return reduce(Selection.compose, selections)


def check_distinct(runs: Sequence[Run]) -> None:
    """Refuse a run named twice (by two names or the same one): composing it with itself would square its
    scales, a mask nobody trained."""
    seen: dict[str, Path] = {}
    for run in runs:
        real = os.path.realpath(run.directory)
        if real in seen:
            raise NeuMuterError(f"run {str(run.directory)!r} is given twice (also as {str(seen[real])!r}); composing "
                                "a run with itself would square its scales")
        seen[real] = run.directory


def base_model_of(runs: Sequence[Run], override: str | None = None) -> str:
    """The base model path: ``override`` if given, else the one model all runs were made on."""
    if override:
        return override
    models = {run.base_model for run in runs}
    if None in models:
        missing = next(run.directory for run in runs if run.base_model is None)
        raise NeuMuterError(f"{missing}/config.json does not name the base model; pass --model")
    if len(models) > 1:
        raise NeuMuterError(f"the runs were made on different models ({', '.join(sorted(models))}); pass --model")
    return models.pop()
