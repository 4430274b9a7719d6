"""The README.md model card written with every export (what was unlearned, how to load it).

Before/after metrics appear when a run's ``metrics.json`` holds ``"before"`` and ``"after"`` objects
(``{metric: value}``), e.g. as ``NeuMuterRun.save(..., extra_metrics={"before": ..., "after": ...})``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..architectures import describe_layers
from ..methods.neumuter.selection import Selection
from .runs import Run

LIBRARY_NAMES = {"pyvene": "pyvene", "peft-ia3": "peft", "merged": "transformers"}


def model_card(export_format: str, base_model: str, selection: Selection, runs: Sequence[Run],
               load_snippet: str, location: str) -> str:
    counts = ", ".join(f"layer {layer}: {n}" for layer, n in selection.per_layer_counts().items())
    lines = [
        "---",
        f"library_name: {LIBRARY_NAMES[export_format]}",
        f"base_model: {base_model}",
        "tags: [neumuter, machine-unlearning, pyvene]",
        "---",
        f"# NeuMuter unlearning mask for `{base_model}` (`{export_format}`)",
        "",
        "NeuMuter (Hou et al., ACL Findings 2025) mutes a few FFN neurons: each selected neuron's activation",
        "is multiplied by its learned gate value, every other neuron by exactly 1.",
        "",
        f"- Base model: `{base_model}`",
        f"- Layers: {describe_layers(sorted(selection.layers))}",
        f"- Neurons muted: {selection.neurons_muted} of {selection.neurons_total} "
        f"({100 * selection.neurons_muted_fraction:.3f}%; {counts})",
    ]
    if len(runs) > 1:
        lines.append(f"- Composed of {len(runs)} runs: per-neuron scales multiply (order-independent), "
                     "layers are the union of the runs' layers")
    lines += ["", "## Forget sets", "", "| run | forget file | samples | sha256 |", "|---|---|---|---|"]
    lines += [f"| {run.directory.name} | {run.config.get('forget_file', '?')} | {run.config.get('forget_samples', '?')} "
              f"| `{run.config.get('forget_sha256', '?')}` |" for run in runs]
    lines += _metrics_section(runs)
    lines += ["", "## Loading", "", "```python", load_snippet.format(base_model=base_model, location=location).rstrip(),
              "```", "", "`selection.json` lists the muted neurons (0-based layers) and their scales.", ""]
    return "\n".join(lines)


def _metrics_section(runs: Sequence[Run]) -> list[str]:
    lines: list[str] = []
    for run in runs:
        before, after = run.metrics.get("before"), run.metrics.get("after")
        if not (isinstance(before, dict) and isinstance(after, dict)):
            continue
        lines += ["", f"## Metrics of {run.directory.name}", "", "| metric | before | after |", "|---|---|---|"]
        lines += [f"| {name} | {_number(before.get(name))} | {_number(after.get(name))} |"
                  for name in sorted(set(before) | set(after))]
    return lines


def _number(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
