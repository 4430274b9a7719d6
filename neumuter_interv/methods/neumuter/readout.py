"""Reading a mask out of trained gates, checked against a stopping criterion (Appendix B.4).

The paper reads the mask out with a fixed rule (5% cumulative energy, Section 3.3), the official code
with a fixed threshold (sigmoid < 0.15); neither asks whether the mask forgets. Under the paper's
stopping rule ("until all unlearned samples meet the threshold", Eq. 17) the question that matters is
the smallest mask that does, so ``selection="smallest"`` asks the criterion itself:

* the trained gates rank the neurons, lowest closing probability first (``GateRanking``; neurons whose
  deterministic gate is still exactly 1 are not ranked: muting them changes nothing), and a count ``c``
  stands for the mask of the first ``c`` with their trained gate values kept (Eq. 14);
* the count is found by bisection between 1 and the cap (``max_fraction`` of the gated neurons), first
  with the criterion's cheap necessary condition where it has one (``ForgettingCriterion.necessary``:
  teacher-forced MA, one batched forward per probe), then confirmed with the whole criterion (MA and
  EL10) on that mask, stepping up by bisection if EL10 fails there;
* no mask up to the cap meeting it means the gates are not there yet: training goes on and the search
  runs again at the next check. Every probe is recorded (count, which check, verdict, the criterion's
  numbers), so a run shows how it found its mask.

The fixed rules (``threshold``, ``energy``, ``top_k``, ``fraction``) are checked once per check, as
before. ``MaskReadout`` serves both, so the schedule that trains the gates does not care which rule runs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ...architectures import ffn_width, num_layers
from ...hard_concrete import HardConcreteParams, deterministic_gate
from .config import NeuMuterConfig
from .selection import (
    Selection,
    flat_discount,
    flatten_by_layer,
    freeze,
    muting_order,
    neuron_sets,
    select_neurons,
)


@dataclass
class GateRanking:
    """The gated neurons in the order a count-based readout mutes them, with their trained gate values."""

    layers: list[int]
    order: torch.Tensor  # flat indices in muting order (``selection.muting_order``), only gates below 1
    gate: torch.Tensor  # deterministic gate value of every flat entry (the scale a muted neuron keeps)
    owner: torch.Tensor
    offsets: torch.Tensor
    gated: int  # every gated neuron, ranked or not
    ffn_width: int
    num_model_layers: int
    model_type: str

    @classmethod
    def of(cls, model, log_alpha: dict[int, torch.Tensor], params: HardConcreteParams,
           ranking: str = "global", discount: dict[int, torch.Tensor] | None = None) -> GateRanking:
        """The ranking of trained gates: ``ranking`` as ``NeuMuterConfig.ranking`` (``contrastive`` with its
        per-layer ``discount``, ``selection.contrastive_discount``)."""
        layers, flat, owner, offsets = flatten_by_layer(log_alpha)
        gate = deterministic_gate(flat, params)
        order = muting_order(torch.sigmoid(flat), owner, ranking, flat_discount(discount, layers))
        order = order[gate[order] < 1.0]
        return cls(layers, order, gate, owner, offsets, flat.numel(), ffn_width(model), num_layers(model),
                   model.config.model_type)

    @property
    def size(self) -> int:
        """How many neurons a count can reach (those whose gate moved below 1)."""
        return int(self.order.numel())

    def selection(self, count: int, rule: dict | None = None) -> Selection:
        """The first ``count`` neurons of the ranking, each keeping its trained gate value."""
        chosen = torch.zeros(self.gated, dtype=torch.bool)
        chosen[self.order[:count]] = True
        return Selection(neuron_sets(chosen, self.gate, self.layers, self.owner, self.offsets), self.ffn_width,
                         self.num_model_layers, self.model_type, rule or {"rule": "smallest", "k": count})


def search_cap(max_fraction: float, gated: int) -> int:
    """The most neurons the ``smallest`` readout may mute: ``max_fraction`` of the gated neurons (at least one)."""
    return max(1, math.floor(max_fraction * gated))


def smallest_passing_count(passes: Callable[[int], bool], low: int, high: int) -> int | None:
    """The smallest ``c`` in ``[low, high]`` with ``passes(c)``, for ``passes`` monotone in ``c`` (False up to
    some count, True from it on); None when ``passes(high)`` is False. Probes ``high`` first, then bisects:
    at most ``ceil(log2(high - low + 1)) + 1`` probes."""
    if low > high or not passes(high):
        return None
    while low < high:
        middle = (low + high) // 2
        if passes(middle):
            high = middle
        else:
            low = middle + 1
    return high


@dataclass
class ReadoutCheck:
    """One readout of one set of gates: the mask, whether it met the criterion, and how it was found."""

    selection: Selection
    met: bool
    numbers: dict = field(default_factory=dict)  # the criterion's ``last`` numbers on ``selection``
    probes: list[dict] = field(default_factory=list)  # the search's path ("smallest" only)

    @property
    def score(self) -> tuple:
        """How close to the criterion: met, then the forgotten and MA-passing shares, then the lower forget MA,
        then fewer neurons."""
        return (self.met, self.numbers.get("forgotten_fraction", 0.0), self.numbers.get("ma_passing_fraction", 0.0),
                -self.numbers.get("forget_ma", 1.0), -self.selection.neurons_muted)


class MaskReadout:
    """``readout(log_alpha) -> ReadoutCheck``: the mask ``config.selection`` reads out of trained gates of
    ``model``, checked with ``stop_when`` (a function of the frozen model, as ``ForgettingCriterion`` is);
    ``discount``: the contrastive ranking's (``selection.contrastive_discount``).

    A mask checked before (same neurons, same scales) is not checked again: its verdict is reused. Early
    checks often select no neuron at all, i.e. the unchanged model, again and again."""

    def __init__(self, model, stop_when: Callable, config: NeuMuterConfig,
                 discount: dict[int, torch.Tensor] | None = None):
        self.model, self.stop_when, self.config, self.discount = model, stop_when, config, discount
        self.necessary = getattr(stop_when, "necessary", None)
        self.verdicts: dict[tuple, tuple[bool, dict]] = {}

    def __call__(self, log_alpha: dict[int, torch.Tensor]) -> ReadoutCheck:
        if self.config.selection == "smallest":
            return self._search(log_alpha)
        selection = select_neurons(self.model, log_alpha, self.config.hard_concrete, self.config, self.discount)
        met, numbers = self._verdict(selection, self.stop_when)
        return ReadoutCheck(selection, met, numbers)

    def _search(self, log_alpha: dict[int, torch.Tensor]) -> ReadoutCheck:
        ranking = GateRanking.of(self.model, log_alpha, self.config.hard_concrete, self.config.ranking, self.discount)
        high = min(search_cap(self.config.max_fraction, ranking.gated), ranking.size)
        probes: list[dict] = []
        last: dict[int, dict] = {}

        def probe(kind: str, check: Callable) -> Callable[[int], bool]:
            def passes(count: int) -> bool:
                met, numbers = self._verdict(ranking.selection(count), check)
                probes.append({"count": count, "check": kind, "met": met, **numbers})
                if kind == "criterion":
                    last[count] = numbers
                return met
            return passes

        full = probe("criterion", self.stop_when)
        start = 1
        if self.necessary is not None:
            start = smallest_passing_count(probe("necessary", self.necessary), 1, high)
        count = None
        if start is not None:
            count = start if full(start) else smallest_passing_count(full, start + 1, high)
        rule = {"rule": "smallest", "max_fraction": self.config.max_fraction, "cap": high, "probes": len(probes)}
        if count is None:  # nothing up to the cap meets it: the cap's mask, the most this check may mute
            numbers = {k: v for k, v in (probes[-1] if probes else {}).items() if k not in ("count", "check", "met")}
            return ReadoutCheck(ranking.selection(high, {**rule, "k": high, "met": False}), False, numbers, probes)
        return ReadoutCheck(ranking.selection(count, {**rule, "k": count, "met": True}), True, last[count], probes)

    def _verdict(self, selection: Selection, check: Callable) -> tuple[bool, dict]:
        key = (id(check), _mask_key(selection))
        if key not in self.verdicts:
            met = bool(check(freeze(self.model, selection)))
            self.verdicts[key] = met, dict(getattr(self.stop_when, "last", {}))
        return self.verdicts[key]


def _mask_key(selection: Selection) -> tuple:
    """What the frozen model of a selection depends on: the muted neurons and their scales per layer."""
    return tuple((layer, tuple(neurons.indices), tuple(neurons.scales))
                 for layer, neurons in sorted(selection.layers.items()))
