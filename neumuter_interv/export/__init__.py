"""Exporting NeuMuter runs for deployment: a pyvene package, a PEFT IA3 adapter, or a merged checkpoint.

``export(run_dirs, "pyvene" | "peft-ia3" | "merged", out)`` composes the runs' masks (per-neuron
product, union of layers: see ``runs``), loads the base model, and writes ``out`` all or nothing with
a README.md model card and the composed ``selection.json``; optionally pushes it to the Hub.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import NeuMuterError
from ..loading import check_same_model, load_causal_lm
from ..output import check_writable, output_directory, write_text
from . import merged, peft_ia3, pyvene_package
from .card import model_card
from .hub import check_repo_id, push_folder
from .job import ExportJob
from .runs import Run, base_model_of, check_distinct, compose, read_run


@dataclass(frozen=True)
class ExportFormat:
    write: Callable[[ExportJob, Path], None]
    load_snippet: str  # Python for the model card; {base_model} and {location} are filled in


FORMATS: dict[str, ExportFormat] = {
    "pyvene": ExportFormat(pyvene_package.write_pyvene_package, pyvene_package.LOAD_SNIPPET),
    "peft-ia3": ExportFormat(peft_ia3.write_ia3_adapter, peft_ia3.LOAD_SNIPPET),
    "merged": ExportFormat(merged.write_merged_checkpoint, merged.LOAD_SNIPPET),
}


def format_named(name: str) -> ExportFormat:
    if name not in FORMATS:
        raise NeuMuterError(f"unknown export format {name!r} (choose from {', '.join(FORMATS)})")
    return FORMATS[name]


def export(run_dirs: Sequence[str | Path], export_format: str, out: str | Path, *, model: str | None = None,
           dtype: str = "float32", overwrite: bool = False, push: str | None = None, private: bool = False) -> Path:
    """Write the composed mask of ``run_dirs`` in ``export_format`` to ``out``; returns ``out``."""
    format_named(export_format)
    if push:
        check_repo_id(push)
    runs = [read_run(directory) for directory in run_dirs]
    check_distinct(runs)
    selection = compose([run.selection for run in runs])
    base_model = base_model_of(runs, model)
    inputs = {**{f"run {run.directory}": run.directory for run in runs}, "base model": base_model}
    target = check_writable(out, overwrite, inputs)  # fail before loading any model
    causal_lm, tokenizer = load_causal_lm(base_model, dtype)
    check_same_model(causal_lm, {f"run {run.directory}": run.config.get("model_fingerprint") for run in runs},
                     base_model)
    write_export(ExportJob(causal_lm, tokenizer, selection, base_model), export_format, target, runs,
                 overwrite=overwrite, location=push or str(target))
    if push:
        push_folder(target, push, private)
    return target


def write_export(job: ExportJob, export_format: str, out: Path, runs: Sequence[Run], *, overwrite: bool = False,
                 location: str) -> None:
    """The export proper, for callers that already hold the model: format files, selection, card."""
    chosen = format_named(export_format)
    with output_directory(out, overwrite) as staging:
        chosen.write(job, staging)
        job.selection.save(staging / "selection.json")
        card = model_card(export_format, job.base_model, job.selection, runs, chosen.load_snippet, location)
        write_text(staging / "README.md", card)


__all__ = ["FORMATS", "ExportFormat", "ExportJob", "Run", "compose", "export", "read_run", "write_export"]
