"""The operating-point curve: what a mask forgets and what it costs as it grows along the trained gates'
ranking, so that a researcher can pick the operating point by looking instead of by one readout rule.

For trained gates, ``operating_curve`` mutes the first ``c`` neurons of their ranking (lowest closing
probability first, trained gate values kept: ``readout.GateRanking``) for log-spaced counts ``c`` and
scores each mask with ``score_point``: teacher-forced MA of the forget set and of every MA group of the
world (other copies, the retain-memorized windows and their look-alike / unrelated halves, held-out
text), the general-text perplexity, and the share of forget samples meeting Eq. 17. EL10 is decoded only
for the forget samples whose MA already passes (the others cannot meet Eq. 17), so a point costs one
batched forward per group and a few greedy decodes: the curve stays within minutes on the real world.
Every number equals what ``evaluation.evaluate`` gives the same mask (a test holds the two together).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch

from . import metrics
from .evaluation import EvaluationSet, scores_by_text, scoring_precision
from .methods.neumuter.readout import GateRanking, search_cap
from .methods.neumuter.selection import freeze


def curve_counts(largest: int, points: int = 10, include: Sequence[int] = ()) -> list[int]:
    """``points`` counts spaced evenly on a log scale from ``largest / 256`` (at least 1) to ``largest``,
    plus ``include`` (e.g. the count a readout kept), sorted and distinct."""
    if largest < 1:
        return sorted({c for c in include if c >= 1})
    smallest = max(1.0, largest / 256)
    spaced = np.geomspace(smallest, largest, points) if largest > smallest else [largest]
    return sorted({int(round(c)) for c in spaced} | {int(c) for c in include if 1 <= c <= largest})


def gate_curve_counts(log_alpha: dict[int, torch.Tensor], max_fraction: float, points: int,
                      include: Sequence[int] = ()) -> list[int]:
    """The counts of a curve of these gates: ``points`` log-spaced up to the ``smallest`` readout's cap
    (``max_fraction`` of the gated neurons) or the largest of ``include`` if more, and ``include``."""
    gated = sum(values.numel() for values in log_alpha.values())
    return curve_counts(max([search_cap(max_fraction, gated), *include]), points, include)


def score_point(model, tokenizer, data: EvaluationSet, thresholds: Mapping[str, float]) -> dict:
    """The teacher-forced scores of one model (see the module docstring), keyed as ``evaluate`` keys them."""
    with scoring_precision(model, data):
        return _score_point(model, tokenizer, data, thresholds)


def _score_point(model, tokenizer, data: EvaluationSet, thresholds: Mapping[str, float]) -> dict:
    n, batch, stride = data.settings["el_n"], data.settings["batch_size"], data.settings["el_prefix_stride"]
    forget = list(data.forget_texts)
    groups = {"retain": list(data.retain_texts), **{name: list(texts) for name, texts in data.ma_groups.items()}}
    by_text = {text: float(ma) for text, (ma, _) in scores_by_text(model, tokenizer, [forget, *groups.values()],
                                                                    batch).items()}
    ma = torch.tensor([by_text[text] for text in forget])
    could = (ma <= thresholds["ma"]).nonzero().flatten().tolist()
    el = torch.full_like(ma, math.inf)  # a sample whose MA fails cannot meet Eq. 17 whatever its EL10
    if could:
        el[could] = metrics.extraction_likelihood(model, tokenizer, [forget[i] for i in could], n, batch_size=batch,
                                                  prefix_stride=stride)
    point = {"forget_ma": float(ma.mean()), "forgotten_fraction": metrics.forgotten_fraction(ma, el, thresholds, n),
             "ma_passing_fraction": len(could) / len(forget)}
    for name, texts in groups.items():
        if texts:
            point[f"{name}_ma"] = sum(by_text[text] for text in texts) / len(texts)
    if data.general_texts:
        point["heldout_ppl"] = metrics.perplexity(model, tokenizer, data.general_texts, batch_size=batch)
    return point


def operating_curve(model, tokenizer, log_alpha: dict[int, torch.Tensor], params, data: EvaluationSet,
                    thresholds: Mapping[str, float], counts: Sequence[int],
                    log: Callable[[str], None] = print, ranking: str = "global",
                    discount: dict[int, torch.Tensor] | None = None) -> list[dict]:
    """``score_point`` of the mask of each count of ``counts`` along the ``ranking`` of ``log_alpha``
    (``NeuMuterConfig.ranking``, with the run's ``discount`` under ``contrastive``; count 0: the model itself; a count past the neurons whose gate moved is that
    many); each point also records its count and its share of the model's FFN neurons."""
    ranking = GateRanking.of(model, log_alpha, params, ranking, discount)
    points = []
    for count in sorted({min(count, ranking.size) for count in counts}):
        selection = ranking.selection(count)
        scored = model if selection.neurons_muted == 0 else freeze(model, selection)
        point = {"neurons_muted": selection.neurons_muted, "neurons_muted_fraction": selection.neurons_muted_fraction,
                 **score_point(scored, tokenizer, data, thresholds)}
        points.append(point)
        log(f"curve: {point['neurons_muted']} neurons ({100 * point['neurons_muted_fraction']:.2f}%): forget MA "
            f"{point['forget_ma']:.3f}, forgotten {point['forgotten_fraction']:.2f}"
            + (f", retain MA {point['retain_ma']:.3f}" if "retain_ma" in point else ""))
    return points
