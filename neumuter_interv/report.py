"""Markdown tables and PNG plots for the demo and comparison reports (matplotlib, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    def cell(value) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_muted_per_layer(counts: Mapping[int, int], width: int, path: str | Path, title: str = "Muted FFN neurons per layer") -> None:
    layers = sorted(counts)
    figure, axis = plt.subplots(figsize=(6, 3.2))
    axis.bar([str(layer) for layer in layers], [100 * counts[layer] / width for layer in layers], color="#4C72B0")
    axis.set_xlabel("layer (0-based)")
    axis.set_ylabel("% of the layer's FFN neurons")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_distributions(series: Mapping[str, Sequence[float]], path: str | Path, xlabel: str, title: str) -> None:
    """Overlaid histograms, one per named series (e.g. forget-sample losses before / after / oracle)."""
    figure, axis = plt.subplots(figsize=(6, 3.2))
    values = [v for s in series.values() for v in s]
    bins = 20 if not values else [min(values) + i * (max(values) - min(values) + 1e-9) / 20 for i in range(21)]
    for name, data in series.items():
        axis.hist(list(data), bins=bins, alpha=0.5, label=name)
    axis.set_xlabel(xlabel)
    axis.set_ylabel("samples")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_tradeoff(points: Mapping[str, Mapping[str, float]], path: str | Path, xlabel: str,
                  panels: Sequence[tuple[str, str]], title: str, x_key: str = "forget_ma") -> None:
    """Labelled scatter plots side by side, one per (score key, axis label) of ``panels``, each point a
    named model (e.g. a method) at ``points[name][x_key]`` on x: utility against forgetting."""
    plot_scatter_panels([("", ylabel, {name: (scores[x_key], scores[key]) for name, scores in points.items()},
                          key.endswith("_ppl")) for key, ylabel in panels], path, xlabel, title)


def plot_scatter_panels(panels: Sequence[tuple[str, str, Mapping[str, tuple[float, float]], bool]],
                        path: str | Path, xlabel: str, title: str) -> None:
    """Labelled scatter plots side by side: per panel (its title, y label, named (x, y) points, whether a
    wide y range goes on a log scale)."""
    figure, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for axis, (panel_title, ylabel, points, log_if_wide) in zip(axes[0], panels):
        for name, (x, y) in points.items():
            axis.scatter([x], [y])
            axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
        axis.set_xlabel(xlabel)
        axis.set_ylabel(ylabel)
        axis.set_title(panel_title)
        ys = [y for _, y in points.values()]
        if log_if_wide and min(ys) > 0 and max(ys) > 5 * min(ys):
            axis.set_yscale("log")  # one ruined model must not flatten the others
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_grouped_bars(groups: Mapping[str, Mapping[str, float]], path: str | Path, ylabel: str, title: str,
                      line: float = 0.0) -> None:
    """One group of bars per key of ``groups`` (e.g. a world variant), one bar per inner key (e.g. a
    mask), and a horizontal reference line at ``line`` (e.g. 1 = no specificity)."""
    names = list(groups)
    series = list(dict.fromkeys(key for group in groups.values() for key in group))
    width = 0.8 / max(1, len(series))
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2) + 2, 3.6))
    for index, key in enumerate(series):
        axis.bar([i + (index - (len(series) - 1) / 2) * width for i in range(len(names))],
                 [groups[name].get(key, 0.0) for name in names], width, label=key)
    axis.axhline(line, color="black", linewidth=0.8)
    axis.set_xticks(range(len(names)), names, rotation=30, ha="right")
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")  # beside the bars, never over them
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_operating_curve(points: Sequence[Mapping[str, float]], path: str | Path, title: str,
                         ma_threshold: float | None = None, kept_fraction: float | None = None) -> None:
    """The operating-point curve (``operating_curve``): MA of each group and the forgotten share (left),
    general-text perplexity (right) against the share of FFN neurons muted (log scale), with Eq. 17's MA
    threshold and the readout's count marked."""
    points = [p for p in points if p["neurons_muted"] > 0]
    x = [100 * p["neurons_muted_fraction"] for p in points]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key in [k for k in points[0] if k.endswith("_ma")] + ["forgotten_fraction"]:
        left.plot(x, [p[key] for p in points], marker="o", markersize=3, label=key.replace("_", " "),
                  linestyle="--" if key == "forgotten_fraction" else "-")
    if ma_threshold is not None:
        left.axhline(ma_threshold, color="grey", linewidth=0.8, linestyle=":", label="Eq. 17 MA threshold")
    if "heldout_ppl" in points[0]:
        right.plot(x, [p["heldout_ppl"] for p in points], marker="o", markersize=3, color="#C44E52")
    for axis, ylabel in ((left, "MA / share of forget samples"), (right, "general-text perplexity")):
        if kept_fraction:
            axis.axvline(100 * kept_fraction, color="black", linewidth=0.8, linestyle=":")
        axis.set_xscale("log")
        axis.set_xlabel("% of FFN neurons muted (lowest gates first)")
        axis.set_ylabel(ylabel)
    left.legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
